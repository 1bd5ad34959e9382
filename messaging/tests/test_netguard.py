"""The SSRF guard against real sockets: every blocked address form is refused before a
connection (a canary listener counts them), and real local receivers exercise redirects,
timeouts, slow bodies, the body cap, TLS and the pinned (rebinding-proof) connect."""

from __future__ import annotations

import contextlib
import datetime
import gzip
import ipaddress
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from messaging.webhooks.netguard import (
    BlockedAddress,
    DeliveryError,
    InvalidURL,
    Session,
    UnresolvableHost,
    _PinnedConnection,
    guarded_request,
    parse_url,
    resolve_public,
    validate_url,
)

Reply = Callable[[socket.socket, "Receiver"], None]


class _Handler(socketserver.BaseRequestHandler):
    server: Receiver

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
        sock = self.request
        if self.server.tls is not None:
            sock = self.server.tls.wrap_socket(sock, server_side=True)
        self.server.reply(sock, self.server)


class Receiver(socketserver.ThreadingTCPServer):
    """A TCP server on a loopback port; `reply` handles each connection in its own thread."""

    daemon_threads = True

    def __init__(self, host: str, port: int, reply: Reply, stop: threading.Event, tls: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.reply, self.stop, self.tls = reply, stop, tls
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        super().__init__((host, port), _Handler)
        self.port: int = self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-reply (timeouts, the body cap) are what these tests do


def _read_request(sock: socket.socket, server: Receiver) -> None:
    stream = sock.makefile("rb")
    line = stream.readline().decode().strip()
    headers: dict[str, str] = {}
    while (raw := stream.readline()) not in (b"\r\n", b""):
        name, _, value = raw.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    server.requests.append((line, headers, stream.read(int(headers.get("content-length", 0)))))


def respond(status: str = "200 OK", body: bytes = b"ok", headers: str = "", delay: float = 0) -> Reply:
    def reply(sock: socket.socket, server: Receiver) -> None:
        _read_request(sock, server)
        server.stop.wait(delay)
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}Connection: close\r\n\r\n"
        sock.sendall(head.encode() + body)

    return reply


def trickle(head: bytes, drip: bytes, every: float) -> Reply:
    """Send `head`, then `drip` every `every` s for up to 5 s: each read is quick, the whole is not."""

    def reply(sock: socket.socket, server: Receiver) -> None:
        _read_request(sock, server)
        sock.sendall(head)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not server.stop.wait(every):
            sock.sendall(drip)

    return reply


def hang_up(sock: socket.socket, server: Receiver) -> None:
    pass


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    stop, servers = threading.Event(), []

    def start(reply: Reply, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> Receiver:
        server = Receiver(host, port, reply, stop, tls)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def canary(serve: Callable[..., Receiver]) -> Iterator[Receiver]:
    """A listener that counts connections, on 127.0.0.1 and (if possible) ::1 with the same port."""
    v4 = serve(hang_up)
    try:
        v6 = serve(hang_up, host="::1", port=v4.port)
    except OSError:
        v6 = None
    yield v4
    assert v4.connections == 0 and (v6 is None or v6.connections == 0), "a blocked request reached the canary"


@pytest.fixture(autouse=True)
def netguard_settings(settings: Any) -> Any:
    settings.MESH_WEBHOOK_ALLOWED_NETWORKS = []
    settings.MESH_WEBHOOK_CONNECT_TIMEOUT = 1
    settings.MESH_WEBHOOK_TIMEOUT = 2
    settings.MESH_WEBHOOK_MAX_RESPONSE_BYTES = 64 * 1024
    return settings


@pytest.fixture
def local(netguard_settings: Any) -> Any:
    netguard_settings.MESH_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    return netguard_settings


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Names in `answers` resolve to the listed addresses, in turn per lookup; `lookups` counts them."""
    real = socket.getaddrinfo
    state: dict[str, Any] = {"answers": {}, "lookups": {}}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in state["answers"]:
            return real(host, port, *args, **kwargs)
        count = state["lookups"][host] = state["lookups"].get(host, 0) + 1
        addresses = state["answers"][host][min(count, len(state["answers"][host])) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return state


@pytest.fixture
def unchecked_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the idle check cannot see: the receiver closes just after the check passed."""
    monkeypatch.setattr(_PinnedConnection, "closed_by_peer", lambda self: False)


def serve_tls(
    serve: Callable[..., Receiver], reply: Reply, fake_dns: dict[str, Any], directory: Path
) -> tuple[Receiver, str, Path]:
    """A TLS receiver for receiver.test with a self-signed certificate; returns it, its URL
    and the certificate (for SSL_CERT_FILE)."""
    cert_path, key_path = _self_signed("receiver.test", directory)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_path, key_path)
    receiver = serve(reply, tls=tls)
    fake_dns["answers"]["receiver.test"] = [["127.0.0.1"]]
    return receiver, url_for("receiver.test", receiver.port, scheme="https"), cert_path


