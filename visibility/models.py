"""Process Visibility: events, scenarios and process instances (docs/process-visibility.md).

Events land first (`Event`, always, quickly) and are folded into `ProcessInstance` rows by
processing, on a schedule or on demand; an event has a `BufferedEvent` row until a run has
folded it, which is what "in the buffer" means. Everything a process instance says can be
rebuilt from the stored events: instances, their phases and the correlation map are derived
data that "clear processed data" deletes and re-processing writes again.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from meshsite.platform.models import ServiceInstance, ServiceKey


class PVRole(models.TextChoices):
    EVENT_SENDER = "PVEventSender", "PVEventSender: push events"
    DEVELOPER = "PVDeveloper", "PVDeveloper: model scenarios"
    ADMIN = "PVAdmin", "PVAdmin: monitor scenarios and Event Acquisition"
    OPERATOR = "PVOperator", "PVOperator: the process workspace"


class Event(models.Model):
    """One acquired event, as sent (after validation)."""

    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="pv_events")
    # The sender's id: re-sending it replaces the earlier event (idempotent ingestion).
    event_id = models.CharField(max_length=200, null=True, blank=True)
    definition_id = models.CharField(max_length=255)
    process_instance_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=255)
    timestamp = models.DateTimeField(help_text="The business time the event happened at")
    context = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField()
    # Set by processing: False when no active scenario of the instance took its definition
    # (None otherwise, and again once re-sent or a scenario taking it is activated).
    matched = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instance", "event_id"], name="pv_event_unique_id"),
        ]
        indexes = [
            models.Index(fields=["instance", "process_instance_id"], name="pv_event_pid"),
            models.Index(fields=["instance", "timestamp"], name="pv_event_time"),
            models.Index(fields=["instance", "definition_id", "id"], name="pv_event_definition"),
            models.Index(fields=["instance", "id"], condition=models.Q(matched=False), name="pv_event_unmatched"),
        ]

    def __str__(self) -> str:
        return f"{self.definition_id}/{self.process_instance_id} {self.event_type} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"


class BufferedEvent(models.Model):
    """An event not yet processed: the buffer. A narrow table of its own rather than a flag
    on the event, because processing empties it by the thousand: deleting these rows is
    cheap, while updating a flag rewrote every event row and all five of its indexes
    (measured: 0.25 s per 5,000 events, a third of the processing time)."""

    event = models.OneToOneField(Event, on_delete=models.CASCADE, primary_key=True, related_name="buffered")
    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["instance", "event"], name="pv_buffer_instance")]

    def __str__(self) -> str:
        return f"event {self.event_id} in the buffer"


class FailureReason(models.TextChoices):
    INVALID_JSON = "invalid_json", "Invalid JSON"
    MISSING_FIELD = "missing_field", "Missing field"
    WRONG_TYPE = "wrong_type", "Wrong type"
    UNKNOWN_DEFINITION = "unknown_definition", "Unknown process definition"
    TOO_LARGE = "too_large", "Payload too large"
    NOT_AUTHORISED = "not_authorised", "Not authorised"


class FailureState(models.TextChoices):
    OPEN = "open", "Open"
    RESUBMITTED = "resubmitted", "Re-submitted"
    DISCARDED = "discarded", "Discarded"


class IngestFailure(models.Model):
    """An event (or a whole body) the Data Acquisition API refused, kept with its raw payload
    so that it can be corrected and re-submitted, or discarded, from the monitor."""

    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="pv_failures")
    received_at = models.DateTimeField()
    reason = models.CharField(max_length=30, choices=FailureReason.choices)
    detail = models.TextField()
    field = models.CharField(max_length=100, blank=True)
    # Position in the array sent, when the body was an array; None for a single event or a body.
    position = models.PositiveIntegerField(null=True, blank=True)
    raw = models.TextField(help_text="The payload as received (cut at the size limit)")
    # What could be read of it, for the monitor's filters.
    definition_id = models.CharField(max_length=255, blank=True)
    process_instance_id = models.CharField(max_length=255, blank=True)
    event_type = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=20, choices=FailureState.choices, default=FailureState.OPEN)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(reason__in=FailureReason.values), name="pv_failure_reason_valid"),
            models.CheckConstraint(condition=models.Q(state__in=FailureState.values), name="pv_failure_state_valid"),
        ]
        indexes = [models.Index(fields=["instance", "state", "received_at"], name="pv_failure_open")]

    def __str__(self) -> str:
        return f"{self.get_reason_display()} at {self.received_at:%Y-%m-%d %H:%M:%S}"


class Scenario(models.Model):
    """A modelled scenario. `draft` is what the modeller edits; `active` is the version that
    processing and the workspace use. Editing an active scenario writes `draft` only, so the
    active version keeps serving until the draft is activated."""

    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="pv_scenarios")
    scenario_id = models.SlugField(max_length=100, help_text="Unique in the instance; used in URLs")
    name = models.CharField(max_length=200)
    draft = models.JSONField(null=True, blank=True)
    active = models.JSONField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0, help_text="Activations so far")
    activated_at = models.DateTimeField(null=True, blank=True)
    # Set when the processed data was cleared (or a new version activated) and is to be built
    # again from every stored event; processing clears it once the rebuild has run.
    rebuild_pending = models.BooleanField(default=False)
    # Counts the clears: a rebuild that sees it change under it (cleared again meanwhile)
    # starts over, and only the rebuild of the latest clear may end the pending state.
    rebuild_generation = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["instance", "scenario_id"], name="pv_scenario_unique_id"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.active is not None

    @property
    def has_draft(self) -> bool:
        return self.draft is not None

    def definition(self) -> dict[str, Any]:
        """What the modeller sees: the draft if there is one, else the active version."""
        return self.draft if self.draft is not None else (self.active or {})


class InstanceState(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETED = "completed", "Completed"


class InstanceStatus(models.TextChoices):
    ON_TRACK = "on_track", "On Track"
    AT_RISK = "at_risk", "At Risk"
    CRITICAL = "critical", "Critical"


class ProcessInstance(models.Model):
    """One end-to-end process as the active scenario sees it, rebuilt from its events."""

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="instances")
    # The correlation key: "bk:<business key>" or "pi:<definition>\x1f<instance id>".
    key = models.CharField(max_length=600)
    label = models.CharField(max_length=300, help_text="The process instance id(s) shown to people")
    state = models.CharField(max_length=20, choices=InstanceState.choices)
    status = models.CharField(max_length=20, choices=InstanceStatus.choices)
    start_time = models.DateTimeField()
    end_time = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField()
    # Seconds from start to end (completed) -- the cycle time.
    cycle_time = models.FloatField(null=True, blank=True)
    active_phase = models.CharField(max_length=100, blank=True)
    # When an open instance turns At Risk / Critical; status is recomputed from these as time passes.
    at_risk_at = models.DateTimeField(null=True, blank=True)
    critical_at = models.DateTimeField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    event_count = models.PositiveIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scenario", "key"], name="pv_instance_unique_key"),
            models.CheckConstraint(condition=models.Q(state__in=InstanceState.values), name="pv_instance_state_valid"),
            models.CheckConstraint(condition=models.Q(status__in=InstanceStatus.values),
                                   name="pv_instance_status_valid"),
        ]
        indexes = [
            models.Index(fields=["scenario", "-start_time"], name="pv_instance_recent"),
            models.Index(fields=["scenario", "state", "status"], name="pv_instance_state"),
            models.Index(fields=["scenario", "active_phase"], name="pv_instance_phase"),
        ]

    def __str__(self) -> str:
        return self.label


class InstancePhase(models.Model):
    """A phase an instance entered; a table of its own so that step cycle times are one
    grouped query rather than a read of every instance's JSON."""

    instance = models.ForeignKey(ProcessInstance, on_delete=models.CASCADE, related_name="phases")
    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="+")
    phase_id = models.CharField(max_length=100)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds, once ended")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "phase_id"], name="pv_phase_unique")]
        indexes = [models.Index(fields=["scenario", "phase_id"], name="pv_phase_scenario")]

    def __str__(self) -> str:
        return f"{self.phase_id} from {self.started_at:%Y-%m-%d %H:%M:%S}"


