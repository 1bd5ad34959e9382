"""Messaging REST API: `/messagingrest/v1/...` publish, consume and acknowledge.

Message bodies are raw bytes in both directions; the message's type travels in
Content-Type. DRF parsing is never triggered on these views (request.data is not read).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request

from meshsite.errors import Invalid

from .. import services
from ..services import Outgoing
from .base import SapView

TAG = ["Event Mesh messaging"]
QOS = OpenApiParameter("x-qos", int, OpenApiParameter.HEADER, required=True, enum=[0, 1])
EXPIRATION = OpenApiParameter(
    "x-message-expiration", int, OpenApiParameter.HEADER,
    description="Time to live in ms, 1..2592000000 (default 30 days); honoured on respectTtl queues",
)
PUBLISH: dict[str, Any] = dict(
    tags=TAG,
    request={"*/*": OpenApiTypes.BINARY},
    parameters=[QOS, EXPIRATION],
    responses={
        204: OpenApiResponse(description="Stored"),
        400: OpenApiResponse(description="Bad x-qos, Content-Type, name or expiration"),
        403: OpenApiResponse(description="Not allowed by the descriptor's rules"),
        404: OpenApiResponse(description="Queue does not exist"),
        413: OpenApiResponse(description="Message too large"),
        429: OpenApiResponse(description="Queue full"),
    },
)


def _qos(request: Request) -> int:
    raw = request.headers.get("x-qos")
    if raw not in ("0", "1"):
        raise Invalid("x-qos is invalid")
    return int(raw)


def _expiration(request: Request) -> int | None:
    raw = request.headers.get("x-message-expiration")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise Invalid("x-message-expiration is invalid")
    return int(raw)


def _outgoing(request: Request) -> Outgoing:
    content_type = request.headers.get("content-type", "")
    if not content_type:
        raise Invalid("Content-Type is missing")
    return Outgoing(
        payload=request.body, content_type=content_type, qos=_qos(request), expiration_ms=_expiration(request)
    )


class QueuePublishView(SapView):
    @extend_schema(summary="Publish a message to a queue", **PUBLISH)
    def post(self, request: Request, queue: str) -> HttpResponse:
        outgoing = _outgoing(request)
        services.message_publish_to_queue(instance=self.client.instance, queue_name=queue, outgoing=outgoing)
        return HttpResponse(status=204)


class TopicPublishView(SapView):
    @extend_schema(summary="Publish a message to a topic (fanned out to subscribed queues)", **PUBLISH)
    def post(self, request: Request, topic: str) -> HttpResponse:
        outgoing = _outgoing(request)
        services.message_publish_to_topic(instance=self.client.instance, topic=topic, outgoing=outgoing)
        return HttpResponse(status=204)


class ConsumeView(SapView):
    @extend_schema(
        tags=TAG, request=None, parameters=[QOS], summary="Consume the oldest available message",
        responses={
            (200, "*/*"): OpenApiResponse(OpenApiTypes.BINARY, description="The message; header x-message-id"),
            204: OpenApiResponse(description="The queue is empty"),
            404: OpenApiResponse(description="Queue does not exist"),
            409: OpenApiResponse(description="EXCLUSIVE queue held by another consumer"),
        },
    )
    def post(self, request: Request, queue: str) -> HttpResponse:
        delivery = services.message_consume(
            instance=self.client.instance, queue_name=queue, qos=_qos(request), consumer=self.client.identity
        )
        if delivery is None:
            return HttpResponse(status=204)
        message = delivery.message
        response = HttpResponse(bytes(message.payload), status=200, content_type=message.content_type)
        response["x-message-id"] = delivery.message_id
        response["x-address"] = message.address
        response["x-delivery-count"] = str(message.delivery_count)
        return response


class AcknowledgeView(SapView):
    @extend_schema(
        tags=TAG, request=None, summary="Acknowledge a qos-1 message",
        responses={
            200: OpenApiResponse(description="Acknowledged; the message is removed"),
            404: OpenApiResponse(description="Unknown id, or not held"),
            410: OpenApiResponse(description="The lock expired; the message went back to the queue"),
        },
    )
    def post(self, request: Request, queue: str, message_id: str) -> HttpResponse:
        services.message_ack(instance=self.client.instance, queue_name=queue, message_id=message_id)
        return HttpResponse(status=200)
