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

from .. import services
from . import headers, openapi
from .base import SapView

TAG = ["Event Mesh messaging"]
QOS = OpenApiParameter("x-qos", {"type": "integer", "enum": [0, 1]}, OpenApiParameter.HEADER, required=True,
                       description="0: at most once; 1: at least once (a consumed message waits for its ack)")
EXPIRATION = OpenApiParameter(
    "x-message-expiration", {"type": "integer", "minimum": 0, "maximum": 999_999_999_999}, OpenApiParameter.HEADER,
    description="Time to live in ms (default 30 days); honoured on respectTtl queues",
)
PUBLISH_ERRORS = dict(
    e400=openapi.error("Bad x-qos, Content-Type, name or expiration"),
    e403=openapi.error("The descriptor's rules do not allow publishing to this name"),
    e404=openapi.error("The queue does not exist"),
    e413=openapi.error("The message exceeds the maximum message size"),
    e429=openapi.error("The queue is full (with Retry-After)"),
)
PUBLISH: dict[str, Any] = dict(
    tags=TAG,
    request={"*/*": OpenApiTypes.BINARY},
    responses=openapi.responses({204: OpenApiResponse(description="Stored")}, **PUBLISH_ERRORS),
)
# The bytes as published. `format: binary` without `type`: a JSON message comes back as JSON,
# and a validator that parses it must accept whatever value it holds.
ANY_BYTES = {"format": "binary", "description": "The message's payload, unchanged"}
DELIVERY_HEADERS = [
    OpenApiParameter("x-message-id", OpenApiTypes.UUID, OpenApiParameter.HEADER, response=[200], required=True,
                     description="Acknowledge (qos 1) with this id"),
    OpenApiParameter("x-address", str, OpenApiParameter.HEADER, response=[200], required=True,
                     description="Where it was published: `queue:<name>` or `topic:<topic>`"),
    OpenApiParameter("x-delivery-count", {"type": "integer", "minimum": 0}, OpenApiParameter.HEADER,
                     response=[200], required=True, description="How often it has been delivered"),
]


def _header(request: Request) -> headers.Header:
    return request.headers.get


class QueuePublishView(SapView):
    @extend_schema(summary="Publish a message to a queue", parameters=[openapi.QUEUE, QOS, EXPIRATION], **PUBLISH)
    def post(self, request: Request, queue: str) -> HttpResponse:
        outgoing = headers.outgoing(_header(request), request.body)
        services.message_publish_to_queue(instance=self.client.instance, queue_name=queue, outgoing=outgoing)
        return HttpResponse(status=204)


class TopicPublishView(SapView):
    @extend_schema(summary="Publish a message to a topic (fanned out to subscribed queues)",
                   parameters=[openapi.TOPIC, QOS, EXPIRATION], **PUBLISH)
    def post(self, request: Request, topic: str) -> HttpResponse:
        outgoing = headers.outgoing(_header(request), request.body)
        services.message_publish_to_topic(instance=self.client.instance, topic=topic, outgoing=outgoing)
        return HttpResponse(status=204)


class ConsumeView(SapView):
    @extend_schema(
        tags=TAG, request=None, parameters=[openapi.QUEUE, QOS, *DELIVERY_HEADERS],
        summary="Consume the oldest available message",
        responses=openapi.responses(
            {(200, "*/*"): OpenApiResponse(ANY_BYTES, description="The message, in its own Content-Type"),
             204: OpenApiResponse(description="The queue is empty")},
            e400=openapi.error("Bad x-qos or queue name"),
            e404=openapi.error("The queue does not exist"),
            e409=openapi.error("An EXCLUSIVE queue held by another consumer"),
            e429=openapi.error("This consumer holds maxDeliveredUnackedMsgsPerFlow unacknowledged messages"),
        ),
    )
    def post(self, request: Request, queue: str) -> HttpResponse:
        qos = headers.qos(_header(request))
        delivery = services.message_consume(
            instance=self.client.instance, queue_name=queue, qos=qos, consumer=self.client.identity
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
        tags=TAG, request=None, parameters=[openapi.QUEUE, openapi.MESSAGE_ID], summary="Acknowledge a qos-1 message",
        responses=openapi.responses(
            {200: OpenApiResponse(description="Acknowledged; the message is removed")},
            e400=openapi.error("The queue name breaks the naming rules"),
            e404=openapi.error("Unknown queue or message id, or the message is not held"),
            e410=openapi.error("The lock expired; the message went back to the queue"),
        ),
    )
    def post(self, request: Request, queue: str, message_id: str) -> HttpResponse:
        services.message_ack(instance=self.client.instance, queue_name=queue, message_id=message_id)
        return HttpResponse(status=200)
