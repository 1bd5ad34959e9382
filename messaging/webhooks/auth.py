"""The Authorization header a push carries, per the subscription's securitySchema.

OAuth2 tokens are fetched from the receiver's tokenUrl and cached per subscription until
shortly before they expire. When the tokenUrl is meshsite's own token endpoint (CAP does
this with its own Event Mesh key), the token is issued in-process by the same OAuth2 server
that answers /oauth/token: no request to ourselves, and nothing through the SSRF guard.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from urllib.parse import urlencode

from django.conf import settings
from oauth2_provider.oauth2_backends import get_oauthlib_core

from meshsite import jsonlimit, secretbox

from ..models import WebhookSubscription
from . import netguard

# The securitySchema fields sealed at rest (messaging/secretbox) and never answered.
SEALED_FIELDS = frozenset({"password", "clientSecret"})
EXPIRY_MARGIN = 60.0  # seconds before a token's expiry at which it is fetched again

# (subscription, credentials fingerprint) -> (token, monotonic time to fetch anew): changed
# credentials, or a recreated subscription, never reuse an old token.
_tokens: dict[tuple[int, str], tuple[str, float]] = {}
_lock = threading.Lock()


class TokenFetchFailed(Exception):
    pass


def own_token_url() -> str:
    """meshsite's own token endpoint: a tokenUrl equal to it is served in-process."""
    return f"{settings.MESH_PUBLIC_URL}/oauth/token"


def authorization_for(subscription: WebhookSubscription, *, refresh: bool = False) -> str | None:
    security = subscription.security
    if security.get("type") == "basicAuth":
        pair = f"{security['user']}:{secretbox.unseal(security['password'])}".encode()
        return "Basic " + base64.b64encode(pair).decode()
    if security.get("type") == "oauth2":
        return "Bearer " + _oauth2_token(subscription, refresh=refresh)
    return None


def _oauth2_token(subscription: WebhookSubscription, *, refresh: bool) -> str:
    key = (subscription.pk, hashlib.sha256(json.dumps(subscription.security, sort_keys=True).encode()).hexdigest())
    with _lock:
        cached = _tokens.get(key)
    if cached and not refresh and cached[1] > time.monotonic():
        return cached[0]
    token, lifetime = _fetch(subscription.security)
    with _lock:
        _tokens[key] = (token, time.monotonic() + max(lifetime - EXPIRY_MARGIN, 0))
    return token


def _fetch(security: dict[str, str]) -> tuple[str, float]:
    secret = secretbox.unseal(security["clientSecret"])
    basic = base64.b64encode(f"{security['clientId']}:{secret}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
    body = urlencode({"grant_type": "client_credentials"})
    if security["tokenUrl"].rstrip("/") == own_token_url():
        # django-oauth-toolkit reads the client's Basic credentials from the WSGI-style key.
        internal = {**headers, "HTTP_AUTHORIZATION": headers["Authorization"]}
        _, content, status = get_oauthlib_core().server.create_token_response(own_token_url(), "POST", body, internal)
    else:
        try:
            response = netguard.guarded_request("POST", security["tokenUrl"], headers=headers, content=body.encode())
        except (ValueError, netguard.DeliveryError) as error:
            raise TokenFetchFailed(f"token request failed: {error}") from None
        content, status = response.body.decode("utf-8", "replace"), response.status_code
    if status != 200:
        raise TokenFetchFailed(f"token endpoint answered {status}")
    try:
        answer = jsonlimit.loads(content)
        return str(answer["access_token"]), float(answer.get("expires_in", 300))
    except (ValueError, KeyError, TypeError):
        raise TokenFetchFailed("token endpoint answered without an access_token") from None


def forget_tokens() -> None:
    with _lock:
        _tokens.clear()
