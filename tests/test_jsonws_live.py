"""The JSON WebSocket protocol (`/ws/v1/`) against a live uvicorn and Daphne over a real
socket: REST in, JSON out and the other way round, credit, ack / nack / release, the dead
message queue, topics, the three ways to authenticate, and the refusals."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import httpx
import pytest

from meshsite.amqpclient import AmqpClient
from meshsite.wsclient import JsonClient, Refused
from tests.test_amqp_live import _second_key, amqp_url, enc, put_queue, rest_consume, run, subscribe
from tests.test_live_server import (  # noqa: F401  (fixtures)
    MAX_MESSAGE_SIZE,
    REST,
    http,
    live,
    manage,
    token,
)


def ws_url(live) -> str:  # noqa: F811
    return live.base.replace("http://", "ws://") + "/ws/v1/"


def publish_rest(http, queue: str, body: bytes, content_type: str = "text/plain") -> None:  # noqa: F811
    answer = http.post(f"{REST}/queues/{enc(queue)}/messages", content=body,
                       headers={"Content-Type": content_type, "x-qos": "1"})
    assert answer.status_code == 204, answer.text


def test_rest_publish_is_consumed_over_json_and_ack_removes_it(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/json-out")
    publish_rest(http, "a/b/c/json-out", b'{"n": 1}', "application/json")
    publish_rest(http, "a/b/c/json-out", b"\x00\xffbin", "application/octet-stream")

    async def scenario() -> None:
        async with await JsonClient.connect(ws_url(live), token=token) as c:
            assert c.welcome["namespace"] == "a/b/c"
            assert (await c.subscribe("s", queue="a/b/c/json-out", credit=5))["op"] == "subscribed"
            first, second = await c.expect("message", sub="s"), await c.expect("message", sub="s")
            assert (first["body"], first["contentType"], first["to"]) == ('{"n": 1}', "application/json",
                                                                          "queue:a/b/c/json-out")
            assert first["deliveryCount"] == 1 and first["messageId"]
            assert (second["encoding"], base64.b64decode(second["body"])) == ("base64", b"\x00\xffbin")
            await c.send(op="ack", sub="s", tags=[first["tag"], second["tag"]])
            await c.send(op="ping", ref="p")  # frames are handled in order: the acks are in
            await c.expect("pong", ref="p")
            await c.send(op="ack", sub="s", tag=first["tag"])
            error = await c.expect("error", sub="s")
            assert error["status"] == 404 and first["tag"] in error["message"]

    run(scenario)
    assert rest_consume(http, "a/b/c/json-out").status_code == 204  # both acknowledged: gone


def test_json_publish_reaches_rest_and_amqp_shapes_with_bytes_type_and_properties(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/json-in")
    subscribe(http, "a/b/c/json-in", "a/b/c/json/+")

    async def scenario() -> None:
        async with await JsonClient.connect(ws_url(live), token=token) as c:
            assert (await c.publish(queue="a/b/c/json-in", body="plain text"))["op"] == "published"
            assert (await c.publish(queue="a/b/c/json-in", body={"a": [1, 2]}))["op"] == "published"
            raw = base64.b64encode(b"\x01\x02").decode()
            answer = await c.publish(topic="a/b/c/json/t", body=raw, encoding="base64", contentType="image/png",
                                     properties={"k": "v", "n": 2}, correlationId="c-1")
            assert answer["op"] == "published"
            # and back over JSON: the properties the publisher set
            assert (await c.subscribe("back", queue="a/b/c/json-in", credit=0))["op"] == "subscribed"

    run(scenario)
    got = [rest_consume(http, "a/b/c/json-in") for _ in range(3)]
    assert [(r.content, r.headers["content-type"]) for r in got] == [
        (b"plain text", "text/plain; charset=utf-8"), (b'{"a":[1,2]}', "application/json"), (b"\x01\x02", "image/png")]


def test_credit_bounds_what_is_sent_and_more_credit_sends_more(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/json-credit")
    for n in range(5):
        publish_rest(http, "a/b/c/json-credit", f"m{n}".encode())

    async def scenario() -> None:
        async with await JsonClient.connect(ws_url(live), token=token) as c:
            await c.subscribe("s", queue="a/b/c/json-credit", credit=2, qos=0)
            bodies = [(await c.expect("message", sub="s"))["body"] for _ in range(2)]
            with pytest.raises(TimeoutError):
                await c.expect("message", sub="s", timeout=0.7)
            await c.send(op="credit", sub="s", credit=10)
            bodies += [(await c.expect("message", sub="s"))["body"] for _ in range(3)]
            assert bodies == [f"m{n}" for n in range(5)]

    run(scenario)


def test_nack_counts_waits_the_redelivery_delay_and_ends_in_the_dead_message_queue(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/json-dmq")
    put_queue(http, "a/b/c/json-poison", maxRedeliveryCount=1, deadMsgQueue="a/b/c/json-dmq",
              redeliveryDelayInMs=200, maxRedeliveryDelayInMs=200)
    publish_rest(http, "a/b/c/json-poison", b"poison")
    publish_rest(http, "a/b/c/json-poison", b"fine")

    async def scenario() -> None:
        async with await JsonClient.connect(ws_url(live), token=token) as c:
            await c.subscribe("s", queue="a/b/c/json-poison", credit=10)
            counts = []
            while True:
                msg = await c.expect("message", sub="s")
                if msg["body"] == "fine":
                    await c.send(op="ack", sub="s", tag=msg["tag"])  # not held up behind the poison
                    continue
                counts.append(msg["deliveryCount"])
                await c.send(op="nack", sub="s", tag=msg["tag"])
                if len(counts) == 2:
                    break
            assert counts == [1, 2]
            with pytest.raises(TimeoutError):
                await c.expect("message", sub="s", timeout=1.5)  # exhausted: it is in the DMQ now

    run(scenario)
    deadline = time.monotonic() + 30
    while (dead := rest_consume(http, "a/b/c/json-dmq")).status_code == 204 and time.monotonic() < deadline:
        time.sleep(0.5)  # the next claim or the sweep moves it
    assert (dead.status_code, dead.content) == (200, b"poison")


def test_release_and_a_dropped_socket_give_messages_back(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/json-back")
    publish_rest(http, "a/b/c/json-back", b"one")
    publish_rest(http, "a/b/c/json-back", b"two")

    async def scenario() -> None:
        c = await JsonClient.connect(ws_url(live), token=token)
        await c.subscribe("s", queue="a/b/c/json-back", credit=3)
        one, two = await c.expect("message", sub="s"), await c.expect("message", sub="s")
        await c.send(op="release", sub="s", tag=one["tag"])
        again = await c.expect("message", sub="s")  # released: offered again at once, uncounted
        assert (again["body"], again["deliveryCount"]) == (one["body"], 1)
        await c.ws.close()  # two and again unsettled: back to the queue
        await asyncio.sleep(1)
        async with await JsonClient.connect(ws_url(live), token=token) as d:
            await d.subscribe("s", queue="a/b/c/json-back", credit=5)
            got = sorted([(await d.expect("message", sub="s"))["body"] for _ in range(2)])
            assert got == sorted([one["body"], two["body"]])

    run(scenario)


def test_topic_subscription_gets_matching_live_messages_only(live, token, http):  # noqa: F811
    async def scenario() -> None:
        async with await JsonClient.connect(ws_url(live), token=token) as c:
            assert (await c.subscribe("t", topic="a/b/c/live/*"))["op"] == "subscribed"
            for topic, body in (("a/b/c/other/x", b"no"), ("a/b/c/live/x", b"yes")):
                answer = await asyncio.to_thread(http.post, f"{REST}/topics/{enc(topic)}/messages", content=body,
                                                 headers={"Content-Type": "text/plain", "x-qos": "0"})
                assert answer.status_code == 204
            msg = await c.expect("message", sub="t")
            assert (msg["body"], msg["to"], "tag" in msg) == ("yes", "topic:a/b/c/live/x", False)
            await c.send(op="unsubscribe", sub="t")
            await c.expect("unsubscribed", sub="t")

    run(scenario)


def test_bad_frames_get_clear_errors_and_the_connection_serves_on(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/json-bad")

    async def scenario() -> None:
        async with await JsonClient.connect(ws_url(live), token=token) as c:
            cases = [
                ("not json", 400), ("[1]", 400), ('{"op": "dance"}', 400),
                ('{"op": "subscribe", "sub": "s"}', 400),
                ('{"op": "subscribe", "sub": "s", "queue": "a/b/c/none"}', 404),
                ('{"op": "subscribe", "sub": "s", "queue": "x/y/z/q"}', 403),  # outside the queue rules
                ('{"op": "subscribe", "sub": "t", "topic": "a/b/c/#/bad"}', 400),
                ('{"op": "credit", "sub": "nope", "credit": 1}', 404),
                ('{"op": "publish", "ref": "r", "queue": "a/b/c/json-bad"}', 400),
                ('{"op": "publish", "ref": "r", "queue": "a/b/c/json-bad", "body": "!!", "encoding": "base64"}',
                 400),
                ('{"op": "publish", "ref": "r", "queue": "a/b/c/json-bad", "body": "x", "contentType": "nope"}',
                 400),
                ('{"op": "publish", "ref": "r", "queue": "a/b/c/json-bad", "body": "\\ud800"}', 400),
                (json.dumps({"op": "publish", "ref": "r", "queue": "a/b/c/json-bad",
                             "body": "x" * (MAX_MESSAGE_SIZE + 1)}), 413),
                ('{"op": "publish", "ref": "r", "queue": "a/b/c/missing", "body": "x"}', 404),
                ("[" * 10_000, 400),
            ]
            for text, status in cases:
                await c.ws.send(text)
                error = await c.expect("error")
                assert error["status"] == status, (text[:80], error)
            await c.subscribe("dup", queue="a/b/c/json-bad", credit=0)
            assert (await c.subscribe("dup", queue="a/b/c/json-bad"))["status"] == 409
            at_limit = base64.b64encode(b"\xfe" * MAX_MESSAGE_SIZE).decode()
            assert (await c.publish(queue="a/b/c/json-bad", body=at_limit, encoding="base64"))["op"] == "published"
            assert (await c.publish(queue="a/b/c/json-bad", body="still serving"))["op"] == "published"
            await c.ws.send(b"\x00binary")  # the protocol is text
            await asyncio.wait_for(c.ws.wait_closed(), 10)
            assert c.ws.close_code == (1003 if live.server == "uvicorn" else 4003)  # Daphne: 4000 + code
        async with await JsonClient.connect(ws_url(live), token=token) as d:
            await d.ws.send("x" * (MAX_MESSAGE_SIZE * 4 // 3 + 64 * 1024 + 1))
            await asyncio.wait_for(d.ws.wait_closed(), 10)
            assert d.ws.close_code == (1009 if live.server == "uvicorn" else 4009)

    run(scenario)
    assert rest_consume(http, "a/b/c/json-bad").content == b"\xfe" * MAX_MESSAGE_SIZE
    assert rest_consume(http, "a/b/c/json-bad").content == b"still serving"  # nothing else was stored


def test_the_three_ways_in_and_the_refusals(live, token):  # noqa: F811
    async def scenario() -> None:
        async with await JsonClient.connect(ws_url(live), token=token, token_in_subprotocol=True) as c:
            assert c.ws.subprotocol == "meshsite.v1"
        refusals: list[tuple[dict[str, Any], int]] = [
                    ({}, 401), ({"token": "wrong"}, 401), ({"token": "wrong", "token_in_subprotocol": True}, 401),
                    ({"token": token, "subprotocols": ("mqtt",)}, 400),
                    ({"token": token, "origin": "https://evil.example"}, 403)]
        for kwargs, status in refusals:
            with pytest.raises(Refused) as refused:
                await JsonClient.connect(ws_url(live), **kwargs)
            assert refused.value.status == status
        async with await JsonClient.connect(ws_url(live), token=token, origin=live.base):
            pass  # the deployment's own origin is welcome

    run(scenario)


def _staff_session(live, name: str = "admin") -> httpx.Client:  # noqa: F811
    username = f"{name}-{live.server}"
    manage({**live.env, "DJANGO_SUPERUSER_PASSWORD": "pw-for-tests"}, "createsuperuser", "--noinput",
           "--username", username, "--email", "a@example.com")
    session = httpx.Client(base_url=live.base, timeout=10, follow_redirects=False)
    page = session.get("/admin/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf is not None
    answer = session.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": csrf.group(1), "username": username, "password": "pw-for-tests"})
    assert answer.status_code == 302, answer.text
    return session


def test_a_ticket_lets_a_logged_in_user_in_once_and_needs_csrf(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/json-ticket")
    publish_rest(http, "a/b/c/json-ticket", b"for the browser")
    session = _staff_session(live)
    try:
        csrf = session.cookies["csrftoken"]
        instance = live.key["serviceinstanceid"]
        assert session.post("/api/v1/ws-tickets", json={"instance": instance}).status_code == 403  # no CSRF token
        answer = session.post("/api/v1/ws-tickets", json={"instance": instance}, headers={"X-CSRFToken": csrf})
        assert answer.status_code == 201, answer.text
        ticket = answer.json()
        bad = session.post("/api/v1/ws-tickets", json={"instance": "not-a-uuid"}, headers={"X-CSRFToken": csrf})
        assert bad.status_code == 404
    finally:
        session.close()
    assert httpx.post(f"{live.base}/api/v1/ws-tickets", json={"instance": instance}).status_code == 403  # anonymous

    async def scenario() -> None:
        url = ws_url(live) + "?ticket=" + ticket["ticket"]
        async with await JsonClient.connect(url, origin=live.base) as c:
            await c.subscribe("s", queue="a/b/c/json-ticket", credit=1)
            assert (await c.expect("message", sub="s"))["body"] == "for the browser"
        with pytest.raises(Refused):  # single use
            await JsonClient.connect(url, origin=live.base)

    run(scenario)


def test_another_instance_cannot_reach_this_instances_queue(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/json-private")
    publish_rest(http, "a/b/c/json-private", b"mine")
    other = _second_key(live, f"json-other-{live.server}", {"namespace": "j/s/o"})

    async def scenario() -> None:
        async with await JsonClient.connect(ws_url(live), token=other) as c:
            # outside its own namespace: what REST answers that key, and nothing of the other's
            assert (await c.subscribe("s", queue="a/b/c/json-private", credit=5))["status"] in (403, 404)
            assert (await c.publish(queue="a/b/c/json-private", body="x"))["status"] in (403, 404)
            assert (await c.subscribe("t", topic="a/b/c/#"))["status"] in (400, 403)

    run(scenario)
    assert rest_consume(http, "a/b/c/json-private").content == b"mine"
    assert rest_consume(http, "a/b/c/json-private").status_code == 204


def test_the_cockpit_counts_the_amqp_and_json_connections_consuming_a_queue(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/watched")
    manage(live.env, "create_service", "event-mesh", "standard", "event-mesh-app")
    session = _staff_session(live, "watcher")
    overview = session.get("/").headers["location"]  # the one subaccount
    page = f"{overview}event-mesh/{live.key['serviceinstanceid']}/"

    def consumers() -> str:
        html = session.get(page).text
        found = re.search(r'<tr data-queue="a/b/c/watched">.*?data-consumers>(\d+)<', html, re.S)
        assert found is not None, html
        return found.group(1)

    def eventually(wanted: str) -> None:
        deadline = time.monotonic() + 10
        while consumers() != wanted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert consumers() == wanted

    async def scenario() -> None:
        async with await JsonClient.connect(ws_url(live), token=token) as c:
            await c.subscribe("s", queue="a/b/c/watched", credit=1)
            await asyncio.to_thread(eventually, "1")
            async with await AmqpClient.connect(amqp_url(live), token=token) as a:
                receiver = await a.receiver("queue:a/b/c/watched", credit=1)
                await asyncio.to_thread(eventually, "2")
                await receiver.close()
                await asyncio.to_thread(eventually, "1")
            await c.send(op="unsubscribe", sub="s")
            await c.expect("unsubscribed", sub="s")
            await asyncio.to_thread(eventually, "0")

    try:
        run(scenario)
    finally:
        session.close()
