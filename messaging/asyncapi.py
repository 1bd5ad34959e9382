"""An AsyncAPI 3.0.0 document of one Event Mesh instance's live topology.

It describes what a client of the instance can do, as the instance stands now: its queues
(send, receive), the topics its queues subscribe to or hold messages of (send where the
topic is concrete, live receive over the WebSocket), and its webhook subscriptions (the
endpoints that receive a queue's pushes). The servers are the two of every service key,
`httprest` and `amqp10ws`, and the security scheme is the key's client-credentials flow.

Nothing secret is read, let alone written: webhook rows are loaded without their sealed
credentials and signing secrets, and an endpoint's query string (where receivers such as
Azure Functions keep an access key) is left out. Four queries, one per kind, whatever the
instance holds; the reads live here because only this document needs them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings

from meshsite.platform.models import ServiceInstance

from .models import Queue, Subscription, WebhookSubscription
from .names import literal_prefix
from .selectors import topics_stored

ASYNCAPI_VERSION = "3.0.0"
SECURITY = [{"$ref": "#/components/securitySchemes/oauth2"}]
MESSAGE = "message"
_KEY_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


# ---- reads ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Webhook:
    """What the document may show of a webhook subscription: no credentials, no secrets."""

    name: str
    queue: str
    endpoint: str
    qos: int
    status: str
    handshake_status: str
    authentication: str  # the securitySchema's type ("basicAuth", "oauth2"), "" for none


@dataclass
class TopicUse:
    """One topic channel: a pattern queues subscribe to, a topic stored messages were sent to, or both."""

    subscribed_by: list[str] = field(default_factory=list)
    stored_in: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InstanceTopology:
    queues: list[Queue]
    topics: dict[str, TopicUse]
    webhooks: list[Webhook]


def topology_read(*, instance: ServiceInstance) -> InstanceTopology:
    topics: dict[str, TopicUse] = defaultdict(TopicUse)
    for pattern, queue in _subscriptions(instance=instance):
        topics[pattern].subscribed_by.append(queue)
    for topic, queue in topics_stored(instance=instance):
        topics[topic].stored_in.append(queue)
    return InstanceTopology(
        queues=list(Queue.objects.filter(instance=instance).order_by("name")),
        topics=dict(sorted(topics.items())),
        webhooks=_webhooks(instance=instance),
    )


def _subscriptions(*, instance: ServiceInstance) -> Iterable[tuple[str, str]]:
    return Subscription.objects.filter(queue__instance=instance).order_by("pattern", "queue__name").values_list(
        "pattern", "queue__name"
    )


def _webhooks(*, instance: ServiceInstance) -> list[Webhook]:
    # values(), not model instances: the sealed `security` secrets and `signing_secrets` are
    # never fetched, so no later change here can leak them into the document.
    rows = WebhookSubscription.objects.filter(instance=instance).order_by("name").values(
        "name", "queue__name", "endpoint", "qos", "status", "handshake_status", "security__type"
    )
    return [
        Webhook(
            name=row["name"], queue=row["queue__name"], endpoint=_public_endpoint(row["endpoint"]),
            qos=row["qos"], status=row["status"], handshake_status=row["handshake_status"],
            authentication=row["security__type"] or "",
        )
        for row in rows
    ]


def _public_endpoint(endpoint: str) -> str:
    # The endpoint refuses user:password@ already (netguard); a query string may still carry
    # a key, and the document is made to be passed around.
    parts = urlsplit(endpoint)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# ---- keys -----------------------------------------------------------------------------------

def component_key(name: str) -> str:
    """`name` as an AsyncAPI key (`^[A-Za-z0-9_-]+$`), stable and collision-free.

    Percent-encoding with `_` for `%`: letters, digits and `-` stay, every other byte of the
    UTF-8 becomes `_XX` (`a/b_c` -> `a_2Fb_5Fc`). Fixed-width escapes and `_` escaped itself
    make it reversible, so two names never share a key (a readable `a/b` -> `a_b` would merge
    `a/b` with `a_b`).
    """
    return "".join(char if char in _KEY_SAFE else "".join(f"_{byte:02X}" for byte in char.encode()) for char in name)


def _channel_ref(key: str) -> dict[str, str]:
    return {"$ref": f"#/channels/{key}"}


def _message_refs(key: str) -> list[dict[str, str]]:
    return [{"$ref": f"#/channels/{key}/messages/{MESSAGE}"}]


def _operation(action: str, channel: str, summary: str, description: str, **extensions: Any) -> dict[str, Any]:
    return {"action": action, "channel": _channel_ref(channel), "summary": summary, "description": description,
            "messages": _message_refs(channel), **extensions}


def _channel(address: str, description: str, **extensions: Any) -> dict[str, Any]:
    return {"address": address, "description": description,
            "messages": {MESSAGE: {"$ref": f"#/components/messages/{MESSAGE}"}}, **extensions}


# ---- queues ---------------------------------------------------------------------------------

def _queue_attributes(queue: Queue) -> dict[str, Any]:
    """The queue's attributes under the management API's names (0 = no limit)."""
    return {
        "accessType": queue.access_type,
        "maxQueueSizeInBytes": queue.max_queue_size_in_bytes,
        "maxQueueMessageCount": queue.max_queue_message_count,
        "maxMessageSizeInBytes": queue.max_message_size_in_bytes,
        "respectTtl": queue.respect_ttl,
        "maxRedeliveryCount": queue.max_redelivery_count,
        "deadMsgQueue": queue.dead_msg_queue or None,
        "maxDeliveredUnackedMsgsPerFlow": queue.max_delivered_unacked_msgs_per_flow,
        "redeliveryDelayInMs": queue.redelivery_delay_in_ms,
        "maxRedeliveryDelayInMs": queue.max_redelivery_delay_in_ms,
    }


def _queue_description(queue: Queue, patterns: list[str], hooks: list[str]) -> str:
    attributes = ", ".join(f"{name} {json.dumps(value)}" for name, value in _queue_attributes(queue).items())
    lines = [f"Queue `{queue.name}`. Attributes (0 = no limit): {attributes}."]
    if patterns:
        lines.append("Subscribed to the topics " + ", ".join(f"`{p}`" for p in patterns) + ".")
    if hooks:
        lines.append("Pushed to the webhook subscriptions " + ", ".join(f"`{h}`" for h in hooks) + ".")
    return "\n\n".join(lines)


def _queue_entries(
    topology: InstanceTopology, channels: dict[str, Any], operations: dict[str, Any]
) -> None:
    patterns: dict[str, list[str]] = defaultdict(list)
    for pattern, use in topology.topics.items():
        for queue_name in use.subscribed_by:
            patterns[queue_name].append(pattern)
    hooks: dict[str, list[str]] = defaultdict(list)
    for hook in topology.webhooks:
        hooks[hook.queue].append(hook.name)
    for queue in topology.queues:
        key = f"queue-{component_key(queue.name)}"
        channels[key] = _channel(f"queue:{queue.name}", _queue_description(queue, patterns[queue.name],
                                                                           hooks[queue.name]),
                                 **{"x-meshsite-queue": _queue_attributes(queue)})
        operations[f"send-{key}"] = _operation(
            "send", key, f"Publish to queue {queue.name}",
            "REST `POST /messagingrest/v1/queues/{queue}/messages`, or an AMQP sender link to this address.")
        operations[f"receive-{key}"] = _operation(
            "receive", key, f"Consume queue {queue.name}",
            "REST `POST /messagingrest/v1/queues/{queue}/messages/consumption` (and its acknowledgement), "
            "or an AMQP receiver link on this address; each message goes to one consumer.")


# ---- topics ---------------------------------------------------------------------------------

def _is_pattern(topic: str) -> bool:
    return literal_prefix(topic) != topic


def _topic_description(topic: str, use: TopicUse) -> str:
    kind = "Topic pattern" if _is_pattern(topic) else "Topic"
    lines = [f"{kind} `{topic}`."]
    if use.subscribed_by:
        lines.append("Subscribed by the queues " + ", ".join(f"`{q}`" for q in use.subscribed_by)
                     + ": a message published to a matching topic is stored in each of them.")
    if use.stored_in:
        lines.append("Messages published to it are stored now in the queues "
                     + ", ".join(f"`{q}`" for q in use.stored_in) + ".")
    return "\n\n".join(lines)


def _topic_entries(topology: InstanceTopology, channels: dict[str, Any], operations: dict[str, Any]) -> None:
    for topic, use in topology.topics.items():
        key = f"topic-{component_key(topic)}"
        channels[key] = _channel(f"topic:{topic}", _topic_description(topic, use),
                                 **{"x-meshsite-subscribed-by": use.subscribed_by,
                                    "x-meshsite-stored-in": use.stored_in})
        if not _is_pattern(topic):
            # A publish needs a concrete topic: `+` and `*` only select, in subscriptions.
            operations[f"send-{key}"] = _operation(
                "send", key, f"Publish to topic {topic}",
                "REST `POST /messagingrest/v1/topics/{topic}/messages`, or an AMQP sender link to this "
                "address: stored in every queue of the subaccount whose subscription matches.")
        operations[f"receive-{key}"] = _operation(
            "receive", key, f"Receive topic {topic} live",
            "An AMQP receiver link on this address (or a JSON WebSocket topic subscription) on the amqp10ws "
            "server: messages published from then on, not stored. Subscribe a queue to keep them.")


# ---- webhooks -------------------------------------------------------------------------------

def _webhook_entries(topology: InstanceTopology, channels: dict[str, Any], operations: dict[str, Any]) -> None:
    for hook in topology.webhooks:
        channel = f"queue-{component_key(hook.queue)}"
        if channel not in channels:
            continue  # its queue went between the two reads (no transaction holds them together)
        auth = f", authenticated by {hook.authentication}" if hook.authentication else ""
        operations[f"webhook-{component_key(hook.name)}"] = _operation(
            "receive", channel, f"Webhook subscription {hook.name}",
            f"The mesh pushes each message of queue `{hook.queue}` as `POST {hook.endpoint}` (query string not "
            f"shown), qos {hook.qos}{auth}; status {hook.status}, handshake {hook.handshake_status}.",
            **{"x-meshsite-webhook": {
                "name": hook.name, "endpoint": hook.endpoint, "qos": hook.qos, "status": hook.status,
                "handshakeStatus": hook.handshake_status, "authentication": hook.authentication or None,
            }},
        )


# ---- the document ---------------------------------------------------------------------------

def _servers() -> dict[str, Any]:
    """The two entries of every service key's `messaging` (meshsite.platform.keys)."""
    base = urlsplit(settings.MESH_PUBLIC_URL)
    secure = base.scheme == "https"
    rest = {"host": base.netloc, "protocol": "https" if secure else "http", "title": "httprest",
            "description": "The SAP-compatible messaging REST API (`/messagingrest/v1`) and management API "
                           "(`/hub/rest/api/v1/management/messaging`).",
            "security": SECURITY}
    if base.path:
        rest["pathname"] = base.path
    # protocolVersion qualifies `protocol` (WebSocket, RFC 6455 version 13); the AMQP 1.0 the
    # socket carries is said in the description, where AsyncAPI has no field for it.
    amqp = {"host": base.netloc, "pathname": f"{base.path}/protocols/amqp10ws",
            "protocol": "wss" if secure else "ws", "protocolVersion": "13", "title": "amqp10ws",
            "description": "AMQP 1.0 over WebSocket: subprotocol `amqp`, `Authorization: Bearer <token>` on the "
                           "upgrade, then SASL ANONYMOUS or the plain AMQP header.",
            "security": SECURITY, "x-meshsite-subprotocol": "amqp"}
    return {"httprest": rest, "amqp10ws": amqp}


