"""Type stubs for the native half of `wasmagent` (crates/bindings-python/src/lib.rs)."""

from typing import Any, Callable, Dict, List, Optional, Union

__version__: str

class SandboxError(Exception):
    """Base class of wasmagent's errors."""

class ManifestError(SandboxError):
    """The manifest was refused."""

    field: Optional[str]

class RunError(SandboxError):
    """The run did not succeed, or could not start."""

    kind: str
    report: Optional[Any]
    report_json: Optional[str]

class Manifest:
    def __init__(self) -> None: ...
    @staticmethod
    def from_toml(text: str) -> "Manifest": ...
    @staticmethod
    def from_json(text: str) -> "Manifest": ...
    @staticmethod
    def from_dict(value: Dict[str, Any]) -> "Manifest": ...
    def to_json(self) -> str: ...

class Session:
    @property
    def id(self) -> str: ...
    def run(self, code: str, stdin: Optional[bytes] = None) -> str: ...
    def close(self) -> None: ...

class Sandbox:
    def __init__(self, cache_dir: Optional[str] = None, pool_slots: int = 128) -> None: ...
    def add_tool(self, name: str, description: str, schema_json: str, handler: Callable[..., Any]) -> None: ...
    def tool_names(self) -> List[str]: ...
    def open_session(
        self, language: str, manifest: Optional[Manifest] = None, base_dir: Optional[str] = None
    ) -> Session: ...
    def run(
        self,
        language: str,
        code: Union[str, bytes],
        manifest: Optional[Manifest] = None,
        stdin: Optional[bytes] = None,
        args: List[str] = ...,
        base_dir: Optional[str] = None,
    ) -> str: ...
