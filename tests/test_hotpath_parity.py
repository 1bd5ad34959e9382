"""The hot path answers every request as the DRF views do: the same status, body and headers.

Two live servers with the same settings but MESH_HOT_PATH on and off (messaging/hotpath/
against messaging/api/rest.py), each with its own database holding the same instances, keys
and queues. Every case sends the same requests to both and compares what comes back, header
by header and byte by byte (what is random, a message id, only by its form), and also states
the status it expects, so that the two cannot pass by being wrong together. A pair runs under
uvicorn and a pair under Daphne, so that what a server adds is the same on both sides.

`test_the_hot_server_serves_from_the_hot_path` shows that the hot server's publishes really
take the hot path, so that the comparison is not of the DRF views with themselves. Two
differences are by design: the hot path frames its bodies with Content-Length where the DRF
views leave the server to chunk, and it keeps an empty message's own Content-Type where the
API guard drops it (`empty_body`).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.test_live_server import BODY_LIMIT, MANAGEMENT, MAX_MESSAGE_SIZE, REST, LiveServer, live_server, manage

ACK_TIMEOUT = 2
MAX_EXPIRATION_MS = 30 * 24 * 3600 * 1000
SETTINGS = {
    "MESH_ACK_TIMEOUT": str(ACK_TIMEOUT),
    # Only the probe changes a queue behind the caches' back (every case changes queues through
    # the server's own management API, which the hot path's caches hear of at once).
    "MESH_TOPOLOGY_CHECK_MS": "3600000",
}
# What the server or the moment decides, not the application. How the body is framed is
# compared apart (`framing`): the DRF views leave it to the server, which chunks.
VARIABLE = {"date", "server", "content-length", "transfer-encoding"}
INSTANCES: dict[str, dict[str, Any]] = {
    # Its rules also admit the first instance's names: a name that exists there is unknown here (404).
    "other": {"namespace": "d/e/f", "rules": {"queueRules": {
        "publishFilter": ["${namespace}/*", "a/b/c/*"], "subscribeFilter": ["${namespace}/*", "a/b/c/*"],
    }}},
    "ruled": {"namespace": "r/s/t", "rules": {
        "queueRules": {"publishFilter": ["r/s/t/pub/*"], "subscribeFilter": ["r/s/t/sub/*"]},
        "topicRules": {"publishFilter": ["r/s/t/pub/*"], "subscribeFilter": ["r/s/t/sub/*"]},
    }},
    "off": {"namespace": "o/f/f", "options": {"messagingrest": False}},
}
KEYS = {"k1": "live", "k2": "live", "other": "other", "ruled": "ruled", "off": "off"}


def enc(name: str) -> str:
    return quote(name, safe="")


Headers = dict[str, Any] | list[tuple[str, Any]]
Path_ = str | Callable[["Side"], str]


@dataclass
class Side:
    server: LiveServer
    tokens: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, *, key: str | None, headers: Headers,
                content: bytes | None) -> httpx.Response:
        sent = list(headers.items()) if isinstance(headers, dict) else list(headers)
        if key is not None:
            sent.append(("Authorization", f"Bearer {self.tokens[key]}"))
        with httpx.Client(base_url=self.server.base, timeout=30) as client:
            request = client.build_request(method, path, headers=sent, content=content)
            raw_path = path.encode("latin-1") if isinstance(path, str) else path
            assert request.url.raw_path == raw_path, "httpx changed the path: the case would test something else"
            return client.send(request)

    def management(self, method: str, path: str, body: dict[str, Any] | None = None, *, key: str = "k1") -> int:
        headers = {"Authorization": f"Bearer {self.tokens[key]}"}
        response = httpx.request(method, f"{self.server.base}{MANAGEMENT}{path}", json=body, headers=headers,
                                 timeout=30)
        return response.status_code


def token_for(server: LiveServer, key: dict[str, Any]) -> str:
    oa2 = key["messaging"][1]["oa2"]
    response = httpx.post(oa2["tokenendpoint"], data={"grant_type": "client_credentials"},
                          auth=(oa2["clientid"], oa2["clientsecret"]), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def provision(server: LiveServer) -> Side:
    """The same instances and keys on every server (the queues come with each case)."""
    side = Side(server)
    for name, descriptor in INSTANCES.items():
        manage(server.env, "create_service", "event-mesh", "default", name, "-c", json.dumps(descriptor))
    for key, instance in KEYS.items():
        made = server.key if key == "k1" else json.loads(manage(server.env, "create_service_key", instance, key))
        side.tokens[key] = token_for(server, made)
    return side


def observed(response: httpx.Response) -> dict[str, Any]:
    headers = [(name.lower(), value) for name, value in response.headers.multi_items()
               if name.lower() not in VARIABLE]
    for index, (name, value) in enumerate(headers):
        if name == "x-message-id":
            uuid.UUID(value)  # random on each side: compared by its form
            headers[index] = (name, "<uuid>")
    return {"status": response.status_code, "headers": sorted(headers), "body": response.content}


def framing(response: httpx.Response) -> None:
    """What either side must get right however it frames the body."""
    if response.status_code == 204:
        assert "content-length" not in response.headers and "transfer-encoding" not in response.headers
    elif "content-length" in response.headers:
        assert int(response.headers["content-length"]) == len(response.content)


class Pair:
    """The hot server and the reference, provisioned alike; every call goes to both."""

    names = itertools.count()

    def __init__(self, hot: Side, ref: Side) -> None:
        self.hot, self.ref = hot, ref

    def queue(self, label: str, attributes: dict[str, Any] | None = None, *, key: str = "k1",
              namespace: str = "a/b/c") -> str:
        """A fresh queue of that name on both servers (fresh for every run of a case)."""
        name = f"{namespace}/{label}{next(self.names)}"
        for side in (self.hot, self.ref):
            assert side.management("PUT", f"/queues/{enc(name)}", attributes, key=key) == 201
        return name

    def subscribe(self, queue: str, pattern: str) -> None:
        for side in (self.hot, self.ref):
            assert side.management("PUT", f"/queues/{enc(queue)}/subscriptions/{enc(pattern)}") == 201

    def send(self, path: Path_, *, expect: int, method: str = "POST", key: str | None = "k1",
             headers: Headers | Callable[[Side], Headers] | None = None, content: bytes | None = None,
             ) -> tuple[httpx.Response, httpx.Response]:
        answers = []
        for side in (self.hot, self.ref):
            where = path(side) if callable(path) else path
            sent = headers(side) if callable(headers) else headers
            answers.append(side.request(method, where, key=key, headers=sent or {}, content=content))
        hot, ref = answers
        framing(hot)
        framing(ref)
        assert observed(hot) == observed(ref), f"{method} {path}: hot path (left) and DRF (right) differ"
        assert hot.status_code == expect, (hot.status_code, hot.content)
        return hot, ref

    def publish(self, name: str, content: bytes = b"m", *, expect: int = 204, topic: bool = False,
                qos: str = "1", content_type: Any = "text/plain", **extra: Any) -> tuple[httpx.Response, ...]:
        headers = {"x-qos": qos, "Content-Type": content_type, **extra.pop("headers", {})}
        kind = "topics" if topic else "queues"
        return self.send(f"{REST}/{kind}/{enc(name)}/messages", expect=expect, headers=headers, content=content,
                         **extra)

    def consume(self, name: str, *, expect: int = 200, qos: str = "1", **extra: Any) -> tuple[httpx.Response, ...]:
        return self.send(f"{REST}/queues/{enc(name)}/messages/consumption", expect=expect, headers={"x-qos": qos},
                         **extra)

    def ack(self, name: str, ids: tuple[str, str], *, expect: int, **extra: Any) -> tuple[httpx.Response, ...]:
        return self.send(lambda side: f"{REST}/queues/{enc(name)}/messages/{ids[side is self.ref]}/acknowledgement",
                         expect=expect, **extra)


def message_ids(answers: tuple[httpx.Response, ...]) -> tuple[str, str]:
    return answers[0].headers["x-message-id"], answers[1].headers["x-message-id"]


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    server = request.param
    with (
        live_server(tmp_path_factory.mktemp(f"hot-{server}"), {**SETTINGS, "MESH_HOT_PATH": "true"},
                    server=server) as hot,
        live_server(tmp_path_factory.mktemp(f"ref-{server}"), {**SETTINGS, "MESH_HOT_PATH": "false"},
                    server=server) as ref,
    ):
        yield Pair(provision(hot), provision(ref))


def set_queue_column(server: LiveServer, name: str, column: str, value: int) -> None:
    """Change a queue behind the server's back: no signal, so no topology version bump."""
    sql = f"UPDATE messaging_queue SET {column} = %s WHERE name = %s"  # noqa: S608 - a fixed column
    if "DATABASE_URL" in server.env:
        import psycopg

        with psycopg.connect(server.env["DATABASE_URL"], autocommit=True) as conn:
            assert conn.execute(sql, (value, name)).rowcount == 1
    else:
        import sqlite3

        with sqlite3.connect(Path(server.env["MESH_VAR_DIR"]) / "meshsite.sqlite3") as conn:
            assert conn.execute(sql.replace("%s", "?"), (value, name)).rowcount == 1