def _components() -> dict[str, Any]:
    return {
        "messages": {MESSAGE: {
            "name": MESSAGE, "title": "Event Mesh message",
            "summary": "The bytes as published, in their own content type (the publisher's Content-Type).",
            "payload": {"description": "Opaque to the mesh: whatever the publisher sent."},
        }},
        "securitySchemes": {"oauth2": {
            "type": "oauth2",
            "description": "The client credentials (`clientid`, `clientsecret`) of a service key of this "
                           "instance; send the token as `Authorization: Bearer <token>`.",
            "flows": {"clientCredentials": {"tokenUrl": f"{settings.MESH_PUBLIC_URL}/oauth/token",
                                            "availableScopes": {}}},
            "scopes": [],
        }},
    }


def _info(instance: ServiceInstance, *, version: str) -> dict[str, Any]:
    return {
        "title": instance.name,
        "version": version,
        "description": (
            f"The live topology of the Event Mesh instance `{instance.name}` (namespace `{instance.namespace}`): "
            "its queues, the topics its queues subscribe to or hold messages of, and its webhook "
            "subscriptions. Operations are a client's: send to a queue or topic, receive from a queue."
        ),
    }


def asyncapi_document(*, instance: ServiceInstance) -> dict[str, Any]:
    """The instance's topology as an AsyncAPI 3.0.0 document (a JSON-ready dict)."""
    topology = topology_read(instance=instance)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    _queue_entries(topology, channels, operations)
    _topic_entries(topology, channels, operations)
    _webhook_entries(topology, channels, operations)
    servers = _servers()
    # A digest, not a counter: the same topology always carries the same version, and any
    # change (a queue, a subscription, a topic newly stored) a new one.
    content = json.dumps([servers, channels, operations], sort_keys=True).encode()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": f"urn:uuid:{instance.id}",
        "info": _info(instance, version=hashlib.sha256(content).hexdigest()[:12]),
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": _components(),
    }


_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def attachment(instance_name: str) -> str:
    """The Content-Disposition: a plain-ASCII `filename` every client reads, and RFC 6266's
    `filename*` with the real name when it holds anything else (quotes, slashes, non-ASCII)."""
    plain = _UNSAFE_IN_FILENAME.sub("-", instance_name).strip("-.") or "instance"
    value = f'attachment; filename="{plain}-asyncapi.json"'
    if plain != instance_name:
        value += f"; filename*=UTF-8''{quote(instance_name, safe='')}-asyncapi.json"
    return value
