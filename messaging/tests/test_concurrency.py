"""Concurrent consumers, publishers and acknowledgements, each thread on its own database
connection: a qos-1 message is held by one consumer at a time, nothing is lost when a
consumer dies, and limits hold under contention."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from django.db import connection
from django.test import Client as DjangoClient
from django.utils import timezone

from meshsite.testing import MeshClient
from messaging.models import Message

Q1 = "a/b/c/q1"
WORKERS = 8
T = TypeVar("T")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def run_together(count: int, work: Callable[[int], T]) -> list[T]:
    """Run `work(0..count-1)` in threads released at once; re-raise the first failure."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = work(index)
        except BaseException as error:  # noqa: BLE001 - reported to the test thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    if errors:
        raise errors[0]
    return results


def own_http(client: MeshClient) -> MeshClient:
    """The same service key with its own HTTP client (test clients are not shared between threads)."""
    return dataclasses.replace(client, http=DjangoClient())


def drain(client: MeshClient, qos: str) -> list[tuple[bytes, str]]:
    """Consume until the queue answers 204; every answer must be 200 or 204."""
    received: list[tuple[bytes, str]] = []
    while True:
        response = client.consume(Q1, qos=qos)
        if response.status_code == 204:
            return received
        assert response.status_code == 200, (response.status_code, response.content)
        received.append((response.content, response["x-message-id"]))


@pytest.fixture
def loaded(mesh) -> Callable[[int], MeshClient]:
    def load(count: int) -> MeshClient:
        client = mesh()
        assert client.put_queue(Q1).status_code == 201
        for n in range(count):
            assert client.publish("queues", Q1, f"m{n}".encode()).status_code == 204
        return client

    return load


def test_concurrent_qos1_consumers_never_hold_the_same_message(loaded):
    client = loaded(40)
    batches = run_together(WORKERS, lambda _: drain(own_http(client), "1"))
    received = [item for batch in batches for item in batch]
    payloads = Counter(payload for payload, _ in received)
    assert payloads == Counter(f"m{n}".encode() for n in range(40)), "a message was lost or delivered twice"
    assert len({message_id for _, message_id in received}) == 40
    # All were held at once (nobody acknowledged yet): each lock belongs to one delivery.
    assert Message.objects.filter(locked_until__gt=timezone.now(), delivery_count=1).count() == 40
    for _, message_id in received:
        assert client.ack(Q1, message_id).status_code == 200
    assert not Message.objects.exists()


def test_concurrent_qos0_consumers_each_get_a_message_once(loaded):
    client = loaded(40)
    batches = run_together(WORKERS, lambda _: drain(own_http(client), "0"))
    payloads = Counter(payload for batch in batches for payload, _ in batch)
    assert payloads == Counter(f"m{n}".encode() for n in range(40))
    assert not Message.objects.exists()


def test_consume_and_ack_interleaved_deliver_everything_once(loaded):
    client = loaded(40)

    def consume_and_ack(_: int) -> list[bytes]:
        worker = own_http(client)
        got = []
        for payload, message_id in iter(lambda: _next(worker), None):
            assert worker.ack(Q1, message_id).status_code == 200
            got.append(payload)
        return got

    batches = run_together(WORKERS, consume_and_ack)
    payloads = Counter(payload for batch in batches for payload in batch)
    assert payloads == Counter(f"m{n}".encode() for n in range(40))
    assert not Message.objects.exists()


def _next(client: MeshClient) -> tuple[bytes, str] | None:
    response = client.consume(Q1, qos="1")
    if response.status_code == 204:
        return None
    assert response.status_code == 200, (response.status_code, response.content)
    return response.content, response["x-message-id"]


def test_message_of_a_consumer_that_died_returns_after_lock_expiry(loaded):
    client = loaded(1)

    def die_holding_the_message(_: int) -> str:
        response = own_http(client).consume(Q1, qos="1")
        assert response.status_code == 200
        return response["x-message-id"]  # and never acknowledge it

    [abandoned_id] = run_together(1, die_holding_the_message)
    assert client.consume(Q1).status_code == 204, "a held message was handed out twice"
    past = timezone.now() - timedelta(seconds=1)  # the lock and the redelivery delay ran out
    Message.objects.update(locked_until=past, available_at=past)
    again = client.consume(Q1)
    assert again.status_code == 200 and again.content == b"m0"
    assert again["x-delivery-count"] == "2"
    assert Message.objects.get().delivery_count == 2
    assert client.ack(Q1, abandoned_id).status_code == 404
    assert client.ack(Q1, again["x-message-id"]).status_code == 200
    assert not Message.objects.exists()


def test_concurrent_acks_of_one_delivery_succeed_once(loaded):
    client = loaded(1)
    message_id = client.consume(Q1)["x-message-id"]
    statuses = run_together(WORKERS, lambda _: own_http(client).ack(Q1, message_id).status_code)
    assert sorted(statuses) == [200] + [404] * (WORKERS - 1)
    assert not Message.objects.exists()


def test_concurrent_publishers_cannot_overfill_a_limited_queue(mesh):
    client = mesh()
    assert client.put_queue(Q1, {"maxQueueMessageCount": 10}).status_code == 201

    def publish_five(index: int) -> list[int]:
        worker = own_http(client)
        return [worker.publish("queues", Q1, f"w{index}-{n}".encode()).status_code for n in range(5)]

    statuses = Counter(code for batch in run_together(WORKERS, publish_five) for code in batch)
    assert statuses == Counter({204: 10, 429: WORKERS * 5 - 10})
    assert Message.objects.count() == 10


def test_concurrent_topic_publishers_store_every_accepted_message(mesh):
    client = mesh()
    for queue in (Q1, "a/b/c/q2"):
        client.put_queue(queue)
        client.subscribe(queue, "a/b/c/+")

    def publish_five(index: int) -> list[int]:
        worker = own_http(client)
        return [worker.publish("topics", f"a/b/c/t{index}", f"{index}-{n}".encode()).status_code for n in range(5)]

    statuses = [code for batch in run_together(WORKERS, publish_five) for code in batch]
    assert statuses == [204] * WORKERS * 5
    for queue in (Q1, "a/b/c/q2"):
        assert Message.objects.filter(queue__name=queue).count() == WORKERS * 5
