"""A code-execution tool for PydanticAI (`pip install wasmagent[pydantic-ai]`).

    from pydantic_ai import Agent
    from wasmagent import Sandbox
    from wasmagent.integrations.pydantic_ai import code_tool

    agent = Agent("openai:gpt-4o", tools=[code_tool(Sandbox(), manifest={"cpu_ms": 5000})])
"""

from __future__ import annotations

from typing import Literal

from pydantic_ai import Tool

from .. import ManifestLike, Sandbox
from . import DESCRIPTION, run_for_model_async


def code_tool(sandbox: Sandbox, manifest: ManifestLike = None, name: str = "run_code") -> Tool:
    """A PydanticAI `Tool` that runs the model's code in `sandbox` held to `manifest` (deny-all when None)."""

    async def run_code(code: str, language: Literal["python", "javascript"] = "python") -> str:
        """Run code in the sandbox.

        Args:
            code: The program to run.
            language: "python" or "javascript".
        """
        return await run_for_model_async(sandbox, manifest, code, language)

    return Tool(run_code, name=name, description=DESCRIPTION, takes_ctx=False)
