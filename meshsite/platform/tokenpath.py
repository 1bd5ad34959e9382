"""The token endpoint's fast path: a service key's client-credentials request answered in
the event loop, without Django's handler, oauthlib or the ORM.

Measured before it (docs/performance.md, "Token endpoint"): ~4.7 ms of CPU per token, ~85%
of it in oauthlib and django-oauth-toolkit (their request machinery, the ORM lookup, INSERT
and COMMIT) plus the hop into Django's thread. Here a token is one HMAC and one SQL
statement (tokenissue.py) in the loop, and the request is read by Django's own ASGIRequest,
so the form and header parsing, the grant checks, the rate limits (ratelimit.py, asked
without blocking the loop) and the answers are the view's own functions (views.py).

Whatever this path does not decide goes on, untouched, to the Django view, which answers it
as before: credentials in an unusual shape (both forms at once, a repeated or missing
field, a malformed Basic header, a `scope`), a hash the statement cannot compare (an older
hasher or a fallback key, which the view verifies and upgrades), an application that is not
a service key's, the store breaker open (the view answers its 503 at once and probes), the
embedded SQLite store, and MESH_TOKEN_FAST_PATH off. The host check and the security headers
come from apiguard.py, as on the lean API stack.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_plus

import psycopg
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, QueryDict
from django.utils.log import log_response

from meshsite.apiguard import ApiGuard
from meshsite.bodylimit import read_body
from meshsite.storebreaker import BREAKER

from . import asyncdb, ratelimit, views
from .ratelimit import ASGIApp, Scope
from .tokenissue import Outcome, token_issue

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

CREDENTIAL_FIELDS = ("client_id", "client_secret")


class TokenFastPath:
    """ASGI: /oauth/token answered here when it can be, else by `app` (Django)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._guard: ApiGuard | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _serves(scope):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        request = ASGIRequest(scope, io.BytesIO(body))
        guard = self.guard
        response = guard.refuse_host(request) or await token_answer(request)
        if response is None:
            await self.app(scope, _replay(body, receive), send)
            return
        guard.finish(request, response)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        await _send(send, response)

    @property
    def guard(self) -> ApiGuard:
        if self._guard is None:  # settings are read once, as the lean stack reads them at start
            self._guard = ApiGuard()
        return self._guard


def _serves(scope: Scope) -> bool:
    return (
        scope["type"] == "http"
        and scope["path"].removeprefix(settings.FORCE_SCRIPT_NAME or "") == ratelimit.TOKEN_PATH
        and scope["method"] in ("GET", "POST")
        and settings.MESH_TOKEN_FAST_PATH
        and not BREAKER.is_open
        and asyncdb.is_postgresql()
    )


async def token_answer(request: HttpRequest) -> HttpResponse | None:
    """The answer the view would give, or None for the view to give it."""
    params = request.GET if request.method == "GET" else request.POST
    refusal = views.grant_refusal(params)
    if refusal is not None:
        return refusal
    credentials = _credentials(request, params)
    if credentials is None:
        return None
    address = views.request_address(request)
    limited = await ratelimit.address_refusal_async(address)
    if limited is not None:
        return views.too_many(limited)
    client_id, client_secret = credentials
    if views.has_control_characters(request, params):
        response = views.invalid_client()
    else:
        try:
            issued = await token_issue(client_id=client_id, client_secret=client_secret)
        except psycopg.OperationalError:
            return views.store_unavailable()
        if issued.outcome is Outcome.UNDECIDED:
            return None
        if issued.outcome is Outcome.ISSUED:
            return _token_response(issued.access_token, issued.expires_in, issued.scope)
        response = views.client_refused()
    limited = await ratelimit.failure_record_async(client_id=client_id, address=address)
    return views.too_many(limited) if limited is not None else response


def _credentials(request: HttpRequest, params: QueryDict) -> tuple[str, str] | None:
    """(client id, secret) in the two shapes clients send, read as django-oauth-toolkit reads
    them; None for any other shape (the view then answers it)."""
    if "scope" in params:
        return None
    auth = request.headers.get("Authorization")
    if auth is None:
        if all(len(params.getlist(field)) == 1 for field in CREDENTIAL_FIELDS):
            return str(params["client_id"]), str(params["client_secret"])
        return None
    scheme, _, encoded = auth.partition(" ")
    if scheme != "Basic" or not encoded or any(field in params for field in CREDENTIAL_FIELDS):
        return None
    try:
        client_id, separator, secret = base64.b64decode(encoded).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (unquote_plus(client_id), unquote_plus(secret)) if separator else None


def _token_response(access_token: str, expires_in: int, scope: str) -> HttpResponse:
    # oauthlib's body and headers, in its order, with the view's SAP changes (views.sap_token_body).
    body = {"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer", "scope": scope}
    response = HttpResponse(json.dumps(views.sap_token_body(body)), content_type="application/json")
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then what the server sends next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replayed


async def _send(send: Send, response: HttpResponse) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    headers.append((b"content-length", str(len(response.content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
