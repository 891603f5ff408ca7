"""HTTP from Python code in the sandbox: `from wasmagent import http`.

`http.get(url)`, `http.post(url, json=...)` and `http.request(method, url, headers=..., data=...)` return a
`Response` (`status`, `headers`, `url`, `content`, `text`, `json()`). Every request goes through the host's egress
path: the manifest's `allowed_hosts`, the private-address floor, size and time caps. A refused or failed request
raises `HTTPRequestError` (an `OSError`). `urllib.request.urlopen` uses the same path.
"""

import json as _json

import _wasmagent_host as _host

__all__ = ["HTTPRequestError", "Response", "get", "post", "request"]


class HTTPRequestError(OSError):
    """The host refused the request or it failed (network, timeout, size cap); the message says which."""


class Response:
    """A complete response: the body has been read."""

    __slots__ = ("status", "url", "redirected", "headers", "content")

    def __init__(self, status, url, redirected, headers, content):
        self.status = status
        self.url = url
        self.redirected = redirected
        self.headers = headers
        self.content = content

    @property
    def ok(self):
        return 200 <= self.status < 300

    @property
    def text(self):
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        return _json.loads(self.content)

    def header(self, name, default=None):
        """The value of header `name` (case-insensitive), values of repeated headers joined with `, `."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else default

    def __repr__(self):
        return f"<Response [{self.status}] {self.url}>"


class _RawResponse:
    """The host's response as it arrived: `status`, `url`, `redirected`, `headers` (pairs) and `body`."""

    __slots__ = ("status", "url", "redirected", "headers", "body")


def send(method, url, headers, body):
    """Sends one request; returns the raw response or raises HTTPRequestError."""
    meta = _json.dumps({"method": method, "url": url, "headers": headers}).encode("utf-8")
    try:
        raw = _host.http_request(meta, bytes(body))
    except _host.HostError as error:
        raise HTTPRequestError(str(error)) from None
    # The host's framing: the metadata's length (u32, little-endian), the metadata (JSON), the body.
    meta_len = int.from_bytes(raw[:4], "little")
    fields = _json.loads(raw[4 : 4 + meta_len])
    response = _RawResponse()
    response.status = fields["status"]
    response.url = fields["url"]
    response.redirected = fields["redirected"]
    response.headers = [(name, value) for name, value in fields["headers"]]
    response.body = raw[4 + meta_len :]
    return response


def request(method, url, *, headers=None, data=None, json=None):
    """Sends `method url` with optional headers (a dict or pairs) and a body (`data`: str or bytes, or `json`)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    pairs = [(str(k), str(v)) for k, v in pairs]
    if json is not None:
        if data is not None:
            raise TypeError("pass either data or json, not both")
        data = _json.dumps(json)
        if not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("content-type", "application/json"))
    if data is None:
        body = b""
    elif isinstance(data, str):
        body = data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        body = bytes(data)
    else:
        raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
    raw = send(str(method).upper(), str(url), pairs, body)
    return Response(raw.status, raw.url, raw.redirected, list(raw.headers), bytes(raw.body))


def get(url, **kwargs):
    """`request("GET", url, ...)`."""
    return request("GET", url, **kwargs)


def post(url, **kwargs):
    """`request("POST", url, ...)`."""
    return request("POST", url, **kwargs)
