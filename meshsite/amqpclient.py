"""A small AMQP 1.0-over-WebSocket client for tests and benchmarks.

Proton's engine in client mode (``Transport`` + ``Connection`` + ``Collector``, not the reactor) does
all the AMQP framing; this module only moves its bytes over a ``websockets`` connection and turns
its events into asyncio futures. AMQP is a byte stream, so input is pushed as it comes, whatever
the WebSocket message boundaries, and output is cut into messages of at most ``_CHUNK`` bytes.

Three background tasks per connection: the reader (socket → ``transport.push`` → events), the
writer (``transport.peek/pop`` → socket, woken after every engine call) and the ticker
(``transport.tick`` for heartbeats and the idle timeout). Every engine call happens on the event
loop's thread, so proton is never entered concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from proton import (
    Collector,
    Condition,
    Connection,
    Delivery,
    Disposition,
    Endpoint,
    Event,
    Link,
    Message,
    Terminus,
    Transport,
    TransportException,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from meshsite.amqpmessage import (
    AmqpError,
    ConnectionClosed,
    LinkDetached,
    LinkRefused,
    Outcome,
    Received,
    UpgradeRefused,
    outcome_of,
    received_from,
)

__all__ = [
    "AmqpClient", "AmqpError", "ConnectionClosed", "LinkDetached", "LinkRefused", "Outcome", "Received",
    "Receiver", "Sender", "UpgradeRefused",
]

# 64 KiB per WebSocket message: under every server's default message limit (websockets 1 MiB,
# uvicorn 16 MiB), and large enough that a pipelined burst is a handful of messages.
_CHUNK = 65536
_DEFAULT_TIMEOUT = 10.0


def _condition(cond: Condition | None) -> tuple[str | None, str | None]:
    return (cond.name, cond.description) if cond is not None else (None, None)


class _Link:
    def __init__(self, client: AmqpClient, link: Link) -> None:
        self._client = client
        self.link = link
        self._attached: asyncio.Future[None] = client._loop.create_future()
        self._detached: asyncio.Future[None] = client._loop.create_future()
        self.error: AmqpError | None = None

    @property
    def name(self) -> str:
        return self.link.name

    def _remote_terminus(self) -> Terminus:
        return self.link.remote_target if self.link.is_sender else self.link.remote_source

    def _check_attach(self) -> None:
        # Checked once per batch of events, not per event: a refusal is an attach with a null
        # terminus followed by a detach, and both usually arrive in the same read.
        state = self.link.state
        if state & Endpoint.REMOTE_CLOSED:
            self._remote_closed()
        elif (state & Endpoint.REMOTE_ACTIVE and self._remote_terminus().type != Terminus.UNSPECIFIED
              and not self._attached.done()):
            self._attached.set_result(None)

    def _remote_closed(self) -> None:
        cond, desc = _condition(self.link.remote_condition)
        if not self._attached.done():
            self._fail(LinkRefused(cond, desc))
        else:
            self._fail(LinkDetached(cond, desc))
        if not self.link.state & Endpoint.LOCAL_CLOSED:
            self.link.close()
        if not self._detached.done():
            self._detached.set_result(None)

    def _fail(self, exc: AmqpError) -> None:
        self.error = self.error or exc
        if not self._attached.done():
            self._attached.set_exception(exc)

    async def _wait_attached(self, timeout: float) -> None:
        self._client._kick()
        await asyncio.wait_for(asyncio.shield(self._attached), timeout)

    async def close(self, timeout: float = _DEFAULT_TIMEOUT) -> None:
        """Detach (closed=true) and wait for the server's detach."""
        if self._client.closed or self._detached.done():
            return
        self.link.close()
        self._client._kick()
        with contextlib.suppress(AmqpError):
            await asyncio.wait_for(asyncio.shield(self._detached), timeout)


