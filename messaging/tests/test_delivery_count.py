"""`x-delivery-count` counts this delivery, whatever the qos: a first delivery says 1, the
next after a lock ran out says 2 (qos 0 used to say one less than qos 1)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import Message

Q1 = "a/b/c/q1"


@pytest.fixture
def client(mesh):
    client = mesh()
    assert client.put_queue(Q1).status_code == 201
    return client


@pytest.mark.parametrize("qos", ["0", "1"])
def test_a_first_delivery_counts_one_with_either_qos(client, qos):
    assert client.publish("queues", Q1, b"m", qos=qos).status_code == 204
    consumed = client.consume(Q1, qos=qos)
    assert consumed.status_code == 200 and consumed["x-delivery-count"] == "1"


def test_a_qos0_redelivery_after_an_expired_lock_counts_two(client):
    assert client.publish("queues", Q1, b"m").status_code == 204
    assert client.consume(Q1, qos="1")["x-delivery-count"] == "1"
    past = timezone.now() - timedelta(seconds=1)  # the lock and the redelivery delay ran out
    Message.objects.update(locked_until=past, available_at=past)
    again = client.consume(Q1, qos="0")
    assert again.status_code == 200 and again["x-delivery-count"] == "2"
    assert not Message.objects.exists()  # qos 0 took it for good


def test_another_tenant_consuming_does_not_count_a_delivery_of_my_message(client, mesh):
    assert client.publish("queues", Q1, b"m").status_code == 204
    other = mesh("other", "x/y/z")
    assert other.consume(Q1, qos="0").status_code in (403, 404)
    assert client.consume(Q1, qos="0")["x-delivery-count"] == "1"
