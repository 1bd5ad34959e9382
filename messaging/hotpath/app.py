"""The hot path as ASGI middleware: POSTs to the messaging REST addresses are served here,
on the event loop; every other request goes on to Django unchanged."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from meshsite.bodylimit import read_body
from meshsite.errors import STORE_UNAVAILABLE, MeshError
from meshsite.platform.auth import Client, cached_client, client_for_token

from .database import executor, run_sync, unavailable
from .endpoints import Endpoints
from .http import Answer, Receive, Request, Responder, Scope, Send, read_headers, sap_error
from .routes import Route, match

log = logging.getLogger(__name__)

UNAVAILABLE = sap_error(503, STORE_UNAVAILABLE, {"Retry-After": "5"})
INTERNAL = sap_error(500, "Internal error")
OPTION = "messagingrest"


def _unauthorized(message: str) -> Answer:
    return sap_error(401, message, {"WWW-Authenticate": 'Bearer realm="meshsite"'})


# Connections and the writer belong to one event loop (a test may run several). The
# WebSocket consumers use the same ones: one group commit and one pool per process.
_endpoints: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Endpoints] = weakref.WeakKeyDictionary()


def endpoints() -> Endpoints:
    """This event loop's publish / consume operations, with its pool and group-commit writer."""
    loop = asyncio.get_running_loop()
    found = _endpoints.get(loop)
    if found is None:
        found = _endpoints[loop] = Endpoints(executor())
    return found


class HotPath:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.enabled = settings.MESH_HOT_PATH
        self.responder = Responder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = match(scope) if self.enabled and scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, scope["raw_path"].decode("latin-1"), read_headers(scope))
        if not self.responder.host_allowed(request):
            await self.app(scope, receive, send)  # Django refuses it, in its own words
            return
        body = await read_body(receive)
        if body is None:
            return  # the client went away before it sent its message: nothing to do
        request.body = body
        await self.responder.send(send, request, await self.answer(route, request))

    async def answer(self, route: Route, request: Request) -> Answer:
        try:
            client = await self.authenticate(request)
            if isinstance(client, Answer):
                return client
            if not client.instance.option_enabled(OPTION):
                return sap_error(403, f"The '{OPTION}' option is disabled in the instance's service descriptor")
            operations = endpoints()
            if route.action == "ack":
                return await operations.ack(client, request, route.name, route.message_id)
            handler = getattr(operations, route.action)
            return await handler(client, request, route.name)  # type: ignore[no-any-return]
        except MeshError as error:
            return sap_error(error.status_code, error.message, error.headers)
        except Exception as error:
            if unavailable(error):
                return UNAVAILABLE
            log.exception("hot path: %s %s failed", route.action, request.raw_path)
            return INTERNAL

    @staticmethod
    async def authenticate(request: Request) -> Client | Answer:
        """ServiceKeyAuthentication's answers, with the token cache looked up on the loop."""
        client = await bearer_client(request.headers.get("authorization", ""))
        return _unauthorized(client) if isinstance(client, str) else client


async def bearer_client(authorization: str) -> Client | str:
    """The client of an `Authorization: Bearer` value, or why not (REST and WebSockets);
    the token cache is looked up on the loop, the database on a thread."""
    parts = authorization.encode("latin-1", errors="replace").split()
    if not parts or parts[0].lower() != b"bearer":
        return "Bearer token required"
    if len(parts) != 2 or len(parts[1]) > 4096:
        return "Malformed bearer token"
    client = await token_client(parts[1].decode("ascii", errors="replace"))
    return client if client is not None else "Token is invalid or expired"


async def token_client(token: str) -> Client | None:
    """The client of a raw bearer token, None if it does not stand."""
    client = cached_client(token)
    if client is None:
        client = await run_sync(client_for_token, token)
    return client


def token_still_valid(token: str) -> Callable[[], Awaitable[bool]]:
    """A WebSocket's recheck of the token it was opened with (expiry, a deleted key)."""
    async def check() -> bool:
        return await token_client(token) is not None
    return check
