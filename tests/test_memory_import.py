"""`assistant memory import` killed part way (kill -9) leaves whole chunks only, and running it again
completes the import without duplicating a line (deduplicated by source id)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

N_LINES = 1500  # three chunks of 512: the first is committed well before the last


def _count(db) -> tuple[int, int]:
    """(memory rows, distinct source ids) in the database, 0s while it does not exist yet."""
    if not db.exists():
        return 0, 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*), count(DISTINCT source_id) FROM memories").fetchone()
    except sqlite3.OperationalError:
        return 0, 0


def _import(data_dir, path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "assistant", "--data-dir", str(data_dir), "memory", "import",
                             str(path), "--user", "ana"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_import_completes_on_retry_without_duplicates(tmp_path):
    path = tmp_path / "talk.jsonl"
    lines = [{"text": f"line {i}: I walked {i} km along the river", "speaker": "Ana"} for i in range(N_LINES)]
    for i, line in enumerate(lines):
        if i % 2:
            line["source_id"] = f"D1:{i}"  # half with a source id, half given one from their place
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    db = tmp_path / "data" / "assistant.sqlite3"
    proc = _import(tmp_path / "data", path)
    deadline = time.time() + 300
    while _count(db)[0] == 0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rows, distinct = _count(db)
    assert rows < N_LINES, "the import ended before it could be killed"
    assert rows % 512 == 0 and rows == distinct  # whole chunks, nothing half-imported
    retry = _import(tmp_path / "data", path)
    out, err = retry.communicate(timeout=600)
    assert retry.returncode == 0, err
    assert f"imported {N_LINES - rows} lines" in out
    assert _count(db) == (N_LINES, N_LINES)
    again = _import(tmp_path / "data", path)
    out, _ = again.communicate(timeout=600)
    assert "imported 0 lines" in out and _count(db) == (N_LINES, N_LINES)


def test_commits_are_synced_to_disk(tmp_path):
    """synchronous=FULL: a commit is on disk when it returns (NORMAL with WAL could lose the last ones
    to a power cut)."""
    from memory import open_store

    with open_store(tmp_path) as store:
        assert store.read("PRAGMA synchronous")[0][0] == 2  # FULL
