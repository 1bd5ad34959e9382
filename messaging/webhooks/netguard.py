"""The SSRF guard: the one way meshsite makes an outbound HTTP request.

Webhook pushes, handshakes and OAuth2 token fetches name URLs chosen by tenants, so every
one of them goes through a `Session` (or `guarded_request`, a session of one request). The
rule is judged on the *resolved* address, not on the spelling of the host: `getaddrinfo`
turns `2130706433`, `0x7f000001`, `0177.0.0.1` and `127.1` into `127.0.0.1`, and every
address a name resolves to must be public (`MESH_WEBHOOK_ALLOWED_NETWORKS` admits extra
CIDR ranges, e.g. a receiver on a developer's machine). The name is resolved once per
connection and the socket is opened to the address that was checked -- the client never
asks DNS itself -- so a DNS answer that changes between check and connect (rebinding)
cannot redirect the request. The request keeps the hostname, so the Host header, TLS SNI
and certificate verification all use the name the tenant gave. Redirects are never
followed, each request runs under one wall-clock deadline (every socket read and write
gets only the time left, so a receiver trickling bytes cannot stretch it), and at most
`MESH_WEBHOOK_MAX_RESPONSE_BYTES` of a response body are read.

The client is the standard library's `http.client` over a pinned socket: a push is the hot
path of delivery, and it costs a third of what a general-purpose client does. A session
keeps one connection per origin alive across the pushes of a delivery run (a TLS handshake
per push would cost more than the push); a connection that answered with `Connection:
close`, sent a body over the cap or failed is dropped, never reused.

TLS roots are certifi's bundle, or the file named by `SSL_CERT_FILE` (or the directory
named by `SSL_CERT_DIR`) when set -- which then *replaces* the certifi bundle. Proxy
variables (`HTTP_PROXY`, ...) are deliberately ignored: a proxy would resolve the name
itself and make the address check meaningless.
"""

from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import os
import re
import select
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import quote, urlsplit

import certifi
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WRITE_SLICE = 64 * 1024
_DEFAULT_HEADERS = {
    "User-Agent": "meshsite",
    # A compressed body would be inflated past the byte cap before we could count it.
    "Accept-Encoding": "identity",
}
# A host as it may appear in a URL: a DNS name (IDNA already applied) or an IPv4 spelling.
_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_.])?")
# Anything http.client would refuse to put on the request line, or a parser could read two ways.
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f\\]")


class InvalidURL(ValueError):
    """The URL is not one meshsite will send requests to (scheme, host, credentials, length)."""


class BlockedAddress(ValueError):
    """The host resolves to an address outbound requests may not reach; raised before any connection."""

    reason = "blocked address"


class DeliveryError(Exception):
    """The request could not be completed; `reason` is short and fit to record on a delivery."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class UnresolvableHost(DeliveryError, ValueError):
    """The host has no address. A ValueError too, so creation-time validation catches it."""

    def __init__(self, host: str) -> None:
        super().__init__("dns failure", f"host {host} could not be resolved")


@dataclass(frozen=True)
class GuardedResponse:
    status_code: int
    headers: Mapping[str, str]  # lower-case keys
    body: bytes  # at most MESH_WEBHOOK_MAX_RESPONSE_BYTES
    truncated: bool  # the receiver sent more than `body` holds
    elapsed_ms: float
    address: str  # the IP the request was sent to


# --- the address rule --------------------------------------------------------------------


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# First match wins, so the specific entries (metadata) come before the ranges holding them.
_V4_BLOCKED: tuple[tuple[tuple[IPNetwork, ...], str], ...] = (
    (_nets("0.0.0.0/8"), "a 'this network' address (0.0.0.0/8)"),
    (_nets("127.0.0.0/8"), "a loopback address"),
    (_nets("169.254.169.254/32"), "the cloud metadata address"),
    (_nets("169.254.0.0/16"), "a link-local address"),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "a private address"),
    (_nets("100.64.0.0/10"), "a carrier-grade NAT address"),
    (_nets("224.0.0.0/4"), "a multicast address"),
    (_nets("255.255.255.255/32"), "the broadcast address"),
    (_nets("240.0.0.0/4"), "a reserved address"),
)
# Python 3.11 calls ::ffff:7f00:1, 64:ff9b::7f00:1 and 2002:7f00:1:: "global", so the
# forms that carry an IPv4 address are unpacked and the IPv4 address judged instead.
_V6_BLOCKED: tuple[tuple[tuple[IPNetwork, ...], str], ...] = (
    (_nets("::/128"), "an unspecified address"),
    (_nets("::1/128"), "a loopback address"),
    (_nets("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_nets("2001::/32"), "a Teredo address"),
    (_nets("fe80::/10"), "a link-local address"),
    (_nets("fec0::/10"), "a site-local address"),
    (_nets("fc00::/7"), "a unique-local (private) address"),
    (_nets("ff00::/8"), "a multicast address"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _first_match(ip: IPAddress, table: Iterable[tuple[tuple[IPNetwork, ...], str]]) -> str | None:
    return next((kind for nets, kind in table if any(ip in net for net in nets)), None)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address a mapped, NAT64 or 6to4 address would deliver to."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def blocked_kind(ip: IPAddress) -> str | None:
    """Why `ip` may not be reached ("a loopback address"), or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, ipv4 = embedded
            inner = blocked_kind(ipv4)
            if inner is not None:
                return f"the {form} form of {inner}"
            if form != "6to4":  # a mapped/NAT64 public IPv4 is that public address
                return None
        kind = _first_match(ip, _V6_BLOCKED)
    else:
        kind = _first_match(ip, _V4_BLOCKED)
    if kind is None and ip.is_reserved:
        kind = "a reserved address"
    if kind is None and not ip.is_global:
        kind = "a non-public address"
    return kind


