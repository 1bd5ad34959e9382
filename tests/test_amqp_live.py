"""AMQP 1.0 over WebSocket against a live uvicorn and Daphne, with a real proton client
(meshsite.amqpclient): what goes in over AMQP comes out over REST intact, and the other way
round; refusals arrive as HTTP statuses before the upgrade and as AMQP conditions after it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from meshsite.amqpclient import AmqpClient, LinkRefused, UpgradeRefused
from tests.test_live_server import MANAGEMENT, REST, http, live, token  # noqa: F401  (fixtures)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


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


@pytest.mark.xfail(strict=True, reason="server bug: proton's Message.content_type reads an absent content "
                   "type as symbol('None'), so messaging/amqp/codec.py stores/refuses 'None' instead of "
                   "defaulting to application/octet-stream")
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
    consumed = http.post(f"{messages}/consumption", headers={"x-qos": "0"})
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