def test_the_hot_server_serves_from_the_hot_path(pair):
    # The hot path caches the queue (MESH_TOPOLOGY_CHECK_MS is an hour here); the DRF view
    # reads it on every publish. A limit set in the database unannounced tells them apart.
    name = pair.queue("probe")
    pair.publish(name, b"12345")
    for side in (pair.hot, pair.ref):
        set_queue_column(side.server, name, "max_message_size_in_bytes", 1)
    headers = {"x-qos": "1", "Content-Type": "text/plain"}
    path = f"{REST}/queues/{enc(name)}/messages"
    assert pair.hot.request("POST", path, key="k1", headers=headers, content=b"12345").status_code == 204
    assert pair.ref.request("POST", path, key="k1", headers=headers, content=b"12345").status_code == 413


CASES: dict[str, Callable[[Pair], None]] = {}


def case(func: Callable[[Pair], None]) -> Callable[[Pair], None]:
    CASES[func.__name__] = func
    return func


# --- authentication and the instance's options ------------------------------------------------

@case
def authorization_missing_or_not_bearer(pair):
    name = pair.queue("auth")
    for authorization in (None, "Basic dXNlcjpwYXNz", "Token abc", "", "Bearerx abc"):
        headers = {} if authorization is None else {"Authorization": authorization}
        pair.publish(name, key=None, headers=headers, expect=401)
    pair.send(f"{REST}/queues/{enc(name)}/messages/consumption", key=None, headers={"x-qos": "1"}, expect=401)
    pair.send(f"{REST}/queues/{enc(name)}/messages/{uuid.uuid4()}/acknowledgement", key=None, expect=401)
    pair.send(f"{REST}/topics/{enc('a/b/c/t')}/messages", key=None, expect=401,
              headers={"x-qos": "1", "Content-Type": "text/plain"})


