"""Route the SAP-compatible APIs on the raw (still percent-encoded) request path.

Queue and topic names contain slashes and travel as ONE percent-encoded path segment
(`queues/a%2Fb%2Fc%2Fq1/messages`). The decoded path cannot tell `a%2Fb` from `a/b`, so for
these prefixes the resolver sees the raw path and the `segment` URL converter decodes each
name. ASGI servers give `raw_path`; WSGI servers give RAW_URI or REQUEST_URI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

# Process Visibility's Data Acquisition API (/public/v1/) and the connectors' API
# (/elements/api-v2/, where providers post their webhooks) have no encoded names, but they
# are machine-to-machine APIs like these: listed here they take the lean API stack
# (meshsite/apihandler.py) and answer errors in JSON (meshsite/errors.py).
RAW_PATH_PREFIXES = ("/messagingrest/", "/hub/rest/api/", "/public/v1/", "/elements/api-v2/")


def _raw_path(request: HttpRequest) -> str | None:
    scope = getattr(request, "scope", None)
    if scope is not None:
        raw = scope.get("raw_path")
        return raw.decode("latin-1") if raw else None
    raw_uri = request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
    return raw_uri.split("?", 1)[0] if raw_uri else None


def raw_request_path(request: HttpRequest) -> str:
    """The path as the client sent it (percent-encoding kept), for logs; else the decoded one."""
    return _raw_path(request) or request.path


def _use_raw_path(request: HttpRequest) -> None:
    if request.path_info.startswith(RAW_PATH_PREFIXES):
        raw = _raw_path(request)
        script_name = request.META.get("SCRIPT_NAME", "")
        if raw and script_name and raw.startswith(script_name):
            raw = raw[len(script_name):]  # mounted under a prefix (ASGI root_path)
        if raw and raw.startswith(RAW_PATH_PREFIXES):
            request.path_info = raw


@sync_and_async_middleware
def raw_path_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    # Both flavours: a sync-only first middleware would make Django hop between the event
    # loop and a worker thread twice per request under ASGI (measured: ~5x slower).
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            _use_raw_path(request)
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        _use_raw_path(request)
        return get_response(request)

    return middleware
