import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import wasmagent
from wasmagent import Manifest, ManifestError, RunError, RunReport

from conftest import LOOP_RAN

TOOLS = {"extra_capabilities": ["tool:*"], "cpu_ms": 10_000}

# (module (func (export "_start"))) and (module (func (export "_start") unreachable)), as bytes.
EMPTY_MODULE = bytes.fromhex("0061736d0100000001040160000003020100070a01065f73746172740000" + "0a040102000b")
TRAP_MODULE = bytes.fromhex("0061736d0100000001040160000003020100070a01065f73746172740000" + "0a05010300000b")


def test_version_is_the_workspace_version():
    cargo = (Path(__file__).parents[3] / "Cargo.toml").read_text()
    workspace = re.search(r'\[workspace\.package\][^\[]*?version = "([^"]+)"', cargo).group(1)
    assert wasmagent.__version__ == workspace


def test_python_run_has_typed_report(sandbox):
    report = sandbox.run("import sys\nprint('hi', file=sys.stderr)\nprint(6 * 7)\n6 * 7", language="python")
    assert isinstance(report, RunReport)
    assert (report.outcome, report.kernel, report.stdout, report.stderr) == ("ok", "python", "42\n", "hi\n")
    assert report.value == 42
    assert report.usage.wall_ms > 0 and report.succeeded
    raw = report.to_dict()
    assert raw["schema"] == "wasmagent.run/v1" and raw["stdout"] == "42\n"
    json.dumps(raw)


def test_javascript_run_with_stdin(sandbox):
    report = sandbox.run("console.log('js'); 2 ** 10", language="javascript", stdin="ignored")
    assert (report.kernel, report.stdout, report.value) == ("js", "js\n", 1024)


def test_python_reads_stdin(sandbox):
    report = sandbox.run("import sys\nprint(sys.stdin.read().upper())", stdin=b"from the host")
    assert report.stdout == "FROM THE HOST\n"


def test_wasm_module_runs_and_traps(sandbox):
    assert sandbox.run_wasm(EMPTY_MODULE).outcome in ("ok", "exit")
    with pytest.raises(RunError) as caught:
        sandbox.run_wasm(TRAP_MODULE)
    assert caught.value.kind == "trap" and caught.value.report.outcome == "error"


def test_invalid_wasm_is_a_run_error_without_report(sandbox):
    with pytest.raises(RunError) as caught:
        sandbox.run_wasm(b"not wasm")
    assert caught.value.kind == "invalid_code" and caught.value.report is None


def test_exception_raises_run_error_carrying_the_report(sandbox):
    with pytest.raises(RunError) as caught:
        sandbox.run("raise KeyError('boom')")
    assert caught.value.kind == "exception"
    assert "KeyError" in caught.value.report.error.message
    unchecked = sandbox.run("raise KeyError('boom')", check=False)
    assert unchecked.outcome == "error" and unchecked.error.kind == "exception"


def test_manifest_forms_and_errors():
    toml = Manifest.from_toml('cpu_ms = 1500\nallowed_hosts = ["api.example.com"]')
    as_dict = Manifest.from_dict({"cpuMs": 1500, "allowedHosts": ["api.example.com"]})
    assert json.loads(toml.to_json()) == json.loads(as_dict.to_json())
    with pytest.raises(ManifestError) as caught:
        Manifest.from_dict({"cpu_ms": 1, "no_such_field": True})
    assert "no_such_field" in str(caught.value)
    with pytest.raises(ManifestError) as caught:
        Manifest.from_toml("cpu_ms = [")
    assert isinstance(caught.value, wasmagent.SandboxError)


def test_manifest_above_ceiling_is_refused_at_run(sandbox):
    with pytest.raises(ManifestError) as caught:
        sandbox.run("1", manifest={"cpu_ms": 10**12})
    assert caught.value.field == "cpu_ms"