@case
def authorization_malformed_or_unknown(pair):
    name = pair.queue("auth")
    for authorization in ("Bearer", "Bearer a b", "Bearer a\tb", "bearer x y z", "Bearer " + "x" * 4097,
                          "Bearer " + "x" * 4096, "Bearer nope", b"Bearer \xe9t\xe9", "Bearer a,Bearer b"):
        pair.publish(name, key=None, headers={"Authorization": authorization}, expect=401)
    # Two Authorization fields are one, joined with ",": malformed on both.
    both = lambda side: [("Authorization", f"Bearer {side.tokens['k1']}")] * 2  # noqa: E731
    pair.send(f"{REST}/queues/{enc(name)}/messages/consumption", key=None, expect=401,
              headers=lambda side: [*both(side), ("x-qos", "1")])
    pair.consume(name, expect=204)  # nothing was stored


@case
def authorization_scheme_in_any_case(pair):
    name = pair.queue("case")
    pair.send(f"{REST}/queues/{enc(name)}/messages", key=None, expect=204,
              headers=lambda side: {"Authorization": f"bEaReR {side.tokens['k1']}", "x-qos": "0",
                                    "Content-Type": "text/plain"}, content=b"hi")
    pair.consume(name, qos="0")


@case
def messagingrest_option_disabled(pair):
    name = pair.queue("off", key="off", namespace="o/f/f")
    pair.publish(name, key="off", expect=403)
    pair.publish(name, key="off", qos="7", expect=403)  # the option is checked before the headers
    pair.publish("o/f/f/t", key="off", topic=True, expect=403)
    pair.consume(name, key="off", expect=403)
    pair.ack(name, (str(uuid.uuid4()),) * 2, key="off", expect=403)
    pair.ack(name, ("nope", "nope"), key="off", expect=403)


