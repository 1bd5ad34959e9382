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
# Never claimed, given back at once, or past `available_at`: the lock end plus the redelivery
# delay (an abandoned qos-1 claim needs no cleanup, it simply waits out its delay), and on a
# respectTtl queue not yet expired. Order is always by id: the queue's FIFO index.


def free_q(now: datetime, prefix: str = "") -> Q:
    """Not held by a consumer nor waiting out a redelivery delay."""
    return Q(**{f"{prefix}available_at__isnull": True}) | Q(**{f"{prefix}available_at__lte": now})


def free_sql(now: datetime) -> Fragment:
    return "(available_at IS NULL OR available_at <= %s)", [now]


def available_q(now: datetime, *, respect_ttl: bool) -> Q:
    condition = free_q(now)
    return condition & Q(expires_at__gt=now) if respect_ttl else condition


def available_sql(now: datetime, *, respect_ttl: bool) -> Fragment:
    sql, params = free_sql(now)
    if respect_ttl:
        return f"{sql} AND expires_at > %s", [*params, now]
    return sql, params


def is_available(available_at: datetime | None, expires_at: datetime, now: datetime, *, respect_ttl: bool) -> bool:
    free = available_at is None or available_at <= now
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


# --- the redelivery delay: a failed delivery waits before the message is offered again ----------
# A consumer that fails fast would otherwise take the same message again at once, thousands
# of times a minute. Delivery n (delivery_count after it, n >= 1) that failed waits
# min(base * 2^(n-1), cap) ms; base 0 (or cap 0) disables it. The exponent stops at 30:
# base >= 1 ms makes 2^30 ms pass any cap (at most MAX_REDELIVERY_DELAY_MS) and
# base * 2^30 stays within a 64-bit integer.
_MAX_DOUBLINGS = 30


def redelivery_delay_ms(delivery_count: int, base_ms: int, cap_ms: int) -> int:
    return min(base_ms * 2 ** min(max(delivery_count - 1, 0), _MAX_DOUBLINGS), cap_ms)


def redelivery_at_sql(*, postgres: bool, start: Fragment, count: str, base: Fragment, cap: Fragment) -> Fragment:
    """SQL for `start` + redelivery_delay_ms(`count`, `base`, `cap`): `count` a column
    expression, the others fragments (a placeholder, a subquery). SQLite keeps datetimes as
    ISO text: its strftime adds the delay to millisecond precision, which compares correctly
    with Django's microsecond text; a zero delay keeps `start` exactly as written."""
    least = "LEAST" if postgres else "MIN"
    doublings = f"(1 << {least}(({count}) - 1, {_MAX_DOUBLINGS}))"
    if postgres:
        delay = f"LEAST(({base[0]})::bigint * {doublings}, ({cap[0]})::bigint)"
        return (f"({start[0]})::timestamptz + {delay} * interval '1 millisecond'",
                [*start[1], *base[1], *cap[1]])
    delay = f"MIN(({base[0]}) * {doublings}, ({cap[0]}))"
    sql = (
        f"CASE WHEN {delay} = 0 THEN ({start[0]})"
        f" ELSE strftime('%%Y-%%m-%%d %%H:%%M:%%f', ({start[0]}), '+' || ({delay} / 1000.0) || ' seconds') END"
    )
    delay_params = [*base[1], *cap[1]]
    return sql, [*delay_params, *start[1], *start[1], *delay_params]


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
