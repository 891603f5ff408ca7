"""Drives `wasmagent mcp` over stdio with the official MCP Python SDK and prints what it saw as one JSON object.

Usage: python mcp_client.py WASMAGENT_BINARY TIMEOUT_MANIFEST MAX_CODE_BYTES

The Rust test (crates/cli/tests/mcp.rs) runs this with the SDK's virtual environment and asserts on the summary; this
script only records, so every expectation lives in one place.
"""

import asyncio
import json
import os
import sys
import time
from contextlib import asynccontextmanager

from mcp import ClientSession, StdioServerParameters, stdio_client

# Generous: the first run of each language may compile its engine on a busy machine. A hang still fails.
CALL_TIMEOUT_SECONDS = 300.0


@asynccontextmanager
async def server(binary, *args):
    env = {"WASMAGENT_CACHE_DIR": os.environ["WASMAGENT_CACHE_DIR"]}
    params = StdioServerParameters(command=binary, args=["mcp", *args], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            yield session, init


async def call(session, name, arguments):
    started = time.monotonic()
    result = await session.call_tool(name, arguments, read_timeout_seconds=CALL_TIMEOUT_SECONDS)
    return {
        "is_error": result.is_error,
        "text": "\n".join(block.text for block in result.content if block.type == "text"),
        "structured": result.structured_content,
        "seconds": round(time.monotonic() - started, 3),
    }


async def main(binary, timeout_manifest, max_code_bytes):
    summary = {}
    async with server(binary) as (session, init):
        summary["server_name"] = init.server_info.name
        tools = await session.list_tools()
        summary["tools"] = sorted(tool.name for tool in tools.tools)
        summary["js"] = await call(session, "execute_code", {"language": "javascript", "code": "console.log('hi'); 1+1"})
        summary["python"] = await call(
            session, "execute_code", {"language": "python", "code": "print('hello')\nsum(range(5))"}
        )
        summary["search"] = await call(session, "search_docs", {"query": "github issues"})
        summary["unknown_language"] = await call(session, "execute_code", {"language": "cobol", "code": "DISPLAY 1"})
        summary["js_syntax_error"] = await call(session, "execute_code", {"language": "javascript", "code": "1 +* 2"})
        summary["python_syntax_error"] = await call(session, "execute_code", {"language": "python", "code": "def f(:"})
        summary["oversized"] = await call(
            session, "execute_code", {"language": "javascript", "code": "1;" + " " * max_code_bytes}
        )
        # The session is still usable after every error.
        summary["after_errors"] = await call(session, "execute_code", {"language": "javascript", "code": "40 + 2"})
    async with server(binary, "--manifest", timeout_manifest) as (session, _):
        summary["infinite_loop"] = await call(session, "execute_code", {"language": "javascript", "code": "while(true){}"})
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
