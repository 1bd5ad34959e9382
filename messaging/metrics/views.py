"""GET /metrics: the Prometheus text format, for a scraper with MESH_METRICS_TOKEN or from a
network in MESH_METRICS_ALLOW.

A plain path outside the hot path's prefix (messaging/hotpath/routes.py serves POSTs under
/messagingrest/v1/ only) and outside the API handler's, so under uvicorn and Daphne alike
it reaches Django's full stack. The client address is the connection's (REMOTE_ADDR):
behind a proxy that is the proxy, so either allow the proxy's address and keep /metrics
off the public side, or use the token.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework.request import Request
from rest_framework.views import APIView

from meshsite.errors import Forbidden, Unauthorized

from .collector import REGISTRY


class MetricsView(APIView):
    # The token is ours, not a service key's: DRF's authentication stays out of it. Errors
    # take the meshsite-native shape through the one exception handler.
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    schema = None  # not part of the documented messaging API

    def get(self, request: Request) -> HttpResponse:
        metrics_access(authorization=request.META.get("HTTP_AUTHORIZATION", ""),
                       address=request.META.get("REMOTE_ADDR", ""))
        return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def metrics_access(*, authorization: str, address: str) -> None:
    """Raise unless the scraper may read: the right bearer token (a wrong one is 401), or an
    allowed client address (403 otherwise)."""
    token = settings.MESH_METRICS_TOKEN
    scheme, _, presented = authorization.partition(" ")
    if token and scheme.lower() == "bearer":
        if hmac.compare_digest(presented.strip().encode(), token.encode()):
            return
        raise Unauthorized("The metrics token is wrong")
    if not _allowed(address):
        raise Forbidden("Metrics are served to MESH_METRICS_ALLOW networks or with MESH_METRICS_TOKEN only")


def _allowed(address: str) -> bool:
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack listener
    return any(client in ipaddress.ip_network(network) for network in settings.MESH_METRICS_ALLOW)
