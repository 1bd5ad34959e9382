"""Competing consumers on one queue, for real: an AMQP receiver, a JSON WebSocket
subscription, a REST consumer and a webhook (a Celery worker pushing to an HTTP receiver on
loopback) drain the same queue of a live server (uvicorn, then Daphne) at once. Each message reaches exactly one
of them: none twice, none lost."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshsite.amqpclient import AmqpClient
from meshsite.wsclient import JsonClient
from tests.test_amqp_live import enc, put_queue, run
from tests.test_live_server import REST, SERVERS, LiveServer, live_server, stop
from tests.test_webhook_worker import Receiver

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "a/b/c/compete"
COUNT = 60


@pytest.fixture(scope="module", params=SERVERS)
def hooked(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Receiver]]:
    """A server and a Celery worker on one database and broker (the file-system broker of
    their shared var dir), and a receiver that answers every push after 100 ms."""
    import threading

    receiver = Receiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    env = {"MESH_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "MESH_WEBHOOK_RETRY_SCHEDULE": "0.2",
           "MESH_SWEEP_INTERVAL": "1"}
    directory = tmp_path_factory.mktemp(f"compete-{request.param}")
    with live_server(directory, env, server=request.param) as server:
        celery = str(Path(sys.executable).parent / "celery")
        with (directory / "worker.log").open("wb") as out:
            worker = subprocess.Popen([celery, "-A", "meshsite", "worker", "--pool=solo", "--loglevel=WARNING"],
                                      cwd=ROOT, env=server.env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            yield server, receiver
        finally:
            stop(worker)
            receiver.released.set()
            receiver.shutdown()
            receiver.server_close()


def _token(server: LiveServer) -> str:
    oa2 = server.key["messaging"][1]["oa2"]
    return httpx.post(oa2["tokenendpoint"], data={"grant_type": "client_credentials"},
                      auth=(oa2["clientid"], oa2["clientsecret"]), timeout=10).json()["access_token"]


def test_amqp_json_rest_and_webhook_consumers_of_one_queue_get_distinct_messages(hooked):
    server, receiver = hooked
    bearer = _token(server)
    http = httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {bearer}"}, timeout=10)
    put_queue(http, QUEUE)
    hook = {"name": "compete-hook", "address": f"queue:{QUEUE}", "qos": 1,
            "pushConfig": {"type": "webhook", "endpoint": receiver.url, "exemptHandshake": True}}
    assert http.post(f"{REST}/subscriptions", json=hook).status_code == 201
    publish = f"{REST}/queues/{enc(QUEUE)}/messages"
    headers = {"Content-Type": "text/plain", "x-qos": "1"}
    assert http.post(publish, content=b"probe", headers=headers).status_code == 204
    assert receiver.wait_for(1, 90), "the worker never pushed the probe"  # the worker is up
    receiver.replies = [(200, 0.1)] * (COUNT * 2)  # a slow endpoint: the others get their share
    for n in range(COUNT):
        assert http.post(publish, content=f"m{n}".encode(), headers=headers).status_code == 204

    got: dict[str, list[bytes]] = {"amqp": [], "json": [], "rest": []}

    def total() -> int:
        return sum(map(len, got.values())) + len(receiver.pushes) - 1  # less the probe

    async def amqp() -> None:
        url = server.base.replace("http://", "ws://") + "/protocols/amqp10ws"
        async with await AmqpClient.connect(url, token=bearer) as client:
            receiving = await client.receiver(f"queue:{QUEUE}", credit=1)
            while total() < COUNT:
                try:
                    message = await receiving.receive(timeout=0.5)
                except TimeoutError:
                    continue
                got["amqp"].append(message.body)
                await asyncio.sleep(0.05)
                await message.accept()
                receiving.flow(1)

    async def json_ws() -> None:
        url = server.base.replace("http://", "ws://") + "/ws/v1/"
        async with await JsonClient.connect(url, token=bearer) as client:
            await client.subscribe("s", queue=QUEUE, credit=1)
            while total() < COUNT:
                try:
                    message = await client.expect("message", timeout=0.5, sub="s")
                except TimeoutError:
                    continue
                got["json"].append(message["body"].encode())
                await asyncio.sleep(0.05)
                await client.send(op="ack", sub="s", tag=message["tag"])
                await client.send(op="credit", sub="s", credit=1)

    async def rest() -> None:
        while total() < COUNT:
            answer = await asyncio.to_thread(http.post, f"{publish}/consumption", headers={"x-qos": "1"})
            if answer.status_code == 200:
                got["rest"].append(answer.content)
                await asyncio.sleep(0.05)
                ack = await asyncio.to_thread(
                    http.post, f"{publish}/{enc(answer.headers['x-message-id'])}/acknowledgement")
                assert ack.status_code == 200, ack.text
            else:
                await asyncio.sleep(0.1)

    async def scenario() -> None:
        await asyncio.gather(amqp(), json_ws(), rest())

    run(scenario, timeout=120)
    time.sleep(2)  # a duplicate would arrive now, if any were coming
    pushed = [push.body for push in receiver.pushes[1:]]
    everything = got["amqp"] + got["json"] + got["rest"] + pushed
    assert sorted(everything) == sorted(f"m{n}".encode() for n in range(COUNT)), json.dumps(
        {name: len(values) for name, values in {**got, "webhook": pushed}.items()})
    assert all(got.values()) and pushed, {name: len(values) for name, values in got.items()}
    http.close()
