"""`manage.py meshseed` run as an operator runs it in production: a real process with
DATABASE_URL, REDIS_URL and SECRET_KEY set and no var directory yet. The admin password is
shown before anything else can fail, the file it is kept in is created with its directory,
and a second run tells the operator how to set a new one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_live_server import PostgresDatabase

BASE_DIR = Path(__file__).resolve().parents[3]


@pytest.fixture
def production_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The README's production settings, with a var directory that does not exist yet. On the
    embedded default the database is a SQLite URL outside that directory, so that nothing
    creates it on meshseed's behalf."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MESH_VAR_DIR")}
    env.update(SECRET_KEY="production-secret-" + "x" * 40, REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
               MESH_VAR_DIR=str(tmp_path / "missing" / "var"), DJANGO_SETTINGS_MODULE="meshsite.settings")
    database = PostgresDatabase(os.environ["DATABASE_URL"]) if os.environ.get("DATABASE_URL") else None
    try:
        env["DATABASE_URL"] = database.create() if database else f"sqlite:///{tmp_path / 'db.sqlite3'}"
        yield env
    finally:
        if database is not None:
            database.drop()


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=180)


def password_works(env: dict[str, str], password: str) -> bool:
    check = manage(env, "shell", "-c", "from django.contrib.auth import authenticate; "
                   f"print(authenticate(username='admin', password={password!r}) is not None)")
    assert check.returncode == 0, check.stderr
    return check.stdout.strip().splitlines()[-1] == "True"


def test_meshseed_without_a_var_dir_prints_and_keeps_the_admin_password(production_env):
    assert manage(production_env, "migrate", "--noinput").returncode == 0
    var_dir = Path(production_env["MESH_VAR_DIR"])
    assert not var_dir.exists()
    first = manage(production_env, "meshseed")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    password = first.stdout.split("with password ", 1)[1].split()[0]
    assert password_works(production_env, password)
    kept = var_dir / "admin-password"
    assert kept.read_text().strip() == password
    assert kept.stat().st_mode & 0o077 == 0


def test_meshseed_run_again_says_how_to_reset_the_admin_password(production_env):
    assert manage(production_env, "migrate", "--noinput").returncode == 0
    assert manage(production_env, "meshseed").returncode == 0
    (Path(production_env["MESH_VAR_DIR"]) / "admin-password").unlink()
    again = manage(production_env, "meshseed")
    assert again.returncode == 0, again.stderr
    assert "with password" not in again.stdout
    assert "manage.py changepassword admin" in again.stdout
    # What the message tells the operator to do works, non-interactively as in a script.
    reset = subprocess.run([sys.executable, "manage.py", "changepassword", "admin"], cwd=BASE_DIR,
                           env=production_env, input="n3w-Passw0rd-42\nn3w-Passw0rd-42\n",
                           capture_output=True, text=True, timeout=60)
    assert reset.returncode == 0, reset.stderr
    assert password_works(production_env, "n3w-Passw0rd-42")
