"""The event log's retention: the connectors' tick deletes provider bodies, notifications,
polls and finished formula executions older than MESH_CONNECTOR_LOG_RETENTION_DAYS, and
keeps what is still in use -- a notification queued for redelivery, a body not yet
processed, an execution still to run."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.connectors.retention import connector_logs_prune
from messaging.models import (
    ConnectorInstance,
    ConnectorNotification,
    Formula,
    FormulaExecution,
    FormulaInstance,
    Message,
    PollRun,
    VendorEvent,
    WebhookSubscription,
)
from messaging.tasks import connectors_tick
from messaging.tests.test_connector_events import _deliver_all, _events_path, _hubspot, _instance, _post
from messaging.tests.test_connector_events import api as api  # noqa: F401 - the fixture
from messaging.tests.test_connector_events import eager as eager  # noqa: F401 - the fixture

API = "/elements/api-v2/instances"
OLD = timezone.now() - timedelta(days=8)


def _age(instance_id: int) -> None:
    """Make everything of the instance 8 days old (the default retention is 7)."""
    ConnectorNotification.objects.filter(connector_instance_id=instance_id).update(created_at=OLD)
    VendorEvent.objects.filter(connector_instance_id=instance_id).update(received_at=OLD)


def _poll_run(instance_id: int, started_at) -> PollRun:
    return PollRun.objects.create(connector_instance_id=instance_id, object_type="contacts", started_at=started_at,
                                  succeeded=True)


@pytest.fixture
def delivered_and_queued(api, receiver) -> tuple[dict, dict]:
    """Two instances, each with one old notification: the first delivered, the second's
    delivery failed for good (queued for redelivery)."""
    delivered = _instance(api, receiver)
    _post(api, _events_path(delivered), json.dumps(_hubspot(3)).encode())
    _deliver_all()
    queued = api("POST", API, {"name": "crm2", "element": {"key": "hubspot"}, "configuration": {
        "event.notification.enabled": True, "event.vendor.type": "webhook",
        "event.notification.callback.url": receiver.url("/down")}}).json()
    receiver.statuses = [500, 500, 500]
    _post(api, _events_path(queued), json.dumps(_hubspot(2)).encode())
    for _ in range(3):
        _deliver_all()
        WebhookSubscription.objects.update(next_attempt_at=None)
        Message.objects.update(available_at=None)
    assert [e["state"] for e in api("GET", f"{API}/{queued['id']}/events").json()] == ["queued"]
    for created in (delivered, queued):
        _age(created["id"])
    return delivered, queued


def test_old_delivered_notifications_bodies_and_polls_go_and_recent_ones_stay(api, delivered_and_queued):
    delivered, _ = delivered_and_queued
    old_poll, new_poll = _poll_run(delivered["id"], OLD), _poll_run(delivered["id"], timezone.now())
    recent = _post(api, _events_path(delivered), json.dumps(_hubspot(1)).encode()).json()
    pruned = connectors_tick()
    assert pruned["pruned_notifications"] == 1 and pruned["pruned_poll_runs"] == 1
    assert pruned["pruned_vendor_events"] == 2  # both instances' old bodies: processed
    assert list(PollRun.objects.values_list("pk", flat=True)) == [new_poll.pk] and old_poll.pk != new_poll.pk
    assert list(VendorEvent.objects.values_list("pk", flat=True)) == [recent["id"]]
    log = api("GET", f"{API}/{delivered['id']}/events").json()
    assert len(log) == 1 and log[0]["events"][0]["objectId"] == "1000"  # the recent body's only object


def test_a_queued_notification_stays_however_old_and_can_still_be_redelivered(api, receiver, delivered_and_queued):
    _, queued = delivered_and_queued
    connectors_tick()
    assert [e["state"] for e in api("GET", f"{API}/{queued['id']}/events").json()] == ["queued"]
    assert api("POST", f"{API}/{queued['id']}/events/queued/redeliver", {}).json() == {"redelivered": 1}
    _deliver_all()
    assert receiver.pushes[-1]["path"] == "/down" and len(receiver.pushes) == 1 + 3 + 1
    assert api("GET", f"{API}/{queued['id']}/events").json()[0]["state"] == "delivered"
    connectors_tick()  # delivered now, and old: it goes
    assert not ConnectorNotification.objects.filter(connector_instance_id=queued["id"]).exists()


def test_a_body_not_yet_processed_and_an_execution_still_to_run_stay(api, receiver):
    created = _instance(api, receiver)
    waiting = VendorEvent.objects.create(element_key="hubspot", connector_instance_id=created["id"], body=b"[]",
                                         received_at=OLD)
    connector = ConnectorInstance.objects.get(pk=created["id"])
    formula = Formula.objects.create(service_instance=connector.service_instance, name="f", steps=[])
    trigger = FormulaInstance.objects.create(formula=formula, connector_instance=connector, name="t")
    executions = {status: FormulaExecution.objects.create(formula_instance=trigger, trigger={}, status=status,
                                                          created_at=OLD)
                  for status in ("pending", "retrying", "succeeded", "failed")}
    pruned = connector_logs_prune()
    assert pruned["formula_executions"] == 2 and pruned["vendor_events"] == 0
    assert set(FormulaExecution.objects.values_list("pk", flat=True)) == {executions["pending"].pk,
                                                                          executions["retrying"].pk}
    assert VendorEvent.objects.get().pk == waiting.pk


def test_a_retention_of_0_keeps_everything(api, settings, delivered_and_queued):
    settings.MESH_CONNECTOR_LOG_RETENTION_DAYS = 0
    before = ConnectorNotification.objects.count(), VendorEvent.objects.count()
    pruned = connectors_tick()
    assert not any(kind.startswith("pruned_") for kind in pruned)
    assert (ConnectorNotification.objects.count(), VendorEvent.objects.count()) == before == (2, 2)
    assert ConnectorInstance.objects.count() == 2
