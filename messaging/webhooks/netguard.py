"""The SSRF guard: the one way meshsite makes an outbound HTTP request.

Webhook pushes, handshakes and OAuth2 token fetches name URLs chosen by tenants, so every
one of them goes through `guarded_request`. The rule is judged on the *resolved* address,
not on the spelling of the host: `getaddrinfo` turns `2130706433`, `0x7f000001`,
`0177.0.0.1` and `127.1` into `127.0.0.1` (httpx's URL parser already refuses the
zero-padded one), and every address a name resolves to must be public
(`MESH_WEBHOOK_ALLOWED_NETWORKS` admits extra CIDR ranges, e.g. a receiver on a
developer's machine). The name is resolved once and the socket is opened to the address
that was checked -- a custom httpcore network backend ignores DNS entirely -- so a DNS
answer that changes between check and connect (rebinding) cannot redirect the request.
The URL keeps its hostname, so the Host header, TLS SNI and certificate verification
all use the name the tenant gave. Redirects are never followed, the whole exchange runs
under one wall-clock deadline (each socket read and write gets only the time left), and
at most `MESH_WEBHOOK_MAX_RESPONSE_BYTES` of the response body are read.

TLS roots come from `httpx.create_ssl_context()`: certifi's bundle, or the file named by
`SSL_CERT_FILE` (or the directory named by `SSL_CERT_DIR`) when set -- which then *replaces*
the certifi bundle. Proxy variables (`HTTP_PROXY`, ...) are deliberately ignored: a proxy
would resolve the name itself and make the address check meaningless.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpcore
import httpx
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


def validate_url(url: str) -> str:
    """Return `url` unchanged if it is an http(s) URL with a host and no credentials.

    The URL is parsed with httpx, the same parser that sends the request, so the host
    judged here is the host connected to (no parser differential).
    """
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"endpoint is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidURL(f"endpoint is not a valid URL: {exc}") from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise InvalidURL(f"endpoint scheme must be http or https, not {parsed.scheme or 'missing'!r}")
    if not parsed.raw_host:
        raise InvalidURL("endpoint has no host")
    if parsed.userinfo:
        raise InvalidURL("endpoint must not carry credentials (user:password@); use securitySchema instead")
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


# --- the pinned, deadline-bound transport ---------------------------------------------------


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.at = self.started + seconds

    def clamp(self, timeout: float | None, error: type[Exception]) -> float:
        """The per-operation timeout cut to the time left; `error` once none is left."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise error("total deadline passed")
        return left if timeout is None else min(timeout, left)

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose reads and writes never outlive the request's total deadline.

    httpx's read timeout is per read, so a receiver trickling a byte at a time would never
    trip it; clamping each operation to the time left bounds the whole exchange.
    """

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Sliced so that a receiver reading slowly cannot stretch one big write past the deadline.
        for start in range(0, len(buffer), _WRITE_SLICE):
            chunk = buffer[start : start + _WRITE_SLICE]
            self._inner.write(chunk, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        clamped = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, clamped), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Opens sockets only to the checked addresses of the one origin it was made for."""

    def __init__(self, host: str, port: int, addresses: list[IPAddress], deadline: _Deadline) -> None:
        self._origin = (host, port)
        self._addresses = addresses
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()
        self.connected_to: IPAddress | None = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if (host, port) != self._origin:  # redirects are off; this is a guard against future change
            raise httpcore.ConnectError(f"refusing to connect to unchecked origin {host}:{port}")
        last_error: Exception = httpcore.ConnectError("no address")
        for ip in self._addresses:  # in resolver order, falling back like a browser would
            clamped = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(str(ip), port, clamped, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            self.connected_to = ip
            return _DeadlineStream(stream, self._deadline)
        raise last_error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not an outbound destination")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _PinnedTransport(httpx.HTTPTransport):
    def __init__(self, backend: _PinnedBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # HTTPTransport has no network_backend parameter; its request and exception mapping
        # only use `_pool`, so swap in a pool that connects through the pinned backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=1, max_keepalive_connections=0, network_backend=backend
        )


@functools.lru_cache(maxsize=4)
def _ssl_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # Keyed on the variables httpx reads, so changing SSL_CERT_FILE takes effect; loading a
    # CA bundle costs milliseconds, too much to repeat on every push.
    return httpx.create_ssl_context()


# --- the request ---------------------------------------------------------------------------


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused"
    if any(isinstance(c, ssl.SSLError) for c in causes):
        return "tls error"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol error"
    return "connection error"


def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > cap:  # stop reading; leaving the stream closes the connection
            return bytes(body[:cap]), True
    return bytes(body), False


def guarded_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    timeout: float | None = None,
) -> GuardedResponse:
    """Send one request to a public address; a 3xx comes back as the response.

    `timeout` overrides MESH_WEBHOOK_TIMEOUT, the total budget from name lookup to the
    last body byte. Raises InvalidURL or BlockedAddress before any connection, and
    DeliveryError (reason "timeout", "connection refused", "tls error", "dns failure", ...)
    when the exchange fails.
    """
    parsed = httpx.URL(validate_url(url))
    host, port = parsed.raw_host.decode("ascii"), parsed.port or _DEFAULT_PORTS[parsed.scheme]
    total = float(timeout if timeout is not None else settings.MESH_WEBHOOK_TIMEOUT)
    deadline = _Deadline(total)
    backend = _PinnedBackend(host, port, resolve_public(host, port), deadline)
    context = _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    limits = httpx.Timeout(total, connect=min(float(settings.MESH_WEBHOOK_CONNECT_TIMEOUT), total))
    cap = int(settings.MESH_WEBHOOK_MAX_RESPONSE_BYTES)
    # trust_env=False: with it on, httpx would route through HTTP_PROXY/ALL_PROXY mounts,
    # bypassing the pinned transport.
    client = httpx.Client(
        transport=_PinnedTransport(backend, context),
        trust_env=False,
        follow_redirects=False,
        timeout=limits,
        headers=_DEFAULT_HEADERS,
    )
    try:
        with client, client.stream(method, url, headers=headers, content=content) as response:
            body, truncated = _read_capped(response, cap)
    except httpx.HTTPError as exc:
        raise DeliveryError(_reason(exc), str(exc)) from exc
    return GuardedResponse(
        status_code=response.status_code,
        headers=MappingProxyType({key.lower(): value for key, value in response.headers.items()}),
        body=body,
        truncated=truncated,
        elapsed_ms=deadline.elapsed_ms(),
        address=str(backend.connected_to),
    )
