"""The push: one POST of a message to the endpoint, over the worker thread's kept-alive
session. Named `pushing` so that `delivery.push` stays the function."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from django.conf import settings
from django.utils import timezone

from meshsite import secretbox
from meshsite.secretbox import SecretUnreadable

from ...models import Message, SignatureScheme, WebhookSubscription
from .. import netguard, signing
from ..auth import TokenFetchFailed, authorization_for

log = logging.getLogger(__name__)


QOS0_MAX_IDLE = 1.0  # seconds idle after which a connection is not reused for a qos-0 push


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    status_code: int | None = None
    error: str = ""
    retry_after: float | None = None
    latency_ms: float = 0.0
    excerpt: str = ""


_local = threading.local()


def _thread_session() -> netguard.Session:
    """The worker thread's session: at low rates every message has a run of its own, and a
    connection (a TLS handshake, for https) per run would cost more than the push."""
    session: netguard.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = netguard.Session(max_idle=settings.MESH_WEBHOOK_KEEPALIVE)
    return session

def _headers(subscription: WebhookSubscription, message: Message) -> dict[str, str]:
    headers = {
        "Content-Type": message.content_type or subscription.default_content_type or "application/octet-stream",
        "x-address": message.address,
        "x-qos": str(subscription.qos),
        "x-message-id": str(message.uuid),
    }
    if subscription.signing_secrets and subscription.signature_scheme == SignatureScheme.ELEMENTS:
        key = secretbox.unseal(subscription.signing_secrets[0])
        headers[signing.ELEMENTS_HEADER] = signing.elements_signature(key, bytes(message.payload))
    elif subscription.signing_secrets:
        # webhook-id is the message's own id, so it stays the same on every retry.
        headers.update(signing.signature_headers(
            message_id=str(message.uuid), timestamp=int(time.time()), body=bytes(message.payload),
            secrets=[secretbox.unseal(sealed) for sealed in subscription.signing_secrets],
        ))
    return headers


def push(subscription: WebhookSubscription, message: Message, session: netguard.Session | None = None) -> Outcome:
    """One POST of `message` to the endpoint; a 401 under oauth2 fetches a new token once.

    Never raises: whatever goes wrong is an attempt that failed, so it is logged, counted
    towards maxRedeliveryCount and closes the retry gate -- an unexpected error must not
    turn into a message pushed again on every sweep.
    """
    if session is None:
        with netguard.Session() as own:
            return push(subscription, message, own)
    # A kept-alive connection found closed is retried once for qos 1 (at least once); a
    # qos-0 message is never sent twice, so it only reuses a connection that was busy a
    # moment ago, before a receiver's idle timeout could close it under the request.
    retry_stale = subscription.qos == 1
    max_idle = None if retry_stale else QOS0_MAX_IDLE
    try:
        headers = _headers(subscription, message)
        authorization = authorization_for(subscription)
        if authorization:
            headers["Authorization"] = authorization
        response = session.request(
            "POST", subscription.endpoint, headers=headers, content=bytes(message.payload), retry_stale=retry_stale,
            max_idle=max_idle,
        )
        if response.status_code == 401 and subscription.security.get("type") == "oauth2":
            headers["Authorization"] = authorization_for(subscription, refresh=True) or ""
            response = session.request(
                "POST", subscription.endpoint, headers=headers, content=bytes(message.payload), retry_stale=retry_stale,
                max_idle=max_idle,
            )
        succeeded = 200 <= response.status_code < 300
        return Outcome(
            succeeded=succeeded,
            status_code=response.status_code,
            error="" if succeeded else f"receiver answered {response.status_code}",
            retry_after=_retry_after(response) if response.status_code in (429, 503) else None,
            latency_ms=response.elapsed_ms,
            excerpt=response.body[:500].decode("utf-8", "replace"),
        )
    except (ValueError, netguard.DeliveryError, TokenFetchFailed, SecretUnreadable) as error:
        return Outcome(succeeded=False, error=str(error)[:500])
    except Exception as error:  # noqa: BLE001 - a bug must not become a hot loop; see above
        log.exception("webhook %s: push of %s failed unexpectedly", subscription.pk, message.uuid)
        return Outcome(succeeded=False, error=f"internal error: {type(error).__name__}: {error}"[:500])


def _retry_after(response: netguard.GuardedResponse) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when unusable."""
    value = response.headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        return float(int(value)) if len(value) <= 10 else 1e10  # int() refuses 4,300+ digits
    try:
        return max((parsedate_to_datetime(value) - timezone.now()).total_seconds(), 0.0)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
