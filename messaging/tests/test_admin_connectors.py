"""The connector events models in the admin: every list and page loads, nothing is added or
changed there, the sealed signature key is never shown, the redelivery action calls
`notifications_redeliver` and a delete goes through `connector_instance_delete`."""

from __future__ import annotations

import html

import pytest
from django.db.models import Model
from django.utils import timezone

from messaging.models import (
    ConnectorInstance,
    ConnectorNotification,
    Formula,
    FormulaExecution,
    FormulaInstance,
    FormulaStep,
    Message,
    PollRun,
    PollState,
    VendorEvent,
    WebhookSubscription,
)
from messaging.tests.test_cockpit_connectors import _formula, crm, deliver_all, hubspot, oc, post_body

__all__ = ["oc"]  # the fixture, imported for the tests below

ADMIN = "/admin/messaging"


@pytest.fixture
def stored(oc, receiver, django_capture_on_commit_callbacks) -> ConnectorInstance:
    """A connector instance with a signature key, a body, two notifications, a poll and a formula run."""
    connector = crm(oc, receiver, **{"event.notification.signature.key": "s3cret-key"})
    post_body(connector, hubspot(25), django_capture_on_commit_callbacks)
    PollState.objects.create(connector_instance=connector, object_type="files", last_poll_at=timezone.now())
    PollRun.objects.create(connector_instance=connector, object_type="files", started_at=timezone.now(),
                           succeeded=True, records=2)
    _formula(oc, connector)
    return connector


ROWS: dict[str, type[Model]] = {
    "connectorinstance": ConnectorInstance, "vendorevent": VendorEvent, "connectornotification": ConnectorNotification,
    "pollstate": PollState, "pollrun": PollRun, "formula": Formula, "formulainstance": FormulaInstance,
    "formulaexecution": FormulaExecution, "formulastep": FormulaStep,
}


def _one(model: str) -> int:
    return int(ROWS[model]._default_manager.order_by("pk").values_list("pk", flat=True)[0])


@pytest.mark.parametrize("model", list(ROWS))
def test_every_connector_model_lists_and_shows_read_only(admin_client, stored, model):
    listed = admin_client.get(f"{ADMIN}/{model}/")
    assert listed.status_code == 200, model
    page = admin_client.get(f"{ADMIN}/{model}/{_one(model)}/change/")
    assert page.status_code == 200, model
    shown = html.unescape(page.content.decode())
    assert 'name="_save"' not in shown and "s3cret-key" not in shown
    assert admin_client.get(f"{ADMIN}/{model}/add/").status_code == 403


def test_the_connector_instance_page_shows_the_configuration_masked_not_the_sealed_key(admin_client, stored):
    shown = html.unescape(admin_client.get(f"{ADMIN}/connectorinstance/{stored.pk}/change/").content.decode())
    assert "********" in shown and stored.secrets not in shown and "event.vendor.type" in shown


def test_the_redeliver_action_puts_queued_notifications_back_through_the_service(
        admin_client, stored, receiver, django_capture_on_commit_callbacks):
    delivered = len(receiver.pushes)
    receiver.statuses = [500] * 6
    post_body(stored, hubspot(25), django_capture_on_commit_callbacks)
    for _ in range(6):
        deliver_all()
        WebhookSubscription.objects.update(next_attempt_at=None)
        Message.objects.update(available_at=None)
    assert Message.objects.filter(queue__name=f"connector-{stored.pk}/queued").count() == 2
    answer = admin_client.post(f"{ADMIN}/connectorinstance/", {"action": "redeliver_queued",
                                                               "_selected_action": [str(stored.pk)]}, follow=True)
    assert "2 notification(s) redelivered" in answer.content.decode()
    deliver_all()
    assert len(receiver.pushes) == delivered + 8
    assert not Message.objects.filter(queue__name=f"connector-{stored.pk}/queued").exists()


def test_a_connector_instance_is_deleted_through_the_service_with_its_delivery_queues(admin_client, stored):
    confirm = admin_client.get(f"{ADMIN}/connectorinstance/{stored.pk}/delete/")
    assert confirm.status_code == 200
    answer = admin_client.post(f"{ADMIN}/connectorinstance/{stored.pk}/delete/", {"post": "yes"})
    assert answer.status_code == 302
    assert not ConnectorInstance.objects.exists() and not WebhookSubscription.objects.exists()
    assert not Message.objects.exists()


def test_the_bulk_delete_goes_through_the_service_too(admin_client, stored):
    answer = admin_client.post(f"{ADMIN}/connectorinstance/", {"action": "delete_selected", "post": "yes",
                                                               "_selected_action": [str(stored.pk)]})
    assert answer.status_code == 302
    assert not ConnectorInstance.objects.exists() and not WebhookSubscription.objects.exists()
