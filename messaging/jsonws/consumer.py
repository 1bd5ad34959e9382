"""The JSON WebSocket endpoint as a Channels consumer: `/ws/v1/`.

Three ways in, checked before the upgrade is accepted:

    Authorization: Bearer <token>             a service key's token (programs)
    Sec-WebSocket-Protocol: meshsite.v1, bearer.<token>
                                              the same, for clients that cannot set headers
    ?ticket=<ticket> (or ticket.<ticket> as a subprotocol)
                                              a logged-in cockpit user's single-use ticket
                                              (POST /api/v1/ws-tickets)

A client that offers subprotocols must offer `meshsite.v1`, and gets it. The Origin check
in front of every WebSocket (meshsite/wsorigin.py) keeps other sites' pages out. Text
frames only (a binary frame closes with 1003); a frame over the limit closes with 1009.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from meshsite.platform.models import ServiceInstance
from messaging.hotpath import token_client, token_still_valid
from messaging.hotpath.database import run_sync
from messaging.live.consumer import LiveConsumer
from messaging.live.session import StillValid
from messaging.services.tickets import ws_ticket_redeem, ws_ticket_still_valid

from . import frames
from .connection import JsonConnection

TOO_BIG = 1009
UNSUPPORTED = 1003


class JsonConsumer(LiveConsumer):
    protocol = "json"
    json: JsonConnection | None = None

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        offered: list[str] = list(self.scope.get("subprotocols", []))
        if offered and frames.SUBPROTOCOL not in offered:
            await self.deny(400, f"The WebSocket subprotocol must be {frames.SUBPROTOCOL!r}")
        instance, still_valid = await self._credentials(offered)
        await self.admit(instance)
        await self.send({"type": "websocket.accept", "subprotocol": frames.SUBPROTOCOL if offered else None})
        self.session = self.json = JsonConnection(instance=instance, still_valid=still_valid,
                                                  send=self._send_text, close=self.close)
        self.json.connection_id = self.connection_id
        self.json.send({"op": "welcome", "protocol": frames.SUBPROTOCOL, "connection": self.json.id,
                        "instance": str(instance.pk), "namespace": instance.namespace,
                        "maxFrame": frames.max_frame()})

    async def _credentials(self, offered: list[str]) -> tuple[ServiceInstance, StillValid]:
        token = _bearer(self.headers().get("authorization", "")) or _prefixed(offered, "bearer.")
        if token:
            client = await token_client(token)
            if client is None:
                await self.deny(401, "Token is invalid or expired", {"www-authenticate": 'Bearer realm="meshsite"'})
            return client.instance, token_still_valid(token)
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        ticket = _prefixed(offered, "ticket.") or (query.get("ticket") or [""])[0]
        if not ticket:
            await self.deny(401, "A bearer token (Authorization header or a bearer.<token> subprotocol) or a"
                                 " ticket is required", {"www-authenticate": 'Bearer realm="meshsite"'})
        redeemed = await run_sync(ws_ticket_redeem, raw=ticket)
        if redeemed is None:
            await self.deny(401, "The ticket is unknown, used or expired")
        instance, user_id = redeemed

        async def still_valid() -> bool:
            return await run_sync(ws_ticket_still_valid, user_id=user_id, instance_id=instance.pk)

        return instance, still_valid

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self.json is None:
            return
        text = message.get("text")
        if text is None:
            await self.close(UNSUPPORTED)
            await self.json.finish()
            return
        if len(text) > frames.max_frame():
            await self.close(TOO_BIG)
            await self.json.finish()
            return
        await self.json.received(text)

    async def _send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})


def _bearer(authorization: str) -> str:
    parts = authorization.split()
    if len(parts) == 2 and parts[0].lower() == "bearer" and len(parts[1]) <= 4096:
        return parts[1]
    return ""


def _prefixed(offered: list[str], prefix: str) -> str:
    for value in offered:
        if value.startswith(prefix) and len(value) <= 4096 + len(prefix):
            return value[len(prefix):]
    return ""
