"""Django's host check and security headers, for the lean API stack.

The SAP-compatible APIs skip Django's middleware stack for speed (meshsite/apihandler.py),
and with it the ALLOWED_HOSTS check (CommonMiddleware), SecurityMiddleware's headers and
XFrameOptionsMiddleware's. This one middleware restores them from the same settings those
read, in both sync and async flavours so that it adds no thread hop under ASGI. It also
drops the Content-Type of empty answers (a 204, the ack's 200), which Django's HttpResponse
otherwise labels text/html.

Its cost, measured in-process: ~5.4 µs per request (host check ~3.5 µs of it), against a
publish of ~5-6 ms end to end under Daphne; the ASGI header check adds ~1.5 µs.

Not restored: SECURE_SSL_REDIRECT. An API client's request has already crossed plain HTTP,
its token included, by the time a redirect could answer it; refuse plain HTTP at the proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from meshsite.errors import json_error

# Django's own logger for this event, so an operator's existing filters for it still apply.
host_logger = logging.getLogger("django.security.DisallowedHost")


class ApiGuard:
    """The settings, read once when the stack is built (as Django builds its middleware)."""

    def __init__(self) -> None:
        self.headers = self._fixed_headers()
        self.hsts = self._hsts()
        self.default_content_type = f"text/html; charset={settings.DEFAULT_CHARSET}"

    @staticmethod
    def _fixed_headers() -> list[tuple[str, str]]:
        headers = []
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            headers.append(("X-Content-Type-Options", "nosniff"))
        policy = settings.SECURE_REFERRER_POLICY
        if policy:
            value = policy if isinstance(policy, str) else ",".join(policy)
            headers.append(("Referrer-Policy", ",".join(v.strip() for v in value.split(","))))
        if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
            headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
        headers.append(("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()))
        return headers

    @staticmethod
    def _hsts() -> str | None:
        if not settings.SECURE_HSTS_SECONDS:
            return None
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        return value

    def refuse_host(self, request: HttpRequest) -> HttpResponse | None:
        try:
            request.get_host()
        except DisallowedHost as exc:
            host_logger.warning("%s", exc, extra={"status_code": 400, "request": request})
            host = request.META.get("HTTP_HOST", "")
            return json_error(f"Host {host!r} is not served here", 400)
        return None

    def finish(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        for name, value in self.headers:
            response.headers.setdefault(name, value)
        if self.hsts and "Strict-Transport-Security" not in response and request.is_secure():
            response.headers["Strict-Transport-Security"] = self.hsts
        # No body, so nothing to label; a 204 carries no content by definition. An empty
        # consumed message keeps its own type: only Django's default label is dropped.
        if self._is_empty(response) and (
            response.status_code == 204 or response.get("Content-Type") == self.default_content_type
        ):
            del response.headers["Content-Type"]
        return response

    @staticmethod
    def _is_empty(response: HttpResponseBase) -> bool:
        return isinstance(response, HttpResponse) and not response.content


@sync_and_async_middleware
def api_guard_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    guard = ApiGuard()
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            response = guard.refuse_host(request) or await get_response(request)
            return guard.finish(request, response)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = guard.refuse_host(request) or get_response(request)
        return guard.finish(request, response)

    return middleware
