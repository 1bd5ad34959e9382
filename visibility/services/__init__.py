"""Every write of Process Visibility: the API, the cockpit, tasks and the admin call these."""

from .events import (
    EventsRefused,
    EventsTooLarge,
    events_ingest,
    events_store,
    failure_discard,
    failure_record,
    failure_resubmit,
)
from .processing import instance_process, instances_status_refresh, processing_scheduled
from .roles import role_grant, role_revoke
from .scenarios import (
    scenario_activate,
    scenario_create,
    scenario_data_clear,
    scenario_deactivate,
    scenario_delete,
    scenario_draft_discard,
    scenario_update,
)

__all__ = [
    "EventsRefused", "EventsTooLarge", "events_ingest", "events_store", "failure_discard", "failure_record",
    "failure_resubmit",
    "instance_process", "instances_status_refresh", "processing_scheduled", "scenario_activate", "scenario_create",
    "scenario_data_clear", "scenario_deactivate", "scenario_delete", "scenario_draft_discard", "scenario_update",
    "role_grant", "role_revoke",
]
