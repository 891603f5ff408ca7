"""Drives `wasmagent mcp` over stdio with the official MCP Python SDK and prints what it saw as one JSON object.

Usage: python mcp_client.py WASMAGENT_BINARY TIMEOUT_MANIFEST MAX_CODE_BYTES

The Rust test (crates/cli/tests/mcp.rs) runs this with the SDK's virtual environment and asserts on the summary; this
script only records, so every expectation lives in one place.
"""

import asyncio
import json
import sys

from mcp_sessions import call, stdio_session


async def main(binary, timeout_manifest, max_code_bytes):
    summary = {}
    async with stdio_session(binary) as (session, init):
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
    async with stdio_session(binary, "--manifest", timeout_manifest) as (session, _):
        summary["infinite_loop"] = await call(session, "execute_code", {"language": "javascript", "code": "while(true){}"})
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
