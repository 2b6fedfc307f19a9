"""Shared test setup: a build cache for tiny models and the location of the real speech clips
(tests/data/, inside the repository: a plain clone runs the suite)."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
SPEECH_DIR = REPO / "tests" / "data"

# Tiny checkpoints are built once per checkout and reused (deterministic, seeded builds).
os.environ.setdefault("ASSISTANT_CACHE_DIR", str(REPO / ".cache"))
# Never touch the user's real data folder: commands run by the tests (and their subprocesses) use this.
os.environ["ASSISTANT_DATA_DIR"] = tempfile.mkdtemp(prefix="assistant-test-data-")
atexit.register(shutil.rmtree, os.environ["ASSISTANT_DATA_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    if not SPEECH_DIR.is_dir():
        pytest.fail(f"real speech clips not found at {SPEECH_DIR}")
    return SPEECH_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, timeout_s: float = 120) -> tuple[subprocess.Popen, str]:
    """Run `assistant serve ARGS` on a free loopback port; return it and its URL once /health is ok.
    Its output goes to a temporary file (a pipe nobody reads could block a server that logs a lot),
    shown if it exits before it is ready. Tests and benchmarks (bench/) use it."""
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the server writes it while it runs
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--port", str(port), *args],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).json()["status"] == "ok":
                return proc, url
        except (httpx.HTTPError, ValueError):
            time.sleep(0.3)
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"server exited: {log.read()}")
    proc.kill()
    pytest.fail("server did not start")


def stop_server(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    proc.terminate()
    proc.wait(timeout=timeout_s)


def offline_engine(model: str | None = None):
    """The real offline cascade in an Engine (a generator for module fixtures); skips where the
    bundled weights are not installed."""
    from assistant.backends.cascade import load_cascade_backend
    from assistant.config import EngineConfig, Profile
    from assistant.engine import Engine
    from assistant.errors import MissingDependency

    config = EngineConfig(profile=Profile.OFFLINE, model=model)
    try:
        backend = load_cascade_backend(config)
    except MissingDependency as err:
        pytest.skip(str(err))
    eng = Engine(backend, config)
    yield eng
    eng.close()


def say(session, text: str) -> str:
    """One typed turn through a session, its memory work waited for; returns the reply's text."""
    from assistant.events import Done
    from assistant.turns import Turn

    async def go():
        events = [ev async for ev in session.converse(Turn(text=text), speak=False)]
        await session.wait_for_memory()
        return events[-1]

    done = asyncio.run(go())
    assert isinstance(done, Done), done
    return done.text


# Both stores: tests taking `database` run on SQLite (None) and on a real PostgreSQL 16 + pgvector
# (pgserver's, started once per session as nobody, a fresh database per test).
_PG_TEMPLATE = "assistant_template"


@pytest.fixture(scope="session")
def local_pg():
    """A session-wide local PostgreSQL with a migrated template database; skips without pgserver."""
    pytest.importorskip("pgserver")
    psycopg = pytest.importorskip("psycopg")
    from memory.pg_local import LocalPostgres
    from memory.pg_schema import migrate

    pg = LocalPostgres().start()
    try:
        url = pg.create_database(_PG_TEMPLATE)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        yield pg
    finally:
        pg.stop()


_pg_databases = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgres"])
def database(request) -> str | None:
    """None (the SQLite file in the data dir) or the URL of a new, migrated PostgreSQL database."""
    if request.param == "sqlite":
        return None
    pg = request.getfixturevalue("local_pg")
    return pg.create_database(f"test_{next(_pg_databases)}", template=_PG_TEMPLATE)


@pytest.fixture(params=["sqlite", "postgres"])
def new_database(request):
    """A function giving a new, empty database each call: None (SQLite: a new data dir is new) or a
    PostgreSQL URL (not migrated: the store migrates it as it opens)."""
    if request.param == "sqlite":
        return lambda: None
    pg = request.getfixturevalue("local_pg")
    return lambda: pg.create_database(f"test_{next(_pg_databases)}")
