"""Drives wasmagent's MCP server with host tools, over stdio or streamable HTTP, with the official MCP Python SDK,
and prints what it saw as one JSON object (the Rust test in crates/cli/tests/mcp.rs asserts on it).

Usage:
  python mcp_tools_client.py stdio WASMAGENT_BINARY TOOLS_TOML MANIFEST
  python mcp_tools_client.py http URL API_KEY

The tools file declares a WASM micro-tool `text.echo`, an ungranted micro-tool `files.reader`, and the upstream
server tests/upstream_server.py of the toolbox crate as namespace `up`; the manifest grants `tool:text.*` and
`tool:up.*`.
"""

import asyncio
import json
import sys

from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_sessions import call, http_session, stdio_session


def js(code):
    return {"language": "javascript", "code": code}


def py(code):
    return {"language": "python", "code": code}


async def exercise(session, init, summary, upstream):
    summary["server_name"] = init.server_info.name
    tools = await session.list_tools()
    summary["tools"] = sorted(tool.name for tool in tools.tools)
    summary["search"] = await call(session, "search_docs", {"query": "echo arguments", "limit": 3})
    summary["js_tool"] = await call(session, "execute_code", js("tools.text.echo({a: 1}).echo.a + 41"))
    summary["python_tool"] = await call(
        session, "execute_code", py("from wasmagent import tools\ntools.text.echo(b=2)['echo']['b'] * 10")
    )
    summary["ungranted"] = await call(
        session, "execute_code", py("from wasmagent import tools\ntools.call('files.reader', {})")
    )
    if upstream:
        summary["js_upstream"] = await call(session, "execute_code", js("tools.up.add({a: 2, b: 3}).sum"))
        summary["python_upstream"] = await call(
            session, "execute_code", py("from wasmagent import tools\ntools.up.add(a=20, b=22)['sum']")
        )
        if "text.echo" in summary["tools"]:
            summary["direct"] = await call(session, "text.echo", {"c": 3})
        summary["upstream_dies"] = await call(session, "execute_code", js("tools.up.crash({})"))
        summary["after_upstream_died"] = await call(session, "execute_code", js("6 * 7"))


async def main(mode, *args):
    summary = {}
    if mode == "stdio":
        binary, tools_toml, manifest = args
        async with stdio_session(
            binary, "--tools", tools_toml, "--manifest", manifest, "--expose-tools", inherit_path=True
        ) as opened:
            await exercise(*opened, summary, upstream=True)
    else:
        url, api_key = args
        async with http_session(url, api_key) as opened:
            await exercise(*opened, summary, upstream=False)
        async def wrong_key():
            async with http_session(url, "wrong-key") as (session, _):
                await session.list_tools()

        try:
            await asyncio.wait_for(wrong_key(), 60)
            summary["wrong_key"] = "accepted"
        except BaseException as error:  # the SDK raises an exception group around the HTTP error
            summary["wrong_key"] = repr(error)
        # The status itself, which the SDK's exception does not carry.
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        accept = {"accept": "application/json, text/event-stream"}
        for name, key in [("wrong_key_status", "wrong-key"), ("no_key_status", None)]:
            headers = {"x-api-key": key} if key else {}
            async with create_mcp_http_client(headers=headers) as client:
                response = await client.post(url, json=initialize, headers=accept)
                summary[name] = response.status_code
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
