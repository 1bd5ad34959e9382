"""The live layer: how WebSocket consumers (AMQP links, JSON subscriptions) learn that a
queue has messages and receive live topic messages, in this process and across processes.

    hub     one per event loop: who waits for which queue or topic, the poll
    remote  the channel layer (Redis) between processes, and who listens where

Publishers call `queues_written` after a commit and `topic_published` for every topic
publish, from the event loop or any thread (the ORM services run on threads).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import async_to_sync

from . import remote
from .hub import Hub, LiveMessage, QueueWaiter, TopicListener

__all__ = ["Hub", "LiveMessage", "QueueWaiter", "TopicListener", "hub", "queues_written", "topic_published"]

log = logging.getLogger(__name__)

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()
_remotes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, remote.Remote] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """This event loop's hub (made on first use; its store access is the hot path's)."""
    from messaging.hotpath import endpoints  # the executor lives with the hot path

    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub(loop, endpoints().executor.fetch)
        if remote.enabled():
            _remotes[loop] = remote.Remote(found)
    return found


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def queues_written(queue_ids: Iterable[int]) -> None:
    """New messages were committed to these queues: wake their consumers everywhere."""
    ids = list(dict.fromkeys(queue_ids))
    if not ids:
        return
    current = _to_every_hub(current_loop=_running_loop(), call=lambda found: found.wake_local, argument=ids)
    if not remote.enabled():
        return
    if current is not None:
        current.create_task(_sender_for(current).send_wakes(ids))
    else:
        _blocking(remote.wakes_message(ids), [remote.queue_group(queue_id) for queue_id in ids])


def topic_published(message: LiveMessage) -> None:
    """A message was published to a topic: deliver it to live topic consumers everywhere."""
    current = _to_every_hub(current_loop=_running_loop(), call=lambda found: found.deliver_local, argument=message)
    if not remote.enabled():
        return
    if current is not None:
        current.create_task(_sender_for(current).send_topic(message))
    else:
        _blocking(remote.topic_message(message), [remote.topics_group(message.subaccount_id)])


def _to_every_hub(*, current_loop: asyncio.AbstractEventLoop | None, call: Callable[[Hub], Callable[[Any], None]],
                  argument: Any) -> asyncio.AbstractEventLoop | None:
    """Hand `argument` to every hub of this process: at once on the caller's own loop, through
    call_soon_threadsafe on the others. Returns the caller's loop."""
    for loop, found in list(_hubs.items()):
        if loop is current_loop:
            call(found)(argument)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(call(found), argument)
    return current_loop


def _blocking(message: dict[str, object], groups: list[str]) -> None:
    """From a thread with no event loop (an ORM service, a Celery task): send to the groups
    without the interest check (a rare path), waiting for Redis."""
    try:
        async_to_sync(remote.send_directly)(message, groups)
    except Exception:  # noqa: BLE001 - a hint, or a live message that is not persistent
        log.warning("live: could not reach the channel layer", exc_info=True)


def _sender_for(loop: asyncio.AbstractEventLoop) -> remote.Remote:
    """The loop's sender; a loop with no consumers of its own gets a hub nobody watches."""
    sender = _remotes.get(loop)
    if sender is None:
        found = _hubs.get(loop)
        if found is None:
            found = _hubs[loop] = Hub(loop, _no_fetch)
        sender = _remotes[loop] = remote.Remote(found)
    return sender


async def _no_fetch(*args: object, **kwargs: object) -> list[object]:
    return []
