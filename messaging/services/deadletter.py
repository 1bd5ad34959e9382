"""Dead-lettering as a service, for callers outside a claim (the rule is the store's)."""

from __future__ import annotations

from .. import store
from ..models import Message, Queue


def message_dead_letter(*, message: Message, queue: Queue, reason: str) -> None:
    """Move a message to its queue's deadMsgQueue, or drop it when the queue has none. Runs
    inside the caller's transaction with the message row locked."""
    store.dead_letter(message=message, queue=queue, reason=reason)
