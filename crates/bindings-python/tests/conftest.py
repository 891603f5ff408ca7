import threading

import pytest

from wasmagent import Sandbox

# Set by a test's event loop while a guest waits in the `wait_for_loop` tool (test_asyncio_does_not_block_the_loop).
LOOP_RAN = threading.Event()


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """One sandbox for the whole suite: its engines compile once. Tools are added before its first run."""
    box = Sandbox()

    @box.tool("add", "Adds a and b.", {"type": "object", "properties": {"a": {"type": "number"}}})
    def add(a, b):
        return a + b

    @box.tool("fail", "Always raises.")
    def fail(**_):
        raise ValueError("no such account")

    @box.tool("lookup", "An async tool.")
    async def lookup(key):
        return {"key": key, "found": True}

    @box.tool("wait_for_loop", "Waits until the test's event loop has run.")
    def wait_for_loop():
        return LOOP_RAN.wait(timeout=30)

    return box
