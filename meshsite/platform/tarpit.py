"""Holding the token endpoint's 429 answers: a refusal costs the refused client time, not the
server CPU.

Measured under a flood of wrong secrets (docs/performance.md, "Token endpoint"): the flood
is closed-loop, so however cheap a 429 is, 32 clients on 32 connections send as many requests
as they are answered. Making refusals ~10x cheaper made the attacker send ~10x as many, and
the flooding process and the server's event loop kept sharing the cores with the publishers.
So a 429 from /oauth/token is held here for MESH_TOKEN_REFUSAL_DELAY_MS to a quarter more (at
most its own Retry-After) and sent with `Connection: close`: a client on N connections then gets at most N
refusals per delay, each after a new connection. Holding is one timer in the event loop (no
thread, no database, no cache); the answer itself is unchanged.

What a hold can cost is bounded: at most MESH_TOKEN_REFUSAL_HOLD_MAX requests are held at once
per process (each keeps its connection, so its file descriptor, open); past that a refusal is
answered at once, still with `Connection: close`. A client that disconnects while held frees
its place at once, and nothing is sent or logged for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

_held = 0  # requests this process holds now


def held() -> int:
    """How many refusals this process is holding now."""
    return _held


class RefusalHold:
    """One token request's receive and send; send holds a 429 before it goes out. Every token
    request passes through one (a few µs; a token costs ~1 ms)."""

    __slots__ = ("_receive", "_send", "_reading", "_gone", "_dropped", "_woken")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._reading = 0  # receive calls in flight (Django's disconnect listener makes one)
        self._gone = False
        self._dropped = False
        self._woken: asyncio.Event | None = None

    async def receive(self) -> Any:
        self._reading += 1
        try:
            message = await self._receive()
        finally:
            self._reading -= 1
        if message["type"] == "http.disconnect":
            self._gone = True
            if self._woken is not None:
                self._woken.set()
        return message

    async def send(self, message: Any) -> None:
        if self._dropped:
            return  # the client left while its refusal was held: the rest of it goes nowhere
        if (message["type"] == "http.response.start" and message["status"] == 429
                and settings.MESH_TOKEN_REFUSAL_DELAY_MS):
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            if not await self._hold(_seconds(message["headers"])):
                self._dropped = True
                return
        await self._send(message)

    async def _hold(self, seconds: float) -> bool:
        """Wait up to `seconds`; False when the client went away meanwhile."""
        global _held
        if seconds <= 0 or self._gone or _held >= settings.MESH_TOKEN_REFUSAL_HOLD_MAX:
            return not self._gone
        _held += 1
        self._woken = asyncio.Event()
        # Someone must be reading to see the disconnect: Django's handler is; the fast path and
        # TokenFloodGuard have stopped reading, so a watcher reads for them.
        watcher = None if self._reading else asyncio.ensure_future(self._watch())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), seconds)
        finally:
            _held -= 1
            if watcher is not None:
                watcher.cancel()
        return not self._gone

    async def _watch(self) -> None:
        # A server's receive gives the rest of the body, then blocks until the client leaves.
        # A second complete body would be no server's: stop rather than spin on it.
        complete = False
        with contextlib.suppress(Exception):  # a receive that fails tells us nothing more
            while not self._gone and not complete:
                message = await self.receive()
                complete = message["type"] == "http.request" and not message.get("more_body", False)
            while not self._gone:
                message = await self.receive()
                if message["type"] == "http.request":
                    return


def _seconds(headers: list[tuple[bytes, bytes]]) -> float:
    # Up to a quarter more, at random: a flood's connections, refused together, would otherwise
    # be released together and come back as one burst every delay, which is what a publisher's
    # p99 meets; spread, they arrive one at a time.
    delay = settings.MESH_TOKEN_REFUSAL_DELAY_MS / 1000 * (1 + random.random() / 4)  # noqa: S311 - not a secret
    for name, value in headers:
        if name.lower() == b"retry-after" and value.isdigit():
            return min(delay, int(value))
    return delay
