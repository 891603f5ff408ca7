"""Artifacts from Python code in the sandbox: `from wasmagent import display`.

`display.html(text)`, `display.svg(text)`, `display.markdown(text)`, `display.table(rows)`, `display.json(value)`
and `display.image(data, mime)` add an artifact to the run report, each with an optional `title`. They return True
when the artifact was added and False when the host refused it under `max_artifact_bytes` (or past the number of
artifacts a run may show); the report's denials say why. A malformed call raises TypeError or ValueError.
"""

import json as _json

import _wasmagent_host as _host

__all__ = ["html", "image", "json", "markdown", "svg", "table"]


def _show(kind, content, title, mime=""):
    if title is not None and not isinstance(title, str):
        raise TypeError(f"display.{kind}: the title must be a str, not {type(title).__name__}")
    meta = _json.dumps({"kind": kind, "mime": mime, "title": title}).encode("utf-8")
    try:
        return _host.artifact(meta, bytes(content))
    except _host.HostError as error:
        raise ValueError(str(error)) from None


def _text(kind, text, title):
    if not isinstance(text, str):
        raise TypeError(f"display.{kind}: expected a str, not {type(text).__name__}")
    return _show(kind, text.encode("utf-8"), title)


def _dumps(kind, value):
    try:
        return _json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"display.{kind}: the value cannot be converted to JSON: {error}") from None


def html(text, title=None):
    """Shows an HTML document (the console renders it in a sandboxed frame, with no network)."""
    return _text("html", text, title)


def svg(text, title=None):
    """Shows an SVG image."""
    return _text("svg", text, title)


def markdown(text, title=None):
    """Shows Markdown (rendered to sanitised HTML by the console)."""
    return _text("markdown", text, title)


def table(rows, title=None):
    """Shows rows: a list of lists (the first row is not special) or of dicts (their keys are the columns)."""
    rows = list(rows) if isinstance(rows, (list, tuple)) else rows
    if not isinstance(rows, list) or not all(isinstance(r, (list, tuple, dict)) for r in rows):
        raise TypeError("display.table: rows must be a list of lists, tuples or dicts")
    return _show("table", _dumps("table", rows).encode("utf-8"), title)


def json(value, title=None):
    """Shows any JSON value."""
    return _show("json", _dumps("json", value).encode("utf-8"), title)


def image(data, mime, title=None):
    """Shows a PNG, JPEG, GIF or WebP image given as bytes (`mime` is its type, such as "image/png")."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"display.image: data must be bytes, not {type(data).__name__}")
    if not isinstance(mime, str):
        raise TypeError("display.image: mime must be a str such as 'image/png'")
    return _show("image", bytes(data), title, mime)
