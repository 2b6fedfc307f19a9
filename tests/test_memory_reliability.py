"""Crash safety, concurrent writers and user isolation of the memory store (real SQLite files)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory import Embedder, Exchange, create_persona, list_personas, open_store, recall, remember
from memory.personas import Persona

REPO = Path(__file__).resolve().parents[1]

# Writes batches of memories, messages and deletions forever; prints each memory id after its COMMIT.
WRITER = """
import sys, numpy as np
from memory import open_store
from memory.store import NewMemory
store = open_store(sys.argv[1], database=sys.argv[3] or None)
user = store.user("crash")
inst = store.open_instance(user, "Grok")
rng = np.random.default_rng(int(sys.argv[2]))
print("ready", flush=True)
n = 0
while True:
    vecs = rng.standard_normal((5, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = [NewMemory(f"run {sys.argv[2]} fact {n + i} " + "x" * int(rng.integers(0, 3000)), embedding=v)
             for i, v in enumerate(vecs)]
    ids = store.add_memories(user, items)
    print(" ".join(f"{i}:{n + j}" for j, i in enumerate(ids)), flush=True)
    store.append_message(inst, "user", "hello " * int(rng.integers(1, 500)))
    n += len(ids)
"""


def test_kill_9_while_writing_loses_no_committed_memory(tmp_path, database):
    rng = random.Random(4)
    committed: dict[int, str] = {}
    for run in range(50 if database is None else 15):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(run), database or ""],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.12))  # somewhere inside a transaction, a commit or between them
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        for line in out.split("\n")[:-1]:  # the last piece is empty or a line cut by the kill
            for pair in line.split():
                mid, n = pair.split(":")
                committed[int(mid)] = f"run {run} fact {n} "
    assert len(committed) > 15  # the writer did get work done between kills
    if database is not None:
        _check_committed_on_postgres(database, committed)
        return
    db = sqlite3.connect(tmp_path / "assistant.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    stored = dict(db.execute("SELECT id, text FROM memories").fetchall())
    for mid, prefix in committed.items():
        assert stored[mid].startswith(prefix)
    fts = db.execute("SELECT count(*) FROM memories_fts").fetchone()[0]
    assert fts == len(stored)  # the index never diverges from the rows
    history = db.execute("SELECT count(*) FROM memory_history WHERE action = 'add'").fetchone()[0]
    assert history == len(stored)


def _check_committed_on_postgres(url: str, committed: dict[int, str]) -> None:
    import psycopg

    with psycopg.connect(url) as db:
        stored = dict(db.execute("SELECT id, text FROM memories").fetchall())
        for mid, prefix in committed.items():
            assert stored[mid].startswith(prefix)
        assert db.execute("SELECT count(*) FROM memories_fts").fetchone()[0] == len(stored)
        assert db.execute("SELECT count(*) FROM memory_history WHERE action = 'add'").fetchone()[0] == len(stored)


def test_two_instances_of_one_user_writing_at_once_lose_no_update(tmp_path, database):
    """Two connections (as two processes would have) correct the same slot and add facts at once."""
    rounds = 12
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            with open_store(tmp_path, database=database) as s:
                user = s.user("shared")
                inst = s.open_instance(user, name)
                for i in range(rounds):
                    remember(s, user, Exchange(f"my name is {name}{i}"), instance=inst)
                    s.add_memory(user, f"{name} wrote note number {i}")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("Alpha", "Beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_store(tmp_path, database=database) as s:
        user = s.user("shared")
        every = s.memories(user, include_inactive=True)
        names = [m for m in every if m.key == "user.name"]
        assert len(names) == 2 * rounds
        assert sum(m.status == "active" for m in names) == 1  # exactly one current name: no lost supersede
        assert sum(m.status == "superseded" for m in names) == 2 * rounds - 1
        notes = {m.text for m in every if m.key is None}
        assert notes == {f"{n} wrote note number {i}" for n in ("Alpha", "Beta") for i in range(rounds)}


def test_two_processes_append_at_once_and_every_row_lands(tmp_path, database):
    script = (
        "import sys\nfrom memory import open_store\ns = open_store(sys.argv[1], database=sys.argv[3] or None)\n"
        "u = s.user('p')\n"
        "for i in range(150):\n    s.add_memory(u, f'{sys.argv[2]} {i}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    open_store(tmp_path, database=database).close()
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tag, database or ""], env=env)
             for tag in ("a", "b")]  # fmt: skip
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with open_store(tmp_path, database=database) as s:
        texts = {m.text for m in s.memories(s.user("p"))}
    assert texts == {f"{t} {i}" for t in ("a", "b") for i in range(150)}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()  # one model for every store of the property test, as a server shares one


def test_threads_opening_a_new_database_at_once_all_get_in(tmp_path, embedder, new_database):
    """Switching a new database to WAL needs it alone and does not wait: threads opening a new
    database while others already write to it got "database is locked" (2 times in 30 before)."""
    errors: list[BaseException] = []

    def work(data_dir: Path, name: str, url: str | None) -> None:
        try:
            with open_store(data_dir, embedder, database=url) as s:
                user = s.user(name)
                create_persona(s, user, Persona(name=f"P{name}", style="brief"))
                inst = s.open_instance(user, "Grok", name="i")
                s.append_message(inst, "user", f"{name} likes tea")
        except BaseException as err:
            errors.append(err)

    for trial in range(20):
        data_dir, url = tmp_path / f"t{trial}", new_database()  # PostgreSQL: all migrate it at once
        threads = [threading.Thread(target=work, args=(data_dir, f"u{i}", url)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with open_store(data_dir, embedder, database=url) as s:
            assert len(s.users()) == 4
    assert errors == []


WORDS = ["coffee", "garden", "piano", "Berlin", "allergy", "sister", "marathon", "salary", "password", "doctor"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(
        st.lists(
            st.tuples(st.sampled_from(WORDS), st.sampled_from(WORDS), st.integers(0, 2), st.booleans()),
            min_size=1,
            max_size=4,
        ),
        min_size=2,
        max_size=4,
    ),
    seed=st.integers(0, 10_000),
)
def test_nothing_ever_crosses_users(tmp_path_factory, embedder, new_database, plan, seed):
    """Users write memories, messages and personas in parallel; every read stays inside its owner."""
    data_dir, url = tmp_path_factory.mktemp("iso"), new_database()
    names = [f"user{i}-{seed}" for i in range(len(plan))]

    errors: list[BaseException] = []

    def write(name: str, items: list) -> None:
        try:
            _write(name, items)
        except BaseException as err:
            errors.append(err)

    def _write(name: str, items: list) -> None:
        with open_store(data_dir, embedder, database=url) as s:
            user = s.user(name)
            create_persona(s, user, Persona(name=f"P{name}", style=f"style of {name}"))
            for w1, w2, inst_no, private in items:
                inst = s.open_instance(user, "Grok", name=f"i{inst_no}")
                text = f"{name} likes {w1} and {w2}"
                mid = s.append_message(inst, "user", text)
                s.add_memory(user, text, instance_id=inst.id if private else None)
                remember(s, user, Exchange(f"remember that {name} owns a {w1}", message_id=mid), instance=inst)

    threads = [threading.Thread(target=write, args=(n, items)) for n, items in zip(names, plan, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_store(data_dir, embedder, database=url) as s:
        for name in names:
            user = s.user(name, create=False)
            others = [n for n in names if n != name]
            exported = json.dumps(s.export_user(user))
            listed = json.dumps([m.text for m in s.memories(user, include_inactive=True)])
            personas = json.dumps([p.to_json() for p in list_personas(s, user)])
            found = []
            for inst in s.instances(user):
                for query in [f"{o} likes {w}" for o in others for w in WORDS[:3]] + ["coffee garden piano"]:
                    found += recall(s, user, query, instance=inst, k=20)
            assert all(m.user_id == user.id for m in found)
            for other in others:
                for blob in (exported, listed, personas, json.dumps([m.text for m in found])):
                    assert other not in blob
            for inst in s.instances(user):  # instance-private memories stay in their instance
                for m in recall(s, user, "likes", instance=inst, k=50):
                    assert m.instance_id in (None, inst.id)