def _allowed_networks() -> list[IPNetwork]:
    # Read per call (cheap) so that settings overrides in tests and reloads take effect.
    raw = getattr(settings, "MESH_WEBHOOK_ALLOWED_NETWORKS", []) or []
    try:
        return [ipaddress.ip_network(str(cidr).strip(), strict=False) for cidr in raw]
    except ValueError as exc:
        raise ImproperlyConfigured(f"MESH_WEBHOOK_ALLOWED_NETWORKS: {exc}") from exc


def check_address(ip: IPAddress, host: str) -> None:
    """Raise BlockedAddress unless `ip` is public or inside MESH_WEBHOOK_ALLOWED_NETWORKS."""
    if any(ip.version == net.version and ip in net for net in _allowed_networks()):
        return
    kind = blocked_kind(ip)
    if kind is None:
        return
    where = f"endpoint {ip} is" if host == str(ip) else f"endpoint host {host} resolves to {ip},"
    raise BlockedAddress(f"{where} {kind}; outbound requests go only to public addresses")


# --- URL and name checks -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A checked URL, split into what the client needs: where to connect and what to send."""

    scheme: str
    host: str  # lower-case, IDNA-encoded, without brackets
    port: int
    request_target: str  # path and query, as sent on the request line

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Split an http(s) URL with a host and no credentials, or raise InvalidURL.

    Strict on purpose: characters a browser, a proxy and `urlsplit` might read differently
    (whitespace, control characters, backslashes) are refused rather than normalized, so
    the host judged here is the host connected to.
    """
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"endpoint is longer than {MAX_URL_LENGTH} characters")
    if _UNSAFE_URL.search(url):
        raise InvalidURL("endpoint contains whitespace, control characters or a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"endpoint is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidURL(f"endpoint scheme must be http or https, not {parts.scheme or 'missing'!r}")
    if "@" in parts.netloc:
        raise InvalidURL("endpoint must not carry credentials (user:password@); use securitySchema instead")
    if not parts.hostname:
        raise InvalidURL("endpoint has no host")
    if port == 0:
        raise InvalidURL("endpoint port must be between 1 and 65535")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    # Sent as a browser would: non-ASCII characters of the path and query percent-encoded.
    target = "".join(char if char.isascii() else quote(char, safe="") for char in target)
    return Target(scheme, _host(parts.hostname, parts.netloc), port or _DEFAULT_PORTS[scheme], target)


def check_url_when_saved(url: str) -> None:
    """The check of an outbound URL when it is saved: well-formed, and an IP literal must be
    allowed. A host name is not resolved here (it may resolve differently when a request
    connects, where the guard checks again). Raises ValueError (InvalidURL, BlockedAddress)."""
    target = parse_url(url)
    try:
        ip = ipaddress.ip_address(target.host)
    except ValueError:
        return
    check_address(ip, target.host)


def _host(hostname: str, netloc: str) -> str:
    if netloc.startswith("["):
        try:
            if "%" in hostname:  # a zone id names a local interface: never a public target
                raise ValueError(hostname)
            return str(ipaddress.IPv6Address(hostname))
        except ValueError:
            raise InvalidURL(f"endpoint host [{hostname}] is not an IPv6 address") from None
    hostname = hostname.removesuffix(".")  # the root label: not for Host, SNI or certificates
    try:
        ascii_host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidURL(f"endpoint host {hostname!r} is not a valid host name") from None
    if not _HOST_NAME.fullmatch(ascii_host):
        raise InvalidURL(f"endpoint host {hostname!r} is not a valid host name")
    return ascii_host


def validate_url(url: str) -> str:
    """Return `url` unchanged if it is an http(s) URL meshsite will send requests to."""
    parse_url(url)
    return url


def resolve_public(host: str, port: int) -> list[IPAddress]:
    """Resolve `host` and return its addresses, refusing the lot if any one is not allowed.

    Refusing on any blocked answer (rather than filtering) keeps a name that mixes a public
    and a private address from being used as a probe.
    """
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(host) from exc
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(sockaddr[0])
        check_address(ip, host)
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnresolvableHost(host)
    return addresses


# --- the pinned, deadline-bound connection --------------------------------------------------


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.at = self.started + seconds

    def left(self, cap: float | None = None) -> float:
        """The time left, at most `cap`; TimeoutError once none is left."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("total deadline passed")
        return left if cap is None else min(cap, left)

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000


