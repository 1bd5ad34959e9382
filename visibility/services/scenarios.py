"""Writes on scenarios: create, edit (a draft), activate, delete, clear processed data.

Editing never touches the active version: it writes the draft, and processing and the
workspace keep using the active one until the draft is activated. Activating clears the
processed data and asks for a rebuild from every stored event, because the new version may
correlate, phase and measure differently.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from meshsite.errors import Conflict, Invalid
from meshsite.platform.models import Service, ServiceInstance

from .. import dispatch
from ..models import Correlation, ProcessInstance, Scenario
from ..scenario import IDENTIFIER, default_indicators, definition_new, label, problems

MAX_DEFINITION_BYTES = 256 * 1024


def _check_shape(definition: Any) -> dict[str, Any]:
    if not isinstance(definition, dict):
        raise Invalid("A scenario definition is a JSON object", extra={"problems": [{"path": "", "message":
                      "must be an object"}]})
    if len(json.dumps(definition)) > MAX_DEFINITION_BYTES:
        raise Invalid(f"A scenario definition is at most {MAX_DEFINITION_BYTES // 1024} KiB")
    return definition


@transaction.atomic
def scenario_create(*, instance: ServiceInstance, scenario_id: str, name: str,
                    definition: dict[str, Any] | None = None) -> Scenario:
    if instance.service != Service.PROCESS_VISIBILITY:
        raise Invalid("Scenarios belong to a Process Visibility instance")
    if not IDENTIFIER.match(scenario_id or "") or "." in scenario_id:
        raise Invalid("A scenario id starts with a letter and holds letters, digits, _ and - (at most 100)",
                      extra={"field": "scenario_id"})
    if not name or len(name) > 200:
        raise Invalid("A scenario name is 1 to 200 characters", extra={"field": "name"})
    draft = _check_shape(definition) if definition is not None else definition_new(name=name)
    draft = {**draft, "name": name}
    if "indicators" not in draft:  # the contract's defaults, unless the definition names its own
        draft["indicators"] = default_indicators(label(draft, plural=True))
    try:
        with transaction.atomic():
            return Scenario.objects.create(instance=instance, scenario_id=scenario_id, name=name, draft=draft)
    except IntegrityError:
        raise Conflict(f"Scenario {scenario_id!r} already exists in this instance") from None


@transaction.atomic
def scenario_update(*, scenario: Scenario, definition: Any) -> Scenario:
    """Save the definition as the scenario's draft (it may still have problems)."""
    draft = _check_shape(definition)
    name = draft.get("name")
    locked = Scenario.objects.select_for_update().get(pk=scenario.pk)
    locked.draft = draft
    if isinstance(name, str) and 0 < len(name) <= 200:
        locked.name = name
    locked.save(update_fields=["draft", "name", "updated_at"])
    return locked


@transaction.atomic
def scenario_draft_discard(*, scenario: Scenario) -> Scenario:
    locked = Scenario.objects.select_for_update().get(pk=scenario.pk)
    if locked.active is None:
        raise Conflict("The scenario has never been activated: its draft is all there is; delete the scenario instead")
    locked.draft = None
    locked.name = locked.active.get("name", locked.name)
    locked.save(update_fields=["draft", "name", "updated_at"])
    return locked


@transaction.atomic
def scenario_activate(*, scenario: Scenario) -> Scenario:
    """Make the draft the active version, or Invalid listing each problem that blocks it."""
    locked = Scenario.objects.select_for_update().get(pk=scenario.pk)
    if locked.draft is None:
        raise Conflict("There is no draft to activate: the active version is current")
    found = problems(locked.draft)
    if found:
        raise Invalid(f"The scenario cannot be activated: {len(found)} problem(s)",
                      extra={"problems": [problem.as_dict() for problem in found]})
    locked.active, locked.draft = locked.draft, None
    locked.version += 1
    locked.activated_at = timezone.now()
    locked.save(update_fields=["active", "draft", "version", "activated_at", "updated_at"])
    _clear(locked)
    return locked


@transaction.atomic
def scenario_deactivate(*, scenario: Scenario) -> Scenario:
    """Stop processing and serving the scenario; its definition becomes the draft again."""
    locked = Scenario.objects.select_for_update().get(pk=scenario.pk)
    if locked.active is None:
        raise Conflict("The scenario is not active")
    if locked.draft is None:
        locked.draft = locked.active
    locked.active = None
    locked.rebuild_pending = False
    locked.save(update_fields=["active", "draft", "rebuild_pending", "updated_at"])
    _delete_processed(locked)
    return locked


@transaction.atomic
def scenario_data_clear(*, scenario: Scenario) -> Scenario:
    """Delete the processed data (instances, phases, correlation) and rebuild it from the
    stored events: clearing and re-processing give the same instances."""
    locked = Scenario.objects.select_for_update().get(pk=scenario.pk)
    if locked.active is None:
        raise Conflict("The scenario is not active: it has no processed data")
    _clear(locked)
    return locked


@transaction.atomic
def scenario_delete(*, scenario: Scenario) -> None:
    Scenario.objects.filter(pk=scenario.pk).delete()


def _delete_processed(scenario: Scenario) -> None:
    ProcessInstance.objects.filter(scenario=scenario).delete()  # phases go with them
    Correlation.objects.filter(scenario=scenario).delete()


def _clear(scenario: Scenario) -> None:
    _delete_processed(scenario)
    scenario.rebuild_pending = True
    scenario.rebuild_generation += 1
    scenario.save(update_fields=["rebuild_pending", "rebuild_generation"])
    instance_id = str(scenario.instance_id)
    transaction.on_commit(lambda: dispatch.process_instance(instance_id, "rebuild"))
