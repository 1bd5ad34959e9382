"""The message store: every storage rule of a message's life, written once.

What "available" means, claim, settle (ack), give back (with or without counting the
delivery), dead-letter, expiry, capacity and flow limits, the exclusive-consumer hold and
durability per qos. REST consumers and publishers (messaging.services), the webhook engine
and the sweep call these; none restates a rule in its own SQL or ORM filter.

Layers: `rules` (Q expressions, SQL fragments, predicates), `statements` (whole SQL texts
with their parameters, no connection), and the functions below, which run them through
Django's connection in the caller's transaction. An async path can run `statements`
through psycopg without the rest.
"""

from .capacity import check_capacity, check_message_size, check_unacked, flow_cap, has_capacity_limits
from .claims import (
    EXHAUSTED,
    Claim,
    claim,
    extend,
    give_back,
    give_back_failed,
    give_back_unattempted,
    has_available,
    hold_exclusive,
    settle,
)
from .deadletter import dead_letter, requeue
from .durability import commit_without_flush, relax_for_publish
from .execute import adapt, message_from_row
from .queues import StoredQueue

__all__ = [
    "EXHAUSTED",
    "Claim",
    "StoredQueue",
    "adapt",
    "check_capacity",
    "check_message_size",
    "check_unacked",
    "claim",
    "commit_without_flush",
    "dead_letter",
    "extend",
    "flow_cap",
    "give_back",
    "give_back_failed",
    "give_back_unattempted",
    "has_available",
    "has_capacity_limits",
    "hold_exclusive",
    "message_from_row",
    "relax_for_publish",
    "requeue",
    "settle",
]
