"""HTTP in and out for the hot path, answering exactly as the DRF views with the lean API
stack do: SAP's `{"message": ...}` errors in DRF's JSON, `Allow`, the API guard's security
headers (meshsite.apiguard), no Content-Type on empty answers, and the 4xx log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from meshsite.apiguard import ApiGuard

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

request_log = logging.getLogger("django.request")
ALLOW = (b"allow", b"POST, OPTIONS")
JSON = (b"content-type", b"application/json")


@dataclass
class Request:
    scope: Scope
    raw_path: str
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def secure(self) -> bool:
        return self.scope.get("scheme") in ("https", "wss")


def read_headers(scope: Scope) -> dict[str, str]:
    """Lower-case names; repeated fields joined with "," as Django's ASGI request does."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def sap_error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    # What DRF's JSONRenderer writes: compact, not ASCII-escaped, U+2028/9 escaped.
    text = json.dumps({"message": message}, ensure_ascii=False, separators=(",", ":"))
    body = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()
    extra = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    return Answer(status, body, [JSON, *extra])


MAX_REMEMBERED_HOSTS = 64


class Responder:
    """The parts of every answer that come from settings, computed once."""

    def __init__(self) -> None:
        guard = ApiGuard()
        self.fixed = [(name.lower().encode(), value.encode()) for name, value in guard.headers]
        self.hsts = guard.hsts.encode() if guard.hsts else None
        self.allowed_hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not self.allowed_hosts:
            self.allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
        # Host header -> verdict: a client sends the same Host on every request. Bounded, and
        # only hosts that pass are kept, so refused Host values cannot grow it.
        self._hosts_allowed: set[str] = set()

    def host_allowed(self, request: Request) -> bool:
        """Django's host check; a request that fails it goes to Django, which refuses it."""
        if settings.USE_X_FORWARDED_HOST:
            return False
        host = request.headers.get("host")
        if host is None:
            return False
        if host in self._hosts_allowed:
            return True
        domain, _ = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, self.allowed_hosts)
        if allowed and len(self._hosts_allowed) < MAX_REMEMBERED_HOSTS:
            self._hosts_allowed.add(host)
        return allowed

    async def send(self, send: Send, request: Request, answer: Answer) -> None:
        headers = [*answer.headers, ALLOW, *self.fixed]
        if answer.status != 204:  # RFC 9110 8.6: a 204 carries no Content-Length (nor does Django's)
            headers.append((b"content-length", str(len(answer.body)).encode()))
        if self.hsts and request.secure:
            headers.append((b"strict-transport-security", self.hsts))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
        if answer.status >= 400:
            log = request_log.error if answer.status >= 500 else request_log.info
            log("%s: %s", HTTPStatus(answer.status).phrase, request.raw_path, extra={"status_code": answer.status})
