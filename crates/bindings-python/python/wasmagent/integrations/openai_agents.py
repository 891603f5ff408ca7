"""A code-execution tool for the OpenAI Agents SDK (`pip install wasmagent[openai-agents]`).

    from agents import Agent
    from wasmagent import Sandbox
    from wasmagent.integrations.openai_agents import code_tool

    agent = Agent(name="analyst", tools=[code_tool(Sandbox(), manifest={"cpu_ms": 5000})])
"""

from __future__ import annotations

from typing import Literal

from agents import FunctionTool, function_tool

from .. import ManifestLike, Sandbox
from . import DESCRIPTION, run_for_model_async


def code_tool(sandbox: Sandbox, manifest: ManifestLike = None, name: str = "run_code") -> FunctionTool:
    """A `FunctionTool` that runs the model's code in `sandbox` held to `manifest` (deny-all when None)."""

    async def run_code(code: str, language: Literal["python", "javascript"] = "python") -> str:
        """Run code in the sandbox.

        Args:
            code: The program to run.
            language: "python" or "javascript".
        """
        return await run_for_model_async(sandbox, manifest, code, language)

    return function_tool(run_code, name_override=name, description_override=DESCRIPTION)
