"""The cockpit's Open Connectors application through Django's test client: connector
instances (list with counts, create, settings with the signature key masked, edit, one key,
delete), the event log and a notification's page, queued notifications and their redelivery,
providers' bodies, polls and formulas; viewers read but cannot write, outsiders and other
subaccounts' instances are 404, refusals are shown beside their field and store nothing."""

from __future__ import annotations

import html
import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from meshsite import celery_app
from meshsite.platform.models import Entitlement, ServiceInstance, Subaccount
from meshsite.platform.services import instance_create
from messaging.cockpit.connectors import views
from messaging.connectors.instances import connector_instance_create
from messaging.models import (
    ConnectorInstance,
    ConnectorNotification,
    Formula,
    FormulaExecution,
    FormulaInstance,
    FormulaStep,
    Message,
    PollRun,
    VendorEvent,
    WebhookSubscription,
)
from messaging.tests.test_connector_instances import _connectors
from messaging.webhooks.delivery import webhook_deliver_batch

HOOK = {"event.vendor.type": "webhook"}
ENABLED = {"event.notification.enabled": True}


@pytest.fixture
def oc(subaccount, settings, monkeypatch) -> ServiceInstance:
    """An open-connectors instance; deliveries to loopback receivers run when asked."""
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.MESH_WEBHOOK_RETRY_SCHEDULE = [0.0]
    settings.MESH_WEBHOOK_WAKE_IN_BACKGROUND = False
    settings.MESH_CONNECTOR_DELIVERY_ATTEMPTS = 3
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    return _connectors("oc1")


@pytest.fixture
def admin(person):
    return person("ada", "administrator")


def app(oc: ServiceInstance, path: str = "") -> str:
    return f"/subaccounts/{oc.subaccount_id}/open-connectors/{oc.pk}/{path}"


def on(connector: ConnectorInstance, path: str = "") -> str:
    return app(connector.service_instance, f"connectors/{connector.pk}/{path}")


def text(answer: Any) -> str:
    return html.unescape(answer.content.decode())


def beside(answer: Any, field: str) -> str:
    return text(answer).split(f'data-field="{field}"', 1)[1].split("data-field=", 1)[0]


def crm(oc: ServiceInstance, receiver: Any = None, **configuration: Any) -> ConnectorInstance:
    config = {**HOOK, **configuration}
    if receiver is not None:
        config.update(ENABLED, **{"event.notification.callback.url": receiver.url("/callback")})
    return connector_instance_create(service_instance=oc, name="crm", element_key="hubspot", configuration=config)


def hubspot(count: int) -> bytes:
    kinds = ["contact.creation", "contact.propertyChange", "company.deletion"]
    return json.dumps([{"eventId": n, "subscriptionType": kinds[n % 3], "objectId": 1000 + n, "portalId": 62515,
                        "occurredAt": 1767261600000 + n} for n in range(count)]).encode()


def post_body(connector: ConnectorInstance, body: bytes, capture: Any) -> None:
    with capture(execute=True):
        answer = Client().post(f"/elements/api-v2/events/{connector.element_key}/{connector.webhook_token}/",
                             data=body, content_type="application/json")
    assert answer.status_code == 200, answer.content


def deliver_all() -> None:
    for webhook in WebhookSubscription.objects.all():
        while webhook_deliver_batch(subscription_id=webhook.pk).delivered:
            pass


def new_form(**fields: Any) -> dict[str, Any]:
    return {"name": "crm", "element": "hubspot", "event_mesh": "", "topic_prefix": "", "provider_account": "",
            "configuration": json.dumps(HOOK), **fields}


def test_the_app_lists_the_subaccounts_instances_and_the_instance_page_links_to_it(admin, oc, subaccount):
    home = admin.get(f"/subaccounts/{subaccount.pk}/open-connectors/")
    assert home.status_code == 200 and f'data-owner="{oc.name}"' in text(home)
    assert app(oc) in text(home)
    instance_page = text(admin.get(f"/subaccounts/{subaccount.pk}/instances/{oc.pk}/"))
    assert f"/subaccounts/{subaccount.pk}/open-connectors/" in instance_page  # "Go to application"