class Correlation(models.Model):
    """Which process instance a participant's (definition, instance id) belongs to. Kept so
    that events correlated across participants by a business key find each other again
    when only one side has new events."""

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="+")
    definition_id = models.CharField(max_length=255)
    process_instance_id = models.CharField(max_length=255)
    instance_key = models.CharField(max_length=600)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scenario", "definition_id", "process_instance_id"],
                                    name="pv_correlation_unique"),
        ]
        indexes = [models.Index(fields=["scenario", "instance_key"], name="pv_correlation_key")]

    def __str__(self) -> str:
        return f"{self.definition_id}/{self.process_instance_id} -> {self.instance_key}"


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Process now"
    REBUILD = "rebuild", "Re-process"


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ProcessingRun(models.Model):
    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=20, choices=RunTrigger.choices)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    events_processed = models.PositiveIntegerField(default=0)
    events_unmatched = models.PositiveIntegerField(default=0, help_text="Events no active scenario takes")
    events_in_buffer = models.PositiveIntegerField(default=0, help_text="Left in the buffer when the run ended")
    instances_created = models.PositiveIntegerField(default=0)
    instances_updated = models.PositiveIntegerField(default=0)
    instances_deleted = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["scenario", "-started_at"], name="pv_run_recent")]

    def __str__(self) -> str:
        return f"{self.scenario} {self.started_at:%Y-%m-%d %H:%M:%S} {self.status}"


class RoleGrant(models.Model):
    """A Process Visibility role given to one service key (its tokens) or one user (the cockpit)."""

    instance = models.ForeignKey(ServiceInstance, on_delete=models.CASCADE, related_name="pv_grants")
    role = models.CharField(max_length=30, choices=PVRole.choices)
    service_key = models.ForeignKey(ServiceKey, on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="pv_grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="pv_grants")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(role__in=PVRole.values), name="pv_grant_role_valid"),
            models.CheckConstraint(
                condition=(models.Q(service_key__isnull=False, user__isnull=True)
                           | models.Q(service_key__isnull=True, user__isnull=False)),
                name="pv_grant_key_or_user",
            ),
            models.UniqueConstraint(fields=["instance", "role", "service_key"], name="pv_grant_unique_key"),
            models.UniqueConstraint(fields=["instance", "role", "user"], name="pv_grant_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.role} for {self.service_key or self.user}"
