"""Refuse request heads past the documented limits, whatever the server let through.

Servers differ: Daphne's Twisted refuses long lines and many headers itself (answered in
our shape by meshsite/daphnelimits.py), while uvicorn with httptools hands the application
headers of any size and number. Each header is copied into Django's META and scanned by
every middleware, so a request with thousands of them costs CPU for nothing. This check
sits in front of the whole HTTP application and answers 431 Request Header Fields Too Large
in the SAP error shape. The limits match Twisted's way of counting: the request line plus
every "Name: value" line, line ends not counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from meshsite.bodylimit import Receive, Scope, Send, send_json_error

MAX_HEADER_FIELDS = 100
MAX_HEAD_BYTES = 16 * 1024
TOO_LARGE = (f"Request header fields too large: at most {MAX_HEADER_FIELDS} fields and "
             f"{MAX_HEAD_BYTES} bytes with the request line")


def head_size(scope: Scope) -> int:
    target = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string") or b""
    request_line = len(scope["method"]) + 1 + len(target) + (1 + len(query) if query else 0) + 6 + len(
        scope.get("http_version", "1.1"))
    return request_line + sum(len(name) + 2 + len(value) for name, value in scope.get("headers", ()))


def head_too_large(scope: Scope) -> bool:
    headers = scope.get("headers", ())
    return len(headers) > MAX_HEADER_FIELDS or head_size(scope) > MAX_HEAD_BYTES


class HeaderLimitMiddleware:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and head_too_large(scope):
            await send_json_error(send, 431, TOO_LARGE)
            return
        await self.app(scope, receive, send)

