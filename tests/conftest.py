"""Shared test setup: a build cache for tiny models and the location of the real speech clips."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

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