def test_a_new_connector_instance_is_created_through_the_service_and_listed(admin, oc, receiver):
    form = admin.get(app(oc))
    assert form.status_code == 200 and "event.notification.callback.url" in beside(form, "configuration")
    config = {**HOOK, **ENABLED, "event.notification.callback.url": receiver.url("/callback")}
    created = admin.post(app(oc), new_form(configuration=json.dumps(config), provider_account="62515"))
    assert created.status_code == 302
    connector = ConnectorInstance.objects.get()
    assert created["Location"] == on(connector)
    assert (connector.element_key, connector.provider_account, connector.events_enabled()) == ("hubspot", "62515",
                                                                                                True)
    assert WebhookSubscription.objects.count() == 1  # the delivery engine's, made by the service
    listed = text(admin.get(app(oc)))
    row = listed.split('data-connector="crm"', 1)[1].split("</tr>", 1)[0]
    assert "hubspot" in row and "enabled" in row and receiver.url("/callback") in row
    assert '<td class="num" data-notifications>0</td>' in row


def test_a_connector_instance_bound_to_an_event_mesh_instance_shows_it(admin, oc, subaccount):
    Entitlement.objects.update_or_create(subaccount=subaccount, service="event-mesh", plan="default",
                                         defaults={"quota": 2})
    mesh = instance_create(subaccount=subaccount, service="event-mesh", plan="default", name="em",
                           parameters={"emname": "em", "namespace": "a/b/c"})
    answer = admin.post(app(oc), new_form(event_mesh=str(mesh.pk), topic_prefix="oc",
                                          configuration=json.dumps({"event.notification.enabled": True})))
    assert answer.status_code == 302, text(answer)[:2000]
    connector = ConnectorInstance.objects.get()
    assert (connector.event_mesh, connector.topic_prefix) == (mesh, "oc")
    assert "em" in text(admin.get(app(oc))).split('data-connector="crm"', 1)[1].split("</tr>", 1)[0]


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"configuration": '{"event.vendor.type": "pigeon"}'}, "configuration", "event.vendor.type must be"),
    ({"configuration": '{"event.notification.enabled": true}'}, "configuration", "requires"),
    ({"configuration": '{"event.nope": 1}'}, "configuration", "event.nope is not a configuration key"),
    ({"configuration": "{not json"}, "configuration", "not JSON"),
    ({"configuration": "[1]"}, "configuration", "must be a JSON object"),
    ({"topic_prefix": "has space"}, "topic_prefix", "topicPrefix must be"),
    ({"element": "nosuch"}, "element", "nosuch"),
    ({"name": "   "}, "name", "required"),
])
def test_a_refused_new_instance_is_shown_beside_its_field_and_nothing_is_stored(admin, oc, fields, field, words):
    answer = admin.post(app(oc), new_form(**fields))
    assert answer.status_code == 400
    assert words in beside(answer, field)
    assert not ConnectorInstance.objects.exists()


def test_a_taken_name_is_refused_beside_the_name(admin, oc):
    crm(oc)
    answer = admin.post(app(oc), new_form())
    assert answer.status_code == 400 and "already exists" in beside(answer, "name")
    assert ConnectorInstance.objects.count() == 1


def test_the_settings_page_shows_the_events_url_and_never_the_signature_key(admin, oc):
    connector = crm(oc, **{"event.notification.signature.key": "s3cret-key"})
    page = admin.get(on(connector))
    assert page.status_code == 200
    shown = text(page)
    assert f"http://testserver/elements/api-v2/events/hubspot/{connector.webhook_token}/" in shown
    assert "s3cret-key" not in shown and "********" in shown


def test_the_edit_form_updates_through_the_service_and_keeps_the_masked_key(admin, oc, receiver):
    connector = crm(oc, **{"event.notification.signature.key": "s3cret-key"})
    sealed = connector.secret_values()
    config = {"event.notification.callback.url": receiver.url("/callback"),
              "event.notification.signature.key": "********"}
    answer = admin.post(on(connector), new_form(name="crm2", provider_account="9",
                                                configuration=json.dumps(config)))
    assert answer.status_code == 302
    connector.refresh_from_db()
    assert (connector.name, connector.provider_account, connector.callback_url()) == ("crm2", "9",
                                                                                     receiver.url("/callback"))
    assert connector.secret_values() == sealed
    refused = admin.post(on(connector), new_form(name="crm2", configuration='{"event.vendor.type": "x"}'))
    assert refused.status_code == 400 and "event.vendor.type must be" in beside(refused, "configuration")
    connector.refresh_from_db()
    assert connector.vendor_type() == "webhook"


