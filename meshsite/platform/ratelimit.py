"""Limits on failed client authentications at the token endpoint.

Failures are counted per source address and per client id in fixed windows of
MESH_TOKEN_FAILURE_WINDOW seconds, in Django's cache (Redis when REDIS_URL is set, so every
server process sees the same counts). Two rules, chosen so that nobody's failures slow down
someone else's success:

- an address past its limit is refused before any work (no database, no hash): a flood from
  one address costs a cache lookup per request, and other addresses are untouched;
- a client id past its limit answers a wrong secret with 429, but its right secret still gets
  a token, so an attacker who knows a client id cannot lock its owner out.

A cache that cannot be reached lets requests through (logged): a limiter that cannot count
must not take the token endpoint down with it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

log = logging.getLogger(__name__)


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
    limit = settings.MESH_TOKEN_FAILURES_PER_ADDRESS
    window, retry_after = _window()
    if limit and _count(_key("address", address, window)) >= limit:
        return Refusal("temporarily_unavailable",
                       f"Too many failed client authentications from this address; retry in {retry_after} s",
                       retry_after)
    return None


def failure_record(*, client_id: str, address: str) -> Refusal | None:
    """Count one failed authentication; a refusal when it is past the client id's limit."""
    window, retry_after = _window()
    if settings.MESH_TOKEN_FAILURES_PER_ADDRESS:
        _increment(_key("address", address, window))
    limit = settings.MESH_TOKEN_FAILURES_PER_CLIENT
    if limit and _increment(_key("client", client_id, window)) > limit:
        return Refusal("invalid_client",
                       f"Too many failed authentications for this client id; retry in {retry_after} s",
                       retry_after)
    return None
