"""The CloudEvents abuse-protection handshake: one OPTIONS request to the endpoint, through
the SSRF guard, and the receiver's answer judged. No database access: the service that
asks (messaging/services/webhooks.py) records the outcome."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from ..models import HandshakeStatus
from . import netguard


def handshake_origin() -> str:
    """The WebHook-Request-Origin meshsite announces: its public host (and port)."""
    return urlsplit(settings.MESH_PUBLIC_URL).netloc


def handshake(endpoint: str, origin: str) -> tuple[str, str]:
    """(HandshakeStatus, reason): SUCCEEDED when the receiver allows `origin` (or '*')."""
    try:
        response = netguard.guarded_request("OPTIONS", endpoint, headers={"WebHook-Request-Origin": origin})
    except (ValueError, netguard.DeliveryError) as error:
        return HandshakeStatus.FAILED, f"handshake request failed: {error}"
    if not 200 <= response.status_code < 300:
        return HandshakeStatus.FAILED, f"receiver answered {response.status_code} to the handshake"
    allowed = response.headers.get("webhook-allowed-origin", "")
    if allowed not in (origin, "*"):
        return HandshakeStatus.FAILED, f"WebHook-Allowed-Origin was {allowed!r}, expected {origin!r} or '*'"
    return HandshakeStatus.SUCCEEDED, ""