def test_one_key_is_set_through_the_service_and_a_bad_value_is_refused(admin, oc, receiver):
    connector = crm(oc, receiver)
    answer = admin.post(on(connector, "configuration"), {"key": "event.notification.enabled", "value": "false"})
    assert answer.status_code == 302
    connector.refresh_from_db()
    assert connector.events_enabled() is False
    assert WebhookSubscription.objects.get().status == "Paused"
    url = admin.post(on(connector, "configuration"), {"key": "event.notification.callback.url",
                                                      "value": receiver.url("/other")})
    assert url.status_code == 302
    refused = admin.post(on(connector, "configuration"), {"key": "event.poller.refresh_interval", "value": "0"})
    assert refused.status_code == 400 and "at least 1 minute" in beside(refused, "value")
    connector.refresh_from_db()
    assert "event.poller.refresh_interval" not in connector.configuration
    assert connector.callback_url() == receiver.url("/other")


def test_delete_needs_the_name_typed_and_takes_the_delivery_queues(admin, oc, receiver):
    connector = crm(oc, receiver)
    wrong = admin.post(on(connector, "delete"), {"confirm": "nope"})
    assert wrong.status_code == 400 and "Type crm" in beside(wrong, "confirm")
    assert ConnectorInstance.objects.exists()
    gone = admin.post(on(connector, "delete"), {"confirm": "crm"})
    assert gone.status_code == 302 and gone["Location"] == app(oc)
    assert not ConnectorInstance.objects.exists() and not WebhookSubscription.objects.exists()


