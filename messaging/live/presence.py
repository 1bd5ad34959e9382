"""This process's heartbeat while it serves WebSocket connections, so that they count
towards their instances' quota only while it lives (messaging.services.connections)."""

from __future__ import annotations

import asyncio
import logging

from messaging.hotpath.database import run_sync
from messaging.services.connections import HEARTBEAT, process_seen

log = logging.getLogger(__name__)

_heartbeats: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


async def keep_alive() -> None:
    """Start renewing this process's row, once per event loop."""
    loop = asyncio.get_running_loop()
    running = _heartbeats.get(loop)
    if running is None or running.done():
        _heartbeats[loop] = loop.create_task(_beat_forever(), name="meshsite-process-heartbeat")


async def _beat_forever() -> None:
    while True:
        await asyncio.sleep(HEARTBEAT)
        try:
            await run_sync(process_seen)
        except Exception:  # noqa: BLE001 - the store is down; the next beat tries again
            log.warning("could not renew this process's heartbeat", exc_info=True)