class _DeadlineReader(io.RawIOBase):
    """Socket reads that never outlive the current request's deadline."""

    def __init__(self, owner: _DeadlineSocket) -> None:
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        sock = self._owner.sock
        sock.settimeout(self._owner.connection.deadline.left())
        received = sock.recv_into(buffer)
        self._owner.connection.received += received
        return received

    def close(self) -> None:
        if not self.closed:
            self._owner.reader_closed()
        super().close()


class _DeadlineSocket:
    """What http.client sees as its socket: every read and write is cut to the deadline.

    A per-operation timeout alone would let a receiver trickling a byte at a time hold a
    push for ever; clamping each operation to the time left bounds the whole exchange. As
    with `socket.makefile`, the socket stays open while a response still reads from it
    (http.client closes the connection of a `Connection: close` answer before its body).
    """

    def __init__(self, sock: socket.socket, connection: _PinnedConnection) -> None:
        self.sock = sock
        self.connection = connection
        self._readers = 0
        self._closed = False

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        # Sliced so that a receiver reading slowly cannot stretch one big write past the deadline.
        for start in range(0, len(view), _WRITE_SLICE):
            self.sock.settimeout(self.connection.deadline.left())
            self.sock.sendall(view[start : start + _WRITE_SLICE])

    def makefile(self, mode: str) -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closed and not self._readers:
            self.sock.close()

    def close(self) -> None:
        self._closed = True
        if not self._readers:
            self.sock.close()


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP/1.1 to one origin, connecting only to the addresses checked for it."""

    def __init__(self, target: Target, addresses: list[IPAddress], ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port)
        self.target = target
        self.addresses = addresses
        self.ssl_context = ssl_context
        self.deadline = _Deadline(0)
        self.connected_to: IPAddress | None = None
        self.received = 0  # response bytes of the current request
        self.last_used = time.monotonic()

    def closed_by_peer(self) -> bool:
        """Whether an idle kept-alive connection was closed (or sent bytes out of turn):
        looked at before reusing it, so a request is not sent into a closing socket."""
        wrapper = self.sock
        if wrapper is None:
            return True
        sock = wrapper.sock  # type: ignore[union-attr]
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)  # idle means nothing to read; EOF, a reset or stray bytes all mean "do not reuse"

    def connect(self) -> None:
        connect_timeout = float(settings.MESH_WEBHOOK_CONNECT_TIMEOUT)
        last_error: OSError = ConnectionError("no address")
        for ip in self.addresses:  # in resolver order, falling back like a browser would
            try:
                sock = socket.create_connection((str(ip), self.port), timeout=self.deadline.left(connect_timeout))
            except OSError as exc:
                last_error = exc
                continue
            break
        else:
            raise last_error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock.settimeout(self.deadline.left(connect_timeout))
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.target.host)
        except BaseException:
            sock.close()
            raise
        self.connected_to = ip
        self.sock = _DeadlineSocket(sock, self)  # type: ignore[assignment]


@functools.lru_cache(maxsize=4)
def _ssl_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # Keyed on the variables read, so changing SSL_CERT_FILE takes effect; loading a CA
    # bundle costs milliseconds, too much to repeat on every connection.
    if cert_file or cert_dir:
        return ssl.create_default_context(cafile=cert_file, capath=cert_dir)
    return ssl.create_default_context(cafile=certifi.where())


# --- requests -------------------------------------------------------------------------------

# How a receiver's close of an idle kept-alive connection shows when a request is sent into
# it (most TLS servers close without a close_notify: an EOF in violation of the protocol).
_STALE = (
    http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError,
)


class _StaleConnection(Exception):
    """A reused connection failed before any byte of the answer arrived."""


def _reason(exc: BaseException, connecting: bool) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls error"
    if connecting:
        return "connection failed"
    if isinstance(exc, _STALE):
        return "connection closed"
    if isinstance(exc, http.client.HTTPException):
        return "protocol error"
    return "connection error"


class Session:
    """Guarded requests that share kept-alive connections, one per origin; `close()` ends them.

    Not thread-safe: one thread uses it at a time. Each new connection resolves and checks
    its host again, and a connection idle for more than `max_idle` seconds is closed rather
    than reused, so a session never holds on to an old DNS answer for long.
    """

    MAX_CONNECTIONS = 32  # origins kept at once; the least recently used goes first

    def __init__(self, max_idle: float = 30.0) -> None:
        self._connections: dict[tuple[str, str, int], _PinnedConnection] = {}
        self.max_idle = max_idle

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        timeout: float | None = None,
        retry_stale: bool = True,
        max_idle: float | None = None,
    ) -> GuardedResponse:
        """Send one request to a public address; a 3xx comes back as the response.

        `timeout` overrides MESH_WEBHOOK_TIMEOUT, the budget from connecting to the last body
        byte (the name lookup is bounded by the resolver's own timeouts). Raises InvalidURL
        or BlockedAddress before any connection, and DeliveryError (reason "timeout",
        "connection refused", "tls error", "dns failure", ...) when the exchange fails.

        A kept-alive connection the receiver closed just as the request went out fails
        without a byte of answer; with `retry_stale` the request is sent once more on a new
        connection. Without it (at most once), that is a failed request -- so such callers pass
        a short `max_idle`: a connection idle longer than that is not reused for this request.
        """
        target = parse_url(url)
        deadline = _Deadline(float(timeout if timeout is not None else settings.MESH_WEBHOOK_TIMEOUT))
        idle = self.max_idle if max_idle is None else min(max_idle, self.max_idle)
        try:
            return self._exchange(self._connection(target, idle), target, method, headers, content, deadline)
        except _StaleConnection as stale:
            if not retry_stale:
                raise DeliveryError("connection closed", "the receiver closed a kept-alive connection") from stale
            return self._exchange(self._connection(target, idle), target, method, headers, content, deadline)

    def _connection(self, target: Target, max_idle: float) -> _PinnedConnection:
        now = time.monotonic()
        for origin, kept in list(self._connections.items()):  # idle ones go, whatever their origin
            if origin != target.origin and now - kept.last_used > self.max_idle:
                self._drop(kept)
        connection = self._connections.pop(target.origin, None)  # re-inserted last: LRU order
        if connection is not None and connection.sock is not None and (
            now - connection.last_used > max_idle or connection.closed_by_peer()
        ):
            connection.close()
        if connection is None or connection.sock is None:
            if connection is not None:
                connection.close()
            context = None
            if target.scheme == "https":
                context = _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
            connection = _PinnedConnection(target, resolve_public(target.host, target.port), context)
        self._connections[target.origin] = connection
        while len(self._connections) > self.MAX_CONNECTIONS:
            self._drop(next(iter(self._connections.values())))
        return connection

    def _drop(self, connection: _PinnedConnection) -> None:
        connection.close()
        self._connections.pop(connection.target.origin, None)

    def _exchange(
        self,
        connection: _PinnedConnection,
        target: Target,
        method: str,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        deadline: _Deadline,
    ) -> GuardedResponse:
        connection.deadline = deadline
        connection.received = 0
        connecting = connection.sock is None
        reused = not connecting
        try:
            if connecting:
                connection.connect()
                connecting = False
            connection.putrequest(method, target.request_target, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", target.host_header)
            merged = {**_DEFAULT_HEADERS, **(headers or {})}
            for name, value in merged.items():
                connection.putheader(name, value)
            if content is not None or method in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(content or b"")))
            connection.endheaders(content or None)
            response = connection.getresponse()
            cap = int(settings.MESH_WEBHOOK_MAX_RESPONSE_BYTES)
            body = response.read(cap + 1)
        except _STALE as exc:
            self._drop(connection)
            if reused and not connection.received:  # closed under us before any answer
                raise _StaleConnection from exc
            raise DeliveryError(_reason(exc, connecting), str(exc) or type(exc).__name__) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop(connection)
            raise DeliveryError(_reason(exc, connecting), str(exc) or type(exc).__name__) from exc
        except BaseException:  # e.g. a header value http.client refuses: the request is half-sent
            self._drop(connection)
            raise
        truncated = len(body) > cap
        connection.last_used = time.monotonic()
        if truncated or not response.isclosed() or response.will_close:
            self._drop(connection)  # leftover bytes, or the receiver's wish: never reuse it
        return GuardedResponse(
            status_code=response.status,
            headers=MappingProxyType({key.lower(): value for key, value in response.getheaders()}),
            body=body[:cap],
            truncated=truncated,
            elapsed_ms=deadline.elapsed_ms(),
            address=str(connection.connected_to),
        )


def guarded_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    timeout: float | None = None,
) -> GuardedResponse:
    """One request on a connection of its own (see `Session.request`)."""
    with Session() as session:
        return session.request(method, url, headers=headers, content=content, timeout=timeout)
