"""The Python engine's entry point: runs one program per instance and answers with JSON (a session runs one per
call, in one namespace kept for the instance). `bridge.c` calls `_entry` for each run.

The engine is pre-initialised with this module imported (`cargo xtask guests`, wasmtime-wizer), so a run starts from
a ready snapshot. Anything captured at that time (environment, arguments, random seeds) is reset here, at the start
of each run.

The engine carries no files: only modules imported during pre-initialisation exist at run time. So the standard
library modules below are imported here, once, at build time, and `sys.path` is then emptied so a run never looks
for modules on the (sandboxed) filesystem.
"""

import ast
import builtins
import importlib
import json
import linecache
import os
import random
import sys
import traceback

import wasmagent

# The standard library as agents use it for data work and glue code. Modules CPython for WASI lacks are skipped.
_STANDARD_LIBRARY = """
    abc annotationlib argparse array ast asyncio base64 binascii bisect bz2 calendar cmath codecs collections
    collections.abc colorsys contextlib contextvars copy copyreg csv dataclasses datetime decimal difflib dis email
    email.message email.parser email.utils enum errno fnmatch fractions functools getopt gettext glob graphlib gzip
    hashlib heapq hmac html html.entities html.parser inspect io ipaddress itertools json keyword linecache locale
    logging lzma math mimetypes numbers operator os os.path pathlib pickle platform pprint queue quopri random re
    reprlib sched secrets shlex shutil statistics string string.templatelib struct tarfile tempfile textwrap time
    timeit tokenize tomllib traceback types typing unicodedata urllib urllib.error urllib.parse urllib.request
    urllib.response uuid warnings weakref http http.client
    xml.dom.minidom xml.etree.ElementTree xml.sax zipfile zlib zoneinfo
""".split()

for _name in _STANDARD_LIBRARY:
    try:
        importlib.import_module(_name)
    except Exception:
        pass


def _adapt_to_the_sandbox():
    """Fits what the standard library expects of a process to a sandbox with no sockets and no source files."""
    # asyncio's event loop wakes itself through a socket pair, which only matters for other threads and signals;
    # there are neither here, and no sockets to make one from.
    from asyncio import selector_events

    loop = selector_events.BaseSelectorEventLoop
    loop._make_self_pipe = lambda self: None
    loop._close_self_pipe = lambda self: None
    loop._write_to_self = lambda self: None

    # The standard library's source files are not in the sandbox: tracebacks and warnings show the user's own
    # lines (registered in `linecache.cache` for each run) and never look for others on the filesystem.
    def updatecache(filename, module_globals=None):
        return []

    linecache.updatecache = updatecache
    linecache.checkcache = lambda filename=None: None
    # Finding the `~~~^^^` anchors re-parses a line segment, and a segment that does not parse makes CPython look
    # for the source file `<unknown>`: a filesystem access the guest never asked for.
    traceback._extract_caret_anchors_from_line_segment = lambda segment: None


_adapt_to_the_sandbox()


def _route_urllib_through_the_host():
    """`urllib.request.urlopen` for http and https goes through the host's egress path, like `wasmagent.http`.

    The handler runs before urllib's own (which would need sockets) and returns the host's complete response; the
    host follows redirects itself, each hop re-checked, so urllib's redirect handler never sees a 3xx it should
    follow. Non-2xx statuses become `HTTPError` as usual; a refused or failed request becomes `URLError`.
    """
    import email.message
    import io
    import urllib.error
    import urllib.request
    import urllib.response

    from wasmagent import http

    class WasmagentHandler(urllib.request.BaseHandler):
        handler_order = 100

        def _open(self, req):
            # urllib adds `Host` itself (from the URL); the host sets it too, so only a guest-chosen one is sent
            # on (and refused).
            headers = [(k, v) for k, v in req.header_items() if not (k.lower() == "host" and v == req.host)]
            body = req.data
            if body is None:
                body = b""
            elif isinstance(body, str):
                body = body.encode("utf-8")
            elif not isinstance(body, (bytes, bytearray)):
                body = b"".join(bytes(chunk) for chunk in body)
            try:
                raw = http.send(req.get_method(), req.full_url, headers, bytes(body))
            except http.HTTPRequestError as error:
                raise urllib.error.URLError(error) from None
            message = email.message.Message()
            for name, value in raw.headers:
                message[name] = value
            response = urllib.response.addinfourl(io.BytesIO(bytes(raw.body)), message, raw.url, raw.status)
            response.msg = ""
            return response

        http_open = _open
        https_open = _open

    urllib.request.install_opener(urllib.request.build_opener(WasmagentHandler))


