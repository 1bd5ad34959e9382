"""The Origin check for every WebSocket (cross-site WebSocket hijacking).

A browser sends `Origin` on every WebSocket upgrade and lets any page open one to any host,
with that host's cookies: a page elsewhere could act as a logged-in cockpit user. So an
upgrade that carries an Origin is accepted only from this deployment's own origin
(MESH_PUBLIC_URL, or the Host the request was sent to) or one listed in
MESH_WS_ALLOWED_ORIGINS. An upgrade with no Origin comes from a program, not a page (SAP's
AMQP clients send none), and needs credentials no page can send anyway; it passes.

Channels' own OriginValidator refuses a missing Origin, which would lock out every AMQP
client, hence this one.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings


def _origin(value: str) -> str:
    parts = urlsplit(value.strip().lower())
    if not parts.scheme or not parts.hostname:
        return ""
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
    port = parts.port if parts.port is not None else default
    return f"{parts.scheme}://{parts.hostname}:{port}"


class OriginGuard:
    def __init__(self, app: Any) -> None:
        self.app = app
        listed = [item for item in settings.MESH_WS_ALLOWED_ORIGINS.split(",") if item.strip()]
        self.allowed = {_origin(item) for item in [settings.MESH_PUBLIC_URL, *listed]} - {""}

    def admits(self, scope: dict[str, Any]) -> bool:
        headers = dict(scope.get("headers", []))
        raw = headers.get(b"origin")
        if raw is None:
            return True
        origin = _origin(raw.decode("latin-1"))
        if not origin:
            return False
        if origin in self.allowed:
            return True
        host = headers.get(b"host", b"").decode("latin-1").lower()
        scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
        return bool(host) and origin == _origin(f"{scheme}://{host}")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or self.admits(scope):
            await self.app(scope, receive, send)
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            body = json.dumps({"message": "Origin not allowed (MESH_WS_ALLOWED_ORIGINS)"}).encode()
            await send({"type": "websocket.http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close"})