def url_for(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"


BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("localhost", "loopback"),
    ("2130706433", "127.0.0.1, a loopback"),
    ("0x7f000001", "127.0.0.1, a loopback"),
    ("0177.0.0.1", "127.0.0.1, a loopback"),
    ("127.1", "127.0.0.1, a loopback"),
    ("0.0.0.0", "'this network'"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "IPv4-mapped form of a loopback"),
    ("64:ff9b::7f00:1", "NAT64 form of a loopback"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("2002:7f00:1::1", "6to4 form of a loopback"),
    ("2001::1", "Teredo"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fc00::1", "unique-local"),
    ("224.0.0.1", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("198.18.0.1", "non-public"),
]


@pytest.mark.parametrize(("host", "why"), BLOCKED)
def test_blocked_address_forms_never_reach_a_socket(host: str, why: str, canary: Receiver) -> None:
    with pytest.raises(BlockedAddress, match="public addresses") as refused:
        resolve_public(host, canary.port)
    assert why in str(refused.value)
    with pytest.raises(BlockedAddress):
        guarded_request("POST", url_for(host, canary.port), content=b"secret")


def test_canary_counts_a_real_connection(canary: Receiver) -> None:
    socket.create_connection(("127.0.0.1", canary.port)).close()
    deadline = time.monotonic() + 2
    while canary.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert canary.connections == 1  # so the zero the canary asserts elsewhere means something
    canary.connections = 0


@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_and_their_ipv6_forms_pass(host: str) -> None:
    assert resolve_public(host, 443) == [ipaddress.ip_address(host)]


def test_one_private_answer_among_public_ones_refuses_the_name(fake_dns: dict[str, Any]) -> None:
    fake_dns["answers"]["mixed.example"] = [["8.8.8.8", "10.1.2.3"]]
    with pytest.raises(BlockedAddress, match="mixed.example resolves to 10.1.2.3, a private address"):
        resolve_public("mixed.example", 443)


def test_allowed_networks_admit_only_their_ranges(local: Any) -> None:
    assert resolve_public("127.0.0.1", 80) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(BlockedAddress):
        resolve_public("10.0.0.1", 80)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/file", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com:70/_stats", "scheme"),
        ("example.com/path", "scheme"),
        ("http://user:pass@example.com/", "credentials"),
        ("https://token@example.com/", "credentials"),
        ("http:///path", "no host"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com\\@127.0.0.1/", "backslash"),
        ("http://example.com/\r\nX-Injected: 1", "control characters"),
        ("http://ex!ample.com/", "not a valid host name"),
        ("http://[127.0.0.1]/", "not a valid URL"),
        ("http://[fe80::1%25eth0]/", "not an IPv6 address"),
        ("http://example.com:0/", "between 1 and 65535"),
        ("https://example.com/" + "a" * 2048, "longer than 2048"),
    ],
)
def test_invalid_urls_are_rejected_before_any_lookup(url: str, message: str, fake_dns: dict[str, Any]) -> None:
    with pytest.raises(InvalidURL, match=message):
        validate_url(url)
    with pytest.raises(InvalidURL, match=message):
        guarded_request("GET", url)
    assert fake_dns["lookups"] == {}
    assert validate_url("https://receiver.example:8443/hook?x=1") == "https://receiver.example:8443/hook?x=1"


def test_unresolvable_host_is_a_dns_failure() -> None:
    with pytest.raises(UnresolvableHost, match="nothing.invalid could not be resolved") as failed:
        guarded_request("POST", "http://nothing.invalid/hook")
    assert failed.value.reason == "dns failure"
    assert isinstance(failed.value, DeliveryError) and isinstance(failed.value, ValueError)


def test_local_receiver_admitted_by_allowed_networks(local: Any, serve: Callable[..., Receiver]) -> None:
    receiver = serve(respond("201 Created", b'{"ok": true}', "X-Trace: abc\r\n"))
    response = guarded_request(
        "POST", url_for("127.0.0.1", receiver.port) + "hook?x=1", headers={"x-qos": "1"}, content=b"payload"
    )
    assert (response.status_code, response.body, response.truncated) == (201, b'{"ok": true}', False)
    assert response.headers["x-trace"] == "abc" and response.address == "127.0.0.1"
    assert 0 < response.elapsed_ms < 2000
    line, headers, body = receiver.requests[0]
    assert (line, headers["x-qos"], body) == ("POST /hook?x=1 HTTP/1.1", "1", b"payload")
    assert headers["accept-encoding"] == "identity"  # a compressed reply could not be capped


def test_compressed_body_is_not_inflated_past_the_cap(local: Any, serve: Callable[..., Receiver]) -> None:
    local.MESH_WEBHOOK_MAX_RESPONSE_BYTES = 4096
    bomb = gzip.compress(bytes(1_000_000))  # about 1 KB on the wire, 1 MB inflated
    receiver = serve(respond(body=bomb, headers="Content-Encoding: gzip\r\n"))
    response = guarded_request("GET", url_for("127.0.0.1", receiver.port))
    assert (response.body, response.truncated) == (bomb, False)


def test_redirect_is_returned_not_followed(local: Any, serve: Callable[..., Receiver], canary: Receiver) -> None:
    target = url_for("127.0.0.1", canary.port)
    receiver = serve(respond("302 Found", b"", f"Location: {target}\r\n"))
    response = guarded_request("POST", url_for("127.0.0.1", receiver.port), content=b"x")
    assert response.status_code == 302 and response.headers["location"] == target
    # the canary fixture asserts at teardown that the redirect target saw no connection


def test_slow_receiver_is_cut_at_the_timeout(local: Any, serve: Callable[..., Receiver]) -> None:
    local.MESH_WEBHOOK_TIMEOUT = 1
    receiver = serve(respond(delay=4))
    started = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        guarded_request("POST", url_for("127.0.0.1", receiver.port), content=b"x")
    assert failed.value.reason == "timeout"
    assert 0.9 < time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "reply",
    [
        trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x", every=0.2),  # a slow body
        trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: 1\r\n", every=0.2),  # slow headers, never finished
        # A read begun just before the deadline must not run its full timeout past it.
        trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x", every=0.9),
    ],
    ids=["body", "headers", "read-straddling-deadline"],
)
def test_trickling_receiver_is_cut_at_the_total_deadline(
    reply: Reply, local: Any, serve: Callable[..., Receiver]
) -> None:
    local.MESH_WEBHOOK_TIMEOUT = 1  # each drip arrives well inside a per-read timeout
    receiver = serve(reply)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        guarded_request("GET", url_for("127.0.0.1", receiver.port))
    assert failed.value.reason == "timeout"
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(("size", "truncated"), [(1024, False), (1025, True), (300_000, True)])
def test_response_body_is_capped(size: int, truncated: bool, local: Any, serve: Callable[..., Receiver]) -> None:
    local.MESH_WEBHOOK_MAX_RESPONSE_BYTES = 1024
    receiver = serve(respond(body=b"b" * size))
    response = guarded_request("GET", url_for("127.0.0.1", receiver.port))
    assert response.body == b"b" * min(size, 1024)
    assert response.truncated is truncated


