"""The test AMQP client (meshsite.amqpclient) against a tiny broker on a real socket.

The fixture is proton's engine in server mode behind a websockets server: it accepts links,
keeps what a sender link delivers in per-address queues, serves receiver links as their credit
allows and records the client's dispositions. It is only as smart as these tests need.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, cast

import pytest
from proton import Collector, Condition, Connection, Delivery, Disposition, Event, Link, Message, Terminus, Transport
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from meshsite.amqpclient import AmqpClient, ConnectionClosed, LinkRefused, UpgradeRefused

_STATE: dict[int, str] = {Disposition.ACCEPTED: "accepted", Disposition.REJECTED: "rejected",
          Disposition.RELEASED: "released", Disposition.MODIFIED: "modified"}


@dataclass
class FakeBroker:
    slice: int | None = None  # send output in WebSocket messages of this many bytes
    idle_timeout: float | None = None
    queues: dict[str, deque[bytes]] = field(default_factory=dict)
    received: list[Message] = field(default_factory=list)
    dispositions: list[tuple[str, str | None, bool]] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)  # link name → messages sent on it
    headers: list[Any] = field(default_factory=list)
    first_bytes: list[bytes] = field(default_factory=list)
    subprotocols: list[str | None] = field(default_factory=list)
    consumers: list[Link] = field(default_factory=list)
    inflight: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def check_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.headers.append(request.headers)
        if request.headers.get("Authorization") == "Bearer bad":
            return ws.respond(HTTPStatus.UNAUTHORIZED, "bad token\n")
        return None

    def handle(self, collector: Collector) -> None:
        while (event := collector.peek()) is not None:
            self.on_event(event)
            collector.pop()
        self.serve()

    def on_event(self, event: Any) -> None:  # Any: proton types every event field as Optional
        kind = event.type
        if kind == Event.CONNECTION_REMOTE_OPEN:
            event.connection.open()
        elif kind == Event.CONNECTION_REMOTE_CLOSE:
            event.connection.close()
        elif kind == Event.SESSION_REMOTE_OPEN:
            event.session.open()
        elif kind == Event.LINK_REMOTE_OPEN:
            self.attach(event.link)
        elif kind == Event.LINK_REMOTE_CLOSE:
            event.link.close()
            self.consumers = [c for c in self.consumers if c.name != event.link.name]
        elif kind == Event.DELIVERY and event.link.is_receiver:
            self.incoming(event.delivery)
        elif kind == Event.DELIVERY:
            self.settled_by_client(event.delivery)

    def attach(self, link: Link) -> None:
        address = (link.remote_target if link.is_receiver else link.remote_source).address or ""
        if address.startswith("queue:missing"):
            # A refusal: attach with a null terminus, then detach with the reason.
            (link.target if link.is_receiver else link.source).type = Terminus.UNSPECIFIED
            link.condition = Condition("amqp:not-found", f"no such queue {address}")
            link.open()
            link.close()
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.open()
        if link.is_receiver:
            link.flow(100)
        else:
            self.consumers.append(link)

    def incoming(self, dlv: Delivery) -> None:
        if dlv.partial:
            return
        link = dlv.link
        data = link.recv(dlv.pending) or b""
        link.advance()
        msg = Message()
        msg.decode(data)
        self.received.append(msg)
        address = link.remote_target.address or msg.address or ""
        if address == "queue:kill":
            link.connection.condition = Condition("amqp:connection:forced", "told to")
            link.connection.close()
            return
        if address.startswith("queue:full"):
            dlv.local.condition = Condition("amqp:resource-limit-exceeded", "queue full")
            dlv.update(Disposition.REJECTED)
        else:
            self.queues.setdefault(address, deque()).append(data)
            dlv.update(Disposition.ACCEPTED)
        dlv.settle()
        if link.credit < 50:
            link.flow(100 - link.credit)

    def settled_by_client(self, dlv: Delivery) -> None:
        cond = dlv.remote.condition
        state = _STATE.get(int(dlv.remote_state), "none")
        self.dispositions.append((state, cond.name if cond else None, bool(dlv.remote.failed)))
        address, data = self.inflight.pop(dlv.tag)
        if state in ("released", "modified"):
            self.queues[address].appendleft(data)
        dlv.settle()

    def serve(self) -> None:
        for link in self.consumers:
            address = link.remote_source.address or ""
            queue = self.queues.get(address)
            while queue and link.credit > 0:
                tag = f"{link.name}-{self.served.get(link.name, 0)}"
                self.served[link.name] = self.served.get(link.name, 0) + 1
                data = queue.popleft()
                dlv = link.delivery(tag)
                link.send(data)
                link.advance()
                if link.snd_settle_mode == Link.SND_SETTLED:
                    dlv.settle()
                else:
                    self.inflight[tag] = (address, data)


def body_of(msg: Message) -> bytes:
    return bytes(cast(memoryview, msg.body))


def push_all(transport: Transport, data: bytes) -> None:
    while data and (cap := transport.capacity()) > 0:
        transport.push(data[:cap])
        data = data[cap:]


async def host_amqp(broker: FakeBroker, ws: ServerConnection) -> None:
    broker.subprotocols.append(ws.subprotocol)
    transport = Transport(Transport.SERVER)
    transport.sasl().allowed_mechs("ANONYMOUS")  # a server with SASL also takes a plain AMQP header
    if broker.idle_timeout:
        transport.idle_timeout = broker.idle_timeout
    conn, collector, lock = Connection(), Collector(), asyncio.Lock()
    conn.collect(collector)
    transport.bind(conn)

    async def flush() -> bool:
        async with lock:
            while (n := transport.pending()) > 0:
                out = transport.peek(n) or b""
                transport.pop(n)
                step = broker.slice or n
                for i in range(0, n, step):
                    await ws.send(out[i:i + step])
            return n >= 0

    async def ticker() -> None:
        while True:
            transport.tick(time.monotonic())
            broker.handle(collector)
            await flush()
            await asyncio.sleep(0.05)

    tick = asyncio.create_task(ticker())
    try:
        async for data in ws:
            assert isinstance(data, bytes)
            if not broker.first_bytes or len(broker.first_bytes) < len(broker.subprotocols):
                broker.first_bytes.append(data[:8])
            push_all(transport, data)
            broker.handle(collector)
            if not await flush():
                break
    except WsClosed:
        pass
    finally:
        tick.cancel()


@contextlib.asynccontextmanager
async def fake_server(broker: FakeBroker) -> AsyncIterator[str]:
    async with serve(partial(host_amqp, broker), "127.0.0.1", 0, subprotocols=[Subprotocol("amqp")],
                     process_request=broker.check_request) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/protocols/amqp10ws"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


@pytest.mark.parametrize(("sasl", "header"), [("ANONYMOUS", b"AMQP\x03\x01\x00\x00"), (None, b"AMQP\x00\x01\x00\x00")])
def test_connects_with_and_without_sasl(sasl: str | None, header: bytes) -> None:
    broker = FakeBroker()

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url, sasl=sasl) as c:
            snd = await c.sender("queue:a/b/c/q")
            assert (await snd.send(b"x")).state == "accepted"
        assert c.closed

    run(scenario)
    assert broker.first_bytes == [header]


def test_send_goes_as_data_section_with_type_and_properties() -> None:
    broker = FakeBroker()

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url) as c:
            snd = await c.sender("queue:a/b/c/q")
            outcome = await snd.send(b"\x00\xffbody", content_type="application/octet-stream",
                                     properties={"k": "v"}, message_id="m1")
            assert outcome.state == "accepted"

    run(scenario)
    (msg,) = broker.received
    assert msg.inferred  # a Data section, not an AmqpValue holding a binary
    assert body_of(msg) == b"\x00\xffbody"
    assert (msg.content_type, msg.properties, msg.id) == ("application/octet-stream", {"k": "v"}, "m1")


def test_thousand_pipelined_sends_are_all_accepted_in_order() -> None:
    broker = FakeBroker()

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url) as c:
            snd = await c.sender("queue:bench")
            futures = [snd.send_nowait(str(i).encode()) for i in range(1000)]
            outcomes = await asyncio.gather(*futures)
            assert {o.state for o in outcomes} == {"accepted"}

    run(scenario)
    assert [body_of(m) for m in broker.received] == [str(i).encode() for i in range(1000)]


def test_empty_target_routes_each_message_by_its_to() -> None:
    broker = FakeBroker()

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url) as c:
            snd = await c.sender(None)
            assert (await snd.send(b"1", to="queue:one")).state == "accepted"
            assert (await snd.send(b"2", to="queue:two")).state == "accepted"

    run(scenario)
    assert sorted(broker.queues) == ["queue:one", "queue:two"]


async def fill(c: AmqpClient, address: str, count: int) -> None:
    snd = await c.sender(address)
    await asyncio.gather(*(snd.send_nowait(f"m{i}".encode(), content_type="text/plain") for i in range(count)))


def test_receiver_gets_no_more_than_its_credit() -> None:
    broker = FakeBroker()

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url) as c:
            await fill(c, "queue:q", 10)
            rcv = await c.receiver("queue:q", credit=3)
            got = [await rcv.receive(timeout=5) for _ in range(3)]
            with pytest.raises(TimeoutError):
                await rcv.receive(timeout=0.3)
            assert broker.served[rcv.name] == 3
            rcv.flow(2)
            got += [await rcv.receive(timeout=5) for _ in range(2)]
            assert [m.body for m in got] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
            assert got[0].content_type == "text/plain"
            for m in got:
                await m.accept()
            await rcv.close()

    run(scenario)
    assert len(broker.queues["queue:q"]) == 5


def test_dispositions_reach_the_broker() -> None:
    broker = FakeBroker()

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url) as c:
            await fill(c, "queue:q", 3)
            rcv = await c.receiver("queue:q", credit=1)
            first = await rcv.receive()
            await first.release()  # back to the head of the queue: served again
            rcv.flow(1)
            again = await rcv.receive()
            assert again.body == first.body == b"m0"
            await again.accept()
            rcv.flow(2)
            await (await rcv.receive()).reject(condition="amqp:internal-error", description="no")
            await (await rcv.receive()).modify(delivery_failed=True)
            await rcv.close()

    run(scenario)
    assert broker.dispositions == [("released", None, False), ("accepted", None, False),
                                   ("rejected", "amqp:internal-error", False), ("modified", None, True)]


def test_presettled_receive_and_send() -> None:
    broker = FakeBroker()

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url) as c:
            snd = await c.sender("queue:q")
            assert (await snd.send(b"fire", settled=True)).state == "settled"
            rcv = await c.receiver("queue:q", credit=5, presettled=True)
            msg = await rcv.receive()
            assert (msg.body, msg.settled, msg.content_type) == (b"fire", True, None)
            await msg.accept()  # settled already: nothing is sent

    run(scenario)
    assert broker.dispositions == []


def test_rejected_send_carries_the_condition() -> None:
    async def scenario() -> None:
        async with fake_server(FakeBroker()) as url, await AmqpClient.connect(url) as c:
            outcome = await (await c.sender("queue:full")).send(b"x")
            assert (outcome.state, outcome.condition, outcome.description) == (
                "rejected", "amqp:resource-limit-exceeded", "queue full")

    run(scenario)


def test_refused_attach_surfaces_condition_and_leaves_the_connection_usable() -> None:
    async def scenario() -> None:
        async with fake_server(FakeBroker()) as url, await AmqpClient.connect(url) as c:
            with pytest.raises(LinkRefused) as refused:
                await c.sender("queue:missing/s")
            assert refused.value.condition == "amqp:not-found"
            assert refused.value.description == "no such queue queue:missing/s"
            with pytest.raises(LinkRefused):
                await c.receiver("queue:missing/r")
            assert (await (await c.sender("queue:ok")).send(b"x")).state == "accepted"

    run(scenario)


def test_bearer_token_and_subprotocol_reach_the_server() -> None:
    broker = FakeBroker()

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url, token="tok", headers={"X-A": "1"}) as c:
            assert c.ws.subprotocol == "amqp"

    run(scenario)
    assert broker.headers[0]["Authorization"] == "Bearer tok"
    assert broker.headers[0]["X-A"] == "1"
    assert broker.subprotocols == ["amqp"]


def test_refused_upgrade_gives_the_http_status() -> None:
    async def scenario() -> None:
        async with fake_server(FakeBroker()) as url:
            with pytest.raises(UpgradeRefused) as refused:
                await AmqpClient.connect(url, token="bad")
            assert (refused.value.status, refused.value.body) == (401, b"bad token\n")

    run(scenario)


def test_heartbeats_keep_a_quiet_connection_open() -> None:
    broker = FakeBroker(idle_timeout=0.4)

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url, idle_timeout=0.4) as c:
            await asyncio.sleep(1.5)  # > 2 idle periods each way with no traffic but heartbeats
            assert not c.closed
            assert c.remote_idle_timeout > 0  # proton advertises half its own timeout
            assert (await (await c.sender("queue:q")).send(b"x")).state == "accepted"

    run(scenario)


def test_server_output_cut_into_tiny_websocket_messages() -> None:
    broker = FakeBroker(slice=3)

    async def scenario() -> None:
        async with fake_server(broker) as url, await AmqpClient.connect(url) as c:
            await fill(c, "queue:q", 5)
            rcv = await c.receiver("queue:q", credit=5)
            assert [(await rcv.receive()).body for _ in range(5)] == [f"m{i}".encode() for i in range(5)]

    run(scenario)


def test_server_close_gives_condition_and_fails_pending_work() -> None:
    async def scenario() -> None:
        async with fake_server(FakeBroker()) as url, await AmqpClient.connect(url) as c:
            rcv = await c.receiver("queue:q", credit=1)
            with pytest.raises(ConnectionClosed) as closed:
                await (await c.sender("queue:kill")).send(b"x")
            assert closed.value.condition == "amqp:connection:forced"
            assert c.remote_condition == ("amqp:connection:forced", "told to")
            with pytest.raises(ConnectionClosed):
                await rcv.receive(timeout=5)
            for _ in range(100):
                if c.closed:
                    break
                await asyncio.sleep(0.05)
            assert c.closed

    run(scenario)


def test_raw_garbage_makes_the_server_drop_the_connection() -> None:
    async def scenario() -> None:
        async with fake_server(FakeBroker()) as url, await AmqpClient.connect(url) as c:
            await c.send_raw(b"\x00\x00\x00\x10garbage-garbage!")
            for _ in range(100):
                if c.closed:
                    break
                await asyncio.sleep(0.05)
            assert c.closed
            assert c.transport_condition is not None or c.remote_condition is not None

    run(scenario)