_route_urllib_through_the_host()

# Modules that would be escape hatches elsewhere (Pyodide's bridge to JavaScript, native code, processes, raw
# sockets). None of them can reach the host here, because the host grants no such import; refusing them at import
# time gives a clear error instead of a confusing failure later.
_REFUSED_MODULES = {
    "js": "there is no JavaScript host to reach from this sandbox",
    "pyodide": "this is not Pyodide: there is no JavaScript host to reach",
    "pyodide_js": "this is not Pyodide: there is no JavaScript host to reach",
    "ctypes": "native code cannot be loaded in the sandbox",
    "_ctypes": "native code cannot be loaded in the sandbox",
    "subprocess": "processes cannot be started in the sandbox",
    "multiprocessing": "processes cannot be started in the sandbox",
    "socket": "raw sockets are not available; network access goes through allowed_hosts",
    "_socket": "raw sockets are not available; network access goes through allowed_hosts",
    "ssl": "raw sockets are not available; network access goes through allowed_hosts",
    "_ssl": "raw sockets are not available; network access goes through allowed_hosts",
}


class _RefusedModules:
    """A meta-path finder that refuses the modules above with an ImportError saying why."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        root = name.partition(".")[0]
        reason = _REFUSED_MODULES.get(root)
        if reason is not None:
            raise ImportError(f"module {name!r} is not available in the wasmagent sandbox: {reason}", name=name)
        return None


class _NotInSnapshot:
    """The last meta-path finder: a module that was not imported at build time does not exist."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        raise ModuleNotFoundError(
            f"No module named {name!r} (the wasmagent sandbox offers the standard library modules it was built "
            f"with; third-party packages cannot be installed)",
            name=name,
        )


# Preloaded modules keep their own references (asyncio keeps `socket`), but guest code cannot import these again.
for _name in list(sys.modules):
    if _name.partition(".")[0] in _REFUSED_MODULES:
        del sys.modules[_name]
sys.meta_path.insert(0, _RefusedModules)
sys.meta_path.append(_NotInSnapshot)
sys.path.clear()
sys.path_importer_cache.clear()


def _freeze(root="/packages"):
    """Build time only (`wasmagent engine build python`): imports every module of the packages unpacked in `root`,
    so a custom engine's snapshot holds them; a run never sees `root`. Prints one JSON line: the modules imported and
    those that failed to import (a module needing a standard library module the engine was not built with, or an
    optional dependency). Raises when a top-level module fails.
    """
    modules = []
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.endswith(".py") and entry != "__init__.py":
            modules.append(entry[:-3])
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            for directory, subdirectories, files in os.walk(path):
                subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
                if "__init__.py" not in files:
                    subdirectories[:] = []
                    continue
                package = os.path.relpath(directory, root).replace(os.sep, ".")
                modules.append(package)
                modules.extend(f"{package}.{f[:-3]}" for f in sorted(files) if f.endswith(".py") and f != "__init__.py")
    sys.path[:] = [root]
    sys.meta_path.remove(_NotInSnapshot)
    imported, failed = [], {}
    try:
        for name in modules:
            try:
                importlib.import_module(name)
                imported.append(name)
            except BaseException as error:  # an optional submodule may need what the sandbox lacks
                failed[name] = f"{type(error).__name__}: {error}"
    finally:
        sys.meta_path.append(_NotInSnapshot)
        sys.path.clear()
        sys.path_importer_cache.clear()
    # Flushed now: anything left in the buffer would be in the snapshot, and printed by the engine's first run.
    print(json.dumps({"imported": imported, "failed": failed}), flush=True)
    top_level = [name for name in failed if "." not in name]
    if top_level:
        raise ImportError(f"top-level modules failed to import: {', '.join(top_level)}")


def _reset_process(request):
    """Makes the snapshot's process state this run's: environment, arguments, random seed."""
    environ = request.get("env", {})
    for key in list(os.environ):
        if key not in environ:
            del os.environ[key]
    for key, value in environ.items():
        os.environ[key] = value
    sys.argv = [request.get("name", "main.py"), *request.get("args", [])]
    random.seed()