def test_connection_refused_is_reported(local: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeliveryError) as failed:
        guarded_request("POST", url_for("127.0.0.1", port), content=b"x")
    assert failed.value.reason == "connection refused"


def test_name_is_resolved_once_and_the_checked_address_is_used(
    local: Any, serve: Callable[..., Receiver], fake_dns: dict[str, Any]
) -> None:
    receiver = serve(respond())
    # A rebinding resolver: an allowed answer for the check, a different one for any later lookup.
    fake_dns["answers"]["receiver.example"] = [["127.0.0.1"], ["10.9.9.9"]]
    response = guarded_request("POST", url_for("receiver.example", receiver.port), content=b"x")
    assert response.status_code == 200 and response.address == "127.0.0.1"
    assert fake_dns["lookups"] == {"receiver.example": 1}
    assert receiver.requests[0][1]["host"] == f"receiver.example:{receiver.port}"


def keep_alive(count: int = 10, close_after: int | None = None, reset_mid_answer: int | None = None) -> Reply:
    """Answer up to `count` requests on one connection. After `close_after` answers, read the
    next request and hang up without a word; at request `reset_mid_answer`, send half an
    answer and reset the connection."""

    def reply(sock: socket.socket, server: Receiver) -> None:
        stream = sock.makefile("rb")
        for n in range(count):
            line = stream.readline().decode().strip()
            if not line:
                return
            headers: dict[str, str] = {}
            while (raw := stream.readline()) not in (b"\r\n", b""):
                name, _, value = raw.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            server.requests.append((line, headers, stream.read(int(headers.get("content-length", 0)))))
            if n == close_after:
                return
            if n == reset_mid_answer:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return reply


