"""The token endpoint's 429s are held (meshsite/platform/tarpit.py), in one event loop with the
ASGI guard in front of an app that refuses: at most MESH_TOKEN_REFUSAL_HOLD_MAX at once, the
rest answered at once, and a client that leaves while held frees its place."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from meshsite.platform import tarpit
from meshsite.platform.ratelimit import TokenFloodGuard

REFUSAL = [(b"content-type", b"application/json"), (b"retry-after", b"60"), (b"cache-control", b"no-store")]
BODY = json.dumps({"error": "invalid_client", "error_description": "Too many"}).encode()


async def refusing_app(scope: Any, receive: Any, send: Any) -> None:
    # What the fast path and the view do: read the body, answer 429.
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 429, "headers": REFUSAL})
    await send({"type": "http.response.body", "body": BODY})


class Request:
    """One request through TokenFloodGuard: a receive that gives the body, then waits for the
    client to leave, as a server's does."""

    def __init__(self, path: str = "/oauth/token", status: int = 429) -> None:
        self.sent: list[dict] = []
        self.left = asyncio.Event()
        self.body_given = False
        self.path = path

    async def receive(self) -> dict:
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": b"grant_type=client_credentials", "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    def start(self, app: Any = refusing_app) -> asyncio.Task:
        scope = {"type": "http", "path": self.path, "client": ("192.0.2.7", 4000), "headers": []}
        return asyncio.ensure_future(TokenFloodGuard(app)(scope, self.receive, self.send))


async def settle() -> None:
    for _ in range(20):  # let every task run as far as it can; no clock involved
        await asyncio.sleep(0)


@pytest.fixture
def tarpit_settings(settings: Any) -> Any:
    settings.MESH_TOKEN_REFUSAL_DELAY_MS = 60_000
    settings.MESH_TOKEN_REFUSAL_HOLD_MAX = 2
    return settings


def test_refusals_are_held_up_to_the_cap_and_the_rest_answered_at_once(tarpit_settings):
    async def run() -> None:
        requests = [Request() for _ in range(3)]
        tasks = [request.start() for request in requests]
        await settle()
        assert tarpit.held() == 2
        held, answered = [r for r in requests if not r.sent], [r for r in requests if r.sent]
        assert len(held) == 2 and len(answered) == 1
        start = answered[0].sent[0]
        assert start["status"] == 429
        assert start["headers"] == [*REFUSAL, (b"connection", b"close")]  # the same answer, and close
        assert answered[0].sent[1]["body"] == BODY
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert tarpit.held() == 0

    asyncio.run(run())


def test_a_held_refusal_is_sent_when_its_delay_ends(tarpit_settings):
    tarpit_settings.MESH_TOKEN_REFUSAL_DELAY_MS = 1

    async def run() -> None:
        request = Request()
        await request.start()
        assert [m["type"] for m in request.sent] == ["http.response.start", "http.response.body"]
        assert (b"connection", b"close") in request.sent[0]["headers"]
        assert tarpit.held() == 0

    asyncio.run(run())


def test_a_client_leaving_while_held_frees_its_place_and_nothing_is_sent_or_logged(tarpit_settings, caplog):
    caplog.set_level(logging.DEBUG)

    async def run() -> None:
        first, second = Request(), Request()
        tasks = [first.start(), second.start()]
        await settle()
        assert tarpit.held() == 2
        first.left.set()
        await settle()
        assert tasks[0].done() and tasks[0].exception() is None
        assert first.sent == [] and tarpit.held() == 1
        third = Request()
        tasks.append(third.start())
        await settle()
        assert third.sent == [] and tarpit.held() == 2  # held in the place the first one left
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_other_answers_and_other_paths_are_not_held(tarpit_settings):
    async def ok_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def run() -> None:
        other_status, other_path = Request(), Request(path="/messagingrest/v1/queues")
        await other_status.start(ok_app)
        await other_path.start()
        assert other_status.sent[0] == {"type": "http.response.start", "status": 401, "headers": []}
        assert other_path.sent[0]["headers"] == REFUSAL

    asyncio.run(run())


def test_a_delay_of_zero_answers_at_once_as_before(tarpit_settings):
    tarpit_settings.MESH_TOKEN_REFUSAL_DELAY_MS = 0

    async def run() -> None:
        request = Request()
        await request.start()
        assert request.sent[0]["headers"] == REFUSAL

    asyncio.run(run())
