"""Hostile input over real HTTP against a live uvicorn and Daphne (the lean API handler, not the test
client's stack): deeply nested JSON, a Content-Type that is no media type, a grant that is not
served, and the qos-0 delivery count, each answered in the API's own shape, never a 500."""

from __future__ import annotations

import httpx

from tests.test_live_server import MANAGEMENT, REST, http, live, token  # noqa: F401  (fixtures)

QUEUE = "a%2Fb%2Fc%2Finput"
DEEP = "[" * 1000 + "]" * 1000


def test_deep_json_is_400_over_http_and_creates_no_queue(http):  # noqa: F811
    response = http.put(f"{MANAGEMENT}/queues/{QUEUE}", content=DEEP, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "deeper than 32" in response.json()["message"]
    assert http.get(f"{MANAGEMENT}/queues/{QUEUE}").status_code == 404


def test_content_type_without_a_media_type_is_400_over_http(http):  # noqa: F811
    assert http.put(f"{MANAGEMENT}/queues/{QUEUE}").status_code in (200, 201)
    messages = f"{REST}/queues/{QUEUE}/messages"
    refused = http.post(messages, content=b"x", headers={"Content-Type": ";;;", "x-qos": "1"})
    assert refused.status_code == 400 and "media type" in refused.json()["message"]
    assert http.post(f"{messages}/consumption", headers={"x-qos": "0"}).status_code == 204  # nothing stored
    published = http.post(messages, content=b"x", headers={"Content-Type": "text/plain; charset=utf-8", "x-qos": "0"})
    assert published.status_code == 204, published.text
    consumed = http.post(f"{messages}/consumption", headers={"x-qos": "0"})
    assert consumed.headers["content-type"] == "text/plain; charset=utf-8"
    assert consumed.headers["x-delivery-count"] == "1"


def test_password_grant_is_unsupported_grant_type_over_http(live):  # noqa: F811
    oa2 = live.oa2
    auth = (oa2["clientid"], oa2["clientsecret"])
    post = httpx.post(oa2["tokenendpoint"], data={"grant_type": "password", "username": "u", "password": "p"},
                      auth=auth, timeout=10)
    get = httpx.get(oa2["tokenendpoint"], params={"grant_type": "password", "response_type": "token"},
                    auth=auth, timeout=10)
    for response in (post, get):
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "unsupported_grant_type"
