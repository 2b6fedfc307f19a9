"""Shared test setup: a build cache for tiny models and the location of the real speech clips."""

from __future__ import annotations

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
SPEECH_DIR = REPO.parent / "shared" / "data" / "speech"

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
    """Run `assistant serve ARGS` on a free loopback port; return it and its URL once /health is ok."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).json()["status"] == "ok":
                return proc, url
        except (httpx.HTTPError, ValueError):
            time.sleep(0.3)
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
    proc.kill()
    pytest.fail("server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)
