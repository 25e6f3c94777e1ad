"""Shared fixtures: a real PostgreSQL server on loopback, and log locations for both back ends.
No test reads or writes the real ``~/.verinfer``: ``VERINFER_HOME`` points into a temporary
directory for the whole session (pinned keys there would leak from one run into the next).

The PostgreSQL tests never skip silently: if no server binaries are installed the fixture fails
and says how to install them (``scripts/install-system-deps``), unless ``VERINFER_SKIP_POSTGRES=1``
asks for an explicit, reported skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings

from verinfer import note
from verinfer.keys import HOME_ENV

# no test asserts on wall-clock time, Hypothesis's per-example deadline included: on a loaded
# 2-core VM a 160 ms example took 253 ms once and failed the run
settings.register_profile("verinfer", deadline=None)
settings.load_profile("verinfer")


@pytest.fixture(scope="session", autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(tmp_path_factory.mktemp("verinfer-home"))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = previous


@pytest.fixture(autouse=True)
def _home_per_test(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test its own ``VERINFER_HOME`` (module fixtures keep the session's): keys pinned on
    first use (``known_nodes.json``, ``known_publishers.json``) would leak from one test into
    the next, and every test makes its own ``alice`` key."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path_factory.mktemp("home")))


def _postgres_bindir() -> Path | None:
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL server; ``url(db)`` names a database on it."""

    port: int

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _postgres_bindir()
    if bindir is None:
        if os.environ.get("VERINFER_SKIP_POSTGRES") == "1":
            pytest.skip("PostgreSQL is not installed and VERINFER_SKIP_POSTGRES=1")
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: run "
            "scripts/install-system-deps (apt-get install postgresql), or set "
            "VERINFER_SKIP_POSTGRES=1 to skip these tests explicitly"
        )
    # not under pytest's tmp dir: that is mode 0700 under root's name, and the server runs as
    # the postgres user when we are root (initdb refuses to run as root)
    root = Path(tempfile.mkdtemp(prefix="verinfer-pg-"))
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    data, logfile = root / "data", root / "server.log"
    port = _free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            server_log = logfile.read_text() if logfile.exists() else ""
            pytest.fail(f"{' '.join(args)} failed: {result.stderr}\n{server_log}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-o", options, "-w", "start")
    try:
        yield PostgresServer(port)
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the test server."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def log_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh log lives: a data directory (SQLite) or a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "data")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def log_key() -> tuple[str, str]:
    """``(skey, vkey)`` of the test log."""
    return note.generate_key("log.test.verinfer.example/a")


@pytest.fixture
def signer(log_key: tuple[str, str]) -> note.Signer:
    return note.Signer(log_key[0])
