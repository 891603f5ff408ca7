"""Checked by tests/test_types.py (mypy --strict): the package's types as a user writes against them."""

import asyncio

from wasmagent import Manifest, ManifestError, RunError, RunReport, Sandbox, Session

sandbox = Sandbox(pool_slots=4)


@sandbox.tool("add", "Adds.", {"type": "object"})
def add(a: int, b: int) -> int:
    return a + b


report: RunReport = sandbox.run("1 + 1", language="python", manifest=Manifest.from_dict({"cpu_ms": 100}))
wall: float = report.usage.wall_ms
denied = [f"{d.capability} {d.target}: {d.reason}" for d in report.denials]
kind = report.error.kind if report.error else None
try:
    sandbox.run_wasm(b"\0", manifest="cpu_ms = 100")
except RunError as e:
    print(e.kind, e.report)
except ManifestError as e:
    print(e.field)
session: Session = sandbox.session("javascript")
again: RunReport = asyncio.run(sandbox.run_async("1", "javascript"))
print(wall, denied, kind, session.id, again.to_dict())
wrong: int = report.stdout  # type: ignore[assignment]
