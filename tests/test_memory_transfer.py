"""`assistant memory export --jsonl | assistant --database URL memory import`: every table moves
between stores losslessly, SQLite -> PostgreSQL -> SQLite through real pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from memory import Exchange, Persona, create_persona, open_store, recall, remember
from memory.transfer import TABLES, export_lines

REPO = Path(__file__).resolve().parents[1]


def _fill(store) -> None:
    for name in ("ana", "ben"):
        user = store.user(name)
        create_persona(store, user, Persona(name=f"Coach {name}", style="Brief.", voice="Ethan"))
        inst = store.open_instance(user, "Grok")
        private = store.open_instance(user, "Grok", name="diary")
        for said in ("my name is Egor", "no, my name is Igor", "remember that I keep bees"):
            mid = store.append_message(inst, "user", said, timings={"asr_s": 0.25}, turn_id="t1")
            remember(store, user, Exchange(said, "ok", message_id=mid), instance=inst)
        store.append_message(inst, "assistant", "Hi Igör ✓", attachments=["files/1/a.wav"], interrupted=True)
        secret = store.add_memory(user, f"{name} hides the key under the mat", instance_id=private.id)
        store.add_memory(user, "An unembedded fact about tea.", kind="note", key="tea", source_id="x:1")
        store.edit_memory(user, secret, f"{name} hides the key in the shed")
        gone = store.add_memory(user, "A fact to forget.")
        store.delete_memories(user, [gone])


def _pipe(src: list[str], dst: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "assistant"]
    exp = subprocess.Popen([*cmd, *src, "memory", "export", "--jsonl", "--all-users"], stdout=subprocess.PIPE,
                           env=env, cwd=REPO)  # fmt: skip
    imp = subprocess.run([*cmd, *dst, "memory", "import"], stdin=exp.stdout, capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)  # fmt: skip
    exp.stdout.close()
    assert exp.wait(timeout=60) == 0 and imp.returncode == 0, imp.stderr
    return imp.stdout


def test_every_table_round_trips_sqlite_postgres_sqlite(tmp_path, local_pg):
    first, middle, last = tmp_path / "a", tmp_path / "pg-files", tmp_path / "b"
    url = local_pg.create_database("transfer")
    with open_store(first) as store:
        _fill(store)
        want = list(export_lines(store))
    tables = {json.loads(line)["table"] for line in want}
    assert tables == set(TABLES)
    out = _pipe(["--data-dir", str(first)], ["--data-dir", str(middle), "--database", url])
    assert "imported 2 users" in out
    with open_store(middle, database=url) as store:
        assert list(export_lines(store)) == want
    _pipe(["--data-dir", str(middle), "--database", url], ["--data-dir", str(last)])
    with open_store(last) as store:
        assert list(export_lines(store)) == want
    with open_store(middle, database=url) as store:  # recall embeds what was not: after the exports
        ana = store.user("ana", create=False)
        assert recall(store, ana, "what is my name?")[0].text == "The user's name is Igor."  # vectors
        assert store.fts_search(ana, '"bees"', 5)  # and keywords came along
        assert [h["action"] for h in store.history_of_memories(ana)].count("supersede") == 1
    with open_store(last) as store:
        ben = store.user("ben", create=False)
        assert [m.text for m in recall(store, ben, "where is the key?", k=1)] == ["ben hides the key in the shed"]