# --- x-qos, Content-Type, x-message-expiration -----------------------------------------------

@case
def qos_missing_or_invalid(pair):
    name = pair.queue("qos")
    for qos in ("", "2", "01", "1.0", "true", "-1", "0 0"):
        pair.publish(name, qos=qos, expect=400)
        pair.consume(name, qos=qos, expect=400)
    pair.send(f"{REST}/queues/{enc(name)}/messages", expect=400, headers={"Content-Type": "text/plain"})
    pair.send(f"{REST}/queues/{enc(name)}/messages/consumption", expect=400)
    pair.send(f"{REST}/queues/{enc(name)}/messages", expect=400, content=b"m",
              headers=[("Content-Type", "text/plain"), ("x-qos", "1"), ("x-qos", "1")])
    pair.publish(name, qos=b"\xb9", expect=400)
    pair.consume(name, expect=204)


@case
def content_type_missing_or_invalid(pair):
    name = pair.queue("ct")
    pair.send(f"{REST}/queues/{enc(name)}/messages", expect=400, headers={"x-qos": "1"}, content=b"m")
    for content_type in ("", "text", "text/", "/plain", "text/plain; charset", "text/pl ain",
                         "text/plain; a=b; " + "c" * 250, b"text/plain; charset=\xe9", b"t\xe9xt/plain"):
        pair.publish(name, content_type=content_type, expect=400)
        pair.publish("a/b/c/topic", topic=True, content_type=content_type, expect=400)
    pair.consume(name, expect=204)


@case
def content_type_kept_as_published(pair):
    name = pair.queue("ct")
    for content_type in ("application/json; charset=utf-8", "TEXT/Plain", 'text/plain; a="b c"',
                         "application/vnd.x+json"):
        pair.publish(name, b'{"a": 1}', content_type=content_type)
        hot, _ = pair.consume(name, qos="0")
        assert hot.headers["content-type"] == content_type


@case
def expiration_invalid_or_out_of_range(pair):
    name = pair.queue("exp")
    for expiration in ("", "abc", "-1", "+1", "1.5", "0x10", "1234567890123", b"\xb9", "1e3", "1 2"):
        pair.publish(name, headers={"x-message-expiration": expiration}, expect=400)
    for expiration in ("0", "000", str(MAX_EXPIRATION_MS + 1), "999999999999"):
        pair.publish(name, headers={"x-message-expiration": expiration}, expect=400)
    pair.consume(name, expect=204)


@case
def expiration_at_the_bounds(pair):
    name = pair.queue("exp")
    for expiration in ("1", str(MAX_EXPIRATION_MS), "0001"):
        pair.publish(name, headers={"x-message-expiration": expiration})
    ttl = pair.queue("ttl", {"respectTtl": True})
    pair.publish(ttl, headers={"x-message-expiration": "1"})
    pair.publish(ttl, b"lives", headers={"x-message-expiration": "600000"})
    time.sleep(0.05)
    hot, _ = pair.consume(ttl, qos="0")
    assert hot.content == b"lives"
    pair.consume(ttl, expect=204)
    hot, _ = pair.consume(name, qos="0")  # without respectTtl an expired message is delivered
    assert hot.content == b"m"