def test_session_keeps_one_connection_alive_across_requests(local: Any, serve: Callable[..., Receiver]) -> None:
    receiver = serve(keep_alive())
    with Session() as session:
        for n in range(5):
            response = session.request("POST", url_for("127.0.0.1", receiver.port), content=f"m{n}".encode())
            assert (response.status_code, response.body) == (200, b"ok")
    assert receiver.connections == 1
    assert [body for _, _, body in receiver.requests] == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_a_kept_alive_connection_closed_by_the_receiver_is_not_reused(
    local: Any, serve: Callable[..., Receiver]
) -> None:
    receiver = serve(keep_alive(close_after=1))  # answers one request, then closes on the next
    with Session() as session:
        url = url_for("127.0.0.1", receiver.port)
        assert session.request("POST", url, content=b"a").status_code == 200
        deadline = time.monotonic() + 2
        while len(receiver.requests) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert session.request("POST", url, content=b"b").status_code == 200
    assert [body for _, _, body in receiver.requests][:2] == [b"a", b"b"]


@pytest.mark.parametrize("retry_stale", [True, False])
def test_a_request_lost_on_a_reused_connection_is_retried_only_when_allowed(
    retry_stale: bool, local: Any, serve: Callable[..., Receiver], unchecked_reuse: None
) -> None:
    receiver = serve(keep_alive(close_after=1))  # reads the second request, then hangs up
    with Session() as session:
        url = url_for("127.0.0.1", receiver.port)
        assert session.request("POST", url, content=b"a").status_code == 200
        if retry_stale:
            assert session.request("POST", url, content=b"b", retry_stale=True).status_code == 200
            assert [body for _, _, body in receiver.requests] == [b"a", b"b", b"b"]
        else:
            with pytest.raises(DeliveryError) as failed:
                session.request("POST", url, content=b"b", retry_stale=False)
            assert failed.value.reason == "connection closed"
            assert [body for _, _, body in receiver.requests] == [b"a", b"b"]  # sent once, never again


def test_an_answer_broken_off_midway_is_never_sent_again(
    local: Any, serve: Callable[..., Receiver], unchecked_reuse: None
) -> None:
    receiver = serve(keep_alive(reset_mid_answer=1))
    with Session() as session:
        url = url_for("127.0.0.1", receiver.port)
        assert session.request("POST", url, content=b"a").status_code == 200
        with contextlib.suppress(DeliveryError):  # the status line arrived: it may count as answered
            session.request("POST", url, content=b"b", retry_stale=True)
    assert [body for _, _, body in receiver.requests] == [b"a", b"b"]  # the receiver answered: never sent again


def test_a_receiver_that_hangs_up_without_answering_fails_the_request(
    local: Any, serve: Callable[..., Receiver]
) -> None:
    receiver = serve(keep_alive(close_after=0))
    with pytest.raises(DeliveryError) as failed:
        guarded_request("POST", url_for("127.0.0.1", receiver.port), content=b"x")
    assert failed.value.reason == "connection closed"
    assert receiver.connections == 1  # a fresh connection is not retried: the receiver may have the message


def test_every_new_connection_checks_the_address_again(
    local: Any, serve: Callable[..., Receiver], fake_dns: dict[str, Any]
) -> None:
    receiver = serve(respond())  # answers with Connection: close, so each request needs a new connection
    fake_dns["answers"]["receiver.example"] = [["127.0.0.1"], ["10.9.9.9"]]
    with Session() as session:
        assert session.request("POST", url_for("receiver.example", receiver.port), content=b"x").status_code == 200
        with pytest.raises(BlockedAddress, match="10.9.9.9, a private address"):
            session.request("POST", url_for("receiver.example", receiver.port), content=b"x")
    assert receiver.connections == 1


