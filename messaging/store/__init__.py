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

from .capacity import (
    check_capacity,
    check_message_size,
    check_unacked,
    flow_cap,
    flow_limit,
    has_capacity_limits,
    unacked_refusal,
)
from .claims import (
    EXHAUSTED,
    Claim,
    claim,
    count_returned,
    dead_letter_exhausted,
    exclusive_until,
    extend,
    give_back_at,
    give_back_failed,
    give_back_for_retry,
    give_back_unattempted,
    has_available,
    hold_exclusive,
    redeliveries_exhausted,
    settle,
)
from .deadletter import dead_letter, requeue
from .durability import (
    claim_may_skip_flush,
    commit_without_flush,
    commit_without_flush_sql,
    may_skip_flush,
    relax_for_publish,
    settle_may_skip_flush,
)
from .execute import adapt, message_from_row, row_value
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
    "claim_may_skip_flush",
    "commit_without_flush",
    "commit_without_flush_sql",
    "count_returned",
    "dead_letter",
    "dead_letter_exhausted",
    "exclusive_until",
    "extend",
    "flow_cap",
    "flow_limit",
    "give_back_at",
    "give_back_failed",
    "give_back_for_retry",
    "give_back_unattempted",
    "has_available",
    "has_capacity_limits",
    "may_skip_flush",
    "hold_exclusive",
    "message_from_row",
    "row_value",
    "redeliveries_exhausted",
    "relax_for_publish",
    "settle_may_skip_flush",
    "requeue",
    "settle",
    "unacked_refusal",
]