# --- names and the routes -------------------------------------------------------------------

BAD_NAMES = ("a/b/c/bad name", "a/b/c/" + "x" * 110, "/".join(["a", "b", "c", *"defghijklmnopqrstuvw"]),
             "a/b/c/..", "a/b/c/.", "a//b", "a/b/c/q*", "a/b/c/%zz", "a/b/c/\u00e9", "a/b/c/\ufffd", "a/b/c/")


@case
def queue_name_invalid(pair):
    for name in BAD_NAMES:
        pair.publish(name, expect=400)
        pair.consume(name, expect=400)
        pair.ack(name, (str(uuid.uuid4()),) * 2, expect=400)
        pair.ack(name, ("nope", "nope"), expect=400)


@case
def topic_invalid(pair):
    for topic in (*BAD_NAMES, "a/b/c/+", "a/b/c/*"):
        pair.publish(topic, topic=True, expect=400)


@case
def names_outside_the_rules(pair):
    pair.publish("x/y/z/q", expect=403)
    pair.consume("x/y/z/q", expect=403)
    pair.publish("x/y/z/t", topic=True, expect=403)
    pair.ack("x/y/z/q", (str(uuid.uuid4()),) * 2, expect=404)  # an ack names no rule
    publish_only = pair.queue("pub/q", key="ruled", namespace="r/s/t")
    subscribe_only = pair.queue("sub/q", key="ruled", namespace="r/s/t")
    pair.publish(publish_only, key="ruled")
    pair.consume(publish_only, key="ruled", expect=403)
    pair.publish(subscribe_only, key="ruled", expect=403)
    pair.consume(subscribe_only, key="ruled", expect=204)
    pair.publish("r/s/t/pub/t", key="ruled", topic=True)
    pair.publish("r/s/t/sub/t", key="ruled", topic=True, expect=403)
    # The rules come before the message's own checks, and after the name's.
    pair.publish(subscribe_only, key="ruled", content=b"x" * (MAX_MESSAGE_SIZE + 1), expect=413)
    pair.publish("r/s/t/sub/bad name", key="ruled", expect=400)


@case
def queue_unknown(pair):
    name = "a/b/c/never"
    pair.publish(name, expect=404)
    pair.publish(name, qos="0", expect=404)
    pair.consume(name, expect=404)
    pair.consume(name, qos="0", expect=404)
    pair.ack(name, (str(uuid.uuid4()),) * 2, expect=404)
    pair.ack(name, ("not-a-uuid", "not-a-uuid"), expect=404)


@case
def percent_encoding(pair):
    name = pair.queue("enc")
    lower = name.replace("/", "%2f")
    pair.send(f"{REST}/queues/{lower}/messages", expect=204, headers={"x-qos": "1", "Content-Type": "text/plain"},
              content=b"lower")
    spelled = "".join(f"%{ord(char):02X}" for char in name)  # every character encoded
    consumed = pair.send(f"{REST}/queues/{spelled}/messages/consumption", expect=200, headers={"x-qos": "1"})
    assert consumed[0].content == b"lower"
    pair.send(f"{REST}/queues/a%2Fb%2Fc%2F%zz/messages", expect=400, headers={"x-qos": "1"},
              content=b"m")  # not an escape: the name holds "%zz"
    ids = message_ids(consumed)
    pair.send(lambda side: f"{REST}/queues/{lower}/messages/{ids[0] if side is pair.hot else ids[1]}"
                           "/acknowledgement", expect=200)