def test_a_refused_header_value_leaves_no_half_sent_request(local: Any, serve: Callable[..., Receiver]) -> None:
    receiver = serve(keep_alive())
    with Session() as session:
        url = url_for("127.0.0.1", receiver.port)
        assert session.request("POST", url, content=b"a").status_code == 200
        with pytest.raises(ValueError, match="header"):
            session.request("POST", url, headers={"x-bad": "a\r\nInjected: 1"}, content=b"b")
        assert session.request("POST", url, content=b"c").status_code == 200
    assert [body for _, _, body in receiver.requests] == [b"a", b"c"]


def test_parse_url_keeps_the_name_and_splits_the_target() -> None:
    target = parse_url("https://Receiver.Example:8443/hook/x?y=1#fragment")
    assert (target.host, target.port, target.request_target) == ("receiver.example", 8443, "/hook/x?y=1")
    assert target.host_header == "receiver.example:8443"
    assert parse_url("http://[::1]/").host_header == "[::1]"
    assert parse_url("https://bücher.example").host == "xn--bcher-kva.example"
    assert parse_url("https://receiver.example./hook").host == "receiver.example"  # the root label dropped
    assert parse_url("http://r.example/päth?q=ü").request_target == "/p%C3%A4th?q=%C3%BC"


def test_a_non_ascii_path_is_sent_percent_encoded(local: Any, serve: Callable[..., Receiver]) -> None:
    receiver = serve(respond())
    assert guarded_request("POST", url_for("127.0.0.1", receiver.port) + "hoök", content=b"x").status_code == 200
    assert receiver.requests[0][0] == "POST /ho%C3%B6k HTTP/1.1"


def test_proxy_environment_is_ignored(
    local: Any, serve: Callable[..., Receiver], canary: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, url_for("127.0.0.1", canary.port))
    receiver = serve(respond())
    assert guarded_request("GET", url_for("127.0.0.1", receiver.port)).status_code == 200
    assert len(receiver.requests) == 1


def _self_signed(name: str, directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_https_verifies_the_hostname_against_ssl_cert_file(
    local: Any,
    serve: Callable[..., Receiver],
    fake_dns: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    receiver, url, cert_path = serve_tls(serve, respond(body=b"secure"), fake_dns, tmp_path)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(DeliveryError) as failed:  # certifi's roots do not know this certificate
        guarded_request("GET", url)
    assert failed.value.reason == "tls error"

    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    assert guarded_request("GET", url).body == b"secure"  # the cert names only receiver.test


def test_idle_connections_to_other_origins_are_closed_and_the_cache_is_bounded(
    local: Any, serve: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    receivers = [serve(keep_alive()) for _ in range(4)]
    with Session(max_idle=0.2) as session:
        session.request("POST", url_for("127.0.0.1", receivers[0].port), content=b"x")
        time.sleep(0.3)
        session.request("POST", url_for("127.0.0.1", receivers[1].port), content=b"x")
        assert list(session._connections) == [("http", "127.0.0.1", receivers[1].port)]  # the idle one went
        monkeypatch.setattr(Session, "MAX_CONNECTIONS", 2)
        for receiver in receivers[2:]:
            session.request("POST", url_for("127.0.0.1", receiver.port), content=b"x")
        assert [origin[2] for origin in session._connections] == [receivers[2].port, receivers[3].port]


def test_a_tls_connection_closed_without_close_notify_counts_as_stale(
    local: Any,
    serve: Callable[..., Receiver],
    fake_dns: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    unchecked_reuse: None,
) -> None:
    # Answers once, then drops the socket while idle.
    receiver, url, cert_path = serve_tls(serve, keep_alive(count=1), fake_dns, tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with Session() as session:
        assert session.request("POST", url, content=b"a").status_code == 200
        time.sleep(0.2)  # the receiver has gone; the request goes into its closed socket
        assert session.request("POST", url, content=b"b", retry_stale=True).status_code == 200
    assert [body for _, _, body in receiver.requests] == [b"a", b"b"]