def test_45_objects_show_as_notifications_of_20_20_and_5_with_their_events_attempts_and_body(
        admin, oc, receiver, django_capture_on_commit_callbacks):
    connector = crm(oc, receiver)
    post_body(connector, hubspot(45), django_capture_on_commit_callbacks)
    deliver_all()
    assert len(receiver.pushes) == 3
    log = text(admin.get(on(connector, "events/")))
    counts = [int(row.split("data-events>", 1)[1].split("<", 1)[0]) for row in log.split("data-notification=")[1:]]
    assert counts == [5, 20, 20]  # newest first
    assert log.count("data-state>delivered<") == 3
    first = ConnectorNotification.objects.order_by("pk").first()
    assert first is not None
    detail = admin.get(on(connector, f"events/{first.notification_id}"))
    assert detail.status_code == 200
    shown = text(detail)
    assert shown.count("<tr data-event>") == 20 and shown.count('<tr data-attempt class="">') == 1
    assert json.dumps(json.loads(bytes(first.body)), indent=2) in shown  # pretty-printed
    assert admin.get(on(connector, "events/not-a-uuid")).status_code == 404
    assert admin.get(on(connector, "events/00000000-0000-0000-0000-000000000000")).status_code == 404
    row = text(admin.get(app(oc))).split('data-connector="crm"', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num" data-notifications>3</td>' in row
    assert "data-topic-error" not in shown


def test_a_refused_topic_publish_shows_on_the_notification_page(admin, oc, django_capture_on_commit_callbacks):
    connector = crm(oc)
    ConnectorNotification.objects.create(
        connector_instance=connector, notification_id="11111111-1111-1111-1111-111111111111", source="webhook",
        created_at=connector.created_at, body=b'{"message": {"events": []}}', events_count=0,
        topic_error="a/b/c/x: <not allowed>")
    shown = text(admin.get(on(connector, "events/11111111-1111-1111-1111-111111111111")))
    assert '<dd class="error" data-topic-error>a/b/c/x: <not allowed></dd>' in shown  # text() unescapes


def test_the_event_log_pages_newest_first(admin, oc, monkeypatch):
    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    connector = crm(oc)  # no callback URL: nothing to deliver
    for count in (1, 2, 3):
        ConnectorNotification.objects.create(
            connector_instance=connector, notification_id=f"00000000-0000-0000-0000-00000000000{count}",
            source="webhook", created_at=timezone.now(), events_count=count,
            body=json.dumps({"message": {"events": [{}] * count}}).encode())
    first = text(admin.get(on(connector, "events/")))
    assert first.count("data-notification=") == 2 and "data-state>no callback<" in first
    before = first.split("?before=", 1)[1].split('"', 1)[0]
    second = text(admin.get(on(connector, f"events/?before={before}")))
    assert second.count("data-notification=") == 1 and "?before=" not in second


def test_queued_notifications_are_redelivered_one_or_all(admin, oc, receiver,
                                                        django_capture_on_commit_callbacks):
    connector = crm(oc, receiver)
    receiver.statuses = [500] * 6  # three attempts each for two notifications
    post_body(connector, hubspot(25), django_capture_on_commit_callbacks)
    for _ in range(6):  # in order: the first is queued after its third attempt, then the second
        deliver_all()
        WebhookSubscription.objects.update(next_attempt_at=None)
        Message.objects.update(available_at=None)
    queued = text(admin.get(on(connector, "queued/")))
    assert queued.count("data-state>queued<") == 2 and "Redeliver all" in queued
    assert '<td class="num" data-queued>2</td>' in text(admin.get(app(oc)))
    one = ConnectorNotification.objects.order_by("pk").first()
    assert one is not None
    answer = admin.post(on(connector, "queued/redeliver"), {"notification": str(one.notification_id)})
    assert answer.status_code == 302 and answer["Location"].endswith("queued/?redelivered=1")
    assert "1 notification redelivered" in text(admin.get(answer["Location"]))
    deliver_all()
    assert text(admin.get(on(connector, "queued/"))).count("data-state>queued<") == 1
    everything = admin.post(on(connector, "queued/redeliver"), {"all": "1"})
    assert everything["Location"].endswith("?redelivered=1")
    deliver_all()
    assert "data-state>queued<" not in text(admin.get(on(connector, "queued/")))
    assert len(receiver.pushes) == 8


def test_provider_bodies_show_failed_ones_with_their_reason(admin, oc, receiver,
                                                            django_capture_on_commit_callbacks):
    connector = crm(oc, receiver)
    post_body(connector, b"<xml/>", django_capture_on_commit_callbacks)
    post_body(connector, hubspot(2), django_capture_on_commit_callbacks)
    shown = text(admin.get(on(connector, "bodies/")))
    assert shown.count("data-body=") == 2 and "the body is not JSON" in shown and "<xml/>" in shown
    failed = text(admin.get(on(connector, "bodies/?status=failed")))
    assert failed.count("data-body=") == 1 and "data-status>failed<" in failed
    assert admin.get(on(connector, "bodies/?status=bogus")).status_code == 400
    assert '<td class="num" data-failed>1</td>' in text(admin.get(app(oc)))


def test_the_polls_tab_lists_poll_runs_with_their_errors(admin, oc):
    connector = crm(oc)
    now = timezone.now()
    PollRun.objects.create(connector_instance=connector, object_type="files", started_at=now - timedelta(minutes=1),
                           succeeded=True, records=7, events_count=3)
    PollRun.objects.create(connector_instance=connector, object_type="files", started_at=now, succeeded=False,
                           error="the provider answered 503")
    shown = text(admin.get(on(connector, "polls/")))
    assert shown.count("<tr data-poll") == 2 and "the provider answered 503" in shown


def _formula(oc: ServiceInstance, connector: ConnectorInstance) -> Formula:
    formula = Formula.objects.create(service_instance=oc, name="notify", description="tell the CRM",
                                     steps=[{"name": "post", "type": "request", "properties": {}}])
    instance = FormulaInstance.objects.create(formula=formula, connector_instance=connector, name="crm-notify")
    execution = FormulaExecution.objects.create(
        formula_instance=instance, created_at=timezone.now(), status="failed", attempts=1, error="step post failed",
        trigger={"event": {"objectType": "contacts", "objectId": "1000", "eventType": "CREATED"}})
    FormulaStep.objects.create(execution=execution, attempt=1, name="post", step_type="request",
                               started_at=timezone.now(), succeeded=False, result={"status": 502},
                               error="502 from the target")
    return formula


def test_formulas_are_listed_with_their_instances_executions_and_step_results(admin, oc):
    formula = _formula(oc, crm(oc))
    listed = text(admin.get(app(oc, "formulas/")))
    assert 'data-formula="notify"' in listed
    detail = text(admin.get(app(oc, f"formulas/{formula.pk}")))
    assert 'data-formula-instance="crm-notify"' in detail and "contacts 1000 CREATED" in detail
    assert "502 from the target" in detail and "step post failed" in detail
    assert admin.get(app(oc, "formulas/99999")).status_code == 404


def _pages(oc: ServiceInstance, connector: ConnectorInstance, formula: Formula) -> list[str]:
    notification = ConnectorNotification.objects.get()
    return [f"/subaccounts/{oc.subaccount_id}/open-connectors/", app(oc), on(connector), on(connector, "events/"),
            on(connector, f"events/{notification.notification_id}"), on(connector, "queued/"),
            on(connector, "bodies/"), on(connector, "polls/"), app(oc, "formulas/"), app(oc, f"formulas/{formula.pk}")]


def _writes(oc: ServiceInstance, connector: ConnectorInstance) -> list[tuple[str, dict[str, Any]]]:
    return [(app(oc), new_form(name="other")), (on(connector), new_form(name="renamed")),
            (on(connector, "configuration"), {"key": "event.notification.enabled", "value": "false"}),
            (on(connector, "delete"), {"confirm": "crm"}), (on(connector, "queued/redeliver"), {"all": "1"})]


def test_a_viewer_sees_every_page_but_cannot_write(person, oc, receiver,
                                                   django_capture_on_commit_callbacks):
    connector = crm(oc, receiver)
    post_body(connector, hubspot(2), django_capture_on_commit_callbacks)
    viewer = person("vic", "viewer")
    for path in _pages(oc, connector, _formula(oc, connector)):
        answer = viewer.get(path)
        assert answer.status_code == 200, path
        assert "<form method=\"post\" class=\"grid\"" not in text(answer), path  # no write forms shown
    for path, data in _writes(oc, connector):
        assert viewer.post(path, data).status_code == 403, path
    connector.refresh_from_db()
    assert (ConnectorInstance.objects.count(), connector.name, connector.events_enabled()) == (1, "crm", True)


def test_a_user_without_a_role_in_the_subaccount_gets_404_everywhere(person, oc, receiver,
                                                                    django_capture_on_commit_callbacks):
    connector = crm(oc, receiver)
    post_body(connector, hubspot(2), django_capture_on_commit_callbacks)
    outsider = person("eve")
    for path in _pages(oc, connector, _formula(oc, connector)):
        assert outsider.get(path).status_code == 404, path
    for path, data in _writes(oc, connector):
        assert outsider.post(path, data).status_code == 404, path
    assert ConnectorInstance.objects.get().name == "crm"


def test_another_subaccounts_instances_and_another_instances_connectors_are_404(admin, oc, subaccount):
    other = Subaccount.objects.create(name="other")
    Entitlement.objects.create(subaccount=other, service="open-connectors", plan="standard", quota=1)
    foreign = instance_create(subaccount=other, service="open-connectors", plan="standard", name="theirs")
    theirs = connector_instance_create(service_instance=foreign, name="theirs", element_key="dropbox")
    mine = crm(oc)
    via_mine = f"/subaccounts/{subaccount.pk}/open-connectors/{foreign.pk}/"
    for path in ("", f"connectors/{theirs.pk}/", f"connectors/{theirs.pk}/events/", "formulas/"):
        assert admin.get(via_mine + path).status_code == 404, path
    for path in ("", "events/", "queued/", "bodies/", "polls/"):
        assert admin.get(app(oc, f"connectors/{theirs.pk}/{path}")).status_code == 404, path
    assert admin.post(app(oc, f"connectors/{theirs.pk}/delete"), {"confirm": "theirs"}).status_code == 404
    assert admin.get(f"/subaccounts/{other.pk}/open-connectors/{foreign.pk}/").status_code == 404
    assert "theirs" not in text(admin.get(f"/subaccounts/{subaccount.pk}/open-connectors/"))
    assert ConnectorInstance.objects.filter(pk=theirs.pk).exists() and mine.pk != theirs.pk
    assert not VendorEvent.objects.exists()