@case
def paths_the_hot_path_leaves_to_django(pair):
    name = pair.queue("django")
    publish = {"x-qos": "1", "Content-Type": "text/plain"}
    for path in (f"queues/{enc(name)}%00/messages", "queues/a%2Fb%00%2Fc/messages",
                 f"queues/{enc(name)}%0A/messages/consumption", "topics/a%2Fb%2Fc%2Ft%00/messages",
                 f"queues/{enc(name)}/messages/{uuid.uuid4()}%00/acknowledgement",
                 f"queues/{enc(name)}/messages/%00/acknowledgement",
                 f"queues/{enc(name)}/%6Dessages", f"queues/{enc(name)}/messages/", "queues//messages",
                 f"queues/{name}/messages", f"queues/{enc(name)}/messages/consumption/",
                 f"queues/{enc(name)}/messages/x/y/acknowledgement", "queues", f"topics/{enc(name)}/messages/x"):
        pair.send(f"{REST}/{path}", expect=404, headers=publish, content=b"m")
    pair.consume(name, expect=204)


@case
def methods_other_than_post(pair):
    name = pair.queue("method")
    for path in (f"queues/{enc(name)}/messages", f"queues/{enc(name)}/messages/consumption",
                 f"queues/{enc(name)}/messages/{uuid.uuid4()}/acknowledgement", "topics/a%2Fb%2Fc%2Ft/messages"):
        for method in ("GET", "PUT", "DELETE", "PATCH", "HEAD"):
            pair.send(f"{REST}/{path}", method=method, expect=405, headers={"x-qos": "1"})
        pair.send(f"{REST}/{path}", method="OPTIONS", expect=200)
        pair.send(f"{REST}/{path}", method="GET", key=None, expect=401)


@case
def query_strings_are_ignored(pair):
    name = pair.queue("query")
    pair.send(f"{REST}/queues/{enc(name)}/messages?x=1&y", expect=204, content=b"q",
              headers={"x-qos": "1", "Content-Type": "text/plain"})
    hot, ref = pair.send(f"{REST}/queues/{enc(name)}/messages/consumption?qos=0", expect=200,
                         headers={"x-qos": "1"})
    ids = message_ids((hot, ref))
    pair.send(lambda side: f"{REST}/queues/{enc(name)}/messages/{ids[0] if side is pair.hot else ids[1]}"
                           "/acknowledgement?a=%00", expect=200)
    pair.send(f"{REST}/topics/a%2Fb%2Fc%2Fquery/messages?", expect=204, content=b"q",
              headers={"x-qos": "1", "Content-Type": "text/plain"})


@case
def host_not_allowed(pair):
    name = pair.queue("host")
    for host in ("evil.example", "evil.example:80", "a_b", "127.0.0.1@evil.example", "[::2]"):
        pair.publish(name, headers={"Host": host}, expect=400)
    for host in ("127.0.0.1", "LOCALHOST:1", "localhost.", "[::1]:8000"):
        pair.publish(name, headers={"Host": host})
    pair.consume(name, qos="0")


# --- sizes and capacity ---------------------------------------------------------------------

@case
def message_size_limits(pair):
    name = pair.queue("size")
    pair.publish(name, b"x" * (MAX_MESSAGE_SIZE + 1), expect=413)
    pair.publish(name, b"x" * (MAX_MESSAGE_SIZE + 1), qos="0", expect=413)
    pair.publish(name, b"x" * MAX_MESSAGE_SIZE)
    small = pair.queue("small", {"maxMessageSizeInBytes": 10})
    pair.publish(small, b"x" * 11, expect=413)
    pair.publish(small, b"x" * 11, qos="0", expect=413)
    pair.publish(small, b"x" * 10)
    pair.publish(small, b"x" * (BODY_LIMIT + 1), expect=413)  # the request's own limit, before the hot path
    hot, _ = pair.consume(small, qos="0")
    assert hot.content == b"x" * 10
    pair.consume(small, expect=204)


