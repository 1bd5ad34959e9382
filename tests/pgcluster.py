"""A PostgreSQL cluster of a test's own (initdb, pg_ctl) on a free loopback port, which the
test may stop, crash and start again without touching the shared PostgreSQL: the store
outage and the group-commit crash tests use it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.test_live_server import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"{name} not found: the private-cluster tests need PostgreSQL's server binaries")
    return found[-1]


def _as_cluster_owner() -> dict:
    # initdb and postgres refuse to run as root; as root (a container), run them as the
    # postgres account the server package created.
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres"}


def _cluster_root() -> Path:
    # Not under pytest's tmp_path: its parent is private to the user running the tests,
    # which the cluster owner may not be.
    root = Path(tempfile.mkdtemp(prefix="meshsite-cluster-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    return root


class PrivateCluster:
    """A PostgreSQL cluster of the test's own, on loopback, that it may stop and start."""

    def __init__(self) -> None:
        self.root = _cluster_root()
        self.data = self.root / "pgdata"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/meshsite"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self._run("mkdir", str(self.socket_dir))
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "meshsite")

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        path = program if program == "mkdir" else _pg_bin(program)
        done = subprocess.run([path, *args], capture_output=True, text=True, timeout=120, **_as_cluster_owner())
        if check and done.returncode != 0:
            pytest.fail(f"{program} failed: {done.stderr}")

    def start(self) -> None:
        # fsync off: this cluster holds nothing worth keeping, and it makes migrate faster.
        # A crash (`crash`) kills the server's processes, not the kernel, so what a commit
        # wrote to the WAL survives it all the same; what only a skipped WAL flush
        # (synchronous_commit off) left in the server's memory does not.
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def crash(self) -> None:
        """Stop like a crash: every server process killed at once, recovery from the WAL at
        the next start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        """Stopped (if it runs) and its files gone."""
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started cluster with an empty database `meshsite`, removed afterwards."""
    cluster = PrivateCluster()
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.remove()
