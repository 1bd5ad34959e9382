"""The AMQP 1.0 endpoint as a Channels consumer: `/protocols/amqp10ws`.

The upgrade is authenticated before it is accepted: subprotocol `amqp`, `Authorization:
Bearer <token>` of a service key whose instance has `options.messaging` on, and a free
connection under the instance's quota (messaging.live.consumer). Once accepted, binary
messages feed the protocol engine (messaging.amqp.connection); a text message closes the
socket with 1003.
"""

from __future__ import annotations

from typing import Any

from messaging.hotpath import bearer_client, token_still_valid
from messaging.live.consumer import LiveConsumer

from .connection import AmqpConnection

SUBPROTOCOL = "amqp"


class AmqpConsumer(LiveConsumer):
    protocol = "amqp"
    amqp: AmqpConnection | None = None

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        headers = self.headers()
        if SUBPROTOCOL not in self.scope.get("subprotocols", []):
            await self.deny(400, f"The WebSocket subprotocol must be {SUBPROTOCOL!r}")
        client = await bearer_client(headers.get("authorization", ""))
        if isinstance(client, str):
            await self.deny(401, client, {"www-authenticate": 'Bearer realm="meshsite"'})
        await self.admit(client.instance)
        await self.send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
        token = headers["authorization"].split()[1]
        self.session = self.amqp = AmqpConnection(instance=client.instance, still_valid=token_still_valid(token),
                                                  send=self._send_bytes, close=self.close)
        self.amqp.connection_id = self.connection_id

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        data = message.get("bytes")
        if self.amqp is None:
            return
        if data is None:  # AMQP is binary; a text message is a client that speaks something else
            await self.close(1003)
            await self.amqp.finish()
            return
        await self.amqp.received(data)

    async def _send_bytes(self, data: bytes) -> None:
        await self.send({"type": "websocket.send", "bytes": data})