@case
def empty_body(pair):
    name = pair.queue("empty")
    for content_type in ("text/plain", "application/octet-stream"):
        pair.publish(name, b"", content_type=content_type)
        hot, _ = pair.consume(name, qos="0")
        assert hot.content == b"" and hot.headers["content-type"] == content_type
    pair.publish(name, None)
    hot, _ = pair.consume(name, qos="0")
    assert hot.content == b""
    # The one known difference, in the hot path's favour: the API guard (meshsite/apiguard.py)
    # drops Django's default type from empty answers and cannot tell an empty message published
    # with that very type, so the DRF view loses it; the hot path keeps the message's own.
    django_default = "text/html; charset=utf-8"
    pair.publish(name, b"", content_type=django_default)
    path = f"{REST}/queues/{enc(name)}/messages/consumption"
    hot = pair.hot.request("POST", path, key="k1", headers={"x-qos": "0"}, content=None)
    ref = pair.ref.request("POST", path, key="k1", headers={"x-qos": "0"}, content=None)
    assert (hot.status_code, ref.status_code) == (200, 200)
    assert hot.headers["content-type"] == django_default and "content-type" not in ref.headers


@case
def queue_full(pair):
    count = pair.queue("full", {"maxQueueMessageCount": 1})
    pair.publish(count)
    hot, _ = pair.publish(count, expect=429)
    assert hot.headers["retry-after"]
    pair.publish(count, qos="0", expect=429)
    size = pair.queue("fullbytes", {"maxQueueSizeInBytes": 5})
    pair.publish(size, b"12345", qos="0")
    pair.publish(size, b"6", expect=429)
    pair.consume(size, qos="0")
    pair.publish(size, b"6")


# --- topics -----------------------------------------------------------------------------------

@case
def topic_fan_out(pair):
    pair.publish("a/b/c/nobody/listens", topic=True)
    plain = pair.queue("fan")
    small = pair.queue("fansmall", {"maxMessageSizeInBytes": 10})
    topic = f"{plain}/events"
    pair.subscribe(plain, f"{plain}/*")
    pair.subscribe(small, f"{plain}/+")
    pair.publish(topic, b"x" * 11, topic=True, expect=413)
    pair.publish(topic, b"x" * (MAX_MESSAGE_SIZE + 1), topic=True, expect=413)
    pair.consume(plain, expect=204)  # all or nothing
    pair.publish(topic, b"evt", topic=True, qos="0", headers={"x-message-expiration": "60000"})
    for queue in (plain, small):
        hot, _ = pair.consume(queue, qos="0")
        assert hot.headers["x-address"] == f"topic:{topic}"
    full = pair.queue("fanfull", {"maxQueueMessageCount": 1})
    pair.subscribe(full, f"{plain}/*")
    pair.publish(f"{plain}/deep/er", b"1", topic=True)
    pair.publish(f"{plain}/deep/er", b"2", topic=True, expect=429)
    hot, _ = pair.consume(plain, qos="0")
    assert hot.content == b"1"
    pair.consume(plain, expect=204)


# --- consume and acknowledge -----------------------------------------------------------------

@case
def consume_and_ack(pair):
    name = pair.queue("ack")
    pair.consume(name, expect=204)
    pair.consume(name, qos="0", expect=204)
    pair.publish(name, b'{"n": 1}', content_type="application/json")
    pair.publish(name, b"zero", qos="0")
    consumed = pair.consume(name, content=b"a consume's body is ignored")
    assert consumed[0].headers["x-address"] == f"queue:{name}" and consumed[0].headers["x-delivery-count"] == "1"
    ids = message_ids(consumed)
    pair.ack(name, ("not-a-uuid", "not-a-uuid"), expect=404)
    pair.ack(name, (str(uuid.uuid4()),) * 2, expect=404)
    pair.send(f"{REST}/queues/{enc(name)}/messages", expect=400, content=b"m",
              headers=[("x-qos", "1"), ("Content-Type", "text/plain"), ("Content-Type", "text/plain")])
    pair.ack(name, (f"urn:uuid:{ids[0].upper()}", f"urn:uuid:{ids[1].upper()}"), expect=200)  # any spelling
    pair.ack(name, ids, expect=404)  # twice
    zero = message_ids(pair.consume(name, qos="0"))
    pair.ack(name, zero, expect=404)  # a qos-0 delivery holds nothing
    pair.ack("a/b/c/ack-elsewhere", zero, expect=404)
    pair.consume(name, expect=204)


