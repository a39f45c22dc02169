"""Shared fixtures: the anyio backend and a database URL for SQLite and the real Postgres."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.fakes.plugin"]

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
# Each session gets a database of its own on the machine's Postgres (created at the start,
# dropped at the end), so no run sees what an earlier one (or another branch's schema) left
# in a shared database. BATON_NB_TEST_PG names a database to use instead, as it is.
_OWN_DATABASE = "BATON_NB_TEST_PG" not in os.environ
POSTGRES_URL = os.environ.get(
    "BATON_NB_TEST_PG", f"{PG_SERVER}/baton_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
)


def _admin(sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        con = await asyncpg.connect(PG_SERVER + "/postgres", timeout=10)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    asyncio.run(run())


def pytest_sessionstart(session: pytest.Session) -> None:
    if _OWN_DATABASE and (_postgres_up() or _start_postgres()):
        _admin(f'CREATE DATABASE "{POSTGRES_URL.rsplit("/", 1)[1]}"')


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _OWN_DATABASE and _postgres_up():
        _admin(f'DROP DATABASE IF EXISTS "{POSTGRES_URL.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@functools.cache
def _start_postgres() -> bool:
    """Start this machine's Postgres cluster if it is installed but down (as .ci/run does),
    so that a plain ``pytest`` works on a fresh machine. Tried once per session."""
    clusters = Path("/etc/postgresql")
    if _postgres_up():
        return True
    if shutil.which("pg_ctlcluster") is None or not clusters.is_dir():
        return False
    for version in sorted(p.name for p in clusters.iterdir()):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _postgres_up():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same storage test runs on SQLite and on the real Postgres (a missing server fails)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'baton.db'}"
    if not _postgres_up() and not _start_postgres():
        pytest.fail(
            "Postgres is not running on 127.0.0.1:5432; start it with "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )
    return POSTGRES_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'baton.db'}"


@pytest.fixture
def unique() -> str:
    """A short unique suffix for workflow names shared across parallel runs on Postgres."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def _no_ambient_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    # Tests never write baton.db into the checkout: the default DB lives in tmp_path.
    monkeypatch.setenv("BATON_NB_DB", f"sqlite:///{tmp_path / 'default.db'}")
    # mock/ provider batches (kept on disk like a provider's): in the test's directory
    monkeypatch.setenv("BATON_NB_MOCK_BATCHES", str(tmp_path / "mock_batches"))
    # `baton-nb` commands load no price file but the ones a test gives them
    monkeypatch.delenv("BATON_NB_PRICING", raising=False)
    yield
