"""`POST /api/v1/ws-tickets`: a single-use ticket onto the JSON WebSocket for the logged-in
user's browser (session and CSRF, as every cockpit write); meshsite's own error format."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from meshsite.errors import Invalid
from meshsite.platform.schema import MeshErrorSerializer

from ..services.tickets import ws_ticket_issue

_ERROR = MeshErrorSerializer


class WsTicketView(APIView):
    @extend_schema(
        tags=["WebSocket"], operation_id="ws_ticket_create", summary="Issue a ticket for the JSON WebSocket",
        request=inline_serializer("WsTicketRequest", {"instance": serializers.UUIDField()}),
        responses={201: inline_serializer("WsTicket", {
            "ticket": serializers.CharField(), "expiresAt": serializers.DateTimeField(),
            "url": serializers.CharField()}),
            400: OpenApiResponse(_ERROR, description="No instance id in the body"),
            403: OpenApiResponse(_ERROR, description="No session, no CSRF token, or not an administrator"),
            404: OpenApiResponse(_ERROR, description="No Event Mesh instance with this id")},
    )
    def post(self, request: Request) -> Response:
        instance_id = request.data.get("instance") if isinstance(request.data, dict) else None
        if not isinstance(instance_id, str):
            raise Invalid("'instance' (the Event Mesh instance's id) is required")
        ticket = ws_ticket_issue(user=request.user, instance_id=instance_id)
        return Response({"ticket": ticket.raw, "expiresAt": ticket.expires_at.isoformat(),
                         "url": f"/ws/v1/?ticket={ticket.raw}"}, status=status.HTTP_201_CREATED)