@case
def exclusive_queue_held_by_another_key(pair):
    name = pair.queue("excl", {"accessType": "EXCLUSIVE"})
    pair.publish(name, b"1")
    pair.consume(name, qos="0")
    pair.consume(name, key="k2", expect=409)
    pair.consume(name, key="k2", qos="0", expect=409)
    pair.consume(name, expect=204)


@case
def flow_limit_reached(pair):
    name = pair.queue("flow", {"maxDeliveredUnackedMsgsPerFlow": 2})
    for body in (b"1", b"2", b"3"):
        pair.publish(name, body)
    first = message_ids(pair.consume(name))
    pair.consume(name)
    pair.consume(name, expect=429)
    pair.consume(name, key="k2")  # the limit is per consumer
    pair.consume(name, key="k2", expect=204)
    pair.consume(name, qos="0", expect=204)  # qos 0 holds nothing, so the limit does not apply
    pair.ack(name, first, expect=200)
    pair.publish(name, b"4")
    pair.consume(name)
    pair.consume(name, expect=429)


@case
def ack_after_the_lock_expired(pair):
    # No redelivery delay on these two: the lock alone is waited out. `delayed` keeps a
    # minute's delay after its lock, which both paths must apply alike.
    name = pair.queue("lock", {"redeliveryDelayInMs": 0})
    dead = pair.queue("lockdlq")
    limited = pair.queue("lockred", {"maxRedeliveryCount": 1, "deadMsgQueue": dead, "redeliveryDelayInMs": 0})
    delayed = pair.queue("lockdelay", {"redeliveryDelayInMs": 60_000})
    pair.publish(name, b"late")
    pair.publish(limited, b"once")
    pair.publish(delayed, b"poison")
    ids = message_ids(pair.consume(name))
    pair.consume(limited)
    delayed_ids = message_ids(pair.consume(delayed))
    time.sleep(ACK_TIMEOUT + 0.5)
    pair.ack(name, ids, expect=410)
    pair.consume(delayed, expect=204)  # its lock ran out, its delay runs
    pair.ack(delayed, delayed_ids, expect=410)
    again = pair.consume(name)
    assert again[0].headers["x-delivery-count"] == "2" and again[0].content == b"late"
    pair.ack(name, ids, expect=404)  # the first delivery's id does not settle the second
    pair.ack(name, message_ids(again), expect=200)
    pair.consume(limited)  # the one redelivery maxRedeliveryCount allows
    time.sleep(ACK_TIMEOUT + 0.5)
    pair.consume(limited, expect=204)  # one more would pass maxRedeliveryCount: dead-lettered
    hot, _ = pair.consume(dead, qos="0")
    assert hot.content == b"once"


@case
def cross_tenant(pair):
    name = pair.queue("tenant")
    pair.publish(name, b"mine")
    pair.publish(name, b"theirs", key="other", expect=404)
    pair.publish(name, key="other", qos="0", expect=404)
    pair.consume(name, key="other", expect=404)
    pair.consume(name, key="other", qos="0", expect=404)
    ids = message_ids(pair.consume(name))
    pair.ack(name, ids, key="other", expect=404)
    pair.ack(name, ids, expect=200)
    pair.consume(name, expect=204)
    # The same name in both instances: each token reaches its own queue.
    same = pair.queue("twice")
    for side in (pair.hot, pair.ref):
        assert side.management("PUT", f"/queues/{enc(same)}", key="other") == 201
    pair.publish(same, b"first's")
    pair.consume(same, key="other", expect=204)
    hot, _ = pair.consume(same, qos="0")
    assert hot.content == b"first's"


@pytest.mark.parametrize("name", list(CASES))
def test_hot_path_answers_as_the_drf_views(pair, name):
    CASES[name](pair)
