"""The message store's rules, each stated once, in the three forms its callers need: a Q
for the ORM (the sweep, selectors), SQL text for precompiled statements (the claim, the
engine's checks, and later the async path), and a predicate for a row already in hand.

SQL fragments use `%s` placeholders and return their parameters as plain Python values
(datetimes, UUIDs), so the same text runs through Django's cursor (which adapts them, see
`messaging.store.execute`) and through psycopg directly. tests/test_store_rules.py checks
each fragment against its Q over generated rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import F, Q

Fragment = tuple[str, list[Any]]


# --- available: what the next claim may take -------------------------------------------------
# Unlocked, or its lock has run out (an abandoned qos-1 claim needs no cleanup), and on a
# respectTtl queue not yet expired. Order is always by id: the queue's FIFO index.


def free_q(now: datetime, prefix: str = "") -> Q:
    """Not held by a consumer: never claimed, given back, or its lock ran out."""
    return Q(**{f"{prefix}locked_until__isnull": True}) | Q(**{f"{prefix}locked_until__lte": now})


def free_sql(now: datetime) -> Fragment:
    return "(locked_until IS NULL OR locked_until <= %s)", [now]


def available_q(now: datetime, *, respect_ttl: bool) -> Q:
    condition = free_q(now)
    return condition & Q(expires_at__gt=now) if respect_ttl else condition


def available_sql(now: datetime, *, respect_ttl: bool) -> Fragment:
    sql, params = free_sql(now)
    if respect_ttl:
        return f"{sql} AND expires_at > %s", [*params, now]
    return sql, params


def is_available(locked_until: datetime | None, expires_at: datetime, now: datetime, *, respect_ttl: bool) -> bool:
    free = locked_until is None or locked_until <= now
    return free and (not respect_ttl or expires_at > now)


# --- expiry: what the sweep moves for respectTtl queues --------------------------------------


def expired_q(now: datetime) -> Q:
    """Expired on a respectTtl queue and not held (a held one is the consumer's until settled
    or its lock runs out). On other queues the expiry is only a header."""
    return Q(queue__respect_ttl=True, expires_at__lte=now) & free_q(now)


def expired_sql(now: datetime) -> Fragment:
    """`expired_q` for the messages of one queue known to be respectTtl."""
    free, params = free_sql(now)
    return f"expires_at <= %s AND {free}", [now, *params]


# --- redelivery: when a message is dead, not delivered again --------------------------------


def exhausted(delivery_count: int, max_redelivery_count: int) -> bool:
    """Delivered once plus `maxRedeliveryCount` times (0: no limit), and still not settled."""
    return max_redelivery_count > 0 and delivery_count > max_redelivery_count


def exhausted_q() -> Q:
    return Q(queue__max_redelivery_count__gt=0, delivery_count__gt=F("queue__max_redelivery_count"))


def exhausted_sql(max_redelivery_count: int) -> Fragment:
    """`exhausted_q` for the messages of one queue with this limit (> 0). `delivery_count > 1`
    holds for every exhausted message and lets the planner use the partial index
    `message_redelivered`, which holds only redelivered messages."""
    return "delivery_count > 1 AND delivery_count > %s", [max_redelivery_count]


# --- the exclusive-consumer hold ---------------------------------------------------------------


def admits_consumer(
    *, exclusive: bool, owner: str, until: datetime | None, identity: str, now: datetime
) -> bool:
    """An EXCLUSIVE queue serves one consumer while its lease runs; anyone may take it after."""
    if not exclusive:
        return True
    lease_active = until is not None and until > now
    return not lease_active or owner == identity


def admits_consumer_sql(exclusive_value: str, identity: str, now: datetime) -> Fragment:
    return (
        "(access_type <> %s OR exclusive_until IS NULL OR exclusive_until <= %s OR exclusive_owner = %s)",
        [exclusive_value, now, identity],
    )


# --- flow control: maxDeliveredUnackedMsgsPerFlow ----------------------------------------------


def held_by_q(consumer: str, now: datetime) -> Q:
    """Delivered to `consumer` and not yet settled (nor given up: the lock still holds)."""
    return Q(claimed_by=consumer, locked_until__gt=now)


def held_by_sql(consumer: str, now: datetime) -> Fragment:
    return "claimed_by = %s AND locked_until > %s", [consumer, now]


def available_in_its_queue_q(now: datetime) -> Q:
    """`available_q` for messages of many queues at once (each under its own respectTtl)."""
    return free_q(now) & (Q(queue__respect_ttl=False) | Q(expires_at__gt=now))