def test_denied_tool_and_network(sandbox):
    report = sandbox.run(
        "from wasmagent import tools\ntry:\n    tools.add(a=1, b=2)\nexcept Exception as e:\n    print(type(e).__name__)\n"
        "import urllib.request\ntry:\n    urllib.request.urlopen('http://127.0.0.1:9/')\nexcept Exception as e:\n"
        "    print('net refused')\n",
        manifest={"cpu_ms": 10_000},
    )
    capabilities = {d.capability for d in report.denials}
    assert "tool" in capabilities and "net.http" in capabilities, report.denials
    assert "net refused" in report.stdout
    assert all(d.reason for d in report.denials)


def test_timeout(sandbox):
    started = time.monotonic()
    with pytest.raises(RunError) as caught:
        sandbox.run("while True:\n    pass", manifest={"cpu_ms": 300})
    elapsed = time.monotonic() - started
    assert caught.value.kind == "timeout" and caught.value.report.outcome == "timeout"
    assert elapsed < 10, elapsed


def test_python_guest_calls_python_tools(sandbox):
    code = (
        "from wasmagent import tools\n"
        "print(tools.add(a=2, b=40))\n"
        "print(tools.lookup(key='k')['found'])\n"
        "try:\n    tools.fail()\nexcept Exception as e:\n    print('caught', e)\n"
    )
    report = sandbox.run(code, manifest=TOOLS)
    lines = report.stdout.splitlines()
    assert lines[0] == "42" and lines[1] == "True"
    assert "no such account" in lines[2] and "ValueError" in lines[2]
    assert [c.name for c in report.tool_calls] == ["add", "lookup", "fail"]
    assert [c.outcome for c in report.tool_calls][:2] == ["ok", "ok"]


def test_javascript_guest_calls_python_tool(sandbox):
    report = sandbox.run("tools.add({a: 1.5, b: 2})", language="javascript", manifest=TOOLS)
    assert report.value == 3.5 and report.tool_calls[0].name == "add"


def test_tool_registration_is_checked():
    box = wasmagent.Sandbox()
    box.add_tool("ok_name", lambda: 1)
    with pytest.raises(ValueError):
        box.add_tool("ok_name", lambda: 2)
    with pytest.raises(ValueError):
        box.add_tool("bad name", lambda: 2)
    assert box.tool_names == ["ok_name"]


def test_many_runs_from_threads(sandbox):
    def run(i):
        language = "python" if i % 2 else "javascript"
        code = f"{i} * 3" if language == "python" else f"tools.add({{a: {i}, b: {i}}})"
        return sandbox.run(code, language=language, manifest=TOOLS).value

    with ThreadPoolExecutor(max_workers=8) as pool:
        values = list(pool.map(run, range(24)))
    assert values == [i * 3 if i % 2 else i * 2 for i in range(24)]


def test_many_runs_from_asyncio(sandbox):
    async def main():
        return await asyncio.gather(
            *(sandbox.run_async(f"console.log({i}); {i}", "javascript") for i in range(16)),
            *(sandbox.run_async(f"{i} + 100", "python") for i in range(8)),
        )

    reports = asyncio.run(main())
    assert [r.value for r in reports] == list(range(16)) + [i + 100 for i in range(8)]


def test_asyncio_does_not_block_the_loop(sandbox):
    """The guest waits (in a tool) until the event loop has run another task: a blocked loop would never let it."""
    LOOP_RAN.clear()

    async def main():
        run = asyncio.ensure_future(
            sandbox.run_async("from wasmagent import tools\ntools.wait_for_loop()", manifest=TOOLS)
        )
        await asyncio.sleep(0)
        LOOP_RAN.set()
        return await run

    report = asyncio.run(main())
    assert report.value is True


def test_sessions_keep_state_until_closed(sandbox):
    with sandbox.session("python", manifest={"cpu_ms": 5000}) as session:
        session.run("x = 41")
        report = session.run("x + 1")
        assert report.value == 42 and report.to_dict()["session_id"] == session.id
    with pytest.raises(RunError) as caught:
        session.run("x")
    assert caught.value.kind == "session_ended" and caught.value.report is None
    js = sandbox.session("javascript")
    js.run("globalThis.n = 1")
    assert asyncio.run(js.run_async("n += 1; n")).value == 2
    js.close()
    with pytest.raises(ValueError):
        sandbox.session("wasm")
