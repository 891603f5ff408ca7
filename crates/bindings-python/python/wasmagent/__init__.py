"""Run agent-written Python and JavaScript, and WebAssembly tools, in wasmtime sandboxes held to one manifest.

    from wasmagent import Manifest, Sandbox

    sandbox = Sandbox()
    report = sandbox.run("print(6 * 7)", language="python", manifest=Manifest.from_dict({"cpu_ms": 2000}))
    print(report.outcome, report.stdout)

Every run gets a fresh sandbox; a `Sandbox` is safe to share between threads, and guests run without the GIL.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar, Union

from . import _native
from ._native import Manifest, ManifestError, RunError, SandboxError

__version__: str = _native.__version__

__all__ = [
    "Artifact",
    "Denial",
    "ErrorInfo",
    "HttpExchange",
    "Manifest",
    "ManifestError",
    "RunError",
    "RunReport",
    "Sandbox",
    "SandboxError",
    "Session",
    "ToolCall",
    "Usage",
    "__version__",
]

F = TypeVar("F", bound=Callable[..., Any])
ManifestLike = Union[Manifest, Mapping[str, Any], str, None]


@dataclass(frozen=True)
class ErrorInfo:
    """What went wrong: `kind` is `exception`, `trap`, `timeout`, `memory_limit`, `fuel_exhausted`, ..."""

    kind: str
    message: str


@dataclass(frozen=True)
class Denial:
    """One access the host refused: what kind (`fs.read`, `net.connect`, `tool`, ...), of what, and why."""

    capability: str
    target: str
    reason: str


@dataclass(frozen=True)
class ToolCall:
    """One host tool call the guest made."""

    name: str
    args_digest: str
    outcome: str
    duration_ms: float
    error: Optional[str] = None


@dataclass(frozen=True)
class HttpExchange:
    """One HTTP request the guest made (or was refused)."""

    method: str
    url: str
    outcome: str
    redirects: int
    response_bytes: int
    duration_ms: float
    status: Optional[int] = None
    error: Optional[str] = None


@dataclass(frozen=True)
class Artifact:
    """A file or display value the guest produced."""

    kind: str
    mime: str
    bytes: int
    title: Optional[str] = None
    text: Optional[str] = None


@dataclass(frozen=True)
class Usage:
    """What the run used."""

    wall_ms: float
    fuel_consumed: int
    memory_peak_bytes: int
    host_calls: int
    stdout_bytes: int
    stderr_bytes: int
    code_cache: str


@dataclass(frozen=True)
class RunReport:
    """The run report (schema `wasmagent.run/v1`): what happened, what was refused, what was used."""

    schema: str
    kernel: str
    outcome: str
    value: Any
    stdout: str
    stderr: str
    exit_code: Optional[int]
    error: Optional[ErrorInfo]
    denials: List[Denial]
    tool_calls: List[ToolCall]
    http_requests: List[HttpExchange]
    artifacts: List[Artifact]
    usage: Usage
    manifest_digest: str
    code_digest: str
    signer_key_id: Optional[str]
    _raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def succeeded(self) -> bool:
        """`ok`, or `exit` with code 0."""
        return self.outcome == "ok" or (self.outcome == "exit" and self.exit_code == 0)

    def to_dict(self) -> Dict[str, Any]:
        """The report as the JSON object every wasmagent front end returns."""
        copy: Dict[str, Any] = json.loads(json.dumps(self._raw))
        return copy

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "RunReport":
        """Types a report given as a JSON object."""

        def pick(kind: Any, value: Dict[str, Any]) -> Any:
            names = kind.__dataclass_fields__
            return kind(**{k: v for k, v in value.items() if k in names})

        error = raw.get("error")
        return cls(
            schema=raw["schema"],
            kernel=raw["kernel"],
            outcome=raw["outcome"],
            value=raw.get("value"),
            stdout=raw.get("stdout", ""),
            stderr=raw.get("stderr", ""),
            exit_code=raw.get("exit_code"),
            error=ErrorInfo(**error) if error else None,
            denials=[pick(Denial, d) for d in raw.get("denials", [])],
            tool_calls=[pick(ToolCall, t) for t in raw.get("tool_calls", [])],
            http_requests=[pick(HttpExchange, h) for h in raw.get("http_requests", [])],
            artifacts=[pick(Artifact, a) for a in raw.get("artifacts", [])],
            usage=pick(Usage, raw["usage"]),
            manifest_digest=raw.get("manifest_digest", ""),
            code_digest=raw.get("code_digest", ""),
            signer_key_id=raw.get("signer_key_id"),
            _raw=raw,
        )


def _manifest(manifest: ManifestLike) -> Optional[Manifest]:
    if manifest is None or isinstance(manifest, Manifest):
        return manifest
    if isinstance(manifest, str):
        return Manifest.from_toml(manifest)
    if isinstance(manifest, Mapping):
        return Manifest.from_dict(dict(manifest))
    raise TypeError(f"manifest must be a Manifest, a dict or TOML text, not {type(manifest).__name__}")


def _raise_for(report: RunReport) -> RunReport:
    if report.succeeded:
        return report
    kind = report.error.kind if report.error else report.outcome
    message = report.error.message if report.error else f"the guest exited with code {report.exit_code}"
    error = RunError(f"{kind}: {message}")
    error.kind = kind
    error.report = report
    raise error


_LANGUAGES = {"python": "python", "py": "python", "javascript": "javascript", "js": "javascript"}


class Sandbox:
    """The engine, its kernels and the host tools. Make one per process and share it; every run is a fresh sandbox.

    `cache_dir` keeps compiled code between processes (the first Python or JavaScript run compiles its engine);
    `pool_slots` bounds how many guests run at once.
    """

    def __init__(self, cache_dir: Optional[str] = None, pool_slots: int = 128) -> None:
        self._native = _native.Sandbox(cache_dir=cache_dir, pool_slots=pool_slots)

    def tool(
        self, name: str, description: str = "", schema: Optional[Mapping[str, Any]] = None
    ) -> Callable[[F], F]:
        """Registers the decorated function as host tool `name` (called with the guest's arguments as keywords;
        it may be `async`). Guests see it only where the manifest grants `tool:NAME`."""

        def register(handler: F) -> F:
            self.add_tool(name, handler, description or (handler.__doc__ or "").strip(), schema)
            return handler

        return register

    def add_tool(
        self,
        name: str,
        handler: Callable[..., Any],
        description: str = "",
        schema: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Registers `handler` as host tool `name`."""
        self._native.add_tool(name, description, json.dumps(dict(schema or {"type": "object"})), handler)

    @property
    def tool_names(self) -> List[str]:
        """Names of the registered tools."""
        return list(self._native.tool_names())

    def run(
        self,
        code: str,
        language: str = "python",
        manifest: ManifestLike = None,
        stdin: Union[str, bytes, None] = None,
        args: Sequence[str] = (),
        check: bool = True,
        base_dir: Optional[str] = None,
    ) -> RunReport:
        """Runs `code` ("python" or "javascript") held to `manifest` (deny-all when None). Raises `RunError`
        (carrying the report) when the run did not succeed, unless `check` is False; `ManifestError` when the
        manifest is refused."""
        if language not in _LANGUAGES:
            raise ValueError(f"language {language!r} is not one of 'python', 'javascript'")
        return self._run(_LANGUAGES[language], code, manifest, stdin, args, check, base_dir)

    def run_wasm(
        self,
        module: bytes,
        manifest: ManifestLike = None,
        stdin: Union[str, bytes, None] = None,
        args: Sequence[str] = (),
        check: bool = True,
        base_dir: Optional[str] = None,
    ) -> RunReport:
        """Runs a WebAssembly module or component (WASI) held to `manifest`."""
        return self._run("wasm", bytes(module), manifest, stdin, args, check, base_dir)

    def session(self, language: str = "python", manifest: ManifestLike = None, base_dir: Optional[str] = None) -> "Session":
        """Opens a session: one live sandbox whose definitions and state carry over between runs, held to
        `manifest` (deny-all when None) and the session limits. Use it as a context manager, or `close()` it."""
        if language not in _LANGUAGES:
            raise ValueError(f"language {language!r} is not one of 'python', 'javascript'")
        try:
            native = self._native.open_session(_LANGUAGES[language], _manifest(manifest), base_dir)
        except RunError as error:
            error.report = None
            raise
        return Session(native)

    async def run_async(self, code: str, language: str = "python", **options: Any) -> RunReport:
        """`run` on a worker thread: the event loop goes on while the guest runs."""
        return await asyncio.to_thread(self.run, code, language, **options)

    async def run_wasm_async(self, module: bytes, **options: Any) -> RunReport:
        """`run_wasm` on a worker thread."""
        return await asyncio.to_thread(self.run_wasm, module, **options)

    def _run(
        self,
        language: str,
        code: Union[str, bytes],
        manifest: ManifestLike,
        stdin: Union[str, bytes, None],
        args: Sequence[str],
        check: bool,
        base_dir: Optional[str],
    ) -> RunReport:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        parsed = _manifest(manifest)
        return _native_run(lambda: self._native.run(language, code, parsed, data, list(args), base_dir), check)


def _native_run(call: Callable[[], str], check: bool) -> RunReport:
    try:
        text = call()
    except RunError as error:
        raw = getattr(error, "report_json", None)
        error.report = RunReport.from_dict(json.loads(raw)) if raw else None
        raise
    report = RunReport.from_dict(json.loads(text))
    return _raise_for(report) if check else report


class Session:
    """A live sandbox kept between runs (`Sandbox.session`). Runs in one session happen one at a time."""

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def id(self) -> str:
        """The session's id (reports carry it as `session_id`)."""
        return str(self._native.id)

    def run(self, code: str, stdin: Union[str, bytes, None] = None, check: bool = True) -> RunReport:
        """Runs `code` in the session; raises `RunError` as `Sandbox.run` does (kind `session_ended` once the
        session has ended)."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return _native_run(lambda: self._native.run(code, data), check)

    async def run_async(self, code: str, **options: Any) -> RunReport:
        """`run` on a worker thread."""
        return await asyncio.to_thread(self.run, code, **options)

    def close(self) -> None:
        """Ends the session and frees its sandbox."""
        self._native.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
