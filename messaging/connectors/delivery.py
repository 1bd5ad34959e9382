"""Notifications to callback URLs, through the Event Mesh webhook delivery engine.

A connector instance with a callback URL owns two queues of its open-connectors service
instance and one webhook subscription: `connector-<id>/notifications`, pushed to the callback
URL, and `connector-<id>/queued`, its dead message queue. So a notification gets what every
Event Mesh push gets -- at least once, ordered, the retry schedule with backoff
(MESH_WEBHOOK_RETRY_SCHEDULE), a delivery log, the SSRF guard at connect time -- and after
MESH_CONNECTOR_DELIVERY_ATTEMPTS failed attempts it moves to the instance's queued
notifications instead of being dropped, where it waits until it is redelivered.

The queues belong to the open-connectors instance, whose tokens the Event Mesh APIs refuse,
so no messaging client can consume from them; the cockpit shows them on the connector's
pages. Everything here runs inside the caller's transaction.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from meshsite import secretbox

from ..models import (
    ConnectorInstance,
    HandshakeStatus,
    Queue,
    SignatureScheme,
    WebhookStatus,
    WebhookSubscription,
)
from ..services.webhooks import schedule_delivery


def queue_names(instance: ConnectorInstance) -> tuple[str, str]:
    """The instance's delivery queue and its dead message queue (where notifications wait)."""
    return f"connector-{instance.pk}/notifications", f"connector-{instance.pk}/queued"


def _queues(instance: ConnectorInstance) -> Queue:
    name, queued = queue_names(instance)
    Queue.objects.get_or_create(instance=instance.service_instance, name=queued)
    queue, _ = Queue.objects.update_or_create(
        instance=instance.service_instance, name=name,
        defaults={
            # The first delivery and this many redeliveries, then the dead message queue.
            "max_redelivery_count": settings.MESH_CONNECTOR_DELIVERY_ATTEMPTS - 1,
            "dead_msg_queue": queued, "respect_ttl": False, "has_webhooks": True,
        },
    )
    return queue


def _signing(instance: ConnectorInstance) -> list[str]:
    key = instance.secret("event.notification.signature.key")
    return [secretbox.seal(key)] if key else []


def delivery_sync(*, instance: ConnectorInstance) -> None:
    """Make the queue and webhook subscription match the instance's configuration: created
    with the first callback URL, following its changes, paused while events are disabled
    or the URL is removed (what is queued stays), and resumed when they are back."""
    url = instance.callback_url()
    webhook = instance.delivery_webhook
    if not url:
        if webhook is not None and webhook.status == WebhookStatus.ACTIVE:
            WebhookSubscription.objects.filter(pk=webhook.pk).update(status=WebhookStatus.PAUSED)
        return
    queue = _queues(instance)
    active = instance.events_enabled()
    fields = {
        "queue": queue, "endpoint": url, "qos": 1, "exempt_handshake": True,
        "handshake_status": HandshakeStatus.EXEMPTED, "default_content_type": "application/json",
        "signing_secrets": _signing(instance), "signature_scheme": SignatureScheme.ELEMENTS,
        "status": WebhookStatus.ACTIVE if active else WebhookStatus.PAUSED,
    }
    if webhook is None:
        webhook = WebhookSubscription.objects.create(
            instance=instance.service_instance, name=f"connector-{instance.pk}", **fields)
    else:
        resuming = active and webhook.status != WebhookStatus.ACTIVE
        for field, value in fields.items():
            setattr(webhook, field, value)
        if resuming or webhook.endpoint != url:
            _reset_health(webhook)
        webhook.save()
    ConnectorInstance.objects.filter(pk=instance.pk).update(delivery_queue=queue, delivery_webhook=webhook)
    instance.delivery_queue, instance.delivery_webhook = queue, webhook
    if active:
        schedule_delivery(webhook.pk)


def _reset_health(webhook: WebhookSubscription) -> None:
    # A new endpoint, or delivery resumed: start afresh, the backlog in the engine's slow start.
    webhook.next_attempt_at = webhook.failing_since = None
    webhook.consecutive_failures = 0
    webhook.resumed_at = timezone.now()


def delivery_remove(*, instance: ConnectorInstance) -> None:
    """Drop the instance's queues (and with them its subscription and what they hold)."""
    Queue.objects.filter(instance=instance.service_instance, name__in=queue_names(instance)).delete()


def delivery_resume(*, instance: ConnectorInstance) -> None:
    """Open the retry gate now (a redelivery on demand should not wait for a backoff)."""
    webhook = instance.delivery_webhook
    if webhook is None or not instance.events_enabled():
        return
    with transaction.atomic():
        _reset_health(webhook)
        webhook.status = WebhookStatus.ACTIVE
        webhook.save(update_fields=["next_attempt_at", "failing_since", "consecutive_failures", "resumed_at",
                                    "status"])
        schedule_delivery(webhook.pk)

