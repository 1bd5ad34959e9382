"""Moved: webhook subscriptions' writes are services (messaging/services/webhooks.py), their
reads selectors, their JSON shapes in messaging/api/serializers.py. These names stay here
only for the two callers that still import them from here (messaging/admin/ and
messaging/tasks.py); import them from `messaging.services` instead."""

from ..services.webhooks import (
    WebhookSpec,
    webhook_create,
    webhook_delete,
    webhook_handshake_request,
    webhook_handshake_run,
    webhook_set_state,
)

__all__ = [
    "WebhookSpec",
    "webhook_create",
    "webhook_delete",
    "webhook_handshake_request",
    "webhook_handshake_run",
    "webhook_set_state",
]
