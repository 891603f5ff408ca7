"""`request_capability` through the official MCP Python SDK: an elicitation handler that approves for the session,
one that approves once, one that declines, a request above the operator's maximum manifest (refused without asking),
a floor address (nothing to approve), and a client without elicitation (refused). Prints a JSON summary as its last
line; crates/cli/tests/mcp.rs asserts on it.

usage: mcp_escalation_client.py WASMAGENT MANIFEST MAX_MANIFEST AUDIT_LOG KEY DATA_FILE
       mcp_escalation_client.py http URL API_KEY DATA_FILE   (`wasmagent serve` with [mcp.manifest]: one approval
                                                            for the session, over streamable HTTP)"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client, types

from mcp_sessions import call, http_session


def read_code(path):
    return f"open({path!r}).read().strip()"


class Person:
    """An elicitation handler that gives one answer and remembers what it was asked."""

    def __init__(self, action, approve=None):
        self.action, self.approve, self.asked = action, approve, []

    async def __call__(self, context, params):
        self.asked.append({"message": params.message, "schema": params.requested_schema})
        content = {"approve": self.approve} if self.action == "accept" else None
        return types.ElicitResult(action=self.action, content=content)


async def connection(argv, person, steps):
    """Runs `steps(session)` on a fresh `wasmagent mcp` connection whose client answers elicitations with `person`."""
    binary, manifest, maximum, audit_log, key = argv[:5]
    env = {"WASMAGENT_CACHE_DIR": os.environ["WASMAGENT_CACHE_DIR"]}
    args = ["mcp", "--manifest", manifest, "--max-manifest", maximum, "--record", audit_log, "--record-key", key]
    params = StdioServerParameters(command=binary, args=args, env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, elicitation_callback=person) as session:
            await session.initialize()
            return await steps(session)


async def main(argv):
    data_file = argv[5]
    run = {"language": "python", "code": read_code(data_file)}
    ask = {"capability": f"fs.read {data_file}", "reason": "The task is to sum the numbers in this file."}
    summary = {}

    async def session_steps(session):
        tools = await session.list_tools()
        return {
            "tools": sorted(tool.name for tool in tools.tools),
            "before": await call(session, "execute_code", run),
            "request": await call(session, "request_capability", ask),
            "after": await call(session, "execute_code", run),
            "again": await call(session, "execute_code", run),
        }

    person = Person("accept", "session")
    summary["session"] = await connection(argv, person, session_steps)
    summary["session"]["asked"] = person.asked

    async def once_steps(session):
        return {
            "request": await call(session, "request_capability", ask),
            "after": await call(session, "execute_code", run),
            "again": await call(session, "execute_code", run),
        }

    person = Person("accept", "once")
    summary["once"] = await connection(argv, person, once_steps)

    async def declined_steps(session):
        return {
            "request": await call(session, "request_capability", ask),
            "after": await call(session, "execute_code", run),
        }

    person = Person("decline")
    summary["declined"] = await connection(argv, person, declined_steps)

    async def beyond_steps(session):
        return {
            "above_maximum": await call(
                session, "request_capability", {"capability": "fs.read /etc/hostname", "reason": "curious"}
            ),
            "floor": await call(
                session,
                "request_capability",
                {"capability": "net.http http://169.254.169.254/latest/meta-data/", "reason": "need credentials"},
            ),
            "malformed": await call(session, "request_capability", {"capability": "root", "reason": "please"}),
        }

    person = Person("accept", "session")
    summary["beyond"] = await connection(argv, person, beyond_steps)
    summary["beyond"]["asked"] = len(person.asked)

    async def no_elicitation_steps(session):
        return {"request": await call(session, "request_capability", ask)}

    summary["no_elicitation"] = await connection(argv, None, no_elicitation_steps)
    print(json.dumps(summary, default=str))


async def over_http(url, api_key, data_file):
    """One approval for the MCP session over streamable HTTP; a second session starts without it."""
    run = {"language": "python", "code": read_code(data_file)}
    ask = {"capability": f"fs.read {data_file}", "reason": "The task is to sum the numbers in this file."}
    person = Person("accept", "session")
    async with http_session(url, api_key, elicitation_callback=person) as (session, _):
        tools = await session.list_tools()
        summary = {
            "tools": sorted(tool.name for tool in tools.tools),
            "before": await call(session, "execute_code", run),
            "request": await call(session, "request_capability", ask),
            "after": await call(session, "execute_code", run),
        }
    async with http_session(url, api_key, elicitation_callback=person) as (session, _):
        summary["next_session"] = await call(session, "execute_code", run)
    summary["asked"] = len(person.asked)
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    if sys.argv[1] == "http":
        asyncio.run(over_http(*sys.argv[2:5]))
    else:
        asyncio.run(main(sys.argv[1:]))
