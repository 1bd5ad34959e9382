"""Group commit survives a crash of PostgreSQL: every publish answered 2xx is in the store
afterwards, none twice, and a client that goes away before its answer leaves no half-written
batch.

A real server (uvicorn and Daphne) runs on a PostgreSQL cluster of the test's own
(tests/pgcluster.py), which the test kills with `pg_ctl -m immediate` while 16 keep-alive
clients publish qos 1 messages with bodies of their own. Each client keeps a ledger of what
it was answered; during the outage it is answered 503 (or loses its connection), which is
allowed; afterwards the store is read with SQL and held against the ledger. No timing is
asserted: the phases wait for counts of answers, with generous limits.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import psycopg
import pytest

from messaging.models import Message, Queue
from tests.pgcluster import PrivateCluster, private_cluster
from tests.test_live_server import MANAGEMENT, REST, SERVERS, LiveServer, live_server

PUBLISHERS = 16
PUBLISH = {"x-qos": "1", "Content-Type": "text/plain"}
# Upper bounds for each phase to come about, not timings: a loaded 2-core machine may be slow.
PHASE_SECONDS = 120


@dataclass
class Store:
    """The live server's database on the private cluster, read directly."""

    cluster: PrivateCluster
    dbname: str

    def messages(self, queue: str) -> list[tuple[bytes, int, int, str]]:
        """(payload, size, length of the payload, xmin) of every message in `queue`."""
        with psycopg.connect(self.cluster.url, dbname=self.dbname) as conn:
            return [(bytes(payload), size, length, xmin) for payload, size, length, xmin in conn.execute(
                f"SELECT m.payload, m.size, length(m.payload), m.xmin::text FROM {Message._meta.db_table} m"  # noqa: S608
                f" JOIN {Queue._meta.db_table} q ON q.id = m.queue_id WHERE q.name = %s", [queue],
            )]

    def databases(self) -> set[str]:
        with psycopg.connect(self.cluster.url, dbname="postgres") as conn:
            return {name for (name,) in conn.execute("SELECT datname FROM pg_database")}


@dataclass
class Mesh:
    live: LiveServer
    store: Store
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def queue(self, name: str) -> str:
        """A new queue `name`; its publish path."""
        created = httpx.put(f"{self.live.base}{MANAGEMENT}/queues/{quote(name, safe='')}", headers=self.headers,
                            timeout=30)
        assert created.status_code == 201, created.text
        return f"{REST}/queues/{quote(name, safe='')}/messages"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.live.base}{MANAGEMENT}/readinessCheck", headers=self.headers,
                             timeout=30).status_code == 200
        except httpx.TransportError:
            return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module", params=SERVERS)
def mesh(request: pytest.FixtureRequest, cluster: PrivateCluster,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    store = Store(cluster, "")
    before = store.databases()
    with ExitStack() as stack:
        # live_server makes the server's database on the cluster DATABASE_URL names (and
        # drops it afterwards): this test's own.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DATABASE_URL", cluster.url)
            live = stack.enter_context(live_server(tmp_path_factory.mktemp(f"crash-{request.param}"),
                                                   server=request.param))
        (store.dbname,) = store.databases() - before
        oa2 = live.oa2
        answer = httpx.post(f"{live.base}/oauth/token", data={"grant_type": "client_credentials"},
                            auth=(oa2["clientid"], oa2["clientsecret"]), timeout=30)
        assert answer.status_code == 200, answer.text
        yield Mesh(live, store, answer.json()["access_token"])


@dataclass
class Ledger:
    """What the publishers sent and what they were answered."""

    sent: set[bytes] = field(default_factory=set, repr=False)
    answered: list[bytes] = field(default_factory=list, repr=False)  # 2xx
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # no answer: the connection failed
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, body: bytes, outcome: int | str) -> None:
        with self.lock:
            self.sent.add(body)
            if isinstance(outcome, str):
                self.errors[outcome] += 1
                return
            self.statuses[outcome] += 1
            if 200 <= outcome < 300:
                self.answered.append(body)

    @property
    def ok(self) -> int:
        return len(self.answered)

    @property
    def failed(self) -> int:
        return sum(self.errors.values()) + sum(n for status, n in self.statuses.items() if status >= 300)


class Publishers:
    """`count` threads, each publishing b"{prefix}{publisher}-{n}" over one keep-alive
    connection until stopped, each answer in the ledger."""

    def __init__(self, mesh: Mesh, path: str, count: int, prefix: str = "p") -> None:
        self.mesh, self.path, self.prefix = mesh, path, prefix
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._publish, args=(n,), daemon=True) for n in range(count)]

    def __enter__(self) -> Publishers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=PHASE_SECONDS)
        assert not any(thread.is_alive() for thread in self.threads), "a publisher did not finish"

    def _publish(self, publisher: int) -> None:
        headers = {**self.mesh.headers, **PUBLISH}
        with httpx.Client(base_url=self.mesh.live.base, headers=headers, timeout=60) as client:
            n = 0
            while not self.stopping.is_set():
                body = f"{self.prefix}{publisher}-{n}".encode()
                n += 1
                try:
                    outcome: int | str = client.post(self.path, content=body).status_code
                except httpx.TransportError as error:
                    outcome = type(error).__name__
                self.ledger.record(body, outcome)

    def wait_for(self, what: str, condition: Callable[[Ledger], bool]) -> None:
        deadline = time.monotonic() + PHASE_SECONDS
        while not condition(self.ledger):
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not come about within {PHASE_SECONDS} s: {self.ledger}")
            time.sleep(0.05)


