"""Who is calling: a bearer token from /oauth/token resolves to a service key and its
instance. One query per request; the token is looked up by its SHA-256 checksum because
only that is stored."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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


def client_for_token(raw_token: str) -> Client | None:
    checksum = hashlib.sha256(raw_token.encode("utf-8")).hexdigest()
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
    return Client(instance=key.instance, key_id=key.pk, token_id=token.pk)


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
