"""A small client of meshsite's JSON WebSocket protocol (`/ws/v1/`), for tests, benchmarks
and scripts: frames are dicts, `expect` waits for the next frame of a kind and keeps the
others for later. docs/api.md ("JSON WebSocket") describes the protocol itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol


class Refused(Exception):
    """The upgrade was answered with an HTTP status instead of 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused: {status} {body[:200]!r}")
        self.status = status
        self.body = body


class JsonClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.held: list[dict[str, Any]] = []
        self.refs = itertools.count(1)
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def connect(cls, url: str, *, token: str | None = None, token_in_subprotocol: bool = False,
                      subprotocols: tuple[str, ...] | None = None, origin: str | None = None) -> JsonClient:
        headers = {}
        offered = list(subprotocols) if subprotocols is not None else []
        if token and token_in_subprotocol:
            offered = [*(offered or ["meshsite.v1"]), f"bearer.{token}"]
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            ws = await ws_connect(url, additional_headers=headers, max_size=None,
                                  subprotocols=[Subprotocol(p) for p in offered] or None,
                                  origin=Origin(origin) if origin else None, open_timeout=10)
        except InvalidStatus as refused:
            raise Refused(refused.response.status_code, bytes(refused.response.body or b"")) from None
        client = cls(ws)
        client.welcome = await client.expect("welcome")
        return client

    async def __aenter__(self) -> JsonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def expect(self, op: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        """The next frame with this op (and these fields); others are kept for later calls."""
        def matches(frame: dict[str, Any]) -> bool:
            return frame.get("op") == op and all(frame.get(k) == v for k, v in match.items())

        for index, frame in enumerate(self.held):
            if matches(frame):
                return self.held.pop(index)
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await self.ws.recv())
                if matches(frame):
                    return frame
                self.held.append(frame)

    async def publish(self, **frame: Any) -> dict[str, Any]:
        """Publish and return the answer: `published`, or an `error`."""
        return await self.answer(await self.publish_nowait(**frame))

    async def publish_nowait(self, **frame: Any) -> str:
        """Publish without waiting; returns the ref its answer will carry."""
        ref = str(next(self.refs))
        await self.send(op="publish", ref=ref, **frame)
        return ref

    async def answer(self, ref: str, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for index, frame in enumerate(self.held):
                    if frame.get("ref") == ref and frame.get("op") in ("published", "error", "pong"):
                        return self.held.pop(index)
                self.held.append(json.loads(await self.ws.recv()))

    async def subscribe(self, sub: str, **frame: Any) -> dict[str, Any]:
        """`subscribed`, or the `error` that refused it."""
        await self.send(op="subscribe", sub=sub, **frame)
        async with asyncio.timeout(10):
            while True:
                for index, held in enumerate(self.held):
                    if held.get("sub") == sub and held.get("op") in ("subscribed", "error"):
                        return self.held.pop(index)
                self.held.append(json.loads(await self.ws.recv()))