def assert_ledger_kept(ledger: Ledger, stored: list[tuple[bytes, int, int, str]]) -> None:
    bodies = Counter(payload for payload, *_ in stored)
    assert [body for body, n in bodies.items() if n > 1] == [], "a publish is stored twice"
    lost = [body for body in ledger.answered if body not in bodies]
    assert lost == [], f"lost = {len(lost)} of {ledger.ok} answered 2xx: {lost[:10]}"
    assert set(bodies) <= ledger.sent, "the store holds a message nobody sent"
    assert [row for row in stored if row[1] != row[2]] == [], "a stored message is not whole"


def test_every_publish_answered_2xx_survives_a_crash_of_postgresql_mid_load(mesh, cluster):
    path = mesh.queue("a/b/c/crash/ledger")
    with Publishers(mesh, path, PUBLISHERS) as publishers:
        publishers.wait_for("300 answered publishes", lambda ledger: ledger.ok >= 300)
        cluster.crash()
        try:
            # The publishers meet the outage (503s or lost connections) for a while.
            publishers.wait_for("a publish failing", lambda ledger: ledger.failed > 0)
            time.sleep(1)
        finally:
            cluster.start()
        deadline = time.monotonic() + PHASE_SECONDS
        while not mesh.ready():
            assert time.monotonic() < deadline, f"not ready within {PHASE_SECONDS} s of the restart"
            time.sleep(0.2)
        recovered = publishers.ledger.ok
        publishers.wait_for("300 publishes answered after the restart",
                            lambda ledger: ledger.ok >= recovered + 300)
    ledger = publishers.ledger
    assert set(ledger.statuses) <= {204, 503}, ledger.statuses
    stored = mesh.store.messages("a/b/c/crash/ledger")
    assert_ledger_kept(ledger, stored)
    # Group commit happened: several publishes share one transaction (one xmin).
    transactions = Counter(xmin for *_, xmin in stored)
    assert len(transactions) < len(stored), f"{len(stored)} rows in as many transactions"


def _abandon(base: str, head: bytes, body: bytes, *, reset: bool) -> None:
    """Sends `head` and `body` and goes away without reading the answer (with a reset, as
    a crashed client does, or an orderly close)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(head + body)


def _head(mesh: Mesh, path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {mesh.live.base.removeprefix('http://')}\r\n"
            f"Authorization: Bearer {mesh.token}\r\nx-qos: 1\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _settled(store: Store, queue: str) -> list[tuple[bytes, int, int, str]]:
    """The queue's messages once no more arrive (publishes of clients that went away may
    still be written after the last answer)."""
    stored = store.messages(queue)
    for _ in range(PHASE_SECONDS):
        time.sleep(1)
        again = store.messages(queue)
        if len(again) == len(stored):
            return again
        stored = again
    pytest.fail(f"messages kept arriving for {PHASE_SECONDS} s")


def test_a_client_that_goes_away_before_its_answer_leaves_no_half_written_batch(mesh):
    name = "a/b/c/crash/gone"
    path = mesh.queue(name)
    whole, cut = [], []
    with Publishers(mesh, path, 8) as publishers:  # batches for the abandoned publishes to land in
        publishers.wait_for("50 answered publishes", lambda ledger: ledger.ok >= 50)
        for n in range(200):
            body = f"gone-{n}".encode()
            if n % 4 == 3:  # the body cut short: never a message
                cut.append(body)
                _abandon(mesh.live.base, _head(mesh, path, len(body) + 10), body, reset=n % 8 == 7)
            else:
                whole.append(body)
                _abandon(mesh.live.base, _head(mesh, path, len(body)), body, reset=n % 2 == 0)
        after = publishers.ledger.ok
        publishers.wait_for("50 publishes answered after the last abandoned one",
                            lambda ledger: ledger.ok >= after + 50)
    stored = _settled(mesh.store, name)
    assert_ledger_kept(publishers.ledger, [row for row in stored if not row[0].startswith(b"gone-")])
    abandoned = Counter(payload for payload, *_ in stored if payload.startswith(b"gone-"))
    assert [body for body, n in abandoned.items() if n > 1] == [], "an abandoned publish is stored twice"
    assert set(abandoned) <= set(whole), f"a body cut short was stored: {set(abandoned) & set(cut)}"
    assert [row for row in stored if row[1] != row[2]] == [], "a stored message is not whole"
