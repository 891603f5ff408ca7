"""What wasmagent offers to Python code in the sandbox: `from wasmagent import tools`, `from wasmagent import http`
and `from wasmagent import display`.

`tools.NAME(**kwargs)` or `tools.call("NAME", {...})` calls a host tool synchronously, JSON in and JSON out. Dotted
names work as attributes (`tools.github.search_issues(q="...")`). The host decides on every call whether the tool is
granted; a refused or failing call raises `ToolError`.
"""

import json

import _wasmagent_host as _host

from wasmagent import display, http

__all__ = ["ToolError", "display", "http", "tools"]


class ToolError(Exception):
    """A host tool call failed or was refused; the message says why."""


def _call(name, args):
    if not isinstance(args, dict):
        raise TypeError(f"tool arguments must be a dict, not {type(args).__name__}")
    try:
        text = json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"tool arguments cannot be converted to JSON: {error}") from None
    try:
        result = _host.call_tool(name, text)
    except _host.HostError as error:
        raise ToolError(str(error)) from None
    return json.loads(result)


class _Tool:
    """A tool, or a namespace of tools, by name."""

    __slots__ = ("_name",)

    def __init__(self, name):
        self._name = name

    def __getattr__(self, part):
        if part.startswith("__"):
            raise AttributeError(part)
        return _Tool(f"{self._name}.{part}")

    def __call__(self, args=None, /, **kwargs):
        if args is not None and kwargs:
            raise TypeError("pass either a dict of arguments or keyword arguments, not both")
        return _call(self._name, args if args is not None else kwargs)

    def __repr__(self):
        return f"<wasmagent tool {self._name}>"


class _Tools:
    """`tools.NAME(**kwargs)` and `tools.call(name, args)`."""

    __slots__ = ()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Tool(name)

    def call(self, name, args=None):
        """Calls the tool `name` with the dict `args`."""
        if not isinstance(name, str):
            raise TypeError("the tool name must be a string")
        return _call(name, {} if args is None else args)


tools = _Tools()
