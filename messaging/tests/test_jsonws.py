"""The JSON WebSocket protocol in process, through Channels' WebsocketCommunicator and the
real ASGI application (the store on PostgreSQL in CI): the frame parser's refusals, the
ticket rules, and a publish → subscribe → ack round trip with tenants kept apart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.utils import timezone
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from meshsite.errors import MeshError
from meshsite.platform.models import Membership
from meshsite.testing import MeshClient
from messaging.hotpath import endpoints
from messaging.jsonws import frames
from messaging.models import Message, WsTicket
from messaging.services.tickets import ws_ticket_issue, ws_ticket_redeem, ws_ticket_still_valid

pytestmark = pytest.mark.django_db(transaction=True)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def with_cleanup() -> None:
        try:
            await asyncio.wait_for(scenario(), 30)
        finally:
            await endpoints().executor.close()

    asyncio.run(with_cleanup())


async def connect(token: str, **extra: Any) -> WebsocketCommunicator:
    from meshsite.asgi import application

    headers = [(b"authorization", f"Bearer {token}".encode()), (b"host", b"testserver")]
    communicator = WebsocketCommunicator(application, "/ws/v1/", headers=headers, **extra)
    connected, _ = await communicator.connect()
    assert connected
    welcome = await communicator.receive_json_from(timeout=5)
    assert welcome["op"] == "welcome"
    return communicator


async def next_frame(communicator: WebsocketCommunicator, op: str) -> dict[str, Any]:
    while True:
        frame = await communicator.receive_json_from(timeout=10)
        if frame["op"] == op:
            return frame


def test_publish_subscribe_ack_round_trip_and_another_instance_sees_nothing(mesh):
    mine: MeshClient = mesh("json-a", "a/b/c")
    theirs: MeshClient = mesh("json-b", "x/y/z")
    assert mine.put_queue("a/b/c/q").status_code == 201
    assert theirs.put_queue("x/y/z/q").status_code == 201

    async def scenario() -> None:
        c = await connect(mine.token)
        await c.send_json_to({"op": "publish", "ref": "1", "queue": "a/b/c/q", "body": {"hello": "json"}})
        assert await next_frame(c, "published") == {"op": "published", "ref": "1"}
        await c.send_json_to({"op": "subscribe", "sub": "s", "queue": "a/b/c/q", "credit": 1})
        message = await next_frame(c, "message")
        assert (message["body"], message["contentType"]) == ('{"hello":"json"}', "application/json")
        await c.send_json_to({"op": "ack", "sub": "s", "tag": message["tag"]})
        await c.send_json_to({"op": "ping", "ref": "p"})
        await next_frame(c, "pong")
        other = await connect(theirs.token)
        await other.send_json_to({"op": "subscribe", "sub": "s", "queue": "a/b/c/q"})
        refused = await next_frame(other, "error")
        assert refused["status"] in (403, 404) and refused["sub"] == "s"
        await c.disconnect()
        await other.disconnect()

    run(scenario)
    assert not Message.objects.filter(queue__name="a/b/c/q").exists()  # acknowledged: gone


def test_upgrade_without_credentials_is_refused_before_accept(mesh):
    from meshsite.asgi import application

    async def scenario() -> None:
        communicator = WebsocketCommunicator(application, "/ws/v1/", headers=[(b"host", b"testserver")])
        connected, _ = await communicator.connect()
        assert not connected

    run(scenario)


# --- the frame parser ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "status", "words"), [
    ("nope", 400, "not JSON"),
    ('"op"', 400, "JSON object"),
    ('{"op": 1}', 400, "Unknown op"),
    ('{"op": "subscribe", "sub": "s"}', 400, "Exactly one of"),
    ('{"op": "subscribe", "sub": "s", "queue": "q", "topic": "t"}', 400, "Exactly one of"),
    ('{"op": "subscribe", "sub": "", "queue": "q"}', 400, "'sub'"),
    ('{"op": "subscribe", "sub": "s", "queue": "q", "credit": -1}', 400, "'credit'"),
    ('{"op": "subscribe", "sub": "s", "queue": "q", "credit": true}', 400, "'credit'"),
    ('{"op": "subscribe", "sub": "s", "queue": "q", "qos": 2}', 400, "'qos'"),
    ('{"op": "ack", "sub": "s"}', 400, "'tag'"),
    ('{"op": "ack", "sub": "s", "tags": [1]}', 400, "tag"),
    ('{"op": "credit", "sub": "s", "credit": 0}', 400, "'credit'"),
    ('{"op": "publish", "queue": "q"}', 400, "'body'"),
    ('{"op": "publish", "queue": "q", "body": "x", "encoding": "hex"}', 400, "'encoding'"),
    ('{"op": "publish", "queue": "q", "body": 5, "encoding": "base64"}', 400, "base64"),
    ('{"op": "publish", "queue": "q", "body": "x", "properties": {"a": {"b": 1}}}', 400, "'properties'"),
    ('{"op": "publish", "queue": "q", "body": "x", "ttl": "soon"}', 400, "'ttl'"),
    ('{"op": "publish", "ref": 7, "queue": "q", "body": "x"}', 400, "'ref'"),
])
def test_bad_frames_are_refused_with_the_field_named(text, status, words):
    with pytest.raises(frames.Refused) as refused:
        frames.parse(text)
    assert refused.value.error.status_code == status and words in refused.value.error.message


def test_refusals_carry_the_callers_ref_and_sub(settings):
    settings.MESH_MAX_MESSAGE_SIZE = 4
    with pytest.raises(frames.Refused) as refused:
        frames.parse('{"op": "publish", "ref": "r1", "queue": "q", "body": "too long"}')
    assert (refused.value.ref, refused.value.error.status_code) == ("r1", 413)
    with pytest.raises(frames.Refused) as refused:
        frames.parse('{"op": "subscribe", "sub": "s1", "queue": "q", "credit": 1000000}')
    assert refused.value.sub == "s1"


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["op", "sub", "ref", "queue", "topic", "body", "credit", "qos", "tags", "tag",
                         "encoding", "properties", "contentType", "ttl"]), inner, max_size=6),
    max_leaves=12).map(json.dumps)))
def test_any_text_parses_or_is_refused_with_a_client_error(text):
    try:
        frames.parse(text)
    except frames.Refused as refused:
        assert 400 <= refused.error.status_code < 500


def test_bodies_travel_as_text_when_textual_and_as_base64_otherwise():
    now = timezone.now()

    def shaped(payload: bytes, content_type: str) -> dict[str, Any]:
        return frames.message(sub="s", tag="1", payload=payload, content_type=content_type, to="queue:q",
                              message_id="m", created_at=now, delivery_count=1, properties="")

    assert shaped(b"caf\xc3\xa9", "text/plain")["body"] == "café"
    assert shaped(b"<a/>", "application/soap+xml")["body"] == "<a/>"
    assert shaped(b"\xff", "text/plain")["encoding"] == "base64"  # not UTF-8
    assert shaped(b"ab", "application/octet-stream") | {} == shaped(b"ab", "application/octet-stream")
    assert shaped(b"ab", "application/octet-stream")["body"] == "YWI="


# --- tickets -------------------------------------------------------------------------------------


def _user(name: str, *, role: str | None = None, instance: Any = None) -> Any:
    user = get_user_model().objects.create_user(username=name, password="x")
    if role is not None:
        Membership.objects.create(user=user, subaccount_id=instance.subaccount_id, role=role)
    return user


def test_a_ticket_opens_once_for_an_administrator_and_only_while_fresh(mesh, settings):
    instance = mesh("tickets", "t/i/c").instance
    admin = _user("administrator", role="administrator", instance=instance)
    ticket = ws_ticket_issue(user=admin, instance_id=str(instance.pk))
    assert not WsTicket.objects.filter(checksum=ticket.raw).exists()  # only its hash is kept
    assert ws_ticket_redeem(raw=ticket.raw) == (instance, admin.pk)
    assert ws_ticket_redeem(raw=ticket.raw) is None  # single use
    stale = ws_ticket_issue(user=admin, instance_id=str(instance.pk))
    WsTicket.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert ws_ticket_redeem(raw=stale.raw) is None
    with pytest.raises(MeshError) as refused:
        ws_ticket_issue(user=admin, instance_id="00000000-0000-0000-0000-000000000000")
    assert refused.value.status_code == 404


def test_viewers_get_no_ticket_and_outsiders_learn_nothing(mesh):
    instance = mesh("ticket-roles", "t/r/c").instance
    viewer = _user("viewer", role="viewer", instance=instance)
    with pytest.raises(MeshError) as refused:
        ws_ticket_issue(user=viewer, instance_id=str(instance.pk))
    assert refused.value.status_code == 403
    with pytest.raises(MeshError) as refused:  # no role at all: as if there were no such instance
        ws_ticket_issue(user=_user("outsider"), instance_id=str(instance.pk))
    assert refused.value.status_code == 404


def test_a_ticket_and_its_connection_end_when_the_user_stops_being_an_administrator(mesh):
    instance = mesh("ticket-demoted", "t/d/c").instance
    admin = _user("soon-viewer", role="administrator", instance=instance)
    ticket = ws_ticket_issue(user=admin, instance_id=str(instance.pk))
    assert ws_ticket_still_valid(user_id=admin.pk, instance_id=instance.pk)
    Membership.objects.filter(user=admin).update(role="viewer")
    assert not ws_ticket_still_valid(user_id=admin.pk, instance_id=instance.pk)
    assert ws_ticket_redeem(raw=ticket.raw) is None


def test_the_admin_lists_tickets_without_their_checksums(mesh, admin_client):
    instance = mesh("ticket-admin", "t/a/d").instance
    lister = _user("lister", role="administrator", instance=instance)
    ws_ticket_issue(user=lister, instance_id=str(instance.pk))
    stored = WsTicket.objects.get()
    page = admin_client.get("/admin/messaging/wsticket/")
    assert page.status_code == 200 and "lister" in page.content.decode()
    detail = admin_client.get(f"/admin/messaging/wsticket/{stored.pk}/change/").content.decode()
    assert stored.checksum not in detail
    assert admin_client.get("/admin/messaging/wsticket/add/").status_code == 403
    assert admin_client.get("/admin/messaging/connection/").status_code == 200


def test_a_store_outage_under_a_subscribe_is_a_503_frame_and_the_socket_serves_on(mesh, monkeypatch):
    # The boundary we cannot cut here without taking the store down for every test: the
    # catalog's read, failing as psycopg does when the server is gone.
    import psycopg

    client: MeshClient = mesh("outage", "o/u/t")
    assert client.put_queue("o/u/t/q").status_code == 201

    async def scenario() -> None:
        c = await connect(client.token)
        catalog = endpoints().catalog

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(catalog, "queue", down)
        await c.send_json_to({"op": "subscribe", "sub": "s", "queue": "o/u/t/q"})
        refused = await next_frame(c, "error")
        assert (refused["status"], refused["sub"]) == (503, "s")
        monkeypatch.undo()
        await c.send_json_to({"op": "subscribe", "sub": "s", "queue": "o/u/t/q"})
        assert (await next_frame(c, "subscribed"))["sub"] == "s"  # nothing half-made was left
        await c.disconnect()

    run(scenario)


def test_a_released_or_dropped_message_wakes_its_queues_consumers_without_the_poll(mesh, settings):
    settings.MESH_LIVE_POLL_MS = 600_000  # only a wake-up can bring them back in time here
    client: MeshClient = mesh("wake", "w/a/k")
    assert client.put_queue("w/a/k/q").status_code == 201
    assert client.publish("queues", "w/a/k/q", b"one").status_code == 204

    async def scenario() -> None:
        first = await connect(client.token)
        await first.send_json_to({"op": "subscribe", "sub": "s", "queue": "w/a/k/q", "credit": 5})
        message = await next_frame(first, "message")
        await first.send_json_to({"op": "release", "sub": "s", "tag": message["tag"]})
        again = await next_frame(first, "message")  # back once the release is written
        assert again["body"] == "one"
        second = await connect(client.token)
        await second.send_json_to({"op": "subscribe", "sub": "s", "queue": "w/a/k/q", "credit": 5})
        await next_frame(second, "subscribed")
        await first.disconnect()  # what it held returns, and the other consumer hears of it
        taken = await next_frame(second, "message")
        assert (taken["body"], taken["deliveryCount"]) == ("one", 2)
        await second.disconnect()

    run(scenario)
