"""Drives `wasmagent mcp --browser` with the official MCP Python SDK: code mode in both languages calls the browser
tools on a loopback page, and search_docs lists them. Prints what it saw as one JSON object (the Rust test in
crates/cli/tests/browser.rs asserts on it).

Usage:
  python mcp_browser_client.py WASMAGENT_BINARY MANIFEST ALLOW_PRIVATE URL
"""

import asyncio
import json
import sys

from mcp_sessions import call, stdio_session


async def main():
    binary, manifest, allow_private, url = sys.argv[1:5]
    args = ["--manifest", manifest, "--browser", "--allow-private", allow_private]
    summary = {}
    async with stdio_session(binary, *args, inherit_path=True) as (session, _init):
        summary["search"] = await call(session, "search_docs", {"query": "browser page screenshot extract", "limit": 10})
        code = f'const page = tools.browser.navigate({{url: "{url}"}}); ' \
            'JSON.stringify([page.title, tools.browser.extract({selectors: {price: "#price"}}).price])'
        summary["js"] = await call(session, "execute_code", {"language": "javascript", "code": code})
        code = f'from wasmagent import tools\ntools.browser.navigate(url="{url}")\n' \
            'tools.browser.evaluate(expression="document.title")["value"]'
        summary["python"] = await call(session, "execute_code", {"language": "python", "code": code})
    print(json.dumps(summary))


asyncio.run(main())
