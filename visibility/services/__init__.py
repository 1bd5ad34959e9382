"""Process Visibility's writes: every caller (the API, the cockpit, tasks) goes through these."""

from .events import (
    EventsRefused,
    EventsTooLarge,
    events_ingest,
    events_store,
    failure_discard,
    failure_record,
    failure_resubmit,
)

__all__ = [
    "EventsRefused",
    "EventsTooLarge",
    "events_ingest",
    "events_store",
    "failure_discard",
    "failure_record",
    "failure_resubmit",
]
