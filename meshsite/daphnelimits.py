"""Under Daphne, answer request heads past Twisted's limits with a JSON 431 instead of silence.

Twisted's HTTPChannel, which parses requests for Daphne, enforces three limits before any
application code runs: 16 KiB per line (LineReceiver.MAX_LENGTH), 16 KiB for the request line
and headers together (totalHeadersSize) and 500 headers (maxHeaders). Past the first it just
closes the connection, so the client sees no answer at all; past the others it writes a bare
`400 Bad Request` with no body. This channel keeps those limits and Twisted's parsing, and
only changes the answer: 431 Request Header Fields Too Large (414 for the request line) in
the SAP error shape, then closes as Twisted does (the rest of the request is never read).
It also closes a connection after a response that says `Connection: close`, as uvicorn does
(Twisted alone would keep it open), and lets a WebSocket upgrade be refused with a status of
the application's choosing (the ASGI denial response, which uvicorn supports and Daphne
alone does not: it can only answer 403 to every refusal, a missing token as much as a full
quota). The denial's body is not sent; the status and its reason phrase are.

install() is called by meshsite.asgi, which Daphne imports before it starts listening; it
replaces the channel Daphne's HTTPFactory builds. The smaller limits every server gets are
enforced after parsing, in meshsite/headerlimit.py.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from meshsite.headerlimit import TOO_LARGE

try:
    from autobahn.websocket.types import ConnectionDeny
    from daphne.http_protocol import HTTPFactory
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.web import http
except ImportError:  # another ASGI server, without Daphne installed
    HTTPFactory = None

DENIAL = "websocket.http.response"


def _answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


if HTTPFactory is not None:

    class LimitedHTTPChannel(http.HTTPChannel):
        def _refuse(self, status: int, reason: str, message: str) -> None:
            assert self.transport is not None  # only called while data arrives on it
            self.transport.write(_answer(status, reason, message))  # type: ignore[call-arg,misc]
            self.loseConnection()

        def lineLengthExceeded(self, line: bytes) -> None:
            # Twisted's own name-mangled flag: true while the request line is awaited.
            if getattr(self, "_HTTPChannel__first_line"):  # noqa: B009 (a mangled name)
                self._refuse(414, "URI Too Long", f"Request line longer than {self.MAX_LENGTH} bytes")
            else:
                self._refuse(431, "Request Header Fields Too Large", TOO_LARGE)

        def lineReceived(self, line: bytes) -> None:
            # The same sum Twisted checks first thing in its lineReceived, checked before it.
            if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
                self._refuse(431, "Request Header Fields Too Large", TOO_LARGE)
                return
            super().lineReceived(line)

        def requestDone(self, request: http.Request) -> None:
            # Twisted decides whether to keep a connection from the request alone, so a
            # response that says `Connection: close` (the token endpoint's held 429,
            # meshsite/platform/tarpit.py) would leave it open for the client's next request.
            # uvicorn closes such a connection; so does this.
            if b"close" in b",".join(request.responseHeaders.getRawHeaders(b"connection", [])).lower():
                self.persistent = False
            super().requestDone(request)

        def headerReceived(self, line: bytes) -> bool:
            if self._receivedHeaderCount >= self.maxHeaders:
                self._refuse(431, "Request Header Fields Too Large", TOO_LARGE)
                return False
            return bool(super().headerReceived(line))

    def _limited_channel(factory: http.HTTPFactory) -> http._GenericHTTPChannelProtocol:
        # What Twisted's _genericHTTPChannelProtocolFactory builds, with our channel inside
        # (the generic wrapper switches to HTTP/2 after ALPN; that path is unchanged).
        return http._GenericHTTPChannelProtocol(LimitedHTTPChannel())


    _daphne_reply = WebSocketProtocol.handle_reply
    _daphne_create = Server.create_application

    def _handle_reply(self: WebSocketProtocol, message: dict) -> None:
        kind = message.get("type")
        if kind == f"{DENIAL}.start" and self.state == self.STATE_CONNECTING:
            self.meshsite_denial = int(message["status"])
            return
        if kind == f"{DENIAL}.body" and hasattr(self, "meshsite_denial"):
            if not message.get("more_body") and hasattr(self, "handshake_deferred"):
                status = self.meshsite_denial
                self.handshake_deferred.errback(ConnectionDeny(code=status, reason=HTTPStatus(status).phrase))
                del self.handshake_deferred
                self.server.protocol_disconnected(self)
            return
        _daphne_reply(self, message)

    _daphne_close = WebSocketProtocol.serverClose

    def _server_close(self: WebSocketProtocol, code: int | None = None) -> None:
        # Autobahn lets a server close only with 1000 or 3000-4999, and raises on the standard
        # 1002 (protocol error), 1003 (unsupported data) or 1009 (too big): those go as 4000
        # plus the code, the convention for a standard code in the application range.
        if code is not None and code != 1000 and not 3000 <= code <= 4999:
            code = 4000 + code % 1000
        _daphne_close(self, code=code)

    def _create_application(self: Server, protocol: object, scope: dict) -> object:
        if scope.get("type") == "websocket":
            scope.setdefault("extensions", {})[DENIAL] = {}
        return _daphne_create(self, protocol, scope)


def install() -> None:
    if HTTPFactory is not None:
        HTTPFactory.protocol = _limited_channel
        WebSocketProtocol.handle_reply = _handle_reply
        WebSocketProtocol.serverClose = _server_close
        Server.create_application = _create_application
