"""The cockpit's Event Mesh application through Django's test client: queues (counts, create,
attributes, purge, delete), topic subscriptions with the match helper, webhooks, the Test and
Monitor tabs, the dead message queue browser; viewers cannot write, other subaccounts' objects
are 404, refusals are shown beside their field and store nothing."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest

from meshsite.platform.models import Entitlement, ServiceInstance, Subaccount
from meshsite.platform.services import instance_create
from meshsite.testing import MeshClient, make_instance, mesh_client_for
from messaging.metrics.meter import meter_flush
from messaging.models import Message, Queue, Subscription, WebhookSubscription
from messaging.services import QueueAttributes, queue_put
from messaging.services.deadletter import message_dead_letter
from messaging.webhooks.delivery import webhook_deliver_batch

Q = "a/b/c/orders"


@pytest.fixture
def em(subaccount: Subaccount) -> MeshClient:
    """The seed's setup: the Event Mesh subscription and a message client `emname` on a/b/c."""
    instance_create(subaccount=subaccount, service="event-mesh", plan="standard", name="event-mesh-app")
    return mesh_client_for(make_instance("emname", "a/b/c"))


def app(em: MeshClient, path: str = "") -> str:
    return f"/subaccounts/{em.instance.subaccount_id}/event-mesh/{em.instance.pk}/{path}"


def text(answer: Any) -> str:
    return html.unescape(answer.content.decode())


def test_the_app_needs_the_subscription(person, subaccount):
    admin = person("ada", "administrator")
    instance = make_instance("emname", "a/b/c")
    refused = admin.get(f"/subaccounts/{subaccount.pk}/event-mesh/")
    assert refused.status_code == 404 and "event-mesh/standard subscription" in text(refused)
    assert admin.get(f"/subaccounts/{subaccount.pk}/event-mesh/{instance.pk}/").status_code == 404
    instance_create(subaccount=subaccount, service="event-mesh", plan="standard", name="event-mesh-app")
    listed = admin.get(f"/subaccounts/{subaccount.pk}/event-mesh/")
    assert listed.status_code == 200 and "emname" in text(listed)
    overview = text(admin.get(f"/subaccounts/{subaccount.pk}/"))
    assert f"/subaccounts/{subaccount.pk}/event-mesh/" in overview  # "Go to application"


def test_a_queue_is_created_shows_its_counts_and_takes_new_attributes(person, em):
    admin = person("ada", "administrator")
    assert admin.post(app(em), {"name": Q, "max_redelivery_count": 3}).status_code == 302
    queue = Queue.objects.get(name=Q)
    assert queue.max_redelivery_count == 3
    assert em.publish("queues", Q, b'{"n": 1}', content_type="application/json").status_code == 204
    listing = text(admin.get(app(em)))
    assert f'data-queue="{Q}"' in listing and '<td class="num" data-count>1</td>' in listing
    detail = admin.get(app(em, f"queues/{Q}"))
    assert detail.status_code == 200 and '<b data-count>1</b>' in text(detail) and '<b data-size>8</b>' in text(detail)
    changed = admin.post(app(em, f"queues/{Q}"), {"max_redelivery_count": 5, "access_type": "EXCLUSIVE"})
    assert changed.status_code == 302
    queue.refresh_from_db()
    assert (queue.max_redelivery_count, queue.access_type) == (5, "EXCLUSIVE")


@pytest.mark.parametrize(("name", "words"), [
    ("x/y/z/elsewhere", "queue rules"),
    ("a/b/c/" + "q" * 300, "characters"),
    ("a/b/c/bad name", "[a-zA-Z0-9-_.]"),
])
def test_a_queue_against_the_rules_is_refused_beside_its_name_and_not_created(person, em, name, words):
    admin = person("ada", "administrator")
    answer = admin.post(app(em), {"name": name})
    assert answer.status_code == 400
    assert words in text(answer).split('data-field="name"', 1)[1].split("data-field=", 1)[0]
    assert not Queue.objects.exists()