class Sender(_Link):
    """A sending link; ``send_nowait`` pipelines, ``send`` waits for the server's disposition."""

    def __init__(self, client: AmqpClient, link: Link) -> None:
        super().__init__(client, link)
        self._created = 0
        self._unsettled: dict[str, asyncio.Future[Outcome]] = {}
        # Presettled sends resolve once written: (sequence number, future), oldest first.
        self._unwritten: deque[tuple[int, asyncio.Future[Outcome]]] = deque()

    def send_nowait(self, body: bytes, *, content_type: str | None = None, properties: dict[str, Any] | None = None,
                    message_id: str | None = None, to: str | None = None, settled: bool = False,
                    annotations: dict[str, Any] | None = None, durable: bool | None = None,
                    ttl: float | None = None) -> asyncio.Future[Outcome]:
        """Queue one message and return the future of its outcome (``settled``: once written)."""
        fut: asyncio.Future[Outcome] = self._client._loop.create_future()
        if self.error is not None or self._client.closed:
            fut.set_exception(self.error or self._client._error())
            return fut
        fields = {"content_type": content_type, "id": message_id, "address": to, "properties": properties,
                  "annotations": annotations, "durable": durable, "ttl": ttl}
        # inferred: bytes go as a Data section, not as an AmqpValue holding a binary
        msg = Message(body=body, inferred=True, **{k: v for k, v in fields.items() if v is not None})
        tag = str(self._created)
        dlv = self.link.delivery(tag)
        self.link.send(msg.encode())
        self.link.advance()
        self._created += 1
        if settled:
            dlv.settle()
            self._unwritten.append((self._created, fut))
        else:
            self._unsettled[tag] = fut
        self._client._kick()
        return fut

    async def send(self, body: bytes, **kwargs: Any) -> Outcome:
        """Send one message and wait for its outcome; see ``send_nowait`` for the arguments."""
        return await self.send_nowait(body, **kwargs)

    def _on_delivery(self, dlv: Delivery) -> None:
        if not (dlv.settled or dlv.remote_state in _TERMINAL):
            return
        fut = self._unsettled.pop(dlv.tag, None)
        if fut is not None and not fut.done():
            fut.set_result(outcome_of(dlv))
        dlv.settle()

    def _on_written(self) -> None:
        written = self._created - self.link.queued
        while self._unwritten and self._unwritten[0][0] <= written:
            fut = self._unwritten.popleft()[1]
            if not fut.done():
                fut.set_result(Outcome("settled"))

    def _fail(self, exc: AmqpError) -> None:
        super()._fail(exc)
        futures = [*self._unsettled.values(), *(f for _, f in self._unwritten)]
        self._unsettled.clear()
        self._unwritten.clear()
        for fut in futures:
            if not fut.done():
                fut.set_exception(exc)


_TERMINAL = (Disposition.ACCEPTED, Disposition.REJECTED, Disposition.RELEASED, Disposition.MODIFIED)


class Receiver(_Link):
    """A receiving link; messages wait in an unbounded local queue (the credit bounds it)."""

    def __init__(self, client: AmqpClient, link: Link) -> None:
        super().__init__(client, link)
        self._inbox: asyncio.Queue[Received | AmqpError] = asyncio.Queue()

    def flow(self, credit: int) -> None:
        """Grant the server ``credit`` more messages."""
        self.link.flow(credit)
        self._client._kick()

    async def receive(self, timeout: float | None = _DEFAULT_TIMEOUT) -> Received:
        """The next message; raises TimeoutError, or the link's or connection's error once drained."""
        if self._inbox.empty() and self.error is not None:
            raise self.error
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if isinstance(item, AmqpError):
            self._inbox.put_nowait(item)  # every later receive raises too
            raise item
        return item

    def _on_delivery(self, dlv: Delivery) -> None:
        # Only a complete current delivery is read; proton keeps a partial one's bytes until the
        # last transfer, and later events for an already-read delivery are disposition updates.
        if dlv.aborted:
            dlv.settle()
            return
        if not dlv.readable or dlv.partial:
            return
        data = self.link.recv(dlv.pending) or b""
        self.link.advance()
        presettled = dlv.settled
        if presettled:
            dlv.settle()
        self._inbox.put_nowait(received_from(data, dlv, settled=presettled, flush=self._client._settle_flush,
                                                  kick=self._client._kick_soon))

    def _fail(self, exc: AmqpError) -> None:
        if self.error is None:
            self._inbox.put_nowait(exc)
        super()._fail(exc)


_L = TypeVar("_L", Sender, Receiver)


@dataclass
class _Options:
    hostname: str | None
    sasl: str | None
    idle_timeout: float | None
    max_frame_size: int | None
    container_id: str = field(default_factory=lambda: f"meshsite-amqpclient-{uuid.uuid4()}")


