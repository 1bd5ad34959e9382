"""Every write in Event Mesh: the REST API, the WebSocket consumers, Celery tasks, the
cockpit and the CLI all call these, so they all behave the same."""

from .deadletters import dead_letters_requeue
from .messages import (
    Delivery,
    Outgoing,
    message_ack,
    message_consume,
    message_publish_to_queue,
    message_publish_to_topic,
    message_release,
)
from .queues import (
    QueueAttributes,
    queue_delete,
    queue_purge,
    queue_put,
    subscription_delete,
    subscription_put,
)
from .sweep import queues_sweep
from .webhooks import (
    WebhookSpec,
    webhook_create,
    webhook_delete,
    webhook_handshake_request,
    webhook_handshake_run,
    webhook_set_state,
)

__all__ = [
    "dead_letters_requeue",
    "Delivery",
    "Outgoing",
    "QueueAttributes",
    "message_ack",
    "message_consume",
    "message_publish_to_queue",
    "message_publish_to_topic",
    "message_release",
    "queue_delete",
    "queue_purge",
    "queue_put",
    "queues_sweep",
    "subscription_delete",
    "subscription_put",
    "WebhookSpec",
    "webhook_create",
    "webhook_delete",
    "webhook_handshake_request",
    "webhook_handshake_run",
    "webhook_set_state",
]
