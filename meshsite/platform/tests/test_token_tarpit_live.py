"""Held 429s over real HTTP, under uvicorn and Daphne: a refused request is answered no
earlier than its delay and its connection is closed by the server, refusals past the cap are
answered at once, a client that leaves frees its place, and a flood on as many connections
as may be held gets a bounded number of answers while a publisher keeps publishing.

No latency is asserted: only lower bounds that the hold guarantees, orders and counts."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.test_live_server import MANAGEMENT, REST, SERVERS, LiveServer, live_server

DELAY = 3.0  # seconds, MESH_TOKEN_REFUSAL_DELAY_MS below
CAP = 4  # MESH_TOKEN_REFUSAL_HOLD_MAX


@pytest.fixture(scope="module", params=SERVERS)
def refused(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A server whose one address (127.0.0.1) is already refused; and a token got before."""
    limits = {"MESH_TOKEN_FAILURES_PER_ADDRESS": "1", "MESH_TOKEN_FAILURES_PER_CLIENT": "1",
              "MESH_TOKEN_FAILURE_WINDOW": "3600", "MESH_TOKEN_REFUSAL_DELAY_MS": str(int(DELAY * 1000)),
              "MESH_TOKEN_REFUSAL_HOLD_MAX": str(CAP)}
    with live_server(Path(tmp_path_factory.mktemp(f"tarpit-{request.param}")), limits, server=request.param) as live:
        token = httpx.post(f"{live.base}/oauth/token", data={"grant_type": "client_credentials"},
                           auth=(live.oa2["clientid"], live.oa2["clientsecret"]), timeout=10).json()["access_token"]
        queue = httpx.put(f"{live.base}{MANAGEMENT}/queues/a%2Fb%2Fc%2Fheld", timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
        assert queue.status_code == 201, queue.text
        wrong = httpx.post(f"{live.base}/oauth/token", data={"grant_type": "client_credentials"},
                           auth=(live.oa2["clientid"], "wrong"), timeout=10)
        assert wrong.status_code == 401  # the address's one failure: from now on it is refused
        yield live, token


def wrong_secret(live: LiveServer) -> bytes:
    basic = base64.b64encode(f"{live.oa2['clientid']}:wrong".encode()).decode()
    body = b"grant_type=client_credentials"
    return (f"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {basic}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class Answer:
    status: int
    headers: dict[str, str]
    seconds: float  # from sending to the end of the answer, on this side
    closed_by_server: bool

    @property
    def held_for(self) -> float:
        """What the server holds this answer for: the delay, at most its Retry-After."""
        return min(DELAY, int(self.headers["retry-after"]))


async def ask(live: LiveServer, *, raw: bytes | None = None, check_close: bool = True) -> Answer:
    """One request on a connection of its own, which this client never closes first: it
    ignores `Connection: close`, as an attacker may, and sees whether the server closes."""
    port = urlsplit(live.base).port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = Answer()
    try:
        started = time.monotonic()
        writer.write(raw or wrong_secret(live))
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        answer.status = int(head[0].split(" ")[1])
        answer.headers = {name.lower(): value.strip()
                          for name, _, value in (line.partition(":") for line in head[1:] if line)}
        await reader.readexactly(int(answer.headers["content-length"]))
        answer.seconds = time.monotonic() - started
        if check_close:
            try:
                answer.closed_by_server = await asyncio.wait_for(reader.read(1), 15) == b""
            except TimeoutError:
                answer.closed_by_server = False
    finally:
        writer.close()
    return answer


def test_a_refused_request_is_answered_429_after_its_delay_and_the_server_closes(refused):
    live, _ = refused
    answer = asyncio.run(ask(live))
    assert answer.status == 429
    assert answer.headers["connection"] == "close"
    assert answer.headers["cache-control"] == "no-store" and 1 <= int(answer.headers["retry-after"]) <= 3600
    assert answer.seconds >= answer.held_for
    assert answer.closed_by_server


def test_refusals_past_the_cap_are_answered_at_once(refused):
    live, _ = refused

    async def run() -> tuple[list[Answer], Answer, list[str]]:
        done: list[str] = []

        async def one(name: str) -> Answer:
            answer = await ask(live, check_close=False)
            done.append(name)
            return answer

        held = [asyncio.ensure_future(one(f"held {n}")) for n in range(CAP)]
        await asyncio.sleep(1)  # the CAP requests are in the server's hold
        extra = await one("extra")
        return list(await asyncio.gather(*held)), extra, done

    held, extra, done = asyncio.run(run())
    assert done[0] == "extra"  # answered while the CAP others were still held
    assert extra.status == 429 and extra.headers["connection"] == "close"
    assert all(answer.status == 429 and answer.seconds >= answer.held_for for answer in held)


def test_a_client_leaving_while_held_frees_its_place_without_an_error(refused):
    live, _ = refused

    async def run() -> Answer:
        port = urlsplit(live.base).port
        leaving = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CAP)]
        for _, writer in leaving:
            writer.write(wrong_secret(live))
            await writer.drain()
        await asyncio.sleep(1)  # held
        for _, writer in leaving:
            writer.close()
        await asyncio.sleep(1)  # the server has seen them leave
        return await ask(live)

    answer = asyncio.run(run())
    # Held, not answered at once: the CAP places were freed when their clients left.
    assert answer.status == 429 and answer.seconds >= answer.held_for
    log = live.log.read_text()
    assert "Traceback" not in log and "Exception" not in log, log


def test_a_flood_gets_a_bounded_number_of_answers_and_publishing_goes_on(refused):
    live, token = refused
    window = 2 * DELAY

    async def run() -> tuple[int, int, list[int]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        answered = 0

        async def flooder() -> None:
            nonlocal answered
            while loop.time() < deadline:  # closed-loop: ask again as soon as answered
                answer = await ask(live, check_close=False)
                assert answer.status == 429
                answered += 1

        async def publisher() -> list[int]:
            statuses = []
            async with httpx.AsyncClient(base_url=live.base, timeout=30,
                                         headers={"Authorization": f"Bearer {token}", "x-qos": "1",
                                                  "Content-Type": "application/octet-stream"}) as client:
                while loop.time() < deadline:
                    statuses.append((await client.post(f"{REST}/queues/a%2Fb%2Fc%2Fheld/messages",
                                                       content=b"x")).status_code)
            return statuses

        publishing = asyncio.ensure_future(publisher())
        await asyncio.gather(*(flooder() for _ in range(CAP)))
        return answered, CAP, await publishing

    answered, connections, published = asyncio.run(run())
    # Each connection gets at most one refusal per delay (plus the one under way at the end).
    assert connections <= answered <= connections * (window / DELAY + 1)
    assert published and set(published) == {204}
