from meshsite.testing import enc


def test_publish_consume_ack_round_trip(mesh):
    client = mesh()
    assert client.put_queue("a/b/c/q1").status_code == 201
    assert client.publish("queues", "a/b/c/q1", b"payload").status_code == 204
    response = client.consume("a/b/c/q1")
    assert response.status_code == 200
    assert response.content == b"payload"
    assert client.ack("a/b/c/q1", response["x-message-id"]).status_code == 200
    assert client.consume("a/b/c/q1").status_code == 204
    assert enc("a/b") == "a%2Fb"
