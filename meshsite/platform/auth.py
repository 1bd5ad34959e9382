"""Who is calling: a bearer token from /oauth/token resolves to a service key and its
instance. The token is looked up by its SHA-256 checksum because only that is stored.

Resolutions are kept in a small per-process cache for MESH_TOKEN_CACHE_SECONDS: the lookup
joins four tables and was the largest single cost of a publish. The price is bounded
staleness: a key deleted (or a token revoked) in another process stops working there within
that many seconds; the process that deletes a key forgets its cache at once. A token's own
expiry is checked on every hit.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from oauth2_provider.models import get_access_token_model
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from .models import ServiceInstance


@dataclass(frozen=True)
class Client:
    """An authenticated service-key client; DRF sees it as `request.user`."""

    instance: ServiceInstance
    key_id: int
    token_id: int
    is_authenticated: bool = True

    @property
    def identity(self) -> str:
        return f"key:{self.key_id}"


class _TokenCache:
    """checksum -> (cached at, client, token expiry); bounded, least recently used out."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.entries: OrderedDict[str, tuple[float, Client, datetime]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, checksum: str, ttl: float) -> Client | None:
        with self.lock:
            entry = self.entries.get(checksum)
            if entry is None:
                return None
            cached_at, client, expires = entry
            if time.monotonic() - cached_at >= ttl or expires <= timezone.now():
                del self.entries[checksum]
                return None
            self.entries.move_to_end(checksum)
            return client

    def put(self, checksum: str, client: Client, expires: datetime) -> None:
        with self.lock:
            self.entries[checksum] = (time.monotonic(), client, expires)
            self.entries.move_to_end(checksum)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_cache = _TokenCache()


def forget_cached_tokens() -> None:
    _cache.clear()


def _checksum(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode("utf-8")).hexdigest()


def cached_client(raw_token: str) -> Client | None:
    """The client of a token resolved within MESH_TOKEN_CACHE_SECONDS, without a query
    (safe on an event loop); None means "ask client_for_token"."""
    ttl = settings.MESH_TOKEN_CACHE_SECONDS
    return _cache.get(_checksum(raw_token), ttl) if ttl else None


def client_for_token(raw_token: str) -> Client | None:
    cached = cached_client(raw_token)
    if cached is not None:
        return cached
    checksum = _checksum(raw_token)
    ttl = settings.MESH_TOKEN_CACHE_SECONDS
    token = (
        get_access_token_model()
        .objects.select_related("application__service_key__instance")
        .filter(token_checksum=checksum)
        .first()
    )
    if token is None or token.is_expired() or token.application is None:
        return None
    key = getattr(token.application, "service_key", None)
    if key is None:
        return None
    client = Client(instance=key.instance, key_id=key.pk, token_id=token.pk)
    if ttl:
        _cache.put(checksum, client, token.expires)
    return client


class ServiceKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Client, Client] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2 or len(parts[1]) > 4096:
            raise AuthenticationFailed("Malformed bearer token")
        client = client_for_token(parts[1].decode("ascii", errors="replace"))
        if client is None:
            raise AuthenticationFailed("Token is invalid or expired")
        return client, client

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="meshsite"'
