"""Sessions and calls shared by the MCP test clients (mcp_client.py, mcp_tools_client.py), on the official MCP Python
SDK. Each client records what it saw; the Rust tests in crates/cli/tests/mcp.rs assert on it."""

import os
import time
from contextlib import asynccontextmanager

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

# Generous: the first run of each language may compile its engine on a busy machine. A hang still fails.
CALL_TIMEOUT_SECONDS = 300.0


@asynccontextmanager
async def stdio_session(binary, *args, inherit_path=False):
    """`wasmagent mcp ARGS` on stdio, with only the cache directory (and `PATH`, if asked: upstream servers are found
    through it) in its environment."""
    env = {"WASMAGENT_CACHE_DIR": os.environ["WASMAGENT_CACHE_DIR"]}
    if inherit_path:
        env["PATH"] = os.environ.get("PATH", "")
    params = StdioServerParameters(command=binary, args=["mcp", *args], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            yield session, init


@asynccontextmanager
async def http_session(url, api_key, elicitation_callback=None):
    """An MCP session over streamable HTTP, authenticated with `api_key`, answering elicitations with
    `elicitation_callback` (none: the client declares no elicitation support)."""
    async with create_mcp_http_client(headers={"x-api-key": api_key}) as client:
        async with streamable_http_client(url, http_client=client) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write, elicitation_callback=elicitation_callback) as session:
                init = await session.initialize()
                yield session, init


async def call(session, name, arguments):
    """Calls a tool and records its outcome, text, structured content and duration."""
    started = time.monotonic()
    result = await session.call_tool(name, arguments, read_timeout_seconds=CALL_TIMEOUT_SECONDS)
    return {
        "is_error": result.is_error,
        "text": "\n".join(block.text for block in result.content if block.type == "text"),
        "structured": result.structured_content,
        "seconds": round(time.monotonic() - started, 3),
    }
