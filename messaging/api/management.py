"""Management API: `/hub/rest/api/v1/management/messaging/...` (queues, subscriptions,
statistics, readiness), answered in SAP's shapes and status codes."""

from __future__ import annotations

from django.db import connection
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from meshsite.errors import Invalid

from .. import selectors, services
from .base import SapView
from .openapi import (
    BODY_ERRORS,
    LIMIT,
    NAME_ERRORS,
    QUEUE,
    TOPIC_PATTERN,
    BrowsedMessageSerializer,
    ReadinessSerializer,
    RequeueResultSerializer,
    RequeueSerializer,
    error,
    responses,
)
from .serializers import QueueAttributesSerializer, QueueSerializer, QueueStatisticsSerializer, SubscriptionSerializer

TAG = ["Event Mesh management"]


class ManagementView(SapView):
    instance_option = "management"


def _queue_json(queue, serializer=QueueSerializer) -> dict:  # type: ignore[no-untyped-def]
    return serializer(queue, context={"stats": {queue.pk: selectors.queue_stats(queue=queue)}}).data


class QueueListView(ManagementView):
    @extend_schema(tags=TAG, summary="List the instance's queues",
                   responses=responses({200: QueueSerializer(many=True)}))
    def get(self, request: Request) -> Response:
        queues = selectors.queues_list(instance=self.client.instance)
        stats = selectors.queues_stats(queues=queues)
        return Response(QueueSerializer(queues, many=True, context={"stats": stats}).data)


class QueueView(ManagementView):
    @extend_schema(tags=TAG, parameters=[QUEUE], responses=responses({200: QueueSerializer}, NAME_ERRORS))
    def get(self, request: Request, queue: str) -> Response:
        return Response(_queue_json(selectors.queue_get(instance=self.client.instance, name=queue)))

    @extend_schema(
        tags=TAG, request=QueueAttributesSerializer, parameters=[QUEUE],
        responses=responses(
            {201: QueueSerializer, 200: QueueSerializer}, NAME_ERRORS, BODY_ERRORS,
            e409=error("The queue was created concurrently; retry"),
            e429=error("The instance has MESH_MAX_QUEUES_PER_INSTANCE queues"),
        ),
        summary="Create (201) or update (200) a queue",
    )
    def put(self, request: Request, queue: str) -> Response:
        body = QueueAttributesSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        obj, created = services.queue_put(instance=self.client.instance, name=queue, attributes=body.attributes())
        return Response(_queue_json(obj), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(tags=TAG, parameters=[QUEUE],
                   responses=responses({204: OpenApiResponse(description="Deleted, with its messages")}, NAME_ERRORS))
    def delete(self, request: Request, queue: str) -> Response:
        services.queue_delete(instance=self.client.instance, name=queue)
        return Response(status=status.HTTP_204_NO_CONTENT)


class QueueStatisticsView(ManagementView):
    @extend_schema(tags=TAG, parameters=[QUEUE], responses=responses({200: QueueStatisticsSerializer}, NAME_ERRORS))
    def get(self, request: Request, queue: str) -> Response:
        obj = selectors.queue_get(instance=self.client.instance, name=queue)
        return Response(_queue_json(obj, QueueStatisticsSerializer))


class QueuesStatisticsView(ManagementView):
    @extend_schema(tags=TAG, responses=responses({200: QueueStatisticsSerializer(many=True)}))
    def get(self, request: Request) -> Response:
        queues = selectors.queues_list(instance=self.client.instance)
        stats = selectors.queues_stats(queues=queues)
        return Response(QueueStatisticsSerializer(queues, many=True, context={"stats": stats}).data)


class SubscriptionListView(ManagementView):
    @extend_schema(tags=TAG, parameters=[QUEUE],
                   responses=responses({200: SubscriptionSerializer(many=True)}, NAME_ERRORS))
    def get(self, request: Request, queue: str) -> Response:
        obj = selectors.queue_get(instance=self.client.instance, name=queue)
        return Response([SubscriptionSerializer.of(sub) for sub in selectors.subscriptions_of(queue=obj)])


class SubscriptionView(ManagementView):
    @extend_schema(
        tags=TAG, request=None, parameters=[QUEUE, TOPIC_PATTERN],
        responses=responses(
            {201: SubscriptionSerializer, 200: SubscriptionSerializer}, NAME_ERRORS,
            e429=error("The queue has MESH_MAX_SUBSCRIPTIONS_PER_QUEUE subscriptions"),
        ),
    )
    def put(self, request: Request, queue: str, topic: str) -> Response:
        sub, created = services.subscription_put(instance=self.client.instance, queue_name=queue, pattern=topic)
        return Response(
            SubscriptionSerializer.of(sub), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(tags=TAG, parameters=[QUEUE, TOPIC_PATTERN],
                   responses=responses({204: OpenApiResponse(description="Deleted")}, NAME_ERRORS))
    def delete(self, request: Request, queue: str, topic: str) -> Response:
        services.subscription_delete(instance=self.client.instance, queue_name=queue, pattern=topic)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReadinessView(ManagementView):
    @extend_schema(tags=TAG, responses=responses({200: ReadinessSerializer}))
    def get(self, request: Request) -> Response:
        # Reaching here may have taken a query (the token, unless cached); ask the store once
        # more so a connection that died since is reported rather than assumed. During an
        # outage the store breaker (meshsite.storebreaker) refuses the connection at once,
        # so this answers 503 without waiting for the pool.
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Response({"status": "ready"})


def _message_json(message) -> dict:  # type: ignore[no-untyped-def]
    return {
        "messageId": str(message.uuid),
        "address": message.address,
        "contentType": message.content_type,
        "size": message.size,
        "deliveryCount": message.delivery_count,
        "createdAt": message.created_at.isoformat(),
        "expiresAt": message.expires_at.isoformat(),
        "deathReason": message.death_reason or None,
        "deadFrom": message.dead_from or None,
    }


class QueueMessagesView(ManagementView):
    """meshsite extension: browse a queue (a dead message queue, typically) without consuming."""

    @extend_schema(tags=TAG, parameters=[QUEUE, LIMIT],
                   responses=responses({200: BrowsedMessageSerializer(many=True)}, NAME_ERRORS))
    def get(self, request: Request, queue: str) -> Response:
        obj = selectors.queue_get(instance=self.client.instance, name=queue)
        limit = _limit(request.query_params.get("limit", "100"))
        return Response([_message_json(message) for message in selectors.messages_browse(queue=obj, limit=limit)])


class RequeueView(ManagementView):
    """meshsite extension: move dead messages back to the queues they died in."""

    @extend_schema(tags=TAG, parameters=[QUEUE], request=RequeueSerializer,
                   responses=responses({200: RequeueResultSerializer}, NAME_ERRORS, BODY_ERRORS))
    def post(self, request: Request, queue: str) -> Response:
        body = request.data if request.data else {}
        if not isinstance(body, dict) or set(body) - {"messageIds"}:
            raise Invalid("The body may only hold messageIds (a list); without it every message is re-queued")
        ids = body.get("messageIds")
        if ids is not None and not isinstance(ids, list):
            raise Invalid("messageIds must be a list of message ids")
        moved = services.dead_letters_requeue(instance=self.client.instance, queue_name=queue, message_ids=ids)
        return Response({"requeued": moved})


def _limit(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise Invalid("limit must be between 1 and 1000")
    return int(raw)
