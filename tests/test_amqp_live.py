"""AMQP 1.0 over WebSocket against a live uvicorn and Daphne, with a real proton client
(meshsite.amqpclient): what goes in over AMQP comes out over REST intact, and the other way
round; refusals arrive as HTTP statuses before the upgrade and as AMQP conditions after it."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from meshsite.amqpclient import AmqpClient, ConnectionClosed, LinkDetached, LinkRefused, UpgradeRefused
from meshsite.wsclient import JsonClient
from tests.test_live_server import (  # noqa: F401  (fixtures)
    MANAGEMENT,
    MAX_MESSAGE_SIZE,
    REST,
    another_process,
    http,
    live,
    live_server,
    manage,
    token,
)


def run(test: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout))


def amqp_url(live) -> str:  # noqa: F811
    return live.key["messaging"][0]["uri"]


def make_queue(http, name: str) -> str:  # noqa: F811
    assert http.put(f"{MANAGEMENT}/queues/{name.replace('/', '%2F')}").status_code in (200, 201)
    return f"{REST}/queues/{name.replace('/', '%2F')}/messages"


def test_amqp_publish_is_consumed_over_rest_with_bytes_and_type_intact(live, token, http):  # noqa: F811
    messages = make_queue(http, "a/b/c/amqp-in")
    body = b"\x00\x01binary\xff"

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            snd = await c.sender("queue:a/b/c/amqp-in")
            outcome = await snd.send(body, content_type="application/x-test", properties={"k": "v"})
            assert outcome.state == "accepted", outcome

    run(scenario)
    consumed = http.post(f"{messages}/consumption", headers={"x-qos": "0"})
    assert consumed.status_code == 200, consumed.text
    assert consumed.content == body
    assert consumed.headers["content-type"] == "application/x-test"


def test_pipelined_amqp_publishes_all_arrive(live, token, http):  # noqa: F811
    messages = make_queue(http, "a/b/c/amqp-many")

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            snd = await c.sender(None)
            outcomes = await asyncio.gather(*(snd.send_nowait(f"m{i}".encode(), to="queue:a/b/c/amqp-many",
                                                             content_type="text/plain")
                                              for i in range(50)))
            assert {o.state for o in outcomes} == {"accepted"}, outcomes[0]

    run(scenario)
    bodies = {http.post(f"{messages}/consumption", headers={"x-qos": "0"}).content for _ in range(50)}
    assert bodies == {f"m{i}".encode() for i in range(50)}
    assert http.post(f"{messages}/consumption", headers={"x-qos": "0"}).status_code == 204


def test_data_body_without_content_type_is_stored_as_octet_stream(live, token, http):  # noqa: F811
    messages = make_queue(http, "a/b/c/amqp-notype")

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            outcome = await (await c.sender("queue:a/b/c/amqp-notype")).send(b"raw")
            assert outcome.state == "accepted", outcome

    run(scenario)
    consumed = http.post(f"{messages}/consumption", headers={"x-qos": "0"})
    assert (consumed.content, consumed.headers["content-type"]) == (b"raw", "application/octet-stream")


def test_rest_publish_is_received_over_amqp_and_accept_removes_it(live, token, http):  # noqa: F811
    messages = make_queue(http, "a/b/c/amqp-out")
    published = http.post(messages, content=b'{"n": 1}', headers={"Content-Type": "application/json", "x-qos": "1"})
    assert published.status_code == 204, published.text

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            rcv = await c.receiver("queue:a/b/c/amqp-out", credit=5)
            msg = await rcv.receive(timeout=10)
            assert (msg.body, msg.content_type) == (b'{"n": 1}', "application/json")
            await msg.accept()
            with pytest.raises(TimeoutError):
                await rcv.receive(timeout=0.5)
            await rcv.close()

    run(scenario)
    assert http.post(f"{messages}/consumption", headers={"x-qos": "0"}).status_code == 204


def test_released_message_is_there_again_over_rest(live, token, http):  # noqa: F811
    messages = make_queue(http, "a/b/c/amqp-release")
    assert http.post(messages, content=b"back", headers={"Content-Type": "text/plain", "x-qos": "1"}).status_code == 204

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            rcv = await c.receiver("queue:a/b/c/amqp-release", credit=1)
            await (await rcv.receive(timeout=10)).release()
            await rcv.close()

    run(scenario)
    # A release is a settled disposition: the server does not answer it, so the client may be
    # here before the server has applied it. Ask until the message is back (or 10 s passed).
    deadline = time.monotonic() + 10
    while True:
        consumed = http.post(f"{messages}/consumption", headers={"x-qos": "0"})
        if consumed.status_code != 204 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (consumed.status_code, consumed.content) == (200, b"back")


def test_upgrade_without_a_valid_token_is_401(live):  # noqa: F811
    async def scenario() -> None:
        with pytest.raises(UpgradeRefused) as refused:
            await AmqpClient.connect(amqp_url(live), token="nope")
        assert refused.value.status == 401

    run(scenario)


def test_address_without_a_known_prefix_is_refused_not_found(live, token):  # noqa: F811
    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            with pytest.raises(LinkRefused) as refused:
                await c.sender("nowhere:x")
            assert refused.value.condition == "amqp:not-found"
            assert (await (await c.sender(None)).send(b"x", to="queue:a/b/c/amqp-nope")).state == "rejected"

    run(scenario)


def enc(name: str) -> str:
    return name.replace("/", "%2F")


def put_queue(http, name: str, **attributes: object) -> None:  # noqa: F811
    answer = http.put(f"{MANAGEMENT}/queues/{enc(name)}", json=attributes)
    assert answer.status_code in (200, 201), answer.text


def subscribe(http, queue: str, topic: str) -> None:  # noqa: F811
    answer = http.put(f"{MANAGEMENT}/queues/{enc(queue)}/subscriptions/{enc(topic)}")
    assert answer.status_code in (200, 201), answer.text


def rest_consume(http, queue: str) -> httpx.Response:  # noqa: F811
    return http.post(f"{REST}/queues/{enc(queue)}/messages/consumption", headers={"x-qos": "0"})


def test_topic_publish_reaches_a_subscribed_queue_with_its_properties(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/amqp-fan")
    subscribe(http, "a/b/c/amqp-fan", "a/b/c/orders/created")

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            snd = await c.sender("topic:a/b/c/orders/created")
            outcome = await snd.send(b'{"id": 7}', content_type="application/json", message_id="order-7",
                                     properties={"tenant": "t1", "attempt": 3})
            assert outcome.state == "accepted", outcome
            rcv = await c.receiver("queue:a/b/c/amqp-fan", credit=1)
            msg = await rcv.receive(timeout=10)
            assert msg.body == b'{"id": 7}'
            assert msg.to == "topic:a/b/c/orders/created"
            assert msg.message_id == "order-7"
            assert msg.properties == {"tenant": "t1", "attempt": 3}
            assert msg.creation_time and abs(msg.creation_time - time.time()) < 60
            await msg.accept()

    run(scenario)
    assert rest_consume(http, "a/b/c/amqp-fan").status_code == 204


def test_live_topic_receiver_gets_matching_rest_publishes_only(live, token, http):  # noqa: F811
    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            rcv = await c.receiver("topic:a/b/c/live/+", credit=10)
            for topic, body in (("a/b/c/other/x", b"no"), ("a/b/c/live/x", b"yes")):
                answer = await asyncio.to_thread(http.post, f"{REST}/topics/{enc(topic)}/messages", content=body,
                                                 headers={"Content-Type": "text/plain", "x-qos": "0"})
                assert answer.status_code == 204, answer.text
            msg = await rcv.receive(timeout=10)
            assert (msg.body, msg.to) == (b"yes", "topic:a/b/c/live/x")
            with pytest.raises(TimeoutError):
                await rcv.receive(timeout=0.5)

    run(scenario)


def test_receiver_never_gets_more_than_its_credit(live, token, http):  # noqa: F811
    messages = make_queue(http, "a/b/c/amqp-credit")
    for n in range(5):
        assert http.post(messages, content=f"c{n}".encode(), headers={"Content-Type": "text/plain",
                                                                         "x-qos": "1"}).status_code == 204

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            rcv = await c.receiver("queue:a/b/c/amqp-credit", credit=2)
            first = [await rcv.receive(timeout=10) for _ in range(2)]
            with pytest.raises(TimeoutError):
                await rcv.receive(timeout=1)
            rcv.flow(3)
            rest = [await rcv.receive(timeout=10) for _ in range(3)]
            assert [m.body for m in first + rest] == [f"c{n}".encode() for n in range(5)]  # queue order
            for msg in first + rest:
                await msg.accept()

    run(scenario)
    assert rest_consume(http, "a/b/c/amqp-credit").status_code == 204


def test_rejected_message_counts_and_ends_in_the_dead_message_queue(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/amqp-dmq")
    put_queue(http, "a/b/c/amqp-poison", maxRedeliveryCount=1, deadMsgQueue="a/b/c/amqp-dmq",
              redeliveryDelayInMs=100)
    messages = f"{REST}/queues/{enc('a/b/c/amqp-poison')}/messages"
    assert http.post(messages, content=b"bad", headers={"Content-Type": "text/plain", "x-qos": "1"}).status_code == 204

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            rcv = await c.receiver("queue:a/b/c/amqp-poison", credit=5)
            first = await rcv.receive(timeout=10)
            assert (first.body, first.delivery_count) == (b"bad", 0)
            await first.reject(condition="app:failed", description="cannot parse")
            second = await rcv.receive(timeout=15)  # after its redelivery delay
            assert (second.body, second.delivery_count) == (b"bad", 1)
            await second.modify(delivery_failed=True)
            with pytest.raises(TimeoutError):  # exhausted: never offered again
                await rcv.receive(timeout=3)

    run(scenario)
    deadline = time.monotonic() + 30
    while (dead := rest_consume(http, "a/b/c/amqp-dmq")).status_code == 204 and time.monotonic() < deadline:
        time.sleep(0.5)  # the claim or the sweep moves it
    assert (dead.status_code, dead.content) == (200, b"bad")


def test_dropped_connection_returns_unsettled_messages_counted(live, token, http):  # noqa: F811
    messages = make_queue(http, "a/b/c/amqp-drop")
    assert http.post(messages, content=b"held", headers={"Content-Type": "text/plain", "x-qos": "1"}).status_code == 204

    async def scenario() -> None:
        c = await AmqpClient.connect(amqp_url(live), token=token)
        rcv = await c.receiver("queue:a/b/c/amqp-drop", credit=1)
        assert (await rcv.receive(timeout=10)).body == b"held"
        await c.abort()  # the socket goes, nothing settled
        async with await AmqpClient.connect(amqp_url(live), token=token) as again:
            rcv = await again.receiver("queue:a/b/c/amqp-drop", credit=1)
            msg = await rcv.receive(timeout=15)
            assert (msg.body, msg.delivery_count) == (b"held", 1)
            await msg.accept()

    run(scenario)


def test_amqp_and_rest_consumers_of_one_queue_get_distinct_messages(live, token, http):  # noqa: F811
    messages = make_queue(http, "a/b/c/amqp-compete")
    for n in range(40):
        assert http.post(messages, content=f"{n}".encode(), headers={"Content-Type": "text/plain",
                                                                        "x-qos": "1"}).status_code == 204
    got_amqp: list[bytes] = []

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            rcv = await c.receiver("queue:a/b/c/amqp-compete", credit=1)
            rest_got = []
            while True:
                rest = await asyncio.to_thread(rest_consume, http, "a/b/c/amqp-compete")
                if rest.status_code == 200:
                    rest_got.append(rest.content)
                try:
                    msg = await rcv.receive(timeout=0.3)
                except TimeoutError:
                    if rest.status_code == 204:
                        break
                    continue
                got_amqp.append(msg.body)
                await msg.accept()
                rcv.flow(1)
            assert got_amqp and rest_got
            assert sorted(got_amqp + rest_got, key=int) == [f"{n}".encode() for n in range(40)]

    run(scenario)


def test_exclusive_queue_admits_one_receiver(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/amqp-excl", accessType="EXCLUSIVE")

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            await c.receiver("queue:a/b/c/amqp-excl", credit=1)
            with pytest.raises(LinkRefused) as refused:
                await c.receiver("queue:a/b/c/amqp-excl", credit=1)
            assert refused.value.condition == "amqp:resource-locked"

    run(scenario)


def test_oversize_body_is_rejected_and_oversize_message_detaches_the_link(live, token, http):  # noqa: F811
    make_queue(http, "a/b/c/amqp-big")

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            snd = await c.sender("queue:a/b/c/amqp-big")
            outcome = await snd.send(b"x" * (MAX_MESSAGE_SIZE + 1), content_type="text/plain")
            assert (outcome.state, outcome.condition) == ("rejected", "amqp:link:message-size-exceeded")
            # Past what the link advertises: refused while it arrives, and the link detached.
            outcome = await snd.send(b"x" * (MAX_MESSAGE_SIZE + 70 * 1024), content_type="text/plain")
            assert (outcome.state, outcome.condition) == ("rejected", "amqp:link:message-size-exceeded")
            with pytest.raises((LinkDetached, ConnectionClosed)):
                await snd.send(b"small", content_type="text/plain")

    run(scenario)
    assert rest_consume(http, "a/b/c/amqp-big").status_code == 204  # nothing stored


def test_text_frames_and_garbage_close_the_socket_and_the_server_serves_on(live, token):  # noqa: F811
    async def scenario() -> None:
        c = await AmqpClient.connect(amqp_url(live), token=token)
        await c.ws.send("not amqp")
        await asyncio.wait_for(c.ws.wait_closed(), 10)
        assert c.ws.close_code == (1003 if live.server == "uvicorn" else 4003)  # Daphne: 4000 + code
        for garbage in (b"\x00" * 64, b"AMQP\x00\x01\x00\x00" + os.urandom(512), os.urandom(4096)):
            c = await AmqpClient.connect(amqp_url(live), token=token)
            await c.send_raw(garbage)
            await asyncio.wait_for(c.ws.wait_closed(), 10)
        async with await AmqpClient.connect(amqp_url(live), token=token) as ok:
            await ok.sender("queue:a/b/c/amqp-in")

    run(scenario)


def test_wrong_subprotocol_and_a_foreign_origin_are_refused(live, token):  # noqa: F811
    async def scenario() -> None:
        with pytest.raises(UpgradeRefused) as refused:
            await AmqpClient.connect(amqp_url(live), token=token, subprotocols=("mqtt",))
        assert refused.value.status == 400
        with pytest.raises(UpgradeRefused) as refused:
            await AmqpClient.connect(amqp_url(live), token=token, origin="https://evil.example")
        assert refused.value.status == 403
        async with await AmqpClient.connect(amqp_url(live), token=token, origin=live.base):
            pass  # the deployment's own origin is welcome
        async with await AmqpClient.connect(amqp_url(live), token=token, sasl=None) as plain:
            await plain.sender("queue:a/b/c/amqp-in")  # the plain AMQP header, no SASL layer

    run(scenario)


def _second_key(live, name: str, descriptor: dict) -> str:  # noqa: F811
    manage(live.env, "create_service", "event-mesh", "default", name, "-c", json.dumps(descriptor))
    key = json.loads(manage(live.env, "create_service_key", name, "k"))
    oa2 = key["messaging"][1]["oa2"]
    answer = httpx.post(oa2["tokenendpoint"], data={"grant_type": "client_credentials"},
                        auth=(oa2["clientid"], oa2["clientsecret"]), timeout=10)
    return answer.json()["access_token"]


def test_another_instance_cannot_reach_this_instances_queue_and_the_messaging_switch_refuses(
        live, token, http):  # noqa: F811
    messages = make_queue(http, "a/b/c/amqp-private")
    assert http.post(messages, content=b"mine", headers={"Content-Type": "text/plain", "x-qos": "1"}).status_code == 204
    other = _second_key(live, f"other-{live.server}", {"namespace": "x/y/z"})
    off = _second_key(live, f"off-{live.server}", {"namespace": "o/f/f", "options": {"messaging": False}})

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=other) as c:
            with pytest.raises(LinkRefused):
                await c.receiver("queue:a/b/c/amqp-private", credit=1)
            assert (await (await c.sender("queue:a/b/c/amqp-private")).send(b"x")).state == "rejected"
        with pytest.raises(UpgradeRefused) as refused:
            await AmqpClient.connect(amqp_url(live), token=off)
        assert refused.value.status == 403

    run(scenario)
    consumed = rest_consume(http, "a/b/c/amqp-private")
    assert (consumed.content, rest_consume(http, "a/b/c/amqp-private").status_code) == (b"mine", 204)


@pytest.fixture(scope="module")
def redis_live(tmp_path_factory):
    """A server on PostgreSQL and Redis with a quota of 2 connections, fast housekeeping and
    tokens good for the shortest lifetime allowed (a minute)."""
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        pytest.skip("needs DATABASE_URL and REDIS_URL (CI sets both)")
    env = {"REDIS_URL": os.environ["REDIS_URL"], "MESH_MAX_CONNECTIONS_PER_INSTANCE": "2", "MESH_TOKEN_LIFETIME": "60",
           "MESH_WS_HOUSEKEEPING_SECONDS": "1", "MESH_TOKEN_CACHE_SECONDS": "1", "MESH_LIVE_POLL_MS": "60000"}
    with live_server(tmp_path_factory.mktemp("amqp-redis"), env) as server:
        yield server


def _token_of(key: dict) -> str:
    oa2 = key["messaging"][1]["oa2"]
    return httpx.post(oa2["tokenendpoint"], data={"grant_type": "client_credentials"},
                      auth=(oa2["clientid"], oa2["clientsecret"]), timeout=10).json()["access_token"]


def test_a_message_published_through_one_process_reaches_a_consumer_on_another(redis_live):
    bearer = _token_of(redis_live.key)
    headers = {"Authorization": f"Bearer {bearer}"}
    with httpx.Client(base_url=redis_live.base, headers=headers, timeout=10) as http:  # noqa: F811
        put_queue(http, "a/b/c/across")
        put_queue(http, "a/b/c/across-json")
        with another_process(redis_live) as other_base:
            async def scenario() -> None:
                url = other_base.replace("http://", "ws://") + "/protocols/amqp10ws"
                json_url = other_base.replace("http://", "ws://") + "/ws/v1/"
                async with await AmqpClient.connect(url, token=bearer) as c, \
                        await JsonClient.connect(json_url, token=bearer) as j:
                    rcv = await c.receiver("queue:a/b/c/across", credit=5)
                    live_rcv = await c.receiver("topic:a/b/c/news/*", credit=5)
                    await j.subscribe("q", queue="a/b/c/across-json", credit=5)
                    await j.subscribe("t", topic="a/b/c/news/+")
                    await asyncio.sleep(2)  # past MESH_LIVE_INTEREST_MS: the publisher knows of us
                    began = time.monotonic()
                    for path, body in ((f"{REST}/queues/{enc('a/b/c/across')}/messages", b"q"),
                                       (f"{REST}/queues/{enc('a/b/c/across-json')}/messages", b"j"),
                                       (f"{REST}/topics/{enc('a/b/c/news/today')}/messages", b"t")):
                        answer = await asyncio.to_thread(http.post, path, content=body,
                                                         headers={"Content-Type": "text/plain", "x-qos": "1"})
                        assert answer.status_code == 204
                    assert (await rcv.receive(timeout=10)).body == b"q"
                    assert (await j.expect("message", sub="q"))["body"] == "j"
                    # The poll runs once a minute here: only the wake-up through Redis is this fast.
                    assert time.monotonic() - began < 30
                    assert (await live_rcv.receive(timeout=10)).body == b"t"
                    assert (await j.expect("message", sub="t"))["body"] == "t"

            run(scenario)


def test_connection_quota_and_a_deleted_key_closes_its_sockets(redis_live):
    key = json.loads(manage(redis_live.env, "create_service_key", "live", "doomed"))
    bearer = _token_of(key)

    async def scenario() -> None:
        url = redis_live.base.replace("http://", "ws://") + "/protocols/amqp10ws"
        first = await AmqpClient.connect(url, token=bearer)
        second = await AmqpClient.connect(url, token=bearer)
        with pytest.raises(UpgradeRefused) as refused:
            await AmqpClient.connect(url, token=bearer)
        assert refused.value.status == 429
        await second.close()
        await asyncio.sleep(0.5)
        third = await AmqpClient.connect(url, token=bearer)  # a place is free again
        await asyncio.to_thread(manage, redis_live.env, "delete_service_key", "live", "doomed")
        for client in (first, third):
            await asyncio.wait_for(client.ws.wait_closed(), 20)
        assert first.remote_condition is not None and first.remote_condition[0] == "amqp:unauthorized-access"

    run(scenario)


def test_deleting_a_key_closes_its_json_sockets_and_their_messages_return(redis_live):
    key = json.loads(manage(redis_live.env, "create_service_key", "live", "doomed-json"))
    bearer = _token_of(key)
    headers = {"Authorization": f"Bearer {bearer}"}
    with httpx.Client(base_url=redis_live.base, headers=headers, timeout=10) as http:  # noqa: F811
        put_queue(http, "a/b/c/json-doomed")
        assert http.post(f"{REST}/queues/{enc('a/b/c/json-doomed')}/messages", content=b"held",
                         headers={"Content-Type": "text/plain", "x-qos": "1"}).status_code == 204

    async def scenario() -> None:
        url = redis_live.base.replace("http://", "ws://") + "/ws/v1/"
        async with await JsonClient.connect(url, token=bearer) as j:
            await j.subscribe("s", queue="a/b/c/json-doomed", credit=1)
            assert (await j.expect("message", sub="s"))["body"] == "held"  # and never acknowledged
            await asyncio.to_thread(manage, redis_live.env, "delete_service_key", "live", "doomed-json")
            error = await j.expect("error", timeout=20)
            assert error["status"] == 401
            await asyncio.wait_for(j.ws.wait_closed(), 10)
            assert j.ws.close_code == 1008

    run(scenario)
    bearer = _token_of(redis_live.key)
    with httpx.Client(base_url=redis_live.base, headers={"Authorization": f"Bearer {bearer}"}, timeout=10) as http:
        assert rest_consume(http, "a/b/c/json-doomed").content == b"held"  # back in the queue


def test_an_expired_token_closes_amqp_and_json_sockets_within_housekeeping(redis_live):
    """Tokens here live 60 s (the minimum): both sockets close soon after, not never."""
    bearer = _token_of(redis_live.key)

    async def scenario() -> None:
        base = redis_live.base.replace("http://", "ws://")
        amqp = await AmqpClient.connect(base + "/protocols/amqp10ws", token=bearer)
        async with await JsonClient.connect(base + "/ws/v1/", token=bearer) as j:
            error = await j.expect("error", timeout=90)  # a bound for the test, not a measurement
            assert (error["status"], error["code"]) == (401, "unauthorized")
            await asyncio.wait_for(j.ws.wait_closed(), 10)
            await asyncio.wait_for(amqp.ws.wait_closed(), 10)
        assert j.ws.close_code == 1008
        assert amqp.remote_condition is not None and amqp.remote_condition[0] == "amqp:unauthorized-access"

    run(scenario, timeout=120)


def test_a_consumer_that_never_settles_gets_no_more_than_the_flow_limit(live, token, http):  # noqa: F811
    put_queue(http, "a/b/c/amqp-flow", maxDeliveredUnackedMsgsPerFlow=3)
    messages = f"{REST}/queues/{enc('a/b/c/amqp-flow')}/messages"
    for n in range(5):
        assert http.post(messages, content=f"f{n}".encode(), headers={"Content-Type": "text/plain",
                                                                         "x-qos": "1"}).status_code == 204

    async def scenario() -> None:
        async with await AmqpClient.connect(amqp_url(live), token=token) as c:
            rcv = await c.receiver("queue:a/b/c/amqp-flow", credit=10)
            held = [await rcv.receive(timeout=10) for _ in range(3)]
            with pytest.raises(TimeoutError):  # credit left, but three unsettled
                await rcv.receive(timeout=1)
            await held[0].accept()
            assert (await rcv.receive(timeout=10)).body == b"f3"
            # Meanwhile the server serves everyone else: a second connection publishes.
            async with await AmqpClient.connect(amqp_url(live), token=token) as other:
                assert (await (await other.sender("queue:a/b/c/amqp-flow")).send(b"x")).state == "accepted"

    run(scenario)
