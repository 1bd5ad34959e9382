"""Consuming a queue and publishing over a WebSocket, whichever protocol carries it.

    QueueFeed    claims a queue's messages for one consumer (an AMQP receiver link, a JSON
                 subscription) as its credit allows, keeps what it holds until the client
                 settles it, and hands it all back when the consumer goes
    TopicFeed    a consumer of live topic messages, registered with the hub while it lives
    PublishPipe  a connection's publishes through the checks into the group-commit writer in
                 arrival order, each answered once its commit returns

A protocol supplies the wire: how much credit its consumer has, how a claimed row is sent,
and what an answer looks like.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.conf import settings
from django.utils import timezone

from meshsite.errors import MeshError
from messaging import store
from messaging.hotpath.catalog import CachedQueue
from messaging.hotpath.database import run_sync
from messaging.metrics import meter_count
from messaging.services.messages import lock_until
from messaging.store import statements

if TYPE_CHECKING:
    from .hub import LiveMessage
    from .session import LiveSession

Row = tuple[Any, ...]


class Outcome(Enum):
    ACCEPTED = "accepted"  # acknowledged: the message is gone
    RELEASED = "released"  # given back at once, its delivery not counted
    FAILED = "failed"  # counted towards maxRedeliveryCount, offered again after the redelivery delay


class QueueFeed:
    """One consumer of a queue. qos 1 claims like a REST consumer with qos 1 (locked to this
    consumer for MESH_ACK_TIMEOUT until settled, the lock renewed by the connection's
    housekeeping while it lives, so that if the server dies the claims come back by
    themselves); qos 0 removes what it claims."""

    def __init__(self, session: LiveSession, queue: CachedQueue, *, consumer: str, qos: int) -> None:
        self.session = session
        self.queue = queue
        self.consumer = consumer
        self.qos = qos
        self.flow_limit = store.flow_limit(queue, qos)  # maxDeliveredUnackedMsgsPerFlow
        self.unsettled: dict[str, UUID] = {}
        self.tags = itertools.count(1)
        self.pumping = False
        self.again = False
        self.closed = False
        session.hub.watch_queue(queue.pk, self)
        session.consumers_changed()

    # --- what a protocol supplies -------------------------------------------------------------

    def credit(self) -> int:
        raise NotImplementedError

    def emit(self, row: Row, tag: str, delivery_count: int) -> None:
        """Send one claimed message to the client under `tag` (spending a credit)."""
        raise NotImplementedError

    def drained(self) -> None:
        """Nothing more is available for the credit the client gave."""

    # --- credit and wake-ups ----------------------------------------------------------------

    def wake(self) -> None:
        self.kick()

    def _wanted(self) -> int:
        wanted = min(self.credit(), settings.MESH_AMQP_CLAIM_BATCH)
        if self.flow_limit:
            wanted = min(wanted, self.flow_limit - len(self.unsettled))
        return max(0, wanted)

    def kick(self) -> None:
        """Look for messages (credit came, the queue was written, something was given back)."""
        if self.closed:
            return
        if self.pumping:
            self.again = True  # the running pump looks once more before it rests
            return
        if self._wanted() == 0:
            self.drained()
            return
        self.pumping = True
        self.session.spawn(self._pump())

    async def _pump(self) -> None:
        try:
            while not self.closed:
                self.again = False
                wanted = self._wanted()
                if wanted == 0:
                    break
                rows = await self._claim(wanted)
                if self.closed:
                    await self._give_back([store.row_value(row, "claim_id") for row in rows])
                    return
                for row in rows:
                    self._send(row)
                self.session.flush_soon()
                if len(rows) < wanted and not self.again:
                    self.drained()
                    break
        finally:
            self.pumping = False

    async def _claim(self, wanted: int) -> list[Row]:
        """Up to `wanted` messages claimed for this consumer; exhausted ones go to the dead
        message queue (as every consumer's claim does) and the claim looks again."""
        executor = self.session.operations.executor
        while True:
            now = timezone.now()
            if self.queue.access_type == "EXCLUSIVE":
                await self.hold(now)
            rows = await executor.fetch(statements.claim(
                postgres=executor.postgres, queue_id=self.queue.pk, respect_ttl=self.queue.respect_ttl, qos=self.qos,
                now=now, limit=wanted, lock_until=lock_until(now, self.qos), consumer=self.consumer,
                redelivery_delay_ms=self.queue.redelivery_delay_in_ms,
                max_redelivery_delay_ms=self.queue.max_redelivery_delay_in_ms,
            ), durable=not store.claim_may_skip_flush(self.qos))
            live_rows = []
            for row in sorted(rows, key=lambda row: store.row_value(row, "id")):  # RETURNING has no order
                count = self.delivery_count(row)
                if store.redeliveries_exhausted(count, self.queue):
                    message = store.message_from_row(row)
                    message.delivery_count = count
                    await run_sync(store.dead_letter_exhausted, message=message, queue=self.queue,
                                   removed=self.qos == 0)
                else:
                    live_rows.append(row)
            if live_rows or len(rows) < wanted:
                meter_count(self.queue.pk, "consumed", len(live_rows))
                return live_rows

    def delivery_count(self, row: Row) -> int:
        """Deliveries so far including this one (a qos-0 claim does not count it in the row)."""
        return store.row_value(row, "delivery_count") + (1 if self.qos == 0 else 0)

    async def admit(self) -> None:
        """An EXCLUSIVE queue admits one consumer: take its lease now (then the consumer is
        attached), or detach and raise Conflict while another holds it."""
        if self.queue.access_type != "EXCLUSIVE":
            return
        try:
            await self.hold(timezone.now())
        except MeshError:
            self.detached()
            raise

    async def hold(self, now: datetime) -> None:
        """Take or renew the EXCLUSIVE queue's lease for this consumer (Conflict if another has it)."""
        await self.session.operations.hold_exclusive(self.queue, self.consumer, now)

    def _send(self, row: Row) -> None:
        tag = str(next(self.tags))
        self.emit(row, tag, self.delivery_count(row))
        if self.qos:
            self.unsettled[tag] = store.row_value(row, "claim_id")

    # --- settlement --------------------------------------------------------------------------

    def settle(self, tag: str, outcome: Outcome) -> bool:
        """The client's outcome for a message it holds; False when the tag is not one."""
        claim_id = self.unsettled.pop(tag, None)
        if claim_id is None:
            return False
        # Only a consumer held back by maxDeliveredUnackedMsgsPerFlow needs a settlement to go
        # on; otherwise credit decides, and a claim per settlement would be a statement per message.
        at_limit = bool(self.flow_limit) and len(self.unsettled) + 1 >= self.flow_limit
        settlements = self.session.settlements
        if outcome is Outcome.ACCEPTED:
            settlements.accepted.append(claim_id)
        elif outcome is Outcome.FAILED:
            settlements.failed.append(claim_id)
        else:
            settlements.released.append(claim_id)
            settlements.reopened.add(self.queue.pk)  # its consumers are woken once it is written
        self.session.settle_soon()
        if at_limit:
            self.kick()
        return True

    def detached(self) -> None:
        """The consumer or its connection went: what it holds returns to the queue at once,
        its delivery counted (it reached the client, which may have failed on it)."""
        if self.closed:
            return
        self.closed = True
        self.session.hub.unwatch_queue(self.queue.pk, self)
        self.session.consumers_changed()
        if self.unsettled:
            self.session.settlements.dropped.extend(self.unsettled.values())
            self.session.settlements.reopened.add(self.queue.pk)
            self.unsettled.clear()
        self.session.settle_soon()

    def held(self) -> list[UUID]:
        return list(self.unsettled.values())

    async def _give_back(self, claim_ids: list[object]) -> None:
        ids = [UUID(str(claim_id)) for claim_id in claim_ids if claim_id]
        meter_count(self.queue.pk, "consumed", -len(ids))  # claimed, never sent
        if ids:
            await self.session.operations.executor.run(statements.give_back_uncounted(
                postgres=self.session.operations.executor.postgres, claim_ids=ids))


class TopicFeed:
    """One consumer of live topic messages matching `pattern` (an AMQP receiver link on
    `topic:<pattern>`, a JSON topic subscription): registered with the hub until detached."""

    def __init__(self, session: LiveSession, pattern: str) -> None:
        self.session = session
        self.pattern = pattern
        self.dropped = 0  # live messages it could not take (no credit, a slow client)
        self.closed = False
        session.hub.listen(session.instance.subaccount_id, self)

    def deliver(self, message: LiveMessage) -> None:
        raise NotImplementedError

    def detached(self) -> None:
        if not self.closed:
            self.closed = True
            self.session.hub.unlisten(self.session.instance.subaccount_id, self)


Submit = Callable[[], Awaitable[Awaitable[None]]]
Answer = Callable[[BaseException | None], None]


class PublishPipe:
    """Publishes in arrival order through the checks (each `submit` raises its refusal or
    returns what completes at its commit) and answered in the same order, each by its own
    `answer` with the error or None; a publish never waits for the previous one's commit."""

    def __init__(self, session: LiveSession) -> None:
        self.session = session
        self.waiting: deque[tuple[Submit, Answer]] = deque()
        self.committing: deque[tuple[Awaitable[None], Answer]] = deque()
        self.draining = False
        self.answering = False

    def put(self, submit: Submit, answer: Answer) -> None:
        self.waiting.append((submit, answer))
        if not self.draining:
            self.draining = True
            self.session.spawn(self._drain())

    def __len__(self) -> int:
        return len(self.waiting) + len(self.committing)

    async def _drain(self) -> None:
        try:
            while self.waiting:
                submit, answer = self.waiting.popleft()
                try:
                    commit = await submit()
                except Exception as error:  # noqa: BLE001 - the answer says what it was
                    answer(error)
                    continue
                self.committing.append((commit, answer))
                if not self.answering:
                    self.answering = True
                    self.session.spawn(self._answer())
        finally:
            self.draining = False

    async def _answer(self) -> None:
        try:
            while self.committing:
                commit, answer = self.committing.popleft()
                try:
                    await commit
                except Exception as error:  # noqa: BLE001 - the answer says what it was
                    answer(error)
                    continue
                answer(None)
        finally:
            self.answering = False
