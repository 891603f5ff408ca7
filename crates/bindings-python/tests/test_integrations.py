"""Each framework's own tool object, invoked the way the framework invokes it (no model: the framework's test
doubles or its invocation entry points)."""

import asyncio
import json

import agents

WITH_DENIAL = "import urllib.request\ntry:\n    urllib.request.urlopen('http://127.0.0.1:9/')\nexcept Exception:\n    pass\n"


def test_openai_agents_function_tool(sandbox):
    from agents.tool_context import ToolContext

    from wasmagent.integrations.openai_agents import code_tool

    tool = code_tool(sandbox, manifest={"cpu_ms": 5000})
    assert isinstance(tool, agents.FunctionTool) and tool.name == "run_code"
    assert set(tool.params_json_schema["properties"]) == {"code", "language"}

    async def invoke(args):
        text = json.dumps(args)
        context = ToolContext(context=None, tool_name=tool.name, tool_call_id="call_1", tool_arguments=text)
        return await tool.on_invoke_tool(context, text)

    answer = json.loads(asyncio.run(invoke({"code": "print(sum(range(10)))", "language": "python"})))
    assert answer["outcome"] == "ok" and answer["stdout"] == "45\n"
    answer = json.loads(asyncio.run(invoke({"code": "throw new Error('nope')", "language": "javascript"})))
    assert answer["outcome"] == "error" and "nope" in answer["error"]["message"]
    answer = json.loads(asyncio.run(invoke({"code": WITH_DENIAL, "language": "python"})))
    assert answer["denials"][0]["capability"] == "net.http"


def test_langchain_base_tool(sandbox):
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import BaseTool

    from wasmagent.integrations.langchain import SandboxedCodeTool

    tool = SandboxedCodeTool(sandbox=sandbox, manifest={"cpu_ms": 5000})
    assert isinstance(tool, BaseTool)
    assert set(tool.tool_call_schema.model_json_schema()["properties"]) == {"code", "language"}
    answer = json.loads(tool.invoke({"code": "[1, 2].map(x => x * 2)", "language": "javascript"}))
    assert answer["value"] == [2, 4]
    # As an agent executor calls it: a ToolCall in, a ToolMessage out.
    message = asyncio.run(
        tool.ainvoke({"type": "tool_call", "id": "call_7", "name": "run_code", "args": {"code": "print('lc')"}})
    )
    assert isinstance(message, ToolMessage) and message.tool_call_id == "call_7"
    assert json.loads(message.content)["stdout"] == "lc\n"


def test_pydantic_ai_tool_through_an_agent(sandbox):
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from wasmagent.integrations.pydantic_ai import code_tool

    seen = []

    def model(messages, info: AgentInfo) -> ModelResponse:
        returns = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
        if not returns:
            assert [t.name for t in info.function_tools] == ["run_code"]
            return ModelResponse(parts=[ToolCallPart("run_code", {"code": "console.log(7 * 6)", "language": "javascript"})])
        seen.append(json.loads(returns[0].content))
        return ModelResponse(parts=[TextPart("done")])

    agent = Agent(FunctionModel(model), tools=[code_tool(sandbox, manifest={"cpu_ms": 5000})])
    result = agent.run_sync("compute")
    assert result.output == "done"
    assert seen[0]["outcome"] == "ok" and seen[0]["stdout"] == "42\n"
