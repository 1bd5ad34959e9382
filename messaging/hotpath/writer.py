"""Group commit: concurrent publishes of one process share one INSERT and one COMMIT.

A publish hands its rows (one per queue it goes to) to the writer and waits. The writer
takes everything waiting, up to MESH_GROUP_COMMIT_MAX_ROWS rows, writes it in one
transaction and then answers each waiter. While that commit is in flight the next batch
fills, so there is no fixed wait: at low load a batch is one publish, under load it is what
arrived during one commit. Each publish is answered only after the commit that holds its
rows returned; durable unless every publish of the batch is qos 0.

A batch that fails is written again publish by publish, so that one refused row (its queue
deleted meanwhile) fails only its own publish; a lost connection fails the publishes that
were not committed. A publish whose client went away is written all the same: its task
waits on a shielded future, so a batch is never cut in half.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

from messaging.metrics import meter_count

from .database import Executor, Row, unavailable

log = logging.getLogger(__name__)


@dataclass
class _Publish:
    rows: Sequence[Row]
    durable: bool
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupWriter:
    def __init__(self, executor: Executor, *, max_rows: int | None = None) -> None:
        self.executor = executor
        self.max_rows = max_rows or settings.MESH_GROUP_COMMIT_MAX_ROWS
        self._waiting: deque[_Publish] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # What the batches held, for tests and the benchmark: (batches, rows).
        self.batches = 0
        self.rows = 0

    async def write(self, rows: Sequence[Row], *, durable: bool) -> None:
        """Store `rows` (all or none of them); returns once they are committed."""
        await asyncio.shield(self.submit(rows, durable=durable))

    def submit(self, rows: Sequence[Row], *, durable: bool) -> asyncio.Future[None]:
        """Queue `rows` for the next commit without waiting: the future is done once they are
        committed (or failed). Publishes submitted one after another commit in that order, in
        the same batch or a later one: what a pipelining AMQP publisher relies on."""
        publish = _Publish(rows, durable)
        self._waiting.append(publish)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="meshsite-group-commit")
        return publish.done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                await self._commit(self._take())

    def _take(self) -> list[_Publish]:
        batch: list[_Publish] = []
        count = 0
        while self._waiting and (not batch or count + len(self._waiting[0].rows) <= self.max_rows):
            publish = self._waiting.popleft()
            batch.append(publish)
            count += len(publish.rows)
        return batch

    async def _commit(self, batch: list[_Publish]) -> None:
        rows = [row for publish in batch for row in publish.rows]
        try:
            await self.executor.insert(rows, durable=any(publish.durable for publish in batch))
        except Exception as error:  # noqa: BLE001 - every failure is answered to its publishes
            if len(batch) == 1 or unavailable(error):
                for publish in batch:
                    _settle(publish, error)
                return
            log.info("a batch of %d publishes failed (%s); writing them one by one", len(batch), error)
            for publish in batch:
                await self._commit([publish])
            return
        self.batches += 1
        self.rows += len(rows)
        # Counted once committed; a row's first column is its queue (NEW_MESSAGE_COLUMNS).
        for queue_id, n in Counter(row[0] for row in rows).items():
            meter_count(queue_id, "published", n)
        for publish in batch:
            _settle(publish, None)


def _settle(publish: _Publish, error: BaseException | None) -> None:
    if publish.done.done():
        return
    if error is None:
        publish.done.set_result(None)
    else:
        publish.done.set_exception(error)
