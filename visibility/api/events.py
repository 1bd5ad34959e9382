"""`POST /public/v1/events`: the Data Acquisition API, and its OPTIONS webhook handshake.

A plain Django view rather than DRF's: this endpoint takes batches at thousands of events a
second and DRF's request wrapping, content negotiation and exception handling would be most
of its own cost. It answers in meshsite's error shape (`{"detail", "code", "extra"}`) from
`_error`, the same fields the DRF handler writes. The path is one of the lean-stack API
prefixes (meshsite/middleware.py), so under ASGI no session, CSRF or message middleware runs.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from meshsite.errors import STORE_UNAVAILABLE, Forbidden, MeshError, TooLarge, Unauthorized, Unavailable
from meshsite.platform.auth import Client, client_for_token
from meshsite.platform.models import Service

from ..models import FailureReason, PVRole
from ..roles import key_has_role
from ..services import events_ingest, failure_record

ALLOW = "POST, OPTIONS"
NOT_SENDER = f"This key's client lacks the {PVRole.EVENT_SENDER} role of a Process Visibility instance"


class UnsupportedMediaType(MeshError):
    status_code = 415
    code = "unsupported_media_type"


class MethodNotAllowed(MeshError):
    status_code = 405
    code = "method_not_allowed"


def _error(error: MeshError, headers: dict[str, str] | None = None) -> JsonResponse:
    body = {"detail": error.message, "code": error.code, "extra": error.extra}
    response = JsonResponse(body, status=error.status_code)
    for name, value in {**error.headers, **(headers or {})}.items():
        response[name] = value
    return response


def _client(request: HttpRequest) -> Client:
    parts = request.headers.get("Authorization", "").split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or len(parts[1]) > 4096:
        raise Unauthorized("Bearer token required")
    client = client_for_token(parts[1])
    if client is None:
        raise Unauthorized("Token is invalid or expired")
    return client


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json"))


# key id -> (monotonic time read, holds PVEventSender): the role check was one of the two
# transactions of every push. Kept as long as the token cache keeps the key's client
# (MESH_TOKEN_CACHE_SECONDS), so a changed grant is seen as late as a deleted key is.
_senders: dict[int, tuple[float, bool]] = {}
_SENDERS_MAX = 10_000


def forget_cached_senders() -> None:
    _senders.clear()


def _may_send(client: Client) -> bool:
    if client.instance.service != Service.PROCESS_VISIBILITY:
        return False
    ttl = settings.MESH_TOKEN_CACHE_SECONDS
    now = time.monotonic()
    cached = _senders.get(client.key_id)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    allowed = key_has_role(key_id=client.key_id, role=PVRole.EVENT_SENDER)
    if ttl:
        if len(_senders) >= _SENDERS_MAX:
            _senders.clear()  # bounded; the next pushes read their grants again
        _senders[client.key_id] = (now, allowed)
    return allowed


def handshake(request: HttpRequest) -> HttpResponse:
    """The CloudEvents webhook validation (what an Event Mesh webhook asks before pushing):
    any origin may push here, since the token decides who may write."""
    response = HttpResponse(status=200)
    response["WebHook-Allowed-Origin"] = request.headers.get("WebHook-Request-Origin") or "*"
    response["WebHook-Allowed-Rate"] = "*"
    response["Allow"] = ALLOW
    return response


def _refuse_sender(client: Client, body: bytes) -> JsonResponse:
    # Recorded only for a Process Visibility instance: its monitor is where someone looks.
    if client.instance.service == Service.PROCESS_VISIBILITY:
        failure_record(instance=client.instance, reason=FailureReason.NOT_AUTHORISED, detail=NOT_SENDER, raw=body)
    return _error(Forbidden(NOT_SENDER))


def _post(request: HttpRequest) -> HttpResponse:
    client = _client(request)
    try:
        body = request.body
    except RequestDataTooBig:
        raise TooLarge("Request body too large") from None
    if not _may_send(client):
        return _refuse_sender(client, body)
    if not _is_json(request.content_type or ""):
        raise UnsupportedMediaType("Events are sent as application/json", headers={"Accept-Post": "application/json"})
    events_ingest(instance=client.instance, body=body)
    return HttpResponse(status=204)


@csrf_exempt
def events(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    if request.method == "OPTIONS":
        return handshake(request)
    if request.method != "POST":
        return _error(MethodNotAllowed(f"Method {request.method} not allowed", headers={"Allow": ALLOW}))
    try:
        return _post(request)
    except Unauthorized as error:
        return _error(error, {"WWW-Authenticate": 'Bearer realm="meshsite"'})
    except MeshError as error:
        return _error(error)
    except (OperationalError, InterfaceError):
        # The store is down or restarting: retryable, and nothing was written.
        return _error(Unavailable(STORE_UNAVAILABLE), {"Retry-After": "5"})
