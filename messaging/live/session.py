"""What a WebSocket connection shares whichever protocol it speaks (AMQP 1.0 or JSON): the
tasks it starts, the outcomes its clients give (written in batches), the housekeeping that
renews its claims and rechecks its credentials, and the hand-back of everything it holds
when the socket goes.

A protocol's connection subclasses `LiveSession` and says how it closes itself when its
credentials stop standing (`revoke`), what to do when a task fails (`task_failed`), and
which queue feeds it has (`feeds`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.conf import settings
from django.utils import timezone

from meshsite.platform.models import ServiceInstance
from messaging import store
from messaging.hotpath.database import run_sync
from messaging.services.connections import connection_consumes
from messaging.store import statements

from . import hub, queues_written
from .hub import Hub

if TYPE_CHECKING:
    from .feed import QueueFeed

log = logging.getLogger(__name__)

StillValid = Callable[[], Awaitable[bool]]


@dataclass
class Settlements:
    """Outcomes gathered while a client's frames are handled, written as one statement per
    kind."""

    accepted: list[UUID] = field(default_factory=list)
    released: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)
    dropped: list[UUID] = field(default_factory=list)
    # Queues whose messages these outcomes make available again at once (released, dropped):
    # their consumers are woken once the statements are written.
    reopened: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.accepted or self.released or self.failed or self.dropped)

    def take(self, *, postgres: bool) -> tuple[list[statements.Statement], set[int]]:
        """The statements that write these outcomes, and the queues they reopen."""
        taken = []
        now = timezone.now() if self.failed or self.dropped else None
        if self.accepted:
            taken.append(statements.settle(postgres=postgres, claim_ids=self.accepted))
        if self.released:
            taken.append(statements.give_back_uncounted(postgres=postgres, claim_ids=self.released))
        if self.failed and now is not None:  # after the queue's redelivery delay
            taken.append(statements.give_back_failed(postgres=postgres, claim_ids=self.failed, now=now))
        if self.dropped and now is not None:  # counted, but at once: the consumer went, not the message
            taken.append(statements.give_back_at(postgres=postgres, claim_ids=self.dropped, available_at=now))
        reopened = self.reopened
        self.accepted, self.released, self.failed, self.dropped, self.reopened = [], [], [], [], set()
        return taken, reopened


class LiveSession:
    label = "ws"  # for the log

    def __init__(self, *, instance: ServiceInstance, still_valid: StillValid) -> None:
        from messaging.hotpath import endpoints  # the executor and catalog live with the hot path

        self.instance = instance
        self.still_valid = still_valid
        self.id = uuid.uuid4().hex[:12]
        self.operations = endpoints()
        self.hub: Hub = hub()
        self.settlements = Settlements()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.loop = asyncio.get_running_loop()
        self._settling = False
        self.finished = False
        self.connection_id: uuid.UUID | None = None  # its Connection row, once admitted
        self._consumed: list[int] = []  # the queue ids that row says it consumes
        self._housekeeping = self.loop.create_task(self._housekeep(), name=f"meshsite-{self.label}-{self.id}")

    # --- what a protocol supplies -------------------------------------------------------------

    def feeds(self) -> Iterable[QueueFeed]:
        raise NotImplementedError

    def drop_all(self) -> None:
        """Every feed and listener of this connection detached (the socket is going)."""
        raise NotImplementedError

    def revoke(self, reason: str) -> None:
        """The credentials no longer stand: close with the reason."""
        raise NotImplementedError

    def task_failed(self, error: BaseException) -> None:
        raise NotImplementedError

    def task_done(self) -> None:
        """After a task that may have changed what the client is to be sent."""

    def flush_soon(self) -> None:
        raise NotImplementedError

    # --- tasks ----------------------------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, quiet: bool = False) -> None:
        """Run `coroutine` for this connection; `quiet` ones only write to the store and
        leave nothing to send."""
        task = self.loop.create_task(coroutine)
        if quiet:
            task.meshsite_quiet = True  # type: ignore[attr-defined]
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None and getattr(task, "meshsite_quiet", False):
            return
        if error is not None and not self.finished:
            self.task_failed(error)
        self.task_done()

    # --- the store ------------------------------------------------------------------------------

    def settle_soon(self) -> None:
        if self.settlements and not self._settling and not self.finished:
            self._settling = True
            self.spawn(self._settle_all(), quiet=True)

    async def _settle_all(self) -> None:
        """Write outcomes while there are any: those that arrive while a statement runs go
        in the next one, so a client settling message by message costs a statement per
        round trip to the store, not one per message. The first waits MESH_WS_SETTLE_BATCH_MS
        for company: without it a consumer settling each message as it goes (SAP's clients
        do) averaged 4 outcomes per statement at 4,000 messages/s. The wait delays only the
        store's view of an outcome, never a delivery: credit and the flow limit are counted
        here, and a crash in between redelivers (an acknowledgement may be lost, never a
        message)."""
        try:
            if settings.MESH_WS_SETTLE_BATCH_MS:
                await asyncio.sleep(settings.MESH_WS_SETTLE_BATCH_MS / 1000)
            while self.settlements:
                await self._settle(*self.settlements.take(postgres=self.operations.executor.postgres))
        finally:
            self._settling = False

    async def _settle(self, taken: list[statements.Statement], reopened: set[int]) -> None:
        executor = self.operations.executor
        durable = not store.settle_may_skip_flush()
        for statement in taken:
            if statement.counted:  # the acknowledgements: their rows are the meter's
                store.count_returned(statement, await executor.fetch(statement, durable=durable))
            else:
                await executor.run(statement, durable=durable)
        if reopened:  # without it, consumers (this one too) would find them at the next poll
            queues_written(reopened)

    def consumers_changed(self) -> None:
        """A queue feed came or went: record the queues consumed on the Connection row, once
        the protocol's own bookkeeping of the change is done (hence call_soon)."""
        self.loop.call_soon(self._record_consumed)

    def _record_consumed(self) -> None:
        consumed = sorted({feed.queue.pk for feed in self.feeds() if not feed.closed})
        if self.connection_id is None or self.finished or consumed == self._consumed:
            return
        self._consumed = consumed
        self.spawn(self._write_consumed(self.connection_id, consumed), quiet=True)

    async def _write_consumed(self, connection_id: uuid.UUID, consumed: list[int]) -> None:
        try:
            await run_sync(connection_consumes, connection_id=connection_id, queue_ids=consumed)
        except Exception:  # noqa: BLE001 - only the cockpit's count is stale; the next change writes it
            log.warning("%s %s: recording the queues consumed failed", self.label, self.id, exc_info=True)

    async def _housekeep(self) -> None:
        """Renew what this connection holds and check that its credentials still stand."""
        interval = min(settings.MESH_WS_HOUSEKEEPING_SECONDS, settings.MESH_ACK_TIMEOUT / 3)
        while not self.finished:
            await asyncio.sleep(interval)
            if self.finished:
                return
            if not await self.still_valid():
                self.revoke("The token expired or its service key was deleted")
                return
            try:
                await self._renew(list(self.feeds()))
            except Exception:  # noqa: BLE001 - the store is down: try again next round
                log.warning("%s %s: renewing claims failed", self.label, self.id, exc_info=True)

    async def _renew(self, feeds: list[QueueFeed]) -> None:
        held = [claim for feed in feeds for claim in feed.held()]
        now = timezone.now()
        if held:
            executor = self.operations.executor
            until = now + timedelta(seconds=settings.MESH_ACK_TIMEOUT)  # what a claim's lock is
            await executor.run(statements.extend(postgres=executor.postgres, claim_ids=held, until=until))
        for feed in feeds:
            if feed.queue.access_type == "EXCLUSIVE":
                await feed.hold(now)

    async def finish(self) -> None:
        """The socket is gone: what the connection held returns to the queue."""
        if self.finished:
            return
        self.finished = True
        self.drop_all()
        self._housekeeping.cancel()
        taken, reopened = self.settlements.take(postgres=self.operations.executor.postgres)
        try:
            await self._settle(taken, reopened)
        except Exception:  # noqa: BLE001 - the claims' locks run out by themselves
            log.warning("%s %s: giving back held messages failed; their locks will expire", self.label, self.id,
                        exc_info=True)
