"""Messages, outcomes and errors of the test AMQP client (meshsite.amqpclient), apart from its I/O.

``Received`` is a decoded incoming message that settles its own delivery; ``Outcome`` is what the
peer said about one of ours. The body is always bytes: a Data section as it came, an AmqpValue
string as UTF-8 (what a server that publishes text may send); any other AmqpValue is in ``value``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from proton import Condition, Delivery, Disposition, Message

_STATES: dict[int, str] = {
    Disposition.ACCEPTED: "accepted", Disposition.REJECTED: "rejected",
    Disposition.RELEASED: "released", Disposition.MODIFIED: "modified",
}


class AmqpError(Exception):
    """Base of this client's errors; ``condition`` and ``description`` come from the peer."""

    def __init__(self, condition: str | None = None, description: str | None = None) -> None:
        super().__init__(f"{condition}: {description}" if description else condition)
        self.condition = condition
        self.description = description


class UpgradeRefused(AmqpError):
    """The server answered the WebSocket upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"http-{status}", body.decode("utf-8", "replace"))
        self.status = status
        self.body = body


class ConnectionClosed(AmqpError):
    """The connection ended (the server's close condition, a transport error, or the socket)."""


class LinkRefused(AmqpError):
    """The server answered an attach with a detach (an AMQP link refusal)."""


class LinkDetached(AmqpError):
    """The server detached a link that had been attached."""


@dataclass(frozen=True)
class Outcome:
    """The peer's disposition of a sent message; ``state`` "settled" for a presettled send once written."""

    state: str
    condition: str | None = None
    description: str | None = None
    delivery_failed: bool = False
    undeliverable: bool = False


def outcome_of(dlv: Delivery) -> Outcome:
    remote = dlv.remote
    cond = remote.condition
    return Outcome(
        state=_STATES.get(int(dlv.remote_state), "settled"),
        condition=cond.name if cond is not None else None,
        description=cond.description if cond is not None else None,
        delivery_failed=bool(remote.failed), undeliverable=bool(remote.undeliverable),
    )


def body_bytes(body: object) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return b""


@dataclass
class Received:
    """One incoming message; ``accept``/``release``/``reject``/``modify`` settle it (the first call wins)."""

    body: bytes
    value: object
    content_type: str | None
    properties: dict[str, Any]
    to: str | None
    message_id: object
    creation_time: float
    annotations: dict[Any, Any]
    delivery_count: int  # the header's: earlier deliveries of this message
    delivery: Delivery
    settled: bool
    _flush: Callable[[], Awaitable[bool]] = field(repr=False)
    _kick: Callable[[], None] = field(repr=False)

    async def accept(self) -> None:
        await self._settle(Disposition.ACCEPTED)

    def accept_nowait(self) -> None:
        """Accept without waiting for the write: the client sends it within a millisecond
        with whatever else is pending (a consumer that settles as it goes: many per
        WebSocket message)."""
        if self._mark(Disposition.ACCEPTED, None):
            self._kick()

    async def release(self) -> None:
        await self._settle(Disposition.RELEASED)

    async def reject(self, *, condition: str | None = None, description: str | None = None) -> None:
        def annotate() -> None:
            if condition is not None:
                self.delivery.local.condition = Condition(condition, description)
        await self._settle(Disposition.REJECTED, annotate)

    async def modify(self, *, delivery_failed: bool = True, undeliverable: bool = False) -> None:
        def annotate() -> None:
            self.delivery.local.failed = delivery_failed
            self.delivery.local.undeliverable = undeliverable
        await self._settle(Disposition.MODIFIED, annotate)

    async def _settle(self, state: int, annotate: Callable[[], None] | None = None) -> None:
        if self._mark(state, annotate):
            await self._flush()

    def _mark(self, state: int, annotate: Callable[[], None] | None) -> bool:
        # A settled delivery's proton object may already be freed: never touch it twice.
        if self.settled:
            return False
        self.settled = True
        if annotate is not None:
            annotate()
        self.delivery.update(state)
        self.delivery.settle()
        return True


def content_type_of(msg: Message) -> str | None:
    # proton's getter wraps an absent content type as symbol("None"); no media type is "None".
    value = msg.content_type
    return None if value is None or value == "None" else str(value)


def received_from(data: bytes, dlv: Delivery, *, settled: bool, flush: Callable[[], Awaitable[bool]],
                  kick: Callable[[], None]) -> Received:
    msg = Message()
    msg.decode(data)
    body = msg.body
    if isinstance(body, memoryview):
        body = bytes(body)  # a view into proton's decode buffer, which the next decode may reuse
    return Received(
        body=body_bytes(body), value=body, content_type=content_type_of(msg),
        properties=dict(msg.properties or {}), to=msg.address, message_id=msg.id,
        creation_time=msg.creation_time, annotations=dict(msg.annotations or {}),
        delivery_count=msg.delivery_count, delivery=dlv, settled=settled, _flush=flush, _kick=kick,
    )