def _split_last_expression(code, filename):
    """Compiles `code` into the statements and, when the last statement is an expression, that expression."""
    module = ast.parse(code, filename=filename, mode="exec")
    last = None
    if module.body and isinstance(module.body[-1], ast.Expr):
        last = ast.Expression(module.body.pop().value)
    body = compile(module, filename, "exec")
    return body, (compile(last, filename, "eval") if last is not None else None)


def _format_exception(error, filename):
    """The traceback text, starting at the first frame of the user's program, without this module's frames."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    if tb is None:
        return "".join(traceback.format_exception_only(type(error), error)).rstrip("\n")
    summary = traceback.TracebackException(type(error), error, tb)
    summary.stack = traceback.StackSummary.from_list([f for f in summary.stack if f.filename != __file__])
    return "".join(summary.format()).rstrip("\n")


def _exit_code(error):
    code = error.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _answer(**fields):
    return json.dumps(fields, separators=(",", ":"))


# A session's namespace: `{"session": true}` requests run in it, so the names one call defines (variables,
# functions, imports) are there in the next. None in the snapshot: every instance starts without one.
_SESSION_SCOPE = None


def _scope(request, filename):
    """A fresh namespace for a run, or the instance's session namespace for a session's call."""
    global _SESSION_SCOPE
    if not request.get("session"):
        return {"__name__": "__main__", "__builtins__": builtins, "__file__": filename}
    if _SESSION_SCOPE is None:
        _SESSION_SCOPE = {"__name__": "__main__", "__builtins__": builtins, "__file__": filename}
    return _SESSION_SCOPE


def _run(request):
    """Runs one program; the answer is JSON: {"value": ...}, {"exit": n} or {"error": {"kind", "message"}}."""
    code = request["code"]
    filename = request.get("name") or "main.py"
    _reset_process(request)
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    scope = _scope(request, filename)
    try:
        body, last = _split_last_expression(code, filename)
        exec(body, scope)
        value = eval(last, scope) if last is not None else None
    except SystemExit as error:
        return _answer(exit=_exit_code(error))
    except BaseException as error:  # the guest program's own failure, reported with its traceback
        return _answer(error={"kind": "exception", "message": _format_exception(error, filename)})
    finally:
        _flush()
    try:
        # Compact, so the answer is exactly the value's JSON plus the 10 bytes of `{"value":` and `}`.
        value_json = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as error:
        message = f"the result ({type(value).__name__}) cannot be converted to JSON: {error}"
        return _answer(error={"kind": "serialization", "message": message})
    return '{"value":' + value_json + "}"


def _entry(request):
    """Runs the program `request` (JSON) describes; the answer is JSON."""
    return _run(json.loads(request))


def _warm_up():
    """Runs two programs at build time, so the snapshot holds what the first run of every instance would otherwise
    build: the interpreter's type and attribute caches and this module's specialised bytecode. Nothing a run can
    observe is left behind: each run resets the environment, arguments and random seed, and the source line cache
    entries are removed here.
    """
    answers = [_run({"code": code, "name": "warm-up.py"}) for code in ("x = [1]\nx[0] + 1", "{}['missing']")]
    linecache.cache.pop("warm-up.py", None)
    if answers[0] != '{"value":2}' or '"kind":"exception"' not in answers[1]:
        raise RuntimeError(f"the build-time warm-up runs went wrong: {answers}")


_warm_up()


def _snapshot_objects():
    """Build time only (`bridge.c` calls it once, after the warm-up): every object reachable from the garbage
    collector's lists, through references and code objects' constants, for `bridge.c` to make immortal.

    An immortal object's reference count is never written again. Every run starts from a fresh copy-on-write
    instance of the snapshot, so each write to an object of the snapshot (a reference count, most often) copies a
    page; with the snapshot's objects immortal, a run writes only the pages it really changes. Immortal objects are
    never freed, which costs nothing here: they lived as long as the instance anyway.
    """
    import gc
    import types

    gc.collect()
    seen = {}
    stack = gc.get_objects()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen[id(item)] = item
        if type(item) is types.CodeType:
            stack.extend((item.co_consts, item.co_names, item.co_varnames, item.co_code, item.co_filename))
        stack.extend(gc.get_referents(item))
    del stack
    return list(seen.values())
