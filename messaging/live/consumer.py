"""What both WebSocket endpoints' Channels consumers share: refusing an upgrade with an HTTP
status, the per-instance connection quota, and the hand-back when the socket goes.

A refusal is an HTTP status with a JSON body `{"message": ...}` (the ASGI denial response;
under Daphne, which lacks it, meshsite/daphnelimits.py answers the status without the body).
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from django.conf import settings

from meshsite.platform.models import ServiceInstance
from messaging.hotpath.database import run_sync
from messaging.services.connections import connection_close, connection_open

from .presence import keep_alive
from .session import LiveSession

OPTION = "messaging"  # the descriptor's switch for both WebSocket protocols


class LiveConsumer(AsyncConsumer):
    # No channel of its own on the layer: live traffic reaches a connection through its
    # process's hub (messaging.live), one channel per process rather than per socket.
    channel_layer_alias = "meshsite-no-channel-per-socket"

    protocol = ""  # as the Connection rows record it
    session: LiveSession | None = None
    connection_id: Any = None
    closing = False

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Not Channels' own: that closes stale Django connections (a thread hop) before
        # every message; these consumers reach the database only through run_sync, which
        # closes its connections itself.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    def headers(self) -> dict[str, str]:
        return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.scope["headers"]}

    async def admit(self, instance: ServiceInstance) -> None:
        """The instance's option and connection quota allow one more socket (else refused)."""
        if not instance.option_enabled(OPTION):
            await self.deny(403, f"The '{OPTION}' option is disabled in the instance's service descriptor")
        self.connection_id = await run_sync(connection_open, instance=instance, protocol=self.protocol)
        if self.connection_id is None:
            await self.deny(429, "The instance has reached its connection quota"
                                 f" ({settings.MESH_MAX_CONNECTIONS_PER_INSTANCE})")
        await keep_alive()

    async def deny(self, status: int, reason: str, headers: dict[str, str] | None = None) -> NoReturn:
        if "websocket.http.response" in self.scope.get("extensions", {}):
            body = json.dumps({"message": reason}).encode()
            fields = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                      *((name.encode(), value.encode()) for name, value in (headers or {}).items())]
            await self.send({"type": "websocket.http.response.start", "status": status, "headers": fields})
            await self.send({"type": "websocket.http.response.body", "body": body})
        else:
            await self.send({"type": "websocket.close"})
        raise StopConsumer

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self.session is not None:
            await self.session.finish()
        if self.connection_id is not None:
            await run_sync(connection_close, connection_id=self.connection_id)
        raise StopConsumer

    async def close(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            await self.send({"type": "websocket.close", "code": code})
