"""The edge guards on their own, without a server: the ASGI header check must stand alone
(servers such as uvicorn with httptools pass any header through), and the API guard reads
Django's security settings."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from meshsite.apiguard import api_guard_middleware
from meshsite.headerlimit import MAX_HEAD_BYTES, MAX_HEADER_FIELDS, HeaderLimitMiddleware


def call_asgi(headers: list[tuple[bytes, bytes]]) -> tuple[list[dict[str, Any]], bool]:
    reached = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/messagingrest/v1/queues/q/messages",
             "raw_path": b"/messagingrest/v1/queues/q/messages", "query_string": b"", "http_version": "1.1",
             "headers": headers}
    asyncio.run(HeaderLimitMiddleware(app)(scope, receive, send))
    return sent, reached


def test_asgi_guard_refuses_too_many_headers_with_431_json():
    sent, reached = call_asgi([(b"x-h%d" % n, b"v") for n in range(MAX_HEADER_FIELDS + 1)])
    assert not reached
    assert sent[0]["status"] == 431
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert "header" in json.loads(sent[1]["body"])["message"]


def test_asgi_guard_refuses_headers_over_the_total_size():
    sent, reached = call_asgi([(b"x-big", b"v" * MAX_HEAD_BYTES)])
    assert not reached
    assert sent[0]["status"] == 431


def test_asgi_guard_passes_headers_within_the_limits():
    sent, reached = call_asgi([(b"x-h%d" % n, b"v" * 100) for n in range(MAX_HEADER_FIELDS - 1)])
    assert reached
    assert sent == []


@override_settings(SECURE_HSTS_SECONDS=600, SECURE_HSTS_INCLUDE_SUBDOMAINS=True, SECURE_HSTS_PRELOAD=True,
                   SECURE_REFERRER_POLICY=["no-referrer", "strict-origin"], X_FRAME_OPTIONS="SAMEORIGIN")
def test_api_guard_follows_the_security_settings():
    middleware = api_guard_middleware(lambda request: HttpResponse(b"{}", content_type="application/json"))
    response = middleware(RequestFactory().get("/messagingrest/v1/x", secure=True))
    assert response["Strict-Transport-Security"] == "max-age=600; includeSubDomains; preload"
    assert response["Referrer-Policy"] == "no-referrer,strict-origin"
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert response["Content-Type"] == "application/json"


def test_api_guard_keeps_the_type_of_an_empty_message():
    middleware = api_guard_middleware(lambda request: HttpResponse(b"", content_type="text/plain"))
    assert middleware(RequestFactory().get("/messagingrest/v1/x"))["Content-Type"] == "text/plain"
