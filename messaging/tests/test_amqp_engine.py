"""The protocol engine fed arbitrary bytes, as a hostile or broken client would send them:
it never raises, it stops accepting input once the stream is not AMQP, and what it writes
back is a well-formed close (proton parses every frame; none of it is ours)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proton import Collector, Connection, Transport

from messaging.amqp.connection import HANDLED
from messaging.amqp.engine import Engine

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"


def _engine() -> Engine:
    return Engine(max_frame_size=65536, idle_timeout=60.0, container="test")


def _drain(engine: Engine) -> bytes:
    out = b""
    for _ in engine.events(HANDLED):
        pass
    while chunk := engine.output():
        out += chunk
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from([b"", SASL_HEADER, AMQP_HEADER]), noise=st.binary(min_size=1, max_size=4096),
       cut=st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_never_break_the_engine(prefix: bytes, noise: bytes, cut: int) -> None:
    engine = _engine()
    data = prefix + noise
    for start in range(0, len(data), cut):  # any WebSocket message boundaries
        if not engine.feed(data[start:start + cut]):
            break
        _drain(engine)
    _drain(engine)
    engine.tick(1.0)


def test_garbage_after_the_header_is_answered_with_a_framing_error_and_input_stops() -> None:
    engine = _engine()
    accepted = engine.feed(AMQP_HEADER + b"\xff" * 64)
    written = _drain(engine)
    assert not accepted or engine.transport.capacity() < 0
    assert written.startswith(AMQP_HEADER)  # the server's header, then its close frame
    assert engine.transport.condition is not None
    assert engine.transport.condition.name == "amqp:connection:framing-error"


def test_a_real_client_opens_a_connection_through_any_slicing() -> None:
    client = Transport()
    client.sasl().allowed_mechs("ANONYMOUS")
    connection = Connection()
    connection.collect(Collector())
    client.bind(connection)
    connection.open()
    engine = _engine()
    opened = False
    for _round in range(10):  # SASL first: the client's open follows the server's outcome
        pending = client.pending()
        data = bytes(client.peek(pending) or b"") if pending > 0 else b""
        if pending > 0:
            client.pop(pending)
        for byte in range(len(data)):  # one byte per WebSocket message
            assert engine.feed(data[byte:byte + 1])
        for event in engine.events(HANDLED):
            opened = opened or "CONNECTION_REMOTE_OPEN" in str(event.type)
        while chunk := engine.output():
            client.push(chunk)
        if opened:
            break
    assert opened