def test_a_bad_attribute_change_is_refused_and_changes_nothing(person, em):
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    answer = admin.post(app(em, f"queues/{Q}"), {"dead_msg_queue": Q, "max_redelivery_count": 7})
    assert answer.status_code == 400 and "must not be the queue itself" in text(answer)
    queue = Queue.objects.get(name=Q)
    assert queue.dead_msg_queue is None and queue.max_redelivery_count == 0


def test_topic_subscriptions_with_the_match_helper(person, em):
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    other = "a/b/c/seen"
    queue_put(instance=em.instance, name=other, attributes=QueueAttributes())
    em.call("PUT", f"/hub/rest/api/v1/management/messaging/queues/{other.replace('/', '%2F')}/subscriptions/"
                   "a%2Fb%2Fc%2Forders%2F%2A")
    assert em.publish("topics", "a/b/c/orders/created").status_code == 204  # a topic seen now
    match = admin.get(app(em, "topic-match"), {"pattern": "a/b/c/orders/+", "topic": "a/b/c/orders/x/y"}).json()
    assert match == {"ok": True, "matches": ["a/b/c/orders/created"],
                     "topic": {"name": "a/b/c/orders/x/y", "matches": False}}
    refused = admin.get(app(em, "topic-match"), {"pattern": "x/y/z/+"}).json()
    assert refused["ok"] is False and "topic rules" in refused["error"]
    action = app(em, f"queue-actions/subscribe/{Q}")
    assert admin.post(action, {"pattern": "a/b/c/orders/+"}).status_code == 302
    assert list(Subscription.objects.filter(queue__name=Q).values_list("pattern", "prefix")) == [
        ("a/b/c/orders/+", "a/b/c/orders")]  # through subscription_put: the prefix index is set
    bad = admin.post(action, {"pattern": "x/y/z/*"})
    assert bad.status_code == 400 and "topic rules" in text(bad)
    assert Subscription.objects.filter(queue__name=Q).count() == 1
    assert em.publish("topics", "a/b/c/orders/paid").status_code == 204
    assert Message.objects.filter(queue__name=Q).count() == 1
    assert admin.post(app(em, f"queue-actions/unsubscribe/{Q}"), {"pattern": "a/b/c/orders/+"}).status_code == 302
    assert not Subscription.objects.filter(queue__name=Q).exists()


def test_purge_and_delete_a_queue(person, em):
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    for _ in range(3):
        em.publish("queues", Q)
    assert admin.post(app(em, f"queue-actions/purge/{Q}")).status_code == 302
    assert not Message.objects.exists() and Queue.objects.filter(name=Q).exists()
    assert admin.post(app(em, f"queue-actions/delete/{Q}"), {"confirm": "nope"}).status_code == 400
    assert Queue.objects.filter(name=Q).exists()
    assert admin.post(app(em, f"queue-actions/delete/{Q}"), {"confirm": Q}).status_code == 302
    assert not Queue.objects.exists()


def webhook_form(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"name": "hook", "queue": Q, "endpoint": endpoint, "qos": 1, "exempt_handshake": "on", **extra}


