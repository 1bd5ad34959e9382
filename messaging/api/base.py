"""What every SAP-compatible endpoint shares: bearer-token authentication against a
service key, the instance option that must be on, and SAP's `{"message": ...}` errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from meshsite.platform.auth import Client, ServiceKeyAuthentication


class SegmentConverter:
    """One percent-encoded path segment, decoded: `a%2Fb%2Fq` -> `a/b/q`."""

    regex = r"[^/]+"

    def to_python(self, value: str) -> str:
        decoded = unquote(value)
        if not decoded.isprintable():
            # No valid name holds control characters, and PostgreSQL text refuses NUL:
            # such a segment matches no route (a JSON 404) instead of reaching a query.
            raise ValueError("segment holds control characters")
        return decoded

    def to_url(self, value: str) -> str:
        return quote(value, safe="")


class InstanceOptionEnabled(BasePermission):
    message = "This API is disabled for the service instance"

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.user
        if not isinstance(client, Client):
            return False
        option = view.instance_option
        self.message = f"The '{option}' option is disabled in the instance's service descriptor"
        return client.instance.option_enabled(option)


class SapView(APIView):
    error_shape = "sap"
    instance_option = "messagingrest"
    authentication_classes = [ServiceKeyAuthentication]
    permission_classes = [InstanceOptionEnabled]

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> None:
        if request.authenticators and not request.successful_authenticator:
            raise exceptions.NotAuthenticated("Bearer token required")
        super().permission_denied(request, message, code)

    @property
    def client(self) -> Client:
        return self.request.user  # type: ignore[return-value]
