"""The AMQP 1.0 endpoint as a Channels consumer: `/protocols/amqp10ws`.

The upgrade is authenticated before it is accepted: subprotocol `amqp`, `Authorization:
Bearer <token>` of a service key whose instance has `options.messaging` on, and a free
connection under the instance's quota. A refusal is an HTTP status with a JSON body
`{"message": ...}` where the server supports the ASGI denial response (uvicorn); Daphne
can only answer 403 to a refused upgrade. Once accepted, binary messages feed the protocol
engine (messaging.amqp.connection); a text message closes the socket with 1003.
"""

from __future__ import annotations

import json
from typing import Any

from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from django.conf import settings

from messaging.hotpath import bearer_client, token_still_valid
from messaging.hotpath.database import run_sync
from messaging.live.presence import keep_alive
from messaging.services.connections import connection_close, connection_open

from .connection import AmqpConnection

SUBPROTOCOL = "amqp"
OPTION = "messaging"


class AmqpConsumer(AsyncConsumer):
    # No channel of its own on the layer: live traffic reaches a connection through its
    # process's hub (messaging.live), one channel per process rather than per socket.
    channel_layer_alias = "meshsite-no-channel-per-socket"

    amqp: AmqpConnection | None = None
    closing = False

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Not Channels' own: that closes stale Django connections (a thread hop) before
        # every message; this consumer reaches the database only through run_sync, which
        # closes its connections itself.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.scope["headers"]}
        if SUBPROTOCOL not in self.scope.get("subprotocols", []):
            await self.deny(400, f"The WebSocket subprotocol must be {SUBPROTOCOL!r}")
            return
        client = await bearer_client(headers.get("authorization", ""))
        if isinstance(client, str):
            await self.deny(401, client, {"www-authenticate": 'Bearer realm="meshsite"'})
            return
        if not client.instance.option_enabled(OPTION):
            await self.deny(403, f"The '{OPTION}' option is disabled in the instance's service descriptor")
            return
        self.connection_id = await run_sync(connection_open, instance=client.instance, protocol="amqp")
        if self.connection_id is None:
            await self.deny(429, "The instance has reached its connection quota"
                                 f" ({settings.MESH_MAX_CONNECTIONS_PER_INSTANCE})")
            return
        await keep_alive()
        await self.send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
        token = headers["authorization"].split()[1]
        self.amqp = AmqpConnection(instance=client.instance, still_valid=token_still_valid(token),
                                   send=self._send_bytes, close=self._close)

    async def deny(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        if "websocket.http.response" in self.scope.get("extensions", {}):
            body = json.dumps({"message": reason}).encode()
            fields = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                      *((name.encode(), value.encode()) for name, value in (headers or {}).items())]
            await self.send({"type": "websocket.http.response.start", "status": status, "headers": fields})
            await self.send({"type": "websocket.http.response.body", "body": body})
        else:
            await self.send({"type": "websocket.close"})
        raise StopConsumer

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        data = message.get("bytes")
        if self.amqp is None:
            return
        if data is None:  # AMQP is binary; a text message is a client that speaks something else
            await self._close(1003)
            await self.amqp.finish()
            return
        await self.amqp.received(data)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self.amqp is not None:
            await self.amqp.finish()
            await run_sync(connection_close, connection_id=self.connection_id)
        raise StopConsumer

    async def _send_bytes(self, data: bytes) -> None:
        await self.send({"type": "websocket.send", "bytes": data})

    async def _close(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            await self.send({"type": "websocket.close", "code": code})
