"""Durability per write: whether a commit waits for the WAL flush.

An answered qos-1 publish must survive a database crash, so it commits durably. qos 0
promises at most once, and the webhook engine's bookkeeping (claims, acknowledgements, its
log) only causes a redelivery if lost, so those commits may return before the flush. So do
a REST consumer's qos-1 claims and its acknowledgements: a lost claim leaves the message
available, a lost acknowledgement brings it back after the crash, redelivered (at least
once); no message is lost either way. A qos-0 consume removes its message and stays durable:
losing that commit would deliver an at-most-once message a second time. Waiting for the
flush was most of a consume+ack's time (two WAL flushes per message, ~1 ms each here).
"""

from __future__ import annotations

from django.db import connection

from .statements import SKIP_WAL_FLUSH


def commit_without_flush() -> None:
    """Let the current transaction's commit return before the WAL is flushed (PostgreSQL):
    for writes whose loss in a database crash is acceptable, never for an answered publish."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(SKIP_WAL_FLUSH)


def commit_without_flush_sql(qos: str) -> str:
    """The same switch as an SQL expression (PostgreSQL), for a statement that starts a
    transaction and would otherwise pay a round trip for the SET LOCAL before it: relaxes the
    commit when the SQL expression `qos` is 1 (`claim_may_skip_flush`, in SQL), leaves it as
    it is otherwise. Put it where it
    is evaluated once the statement has written (its RETURNING list)."""
    return (
        f"set_config('synchronous_commit', CASE WHEN {qos} = 1 THEN 'off'"
        " ELSE current_setting('synchronous_commit') END, true)"
    )


def may_skip_flush(qos: int) -> bool:
    """The publish rule: only at-most-once messages may lose their last commit."""
    return qos == 0


def claim_may_skip_flush(qos: int) -> bool:
    """The consume rule: a qos-1 claim, if lost, is only a redelivery; a qos-0 one is not."""
    return qos == 1


def settle_may_skip_flush() -> bool:
    """The acknowledgement rule: a lost settle brings the message back (redelivered), so
    every acknowledgement may return before the flush."""
    return True


def relax_for_publish(qos: int) -> None:
    """Inside the publish's transaction: skip the flush where the qos allows it."""
    if may_skip_flush(qos):
        commit_without_flush()
