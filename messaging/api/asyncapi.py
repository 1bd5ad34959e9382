"""`GET /api/v1/asyncapi`: the instance's live topology as an AsyncAPI 3.0.0 document, a file
to download (messaging.asyncapi builds it), for the bearer token of one of its service keys."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from ..asyncapi import asyncapi_document, attachment
from .management import ManagementView
from .openapi import responses


class IndentedJSONRenderer(JSONRenderer):
    # The answer is a file people open in an editor or diff between downloads.
    def get_indent(self, accepted_media_type: str, renderer_context: dict[str, Any]) -> int:
        return 2


class AsyncApiView(ManagementView):
    """The management API's authentication and option: the document shows its topology."""

    renderer_classes = [IndentedJSONRenderer]

    @extend_schema(
        tags=["Event Mesh management"], operation_id="asyncapi_document",
        summary="The instance's queues, topics and webhook subscriptions as an AsyncAPI 3.0.0 document",
        description=(
            "The live topology of the token's instance, as a file to download: a channel per queue and per "
            "topic (subscription patterns, and topics of the messages stored now), send and receive "
            "operations, webhook subscriptions as receive operations, the `httprest` and `amqp10ws` servers "
            "and the client-credentials security scheme. No credentials or signing secrets. Needs the "
            "`management` option."
        ),
        parameters=[OpenApiParameter(
            "Content-Disposition", str, OpenApiParameter.HEADER, response=[200], required=True,
            description='`attachment; filename="<instance>-asyncapi.json"`')],
        responses=responses({200: OpenApiResponse(OpenApiTypes.OBJECT, description="An AsyncAPI 3.0.0 document")}),
    )
    def get(self, request: Request) -> Response:
        instance = self.client.instance
        return Response(asyncapi_document(instance=instance),
                        headers={"Content-Disposition": attachment(instance.name)})
