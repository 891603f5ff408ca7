"""Checks that `execute_code` over `/mcp` is admitted like `POST /v1/runs`, with the official MCP Python SDK, and
prints what it saw as one JSON object (crates/cli/tests/mcp.rs asserts on it).

Usage:
  python mcp_admission_client.py BASE_URL API_KEY OTHER_API_KEY

The server runs one run at a time with no queue, and each subject one run at a time. A run that loops until its
CPU deadline holds the slots; while it runs, another request of the same subject and another subject's
`execute_code` are refused, and the metrics show the run in flight.
"""

import asyncio
import json
import sys
import time

from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_sessions import call, http_session

DEADLINE_SECONDS = 120.0


async def metrics(base_url):
    async with create_mcp_http_client() as client:
        return (await client.get(f"{base_url}/metrics")).text


def metric(text, name):
    """The value of the sample `name` (with its labels), or 0 when it is not there."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def main(base_url, api_key, other_key):
    summary = {}
    url = f"{base_url}/mcp"
    async with http_session(url, api_key) as (session, _):
        slow = asyncio.create_task(
            call(session, "execute_code", {"language": "javascript", "code": "while (true) {}"})
        )
        # The slow run holds its slots from admission to its end: wait until the metrics show it in flight.
        started = time.monotonic()
        while metric(await metrics(base_url), "wasmagent_runs_in_flight") < 1:
            if slow.done() or time.monotonic() - started > DEADLINE_SECONDS:
                summary["in_flight_seen"] = False
                break
            await asyncio.sleep(0.05)
        else:
            summary["in_flight_seen"] = True
            # The same subject: its one concurrent-run slot is held for the whole call.
            initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
            accept = {"accept": "application/json, text/event-stream"}
            async with create_mcp_http_client(headers={"x-api-key": api_key}) as client:
                response = await client.post(url, json=initialize, headers=accept)
                summary["same_subject_status"] = response.status_code
            # Another subject: the server's one run slot is taken and nothing may queue.
            async with http_session(url, other_key) as (other, _):
                summary["other_while_busy"] = await call(
                    other, "execute_code", {"language": "javascript", "code": "1 + 1"}
                )
                summary["still_in_flight"] = metric(await metrics(base_url), "wasmagent_runs_in_flight")
                summary["slow"] = await slow
                summary["other_after"] = await call(
                    other, "execute_code", {"language": "javascript", "code": "6 * 7"}
                )
        if not slow.done():
            slow.cancel()
    text = await metrics(base_url)
    summary["metrics"] = {
        "busy": metric(text, 'wasmagent_rejected_requests_total{reason="busy"}'),
        "concurrency_limited": metric(text, 'wasmagent_rejected_requests_total{reason="concurrency_limited"}'),
        "timeout_runs": metric(text, 'wasmagent_runs_total{kernel="js",outcome="timeout"}'),
        "ok_runs": metric(text, 'wasmagent_runs_total{kernel="js",outcome="ok"}'),
        "in_flight": metric(text, "wasmagent_runs_in_flight"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