class AmqpClient:
    """One AMQP connection with one session over one WebSocket; use ``await AmqpClient.connect(...)``."""

    def __init__(self, ws: ClientConnection, options: _Options) -> None:
        self.ws = ws
        self._loop = asyncio.get_running_loop()
        self._transport = Transport()
        if options.sasl is not None:
            self._transport.sasl().allowed_mechs(options.sasl)
        if options.idle_timeout is not None:
            self._transport.idle_timeout = options.idle_timeout
        if options.max_frame_size is not None:
            self._transport.max_frame_size = options.max_frame_size
        self._collector = Collector()
        self._conn = Connection()
        self._conn.collect(self._collector)
        self._conn.container = options.container_id
        if options.hostname is not None:
            self._conn.hostname = options.hostname
        self._transport.bind(self._conn)
        self._session = self._conn.session()
        self._links: dict[str, Sender | Receiver] = {}
        self._serial = 0
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._ended: asyncio.Future[None] = self._loop.create_future()
        self._wake = asyncio.Event()
        self._kick_pending = False
        self._timers_changed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.remote_condition: tuple[str | None, str | None] | None = None
        self.transport_condition: tuple[str | None, str | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def connect(cls, url: str, *, token: str | None = None, subprotocols: tuple[str, ...] = ("amqp",),
                      sasl: str | None = "ANONYMOUS", origin: str | None = None,
                      headers: dict[str, str] | None = None, idle_timeout: float | None = None,
                      max_frame_size: int | None = None, hostname: str | None = None,
                      timeout: float = _DEFAULT_TIMEOUT) -> AmqpClient:
        """Upgrade, then open the AMQP connection and a session; raises UpgradeRefused or ConnectionClosed."""
        extra = dict(headers or {})
        if token is not None:
            extra["Authorization"] = f"Bearer {token}"
        try:
            ws = await ws_connect(url, subprotocols=[Subprotocol(p) for p in subprotocols] or None,
                                  additional_headers=extra, origin=Origin(origin) if origin else None,
                                  compression=None, max_size=None, open_timeout=timeout)
        except InvalidStatus as exc:
            raise UpgradeRefused(exc.response.status_code, bytes(exc.response.body or b"")) from None
        client = cls(ws, _Options(hostname or urlsplit(url).hostname, sasl, idle_timeout, max_frame_size))
        client._start()
        try:
            await asyncio.wait_for(asyncio.shield(client._opened), timeout)
        except BaseException:
            await client.abort()
            raise
        return client

    async def __aenter__(self) -> AmqpClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """The socket has closed (either side)."""
        return self._ended.done()

    @property
    def remote_idle_timeout(self) -> float:
        return self._transport.remote_idle_timeout

    async def sender(self, target: str | None, *, name: str | None = None,
                     timeout: float = _DEFAULT_TIMEOUT) -> Sender:
        """Attach a sender to ``target`` (None: a null address, each message's ``to`` decides)."""
        link = self._session.sender(name or self._name("snd"))
        if target is not None:
            link.target.address = target
        snd = Sender(self, link)
        return await self._attach(snd, timeout)

    async def receiver(self, source: str, *, credit: int = 10, presettled: bool = False, name: str | None = None,
                       timeout: float = _DEFAULT_TIMEOUT) -> Receiver:
        """Attach a receiver to ``source`` and grant ``credit``; ``presettled`` asks the server to settle."""
        link = self._session.receiver(name or self._name("rcv"))
        link.source.address = source
        if presettled:
            link.snd_settle_mode = Link.SND_SETTLED
        rcv = Receiver(self, link)
        rcv = await self._attach(rcv, timeout)
        if credit:
            rcv.flow(credit)
        return rcv

    async def send_raw(self, data: bytes) -> None:
        """Bytes as one binary WebSocket message, bypassing the engine (fuzz tests)."""
        async with self._write_lock:
            await self.ws.send(data)

    async def close(self, timeout: float = _DEFAULT_TIMEOUT) -> None:
        """Close the AMQP connection, wait for the server's close and the socket's end."""
        if not self.closed:
            self._conn.close()
            self._kick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        await self.abort()

    async def abort(self) -> None:
        """Drop the socket without the AMQP close handshake and stop the background tasks."""
        await self.ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._end()

    def _name(self, kind: str) -> str:
        self._serial += 1
        return f"{kind}-{self._serial}"

    async def _attach(self, wrapper: _L, timeout: float) -> _L:
        if self.closed:
            raise self._error()
        self._links[wrapper.name] = wrapper
        wrapper.link.open()
        await wrapper._wait_attached(timeout)
        return wrapper

    def _start(self) -> None:
        self._conn.open()
        self._session.open()
        self._tasks = [self._loop.create_task(t) for t in (self._read(), self._write(), self._tick())]
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        self._kick()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # A bug in this client must fail the waiting test, not leave it hanging until its timeout.
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.transport_condition = ("client-bug", repr(exc))
            self._end()

    def _kick(self) -> None:
        self._wake.set()

    def _kick_soon(self) -> None:
        """A write within a millisecond: settlements made meanwhile (a consumer accepting
        message after message) share it, one WebSocket message instead of one each."""
        if not self._kick_pending:
            self._kick_pending = True
            asyncio.get_running_loop().call_later(0.001, self._kicked)

    def _kicked(self) -> None:
        self._kick_pending = False
        self._kick()

    # -- input ----------------------------------------------------------------------------------

    async def _read(self) -> None:
        with contextlib.suppress(WsClosed):
            async for data in self.ws:
                self._push(data.encode() if isinstance(data, str) else data)
                if self._transport.capacity() < 0:
                    break  # the peer's close frame or a framing error: no more AMQP input
        with contextlib.suppress(TransportException):
            self._transport.close_tail()
        self._process()
        # Our own close frame (the answer to the peer's) goes out before the socket closes.
        with contextlib.suppress(WsClosed, TransportException):
            await self._flush()
        await self.ws.close()
        self._end()

    def _push(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                cap = self._transport.capacity()
                if cap <= 0:
                    break
                self._transport.push(bytes(view[:cap]))
                view = view[cap:]
                self._process()
        except TransportException:
            self._process()

    def _process(self) -> None:
        while (event := self._collector.peek()) is not None:
            self._on_event(event)
            self._collector.pop()
        for wrapper in list(self._links.values()):
            wrapper._check_attach()
        self._kick()

    def _on_event(self, event: Event) -> None:
        kind = event.type
        if kind == Event.CONNECTION_REMOTE_OPEN and not self._opened.done():
            self._opened.set_result(None)
            self._timers_changed.set()
        elif kind == Event.CONNECTION_REMOTE_CLOSE:
            self.remote_condition = _condition(self._conn.remote_condition)
            if not self._conn.state & Endpoint.LOCAL_CLOSED:
                self._conn.close()
            self._fail_all(ConnectionClosed(*self.remote_condition))
        elif kind in (Event.LINK_REMOTE_CLOSE, Event.LINK_REMOTE_DETACH) and event.link is not None:
            wrapper = self._links.get(event.link.name)
            if wrapper is not None and wrapper.link.is_sender == event.link.is_sender:
                wrapper._remote_closed()
        elif kind == Event.DELIVERY and event.delivery is not None:
            wrapper = self._links.get(event.delivery.link.name)
            if wrapper is not None:
                wrapper._on_delivery(event.delivery)
        elif kind == Event.TRANSPORT_ERROR:
            self.transport_condition = _condition(self._transport.condition)
            self._fail_all(ConnectionClosed(*self.transport_condition))

    # -- output and timers ----------------------------------------------------------------------

    async def _write(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            try:
                if not await self._flush():
                    return  # our close frame is out; the reader closes the socket on the peer's
            except WsClosed:
                return

    async def _flush(self) -> bool:
        """Send every pending output byte; False once the transport's output has ended."""
        async with self._write_lock:
            while (pending := self._transport.pending()) > 0:
                data = self._transport.peek(min(pending, _CHUNK)) or b""
                self._transport.pop(len(data))
                await self.ws.send(data)
            for wrapper in self._links.values():
                if isinstance(wrapper, Sender):
                    wrapper._on_written()
            return pending >= 0

    async def _settle_flush(self) -> bool:
        # One turn of the loop first: settlements made in the same turn (a consumer settling
        # what one read brought) leave in one WebSocket message, as proton's own reactor
        # writes once per turn, instead of one message per disposition.
        await asyncio.sleep(0)
        try:
            return await self._flush()
        except WsClosed:
            raise self._error() from None

    async def _tick(self) -> None:
        while not self.closed:
            now = time.monotonic()
            try:
                deadline = self._transport.tick(now)
            except TransportException:
                deadline = 0.0
            self._process()
            # Traffic only moves proton's deadlines later, but the peer's open brings its idle
            # timeout and so an earlier heartbeat deadline: that event wakes this loop early.
            self._timers_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timers_changed.wait(), max(deadline - now, 0.0) if deadline else 1.0)

    # -- ending ---------------------------------------------------------------------------------

    def _error(self) -> ConnectionClosed:
        cond = self.remote_condition or self.transport_condition or ("socket-closed", None)
        return ConnectionClosed(*cond)

    def _fail_all(self, exc: AmqpError) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)
            self._opened.exception()  # retrieved here: connect() may have stopped waiting
        for wrapper in self._links.values():
            wrapper._fail(exc)

    def _end(self) -> None:
        if not self._ended.done():
            self._ended.set_result(None)
        self._fail_all(self._error())
