"""Limits on failed client authentications at the token endpoint.

Failures are counted per source address and per client id in fixed windows of
MESH_TOKEN_FAILURE_WINDOW seconds, in Django's cache (Redis when REDIS_URL is set, so every
server process sees the same counts). Two rules, chosen so that nobody's failures slow down
someone else's success:

- an address past its limit is refused before any work (no database, no hash): a flood from
  one address costs a cache lookup per request, and other addresses are untouched;
- a client id past its limit answers a wrong secret with 429, but its right secret still gets
  a token, so an attacker who knows a client id cannot lock its owner out.

Once this process has refused an address, it remembers so until the window ends (the shared
count cannot go down before then), and `TokenFloodGuard` answers that address's next token
requests in the event loop, before Django: measured under a 32-client flood, a refusal that
went through Django's thread hop and middleware still cost the publishers of the same process
most of a core.

Every 429 of the token endpoint is held before it is sent, and closes its connection
(tarpit.py): a refused client waits instead of asking again at once.

A cache that cannot be reached lets requests through (logged): a limiter that cannot count
must not take the token endpoint down with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

from .tarpit import RefusalHold

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/token"
_MAX_REMEMBERED = 10_000  # addresses; past it the expired ones are forgotten, then the oldest
_refused_until: dict[str, float] = {}  # address -> end of the window it is refused in


@dataclass(frozen=True)
class Refusal:
    error: str
    description: str
    retry_after: int  # seconds until the window ends


def _window() -> tuple[int, int]:
    """(this window's number, whole seconds until it ends)."""
    length = settings.MESH_TOKEN_FAILURE_WINDOW
    now = time.time()
    number = int(now // length)
    return number, max(1, math.ceil((number + 1) * length - now))


def _key(kind: str, value: str, window: int) -> str:
    # Hashed: a client id or address is caller-chosen text, a cache key must be short and plain.
    return f"tokenfail:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}:{window}"


def _count(key: str) -> int:
    try:
        return int(cache.get(key, 0))
    except Exception:  # noqa: BLE001 - any cache failure: fail open
        log.warning("token rate limit: cache unavailable, not limiting", exc_info=True)
        return 0


def _increment(key: str) -> int:
    try:
        cache.add(key, 0, timeout=settings.MESH_TOKEN_FAILURE_WINDOW + 1)
        return cache.incr(key)
    except ValueError:  # expired between add and incr: this failure opens a new count
        cache.set(key, 1, timeout=settings.MESH_TOKEN_FAILURE_WINDOW + 1)
        return 1
    except Exception:  # noqa: BLE001 - any cache failure: fail open
        log.warning("token rate limit: cache unavailable, not counting", exc_info=True)
        return 0


def address_refusal(address: str) -> Refusal | None:
    """A refusal for an address that failed too often in this window, before any work."""
    if not settings.MESH_TOKEN_FAILURES_PER_ADDRESS:
        return None
    window, retry_after = _window()
    return _address_verdict(address, _count(_key("address", address, window)), retry_after)


def failure_record(*, client_id: str, address: str) -> Refusal | None:
    """Count one failed authentication; a refusal when it is past the client id's limit."""
    window, retry_after = _window()
    if settings.MESH_TOKEN_FAILURES_PER_ADDRESS:
        _increment(_key("address", address, window))
    if not settings.MESH_TOKEN_FAILURES_PER_CLIENT:
        return None
    return _client_verdict(_increment(_key("client", client_id, window)), retry_after)


def _address_verdict(address: str, count: int, retry_after: int) -> Refusal | None:
    if count < settings.MESH_TOKEN_FAILURES_PER_ADDRESS:
        return None
    _remember(address, time.time() + retry_after)
    return Refusal("temporarily_unavailable",
                   f"Too many failed client authentications from this address; retry in {retry_after} s",
                   retry_after)


def _client_verdict(count: int, retry_after: int) -> Refusal | None:
    if count <= settings.MESH_TOKEN_FAILURES_PER_CLIENT:
        return None
    return Refusal("invalid_client",
                   f"Too many failed authentications for this client id; retry in {retry_after} s",
                   retry_after)


# The same two rules for callers in the event loop (tokenpath.py). A cache in this process
# (local memory) is asked directly: it does no I/O. Redis is asked through redis.asyncio with
# the cache's own keys and value format (Django's Redis cache stores integers as such), so
# both kinds of caller count in the same place; a blocking call would stall the whole loop
# for up to the socket timeout when Redis hangs.


async def address_refusal_async(address: str) -> Refusal | None:
    counts = _redis()
    if counts is None:
        return address_refusal(address)
    if not settings.MESH_TOKEN_FAILURES_PER_ADDRESS:
        return None
    window, retry_after = _window()
    return _address_verdict(address, await _acount(counts, _key("address", address, window)), retry_after)


async def failure_record_async(*, client_id: str, address: str) -> Refusal | None:
    counts = _redis()
    if counts is None:
        return failure_record(client_id=client_id, address=address)
    window, retry_after = _window()
    if settings.MESH_TOKEN_FAILURES_PER_ADDRESS:
        await _aincrement(counts, _key("address", address, window))
    if not settings.MESH_TOKEN_FAILURES_PER_CLIENT:
        return None
    return _client_verdict(await _aincrement(counts, _key("client", client_id, window)), retry_after)


_redis_clients: dict[tuple[asyncio.AbstractEventLoop, str], Any] = {}


def _redis() -> Any:
    """This loop's redis.asyncio client for the cache's Redis, or None for another cache."""
    config: dict[str, Any] = settings.CACHES["default"]
    if config["BACKEND"] != "django.core.cache.backends.redis.RedisCache":
        return None
    location = config["LOCATION"] if isinstance(config["LOCATION"], str) else config["LOCATION"][0]
    key = (asyncio.get_running_loop(), location)
    client = _redis_clients.get(key)
    if client is None:
        import redis.asyncio

        for stale in [other for other in _redis_clients if other[0].is_closed()]:
            del _redis_clients[stale]
        options = {name: value for name, value in config.get("OPTIONS", {}).items()
                   if name not in ("serializer", "pool_class", "parser_class")}  # Django's own
        client = _redis_clients[key] = redis.asyncio.Redis.from_url(location, **options)
    return client


async def _acount(client: Any, key: str) -> int:
    try:
        return int(await client.get(cache.make_and_validate_key(key)) or 0)
    except Exception:  # noqa: BLE001 - any cache failure: fail open
        log.warning("token rate limit: cache unavailable, not limiting", exc_info=True)
        return 0


async def _aincrement(client: Any, key: str) -> int:
    # One round trip, atomic: the window's count is created with its expiry, then counted.
    try:
        async with client.pipeline(transaction=True) as pipe:
            full = cache.make_and_validate_key(key)
            pipe.set(full, 0, ex=settings.MESH_TOKEN_FAILURE_WINDOW + 1, nx=True)
            pipe.incr(full)
            return int((await pipe.execute())[1])
    except Exception:  # noqa: BLE001 - any cache failure: fail open
        log.warning("token rate limit: cache unavailable, not counting", exc_info=True)
        return 0


def forget_refusals() -> None:
    """Forget this process's refused addresses (tests; the shared counts are not touched)."""
    _refused_until.clear()


def _remember(address: str, until: float) -> None:
    if len(_refused_until) >= _MAX_REMEMBERED:
        now = time.time()
        for stale in [key for key, end in _refused_until.items() if end <= now]:
            del _refused_until[stale]
        while len(_refused_until) >= _MAX_REMEMBERED:
            del _refused_until[next(iter(_refused_until))]
    _refused_until[address] = until


def _still_refused(address: str) -> int | None:
    """Whole seconds this process still refuses `address` for, or None."""
    until = _refused_until.get(address)
    if until is None:
        return None
    left = until - time.time()
    if left <= 0:
        _refused_until.pop(address, None)
        return None
    return max(1, math.ceil(left))


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class TokenFloodGuard:
    """ASGI: token requests from an address this process already refuses get their 429 here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["path"].removeprefix(settings.FORCE_SCRIPT_NAME or "") != TOKEN_PATH:
            await self.app(scope, receive, send)
            return
        # Every 429 of the token endpoint (this guard's, the fast path's, the view's) is held.
        hold = RefusalHold(receive, send)
        if _refused_until:
            client = scope.get("client")
            retry_after = _still_refused(client[0] if client else "")
            if retry_after is not None:
                await _send_refusal(hold.send, retry_after)
                return
        await self.app(scope, hold.receive, hold.send)


async def _send_refusal(send: Callable[[Any], Awaitable[None]], retry_after: int) -> None:
    # The same answer as the view's (views.too_many), without the trip through Django.
    body = json.dumps({"error": "temporarily_unavailable", "error_description":
                       f"Too many failed client authentications from this address; retry in {retry_after} s"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"retry-after", str(retry_after).encode()), (b"cache-control", b"no-store"),
               (b"pragma", b"no-cache")]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
