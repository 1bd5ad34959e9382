"""Every write of Process Visibility: the API, the cockpit, tasks and the admin call these."""

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
    "instance_process", "instances_status_refresh", "processing_scheduled", "scenario_activate", "scenario_create",
    "scenario_data_clear", "scenario_deactivate", "scenario_delete", "scenario_draft_discard", "scenario_update",
    "role_grant", "role_revoke",
]
