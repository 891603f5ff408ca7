"""A code-execution tool for LangChain (`pip install wasmagent[langchain]`).

    from wasmagent import Sandbox
    from wasmagent.integrations.langchain import SandboxedCodeTool

    tool = SandboxedCodeTool(sandbox=Sandbox(), manifest={"cpu_ms": 5000})
    llm.bind_tools([tool])
"""

from __future__ import annotations

from typing import Any, Literal, Type

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from .. import Sandbox
from . import DESCRIPTION, run_for_model, run_for_model_async


class CodeInput(BaseModel):
    """The tool's arguments."""

    code: str = Field(description="The program to run.")
    language: Literal["python", "javascript"] = Field(default="python", description="python or javascript")


class SandboxedCodeTool(BaseTool):
    """A LangChain tool that runs the model's code in `sandbox` held to `manifest` (deny-all when None)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "run_code"
    description: str = DESCRIPTION
    args_schema: Type[BaseModel] = CodeInput
    sandbox: Sandbox
    manifest: Any = None

    def _run(self, code: str, language: str = "python", **_: Any) -> str:
        return run_for_model(self.sandbox, self.manifest, code, language)

    async def _arun(self, code: str, language: str = "python", **_: Any) -> str:
        return await run_for_model_async(self.sandbox, self.manifest, code, language)
