"""Process Visibility's Celery tasks, sent by name through meshsite/taskqueue.py.

A wake-up lost (the broker down, a worker gone) costs only time: the beat job processes every
instance's buffer and every pending rebuild on its interval anyway.
"""

from __future__ import annotations

import logging

from meshsite.taskqueue import send

PROCESS_INSTANCE = "visibility.tasks.process_instance"
PROCESS_ALL = "visibility.tasks.process_all"

log = logging.getLogger(__name__)


def process_instance(instance_id: str, trigger: str) -> None:
    """Process the instance's buffer, and the rebuilds its scenarios wait for."""
    try:
        send(PROCESS_INSTANCE, instance_id, trigger)
    except Exception:  # any broker failure: the beat job picks the work up
        log.warning("could not wake processing of %s; the next scheduled run does it", instance_id, exc_info=True)
