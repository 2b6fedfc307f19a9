"""Recall on a long imported conversation, as a user notices it: questions that name a speaker, need
two turns, a month, or would bring back a line said many times; and `memory import`'s progress
and stdin. Real all-MiniLM-L6-v2 model, both real stores (SQLite and PostgreSQL), the real CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from memory import Embedder, NewMemory, open_store, recall

FILLER = [
    "Work has been exhausting, the budget review deadline keeps moving.",
    "This weekend we just stayed in and watched a baking show.",
    "It has been raining nonstop here for a week.",
    "I tried making dumplings from scratch last night.",
    "The train was delayed forty minutes this morning.",
    "Honestly that sounds like a perfect weekend.",
    "We had three meetings today about the app launch, and nothing got decided.",
    "Have you started watching Severance yet?",
    "I listen to audiobooks on my commute now.",
    "Cooking at home is so worth it.",
]


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def _conversation(planted: dict[int, tuple[str, str]], n: int = 200, seed: int = 0) -> list[NewMemory]:
    """`n` turns of Ana and Bo over months of sessions, with `planted` {turn: (speaker, text)}."""
    rng = random.Random(seed)
    day0 = datetime(2023, 1, 5, 18, tzinfo=UTC)
    out = []
    for i in range(n):
        speaker, text = planted.get(i, ("Ana" if i % 2 else "Bo", rng.choice(FILLER) + f" ({i})"))
        when = day0 + timedelta(days=(i // 20) * 17, minutes=i % 20)
        out.append(NewMemory(text, kind="utterance", speaker=speaker, said_at=when.timestamp(), source_id=f"t{i}"))
    return out


def _store(tmp_path, embedder, items, database):
    store = open_store(tmp_path, embedder, database=database)
    user = store.user("ana")
    store.import_memories(user, items)
    return store, user


def test_a_question_naming_a_speaker_finds_that_speakers_line(tmp_path, embedder, database):
    planted = {40: ("Bo", "I just started a new job as a pharmacist, my first week was intense."),
               130: ("Ana", "I just started a new job as a carpenter, my first week was intense.")}  # fmt: skip
    store, user = _store(tmp_path, embedder, _conversation(planted), database)
    with store:
        assert recall(store, user, "What is Ana's new job?", k=10)[0].source_id == "t130"
        assert recall(store, user, "What is Bo's new job?", k=10)[0].source_id == "t40"


def test_a_two_hop_question_finds_both_turns(tmp_path, embedder, database):
    planted = {30: ("Ana", "My uncle Felix gave me his old trumpet."),
               150: ("Ana", "Felix just moved to Minsk, he says the winters there are brutal.")}  # fmt: skip
    store, user = _store(tmp_path, embedder, _conversation(planted), database)
    with store:
        query = "Which city did the relative who gave Ana a trumpet move to?"
        found = [m.source_id for m in recall(store, user, query)]
    assert {"t30", "t150"} <= set(found[:10])


@pytest.mark.xfail(reason="open: inference questions reach 0.77-0.84 on bench/memory.py's sets, not every one; "
                   "this one ranks small talk above the fact", strict=False)
def test_an_inference_from_a_stated_fact(tmp_path, embedder, database):
    planted = {77: ("Ana", "Heights terrify me, I can't even stand on a balcony.")}
    store, user = _store(tmp_path, embedder, _conversation(planted), database)
    with store:
        found = [m.source_id for m in recall(store, user, "Would Ana enjoy a skydiving trip?")]
    assert "t77" in found[:10]


def test_a_month_tells_two_like_events_apart(tmp_path, embedder, database):
    planted = {25: ("Ana", "I tried a new Georgian restaurant near my place tonight."),  # January
               105: ("Ana", "I tried a new Korean restaurant near my place tonight.")}  # fmt: skip  # April
    items = _conversation(planted)
    months = {i.source_id: datetime.fromtimestamp(i.said_at, UTC).strftime("%B %Y") for i in items}
    store, user = _store(tmp_path, embedder, items, database)
    with store:
        for sid in ("t25", "t105"):
            query = f"Which kind of restaurant did Ana try in {months[sid]}?"
            assert recall(store, user, query, k=10)[0].source_id == sid


def test_a_line_said_many_times_comes_back_once(tmp_path, embedder, database):
    planted = {i: ("Bo", "Haha, classic.") for i in range(10, 200, 20)}
    store, user = _store(tmp_path, embedder, _conversation(planted), database)
    with store:
        texts = [m.text for m in recall(store, user, "haha classic", k=10)]
    assert texts.count("Haha, classic.") == 1


def _import(tmp_path, *args: str, stdin: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "assistant", "--data-dir", str(tmp_path / "data"), "--user", "ana", "memory",
           "import", *args]  # fmt: skip
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300)


def test_import_reads_stdin_and_shows_progress_on_stderr(tmp_path):
    lines = "".join(json.dumps({"text": f"line {i}: I walked {i} km", "speaker": "Ana"}) + "\n" for i in range(300))
    done = _import(tmp_path, "-", stdin=lines)
    assert done.returncode == 0, done.stderr
    assert "imported 300 lines" in done.stdout
    assert "importing [" in done.stderr and "300/300 lines" in done.stderr
    assert "importing" not in done.stdout  # stdout stays clean for scripts
    quiet = _import(tmp_path, "-", "--no-progress", stdin=lines)
    assert quiet.returncode == 0 and "imported 0 lines" in quiet.stdout and "importing" not in quiet.stderr
