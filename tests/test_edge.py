"""The HTTP edge against a real server, uvicorn and Daphne: static files, offline API docs, host checks and
security headers on the lean API stack, header-size limits (raw sockets, because an HTTP
client library refuses to send what is tested here), logging of client errors, empty answers.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests import test_live_server as base
from tests.test_live_server import MANAGEMENT, REST, LiveServer, live_server

# The token and client fixtures, on this module's own server (they ask for `live`).
token = base.token
http = base.http

HSTS_SECONDS = 3600


@pytest.fixture(scope="module", params=base.SERVERS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # HSTS configured, behind a (pretend) TLS-terminating proxy that says so in X-Forwarded-Proto.
    extra = {"SECURE_HSTS_SECONDS": str(HSTS_SECONDS), "MESH_TRUST_X_FORWARDED_PROTO": "true"}
    with live_server(tmp_path_factory.mktemp(f"edge-{request.param}"), extra, server=request.param,
                     collect_static=True) as server:
        yield server


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(live: LiveServer, head: bytes) -> RawAnswer:
    """Send one request head as written and read the answer until the server closes."""
    address = urlsplit(live.base)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    assert data, "the server closed the connection without an answer"
    head_part, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head_part.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(status=int(status_line.split()[1]), headers=headers, body=body)


def get_head(extra_headers: list[bytes], path: bytes = b"/messagingrest/v1/queues/x/messages") -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *extra_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def assert_431_json(answer: RawAnswer) -> None:
    assert answer.status == 431, answer
    assert answer.headers["content-type"].startswith("application/json")
    assert "header" in json.loads(answer.body)["message"].lower()


# 1. Static files


def test_admin_static_files_are_served_hashed_compressed_and_cached(live):
    plain = httpx.get(f"{live.base}/static/admin/css/base.css", timeout=10)
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/css")
    login = httpx.get(f"{live.base}/admin/login/", timeout=10)
    assert login.status_code == 200
    hashed = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', login.text)
    assert hashed, login.text
    identity = httpx.get(f"{live.base}{hashed.group(1)}", headers={"Accept-Encoding": "identity"}, timeout=10)
    assert identity.status_code == 200
    for encoding in ("br", "gzip"):
        answer = httpx.get(f"{live.base}{hashed.group(1)}", headers={"Accept-Encoding": encoding}, timeout=10)
        assert answer.status_code == 200
        assert answer.headers["content-encoding"] == encoding
        assert "immutable" in answer.headers["cache-control"]
        assert "max-age=315360000" in answer.headers["cache-control"]
        assert answer.text == identity.text  # decoded by httpx


def test_favicon_is_a_real_icon(live):
    answer = httpx.get(f"{live.base}/favicon.ico", follow_redirects=True, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    assert answer.content[:4] == b"\x00\x00\x01\x00"  # the ICO file signature


# 2. API docs offline


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_api_docs_pages_load_only_local_assets(live, page):
    answer = httpx.get(f"{live.base}{page}", timeout=10)
    assert answer.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', answer.text)
    assert assets, answer.text
    for asset in assets:
        assert not re.match(r"(?i)(https?:)?//", asset), f"{page} loads {asset} from elsewhere"
        assert httpx.get(urljoin(f"{live.base}{page}", asset), timeout=10).status_code == 200, asset
    assert "/api/schema/" in answer.text


# 5. Host check and security headers on the API stack


@pytest.mark.parametrize("path", [f"{REST}/queues/a%2Fb%2Fc%2Fq/messages/consumption",
                                  f"{MANAGEMENT}/queues", "/oauth/token"])
def test_api_paths_refuse_a_host_not_allowed(live, token, path):
    answer = httpx.post(f"{live.base}{path}", timeout=10,
                        headers={"Host": "evil.example", "Authorization": f"Bearer {token}", "x-qos": "0"})
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/json")
    assert "evil.example" in answer.json()["message"]


def test_api_answers_carry_the_security_headers(live, http):
    assert http.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Fsec").status_code == 201
    answers = [
        http.get(f"{MANAGEMENT}/queues"),
        http.post(f"{REST}/queues/a%2Fb%2Fc%2Fsec/messages", content=b"x",
                  headers={"Content-Type": "text/plain", "x-qos": "0"}),
        httpx.get(f"{live.base}{MANAGEMENT}/queues", timeout=10),  # 401
    ]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
        assert answer.headers["cross-origin-opener-policy"] == "same-origin"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "strict-transport-security" not in answer.headers  # plain HTTP
    secure = http.get(f"{MANAGEMENT}/queues", headers={"X-Forwarded-Proto": "https"})
    assert secure.headers["strict-transport-security"] == f"max-age={HSTS_SECONDS}"


# 8. Header limits, under both servers: Twisted refuses some itself (meshsite/daphnelimits.py
# gives its answer our shape), httptools none, so the ASGI check (meshsite/headerlimit.py) does.


def test_one_huge_header_gets_431_json(live):
    assert_431_json(raw_request(live, get_head([b"X-Big: " + b"y" * 20_000])))


def test_too_many_headers_get_431_json(live):
    # 501 passes Twisted's own count limit; 150 gets through Daphne to the ASGI check;
    # uvicorn with httptools hands both to the ASGI check.
    for count in (501, 150):
        headers = [b"X-H%d: v" % number for number in range(count)]
        assert_431_json(raw_request(live, get_head(headers)))


def test_headers_over_the_total_size_get_431_json(live):
    assert_431_json(raw_request(live, get_head([b"X-H%d: %s" % (n, b"v" * 1000) for n in range(20)])))


def test_headers_within_the_limits_are_served(live):
    answer = raw_request(live, get_head([b"X-H%d: %s" % (n, b"v" * 100) for n in range(60)],
                                        path=b"/api/schema/"))
    assert answer.status == 200


# 13. Logs


def test_unknown_message_id_is_logged_at_info_with_the_raw_path(live, http):
    assert http.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Flogged").status_code == 201
    path = f"{REST}/queues/a%2Fb%2Fc%2Flogged/messages/00000000-0000-0000-0000-000000000000/acknowledgement"
    assert http.post(path).status_code == 404
    lines = [line for line in live.log.read_text().splitlines() if "Not Found:" in line and "logged" in line]
    assert lines, live.log.read_text()
    assert all(" INFO django.request " in line for line in lines), lines
    assert any(line.endswith(f"Not Found: {path}") for line in lines), lines


# Empty answers


def test_empty_answers_carry_no_content_type(http):
    assert http.put(f"{MANAGEMENT}/queues/a%2Fb%2Fc%2Fempty").status_code == 201
    messages = f"{REST}/queues/a%2Fb%2Fc%2Fempty/messages"
    published = http.post(messages, content=b"x", headers={"Content-Type": "text/plain", "x-qos": "1"})
    consumed = http.post(f"{messages}/consumption", headers={"x-qos": "1"})
    acked = http.post(f"{messages}/{consumed.headers['x-message-id']}/acknowledgement")
    nothing = http.post(f"{messages}/consumption", headers={"x-qos": "1"})
    assert [published.status_code, acked.status_code, nothing.status_code] == [204, 200, 204]
    for answer in (published, acked, nothing):
        assert answer.content == b""
        assert "content-type" not in answer.headers, answer.headers
    assert consumed.headers["content-type"] == "text/plain"