def test_a_webhook_is_created_paused_resumed_and_its_log_shown(person, em, settings, receiver):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    created = admin.post(app(em, "webhooks/"), webhook_form(receiver.url(), auth="basicAuth", user="u",
                                                                  password="secret-pw"))
    assert created.status_code == 302, text(created)
    hook = WebhookSubscription.objects.get()
    assert hook.security["type"] == "basicAuth" and "secret-pw" not in json.dumps(hook.security)  # sealed
    page = text(admin.get(app(em, "webhooks/hook")))
    assert "basicAuth" in page and "secret-pw" not in page
    assert admin.post(app(em, "webhook-actions/pause/hook")).status_code == 302
    hook.refresh_from_db()
    assert hook.status == "Paused"
    assert admin.post(app(em, "webhook-actions/resume/hook")).status_code == 302
    hook.refresh_from_db()
    assert hook.status == "Active"
    assert admin.post(app(em, "webhook-actions/delete/hook")).status_code == 302
    assert not WebhookSubscription.objects.exists()


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({"endpoint": "http://127.0.0.1:9/hook"}, "endpoint", "pushConfig.endpoint"),
    ({"auth": "oauth2", "client_id": "c"}, "auth", "securitySchema"),
    ({"endpoint": "not a url"}, "endpoint", "Enter a valid URL"),
])
def test_a_bad_webhook_is_refused_beside_its_field_and_not_created(person, em, extra, field, words):
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    answer = admin.post(app(em, "webhooks/"), {**webhook_form("https://93.184.216.34/hook"), **extra})
    assert answer.status_code == 400
    assert words in text(answer).split(f'data-field="{field}"', 1)[1].split("data-field=", 1)[0]
    assert not WebhookSubscription.objects.exists()


def test_the_test_tab_hands_the_page_what_it_needs_for_the_websocket(person, em):
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    page = text(admin.get(app(em, "test/")))
    config = json.loads(page.split('<script id="test-config" type="application/json">', 1)[1].split("</script>")[0])
    assert config == {"instance": str(em.instance.pk), "namespace": "a/b/c", "ticketUrl": "/api/v1/ws-tickets",
                      "canWrite": True}
    assert f"<option>{Q}</option>" in page
    viewer_page = text(person("vic", "viewer").get(app(em, "test/")))
    assert "Viewers cannot publish or consume" in viewer_page and "test-config" not in viewer_page


def test_the_dead_message_browser_peeks_and_requeues_one_or_all(person, em):
    admin = person("ada", "administrator")
    dmq = "a/b/c/dead"
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes(dead_msg_queue=dmq, max_redelivery_count=1))
    queue_put(instance=em.instance, name=dmq, attributes=QueueAttributes())
    for body in (b"first", b"second"):
        em.publish("queues", Q, body)
    queue = Queue.objects.get(name=Q)
    for message in Message.objects.filter(queue=queue).order_by("id"):
        message_dead_letter(message=message, queue=queue, reason="testing")
    monitor = text(admin.get(app(em, "monitor/")))
    assert f"dead-letters/{dmq}" in monitor
    listing = text(admin.get(app(em, f"dead-letters/{dmq}")))
    dead = list(Message.objects.filter(queue__name=dmq).order_by("id"))
    assert len(dead) == 2 and all(str(m.uuid) in listing for m in dead) and "testing" in listing
    peek = text(admin.get(app(em, f"messages/{dead[0].uuid}")))
    assert "first" in peek and "text/plain" in peek
    assert Message.objects.filter(queue__name=dmq).count() == 2  # peeking consumed nothing
    one = admin.post(app(em, f"requeue/{dmq}"), {"message": [str(dead[0].uuid)]})
    assert one.status_code == 302 and one["Location"].endswith("?moved=1")
    assert Message.objects.filter(queue__name=Q).count() == 1
    assert admin.post(app(em, f"requeue/{dmq}"), {"all": "1"})["Location"].endswith("?moved=1")
    assert Message.objects.filter(queue__name=Q).count() == 2 and not Message.objects.filter(queue__name=dmq).exists()


def test_the_monitor_groups_failed_deliveries_by_endpoint_and_error(person, em, settings, receiver):
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    admin.post(app(em, "webhooks/"), webhook_form(receiver.url()))
    receiver.statuses = [500, 500]
    for _ in range(2):
        em.publish("queues", Q)
    webhook_deliver_batch(subscription_id=WebhookSubscription.objects.get().pk)
    monitor = text(admin.get(app(em, "monitor/")))
    failures = monitor.split('id="failures"', 1)[1].split("</table>", 1)[0]
    assert receiver.url() in failures and "500" in failures


