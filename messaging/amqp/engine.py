"""python-qpid-proton's protocol engine in server mode, fed with a WebSocket's bytes.

No AMQP framing is written here: proton parses and writes every frame; this module moves
bytes in and out, offers SASL ANONYMOUS (identity is the bearer token of the upgrade) or
the plain AMQP header, and hands over the engine's events. What the measurements behind it
showed: the output is taken in slices (Daphne drops WebSocket messages over 1 MiB; AMQP is a
byte stream, so a slice may end anywhere), and the output is taken before `tick()`, which
otherwise holds frames back until the next event.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cproton import isnull, pn_collector_peek, pn_collector_pop, pn_event_type
from proton import Collector, Connection, Event, EventType, Transport

# Output is sent in WebSocket messages of at most this many bytes.
OUTPUT_SLICE = 256 * 1024


class Engine:
    def __init__(self, *, max_frame_size: int, idle_timeout: float, container: str) -> None:
        self.transport = Transport(Transport.SERVER)
        self.transport.max_frame_size = max_frame_size
        # Our half of the idle timeout: a peer that sends nothing for this long is gone.
        self.transport.idle_timeout = idle_timeout
        # A client may skip SASL and send the plain AMQP header: the upgrade authenticated it.
        self.transport.require_auth(False)
        self.transport.sasl().allowed_mechs("ANONYMOUS")
        self.connection = Connection()
        self.connection.container = container
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.transport.bind(self.connection)

    def feed(self, data: bytes) -> bool:
        """Hand received bytes to the engine; False once it accepts no more input (it has
        closed, for an error of the peer's or its own)."""
        view = memoryview(data)
        while view:
            capacity = self.transport.capacity()
            if capacity <= 0:
                return False
            self.transport.push(bytes(view[:capacity]))
            view = view[capacity:]
        return True

    def events(self, wanted: Iterable[EventType]) -> Iterator[Event]:
        """The pending events of the `wanted` types. The others (most of them: a transport
        event for every write, local state changes) are dropped before proton wraps them in
        Python objects, which measured ~10% of a consuming connection's CPU."""
        numbers = {kind.number for kind in wanted}
        collector = self.collector._impl  # noqa: SLF001 - the C collector, read without wrapping
        while True:
            impl = pn_collector_peek(collector)
            if isnull(impl):
                return
            if pn_event_type(impl) in numbers:
                event = self.collector.peek()
                if event is not None:
                    yield event
            pn_collector_pop(collector)

    def output(self) -> bytes:
        """The next slice of pending output (b"" when there is none)."""
        pending = self.transport.pending()
        if pending <= 0:
            return b""
        size = min(pending, OUTPUT_SLICE)
        data = bytes(self.transport.peek(size) or b"")
        self.transport.pop(size)
        return data

    def tick(self, now: float) -> float:
        """Heartbeats and the idle check; returns when to tick next (0: no deadline)."""
        return float(self.transport.tick(now))

    @property
    def closed(self) -> bool:
        """Both directions are finished: nothing more will be read or written."""
        return bool(self.transport.closed)

    def close_input(self) -> None:
        self.transport.close_tail()
