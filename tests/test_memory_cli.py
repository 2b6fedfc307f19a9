"""`assistant memory ...` through the real command line entry point, on a real data dir."""

from __future__ import annotations

import json

import pytest

from assistant.cli import main

CONVERSATION = [
    {"text": "I adopted a grey cat named Miso last week", "speaker": "Ana", "time": "2023-05-08T13:56:00"},
    {"text": "That's lovely! How is the training going?", "speaker": "Ben", "time": "2023-05-08T13:57:00Z"},
    {"text": "I'm running the Berlin marathon in September", "speaker": "Ana", "time": "2023-05-08T13:58:00+02:00"},
    {"text": "My sister Lena is a pediatric nurse", "speaker": "Ana", "time": "2023-06-01T09:00:00"},
]
for line, source_id in zip(CONVERSATION, ("D1:1", "D1:2", "D1:3", "D2:1"), strict=True):
    line["source_id"] = source_id


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def data(tmp_path, capsys):
    path = tmp_path / "conv.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in CONVERSATION) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "--data-dir", str(tmp_path), "memory", "import", str(path), "--user", "ana")
    assert code == 0 and "imported 4" in out
    return tmp_path


def test_search_prints_ranked_memories_with_source_ids(data, capsys):
    base = ("--data-dir", str(data), "--user", "ana")
    code, out, _ = run(capsys, "memory", "search", *base, "--query", "What pet does Ana have?", "--k", "2", "--json")
    results = json.loads(out)
    assert code == 0 and len(results) == 2
    assert results[0]["source_id"] == "D1:1" and "Miso" in results[0]["text"]
    assert results[0]["score"] >= results[1]["score"]


def test_many_queries_in_one_process(data, capsys, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"query": "Which city marathon?", "id": "q1"}\n"What does the sister do for work?"\n')
    base = ("--data-dir", str(data), "--user", "ana")
    code, out, _ = run(capsys, "memory", "search", *base, "--queries", str(queries), "--k", "1", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [line["id"] for line in lines] == ["q1", None]
    assert lines[0]["results"][0]["source_id"] == "D1:3" and lines[1]["results"][0]["source_id"] == "D2:1"


def test_list_export_forget_and_forget_all(data, capsys):
    base = ("--data-dir", str(data), "--user", "ana")
    code, out, _ = run(capsys, "memory", "list", *base, "--json")
    memories = json.loads(out)
    assert code == 0 and [m["source_id"] for m in memories] == ["D1:1", "D1:2", "D1:3", "D2:1"]
    assert memories[2]["said_at"] == "2023-05-08T11:58:00+00:00"  # the offset was honoured
    code, out, _ = run(capsys, "memory", "forget", str(memories[0]["id"]), *base)
    assert code == 0 and "forgot 1" in out
    code, out, _ = run(capsys, "memory", "export", *base)
    exported = json.loads(out)
    assert exported["user"]["name"] == "ana" and len(exported["memories"]) == 4
    assert [h["action"] for h in exported["memory_history"]][-1] == "delete"
    code, out, _ = run(capsys, "memory", "forget", "--all", *base)
    assert code == 0
    code, _, err = run(capsys, "memory", "list", *base)
    assert code == 2 and err.strip() == "assistant: error: no user called 'ana'"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json}\n", "conv.jsonl:2: not JSON"),
        ('{"speaker": "x"}\n', "conv.jsonl:2: no text"),
        ('{"text": "hi", "time": "yesterday"}\n', "is not ISO 8601"),
        ('{"text": "' + "x" * 100_000 + '"}\n', "text too long"),
        ("[1, 2]\n", "must be a JSON object"),
    ],
)
def test_bad_import_lines_fail_with_one_line_and_store_nothing(tmp_path, capsys, content, message):
    path = tmp_path / "conv.jsonl"
    path.write_text('{"text": "fine line"}\n' + content, encoding="utf-8")
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "memory", "import", str(path), "--user", "u")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, "--data-dir", str(tmp_path), "memory", "list", "--user", "u")
    assert code == 0 and out == ""


def test_user_errors_are_one_line(tmp_path, capsys):
    base = ("--data-dir", str(tmp_path), "--user", "u")
    assert run(capsys, "memory", "import", str(tmp_path / "missing.jsonl"), *base)[2].startswith(
        "assistant: error: cannot read"
    )
    assert run(capsys, "memory", "forget", "7", *base)[0] == 2
    assert run(capsys, "memory", "forget", *base)[0] == 2
    assert "--k must be at least 1" in run(capsys, "memory", "search", "--query", "x", "--k", "0", *base)[2]


def test_a_database_that_is_not_postgresql_or_cannot_be_reached_is_one_line(tmp_path, capsys, monkeypatch):
    base = ("--data-dir", str(tmp_path), "--user", "u")
    code, _, err = run(capsys, "--database", "mysql://db/x", "memory", "list", *base)
    assert code == 2 and err == "assistant: error: --database must be a postgresql:// URL, not 'mysql'\n"
    monkeypatch.setenv("ASSISTANT_DATABASE_URL", f"postgresql://nobody@/none?host={tmp_path}")
    code, _, err = run(capsys, "memory", "list", *base)
    assert code == 2 and err.startswith("assistant: error: cannot open the database postgresql://nobody@/none")
    assert len(err.splitlines()) == 1