def test_viewers_read_the_app_but_cannot_change_it(person, em):
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    viewer = person("vic", "viewer")
    for path in ("", f"queues/{Q}", "webhooks/", "test/", "monitor/"):
        assert viewer.get(app(em, path)).status_code == 200, path
    writes = [("", {"name": "a/b/c/new"}), (f"queues/{Q}", {"max_redelivery_count": 9}),
              (f"queue-actions/purge/{Q}", {}), (f"queue-actions/delete/{Q}", {"confirm": Q}),
              (f"queue-actions/subscribe/{Q}", {"pattern": "a/b/c/+"}), ("webhooks/", webhook_form("https://93.184.216.34/hook")),
              (f"requeue/{Q}", {"all": "1"})]
    em.publish("queues", Q)
    for path, data in writes:
        assert viewer.post(app(em, path), data).status_code == 403, path
    assert list(Queue.objects.values_list("name", "max_redelivery_count")) == [(Q, 0)]
    assert Message.objects.count() == 1 and not Subscription.objects.exists()
    assert admin.get(app(em)).status_code == 200


def test_another_subaccounts_message_client_is_404(person, em, subaccount):
    admin = person("ada", "administrator")
    other = Subaccount.objects.create(name="other")
    Entitlement.objects.create(subaccount=other, service="event-mesh", plan="default", quota=1)
    foreign = instance_create(subaccount=other, service="event-mesh", plan="default", name="theirs",
                              parameters={"emname": "theirs", "namespace": "t/h/e"})
    queue_put(instance=foreign, name="t/h/e/q", attributes=QueueAttributes())
    theirs = mesh_client_for(foreign)
    theirs.publish("queues", "t/h/e/q", b"private")
    message = Message.objects.get()
    mine = f"/subaccounts/{subaccount.pk}/event-mesh/{foreign.pk}/"
    for path in ("", "queues/t/h/e/q", "monitor/", "test/"):
        assert admin.get(mine + path).status_code == 404, path
    assert admin.post(mine + "queue-actions/purge/t/h/e/q").status_code == 404
    assert admin.get(app(em, f"messages/{message.uuid}")).status_code == 404  # via my own client: not mine
    assert admin.get(f"/subaccounts/{other.pk}/event-mesh/{foreign.pk}/").status_code == 404
    assert Message.objects.count() == 1
    assert ServiceInstance.objects.filter(pk=foreign.pk).exists()


def test_the_monitor_chart_reads_the_per_minute_counters(person, em, django_capture_on_commit_callbacks):
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    queue_put(instance=em.instance, name="a/b/c/quiet", attributes=QueueAttributes())
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):
            assert em.publish("queues", Q).status_code == 204
    meter_flush()
    answer = admin.get(app(em, "monitor/rates")).json()
    assert len(answer["minutes"]) == 60
    by_queue = {row["queue"]: row for row in answer["queues"]}
    assert set(by_queue) == {Q, "a/b/c/quiet"}
    assert sum(by_queue[Q]["published"]) == 3 and by_queue[Q]["published"][-1] == 3
    assert sum(by_queue["a/b/c/quiet"]["published"]) == 0
    assert person("olga").get(app(em, "monitor/rates")).status_code == 404


def test_the_asyncapi_document_downloads_from_the_app(person, em):
    admin = person("ada", "administrator")
    queue_put(instance=em.instance, name=Q, attributes=QueueAttributes())
    answer = person("vic", "viewer").get(app(em, "asyncapi.json"))  # reading: viewers too
    assert answer.status_code == 200
    assert answer["Content-Disposition"] == 'attachment; filename="emname-asyncapi.json"'
    document = json.loads(answer.content)
    assert document["asyncapi"] == "3.0.0"
    assert any(channel["address"] == f"queue:{Q}" for channel in document["channels"].values())
    assert "AsyncAPI document" in text(admin.get(app(em)))
    assert person("olga").get(app(em, "asyncapi.json")).status_code == 404
