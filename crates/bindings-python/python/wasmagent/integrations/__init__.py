"""Code-execution tools for agent frameworks, each a thin adapter over `Sandbox.run`.

- `wasmagent.integrations.openai_agents.code_tool` (extra `openai-agents`): an OpenAI Agents SDK `FunctionTool`.
- `wasmagent.integrations.langchain.SandboxedCodeTool` (extra `langchain`): a LangChain `BaseTool`.
- `wasmagent.integrations.pydantic_ai.code_tool` (extra `pydantic-ai`): a PydanticAI `Tool`.

Each tool takes `code` and `language` ("python" or "javascript") and answers with `describe(report)`: the outcome,
output, value, error and denials as JSON text a model can read. The manifest is the application's, never the model's.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from .. import ManifestLike, RunReport, Sandbox

DESCRIPTION = (
    "Run a short Python or JavaScript program in an isolated sandbox and get back its stdout, stderr, the value of "
    "its last expression and any error. The sandbox has no network, files or environment unless granted."
)

#: Longest stdout or stderr passed back to the model, in characters; the rest is cut with a note.
MAX_OUTPUT_CHARS = 20_000


def _cut(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f"\n[cut: {len(text) - MAX_OUTPUT_CHARS} more characters]"


def describe(report: RunReport) -> str:
    """The parts of a run report a model needs, as JSON text."""
    summary: Dict[str, Any] = {
        "outcome": report.outcome,
        "stdout": _cut(report.stdout),
        "stderr": _cut(report.stderr),
        "value": report.value,
    }
    if report.exit_code is not None:
        summary["exit_code"] = report.exit_code
    if report.error is not None:
        summary["error"] = {"kind": report.error.kind, "message": _cut(report.error.message)}
    if report.denials:
        summary["denials"] = [
            {"capability": d.capability, "target": d.target, "reason": d.reason} for d in report.denials
        ]
    return json.dumps(summary)


def run_for_model(sandbox: Sandbox, manifest: ManifestLike, code: str, language: str) -> str:
    """Runs `code` for a model: failures are part of the answer, not exceptions."""
    if language not in ("python", "javascript"):
        return json.dumps({"outcome": "refused", "error": f"language {language!r} is not python or javascript"})
    return describe(sandbox.run(code, language=language, manifest=manifest, check=False))


async def run_for_model_async(sandbox: Sandbox, manifest: ManifestLike, code: str, language: str) -> str:
    """`run_for_model` without blocking the event loop."""
    if language not in ("python", "javascript"):
        return json.dumps({"outcome": "refused", "error": f"language {language!r} is not python or javascript"})
    return describe(await sandbox.run_async(code, language, manifest=manifest, check=False))


__all__ = ["DESCRIPTION", "MAX_OUTPUT_CHARS", "describe", "run_for_model", "run_for_model_async"]
