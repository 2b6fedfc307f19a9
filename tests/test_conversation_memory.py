"""What a user of the default (offline) profile notices about memory: corrections answered with the
new fact, deletions that hold, nothing stored that they never said, jokes that corrupt nothing.

The rule and grounding tests need no model; the conversation tests run the real offline 0.5B
(`slow`), the CLI one as a user runs it, in subprocesses on one data dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import offline_engine
from conftest import say as say_turn

from memory import Embedder, Exchange, Fact, open_store, remember, rule_facts
from memory.extract import grounded


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.mark.parametrize(
    ("said", "stored"),
    [
        ("No, my name is Igor.", ["The user's name is Igor."]),
        ("Sorry, my name is actually Dmitry.", ["The user's name is Dmitry."]),  # not "Actually Dmitry"
        ("Hi, I'm Marta and I like tea.", ["The user's name is Marta.", "The user likes tea."]),
        ("Actually I live in Bergen now.", ["The user lives in Bergen."]),
        ("I moved to Madrid last week.", ["The user lives in Madrid."]),
        ("My sister Anna works as a doctor.", ["The user's sister Anna works as a doctor."]),
        ("I'm allergic to peanuts.", ["The user is allergic to peanuts."]),
        ("My favorite color is green.", ["The user's favorite color is green."]),
        ("My name is a secret.", []),
        ("I live in ... now.", []),
        ("Do I live in Berlin?", []),
        ("Forget everything.", []),
        ("Tell me about the sea in one sentence.", []),
    ],
)
def test_explicit_statements_are_read_by_the_rules(said, stored):
    assert [f.text for f in rule_facts(said)] == stored


def test_a_fact_the_user_did_not_say_is_not_grounded():
    assert grounded(Fact("The user's name is Igor."), "Tell me about the sea in one sentence.")
    assert grounded(Fact("The user lives in now."), "I live in Bergen now.")
    assert grounded(Fact("The user is allergic to peanuts."), "I have a peanut allergy.") is None
    assert grounded(Fact("The user lives in Rome.", action="delete"), "I love Rome.")  # never asked to forget


def test_a_name_the_rules_did_not_read_is_not_stored_whatever_its_key(tmp_path, embedder):
    """"My name is a secret." came back from the 0.5B as a fact of its own key ("user.secret"),
    in the user's very words, and was stored as if it were a name."""
    store = open_store(tmp_path, embedder=embedder)
    user = store.user("u")
    said = json.dumps({"facts": [{"text": "My name is a secret.", "key": "user.secret"},
                                 {"text": "The user's name is a secret.", "key": "user.identity"}]})  # fmt: skip
    remember(store, user, Exchange("My name is a secret."), extract=lambda prompt: said)
    remember(store, user, Exchange("I live in Lisbon."), extract=lambda prompt: json.dumps({"facts": []}))
    assert [m.text for m in store.memories(user)] == ["The user lives in Lisbon."]
    store.close()


def test_a_model_answer_with_facts_never_said_stores_nothing(tmp_path, embedder):
    """The extractor's answer (here the 0.5B's own failure: its prompt's example copied, and a city
    of 'now') is checked against the user's words; and an extractor that fails loses nothing."""
    store = open_store(tmp_path, embedder=embedder)
    user = store.user("u")
    remember(store, user, Exchange("I live in Lisbon."))
    copied = json.dumps({"facts": [{"text": "The user's name is Igor.", "key": "user.name"},
                                   {"text": "The user lives in now.", "key": "user.city"}]})  # fmt: skip
    remember(store, user, Exchange("Tell me about the sea in one sentence, now."), extract=lambda prompt: copied)

    def broken(prompt: str) -> str:
        raise RuntimeError("the model went away")

    remember(store, user, Exchange("I work as a nurse."), extract=broken)
    assert sorted(m.text for m in store.memories(user)) == ["The user lives in Lisbon.", "The user works as a nurse."]
    store.close()


def test_a_deleted_fact_is_not_extracted_again_unless_said_again(tmp_path, embedder):
    store = open_store(tmp_path, embedder=embedder)
    user = store.user("u")
    remember(store, user, Exchange("My dog is called Rex."))
    store.delete_memories(user, [m.id for m in store.memories(user)])
    again = json.dumps({"facts": [{"text": "The user's dog is called Rex."}]})
    remember(store, user, Exchange("Rex was barking all night, I guess."), extract=lambda prompt: again)
    assert store.memories(user) == []
    remember(store, user, Exchange("My dog is called Rex."))  # said again: stored again
    assert [m.text for m in store.memories(user)] == ["The user's dog is called Rex."]
    store.close()


def test_an_older_statement_never_supersedes_a_newer_one(tmp_path, embedder):
    """Extraction of turn 1 finishing after turn 2's (the engine ran it later) keeps turn 2's fact."""
    store = open_store(tmp_path, embedder=embedder)
    user = store.user("u")
    inst = store.open_instance(user, "Grok")
    first = store.append_message(inst, "user", "I live in Berlin.")
    second = store.append_message(inst, "user", "I moved to Madrid.")
    remember(store, user, Exchange("I moved to Madrid.", message_id=second))
    remember(store, user, Exchange("I live in Berlin.", message_id=first))
    assert [m.text for m in store.memories(user)] == ["The user lives in Madrid."]
    store.close()


# ------------------------------------------------------------------ the real offline model
@pytest.fixture(scope="module")
def offline():
    yield from offline_engine()


def say(session, text: str) -> str:
    reply = say_turn(session, text)
    assert reply.strip()
    return reply


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the real model on two shared cores
def test_unrelated_turns_store_nothing_and_a_deletion_holds(offline, tmp_path):
    from assistant.session import Session

    store = open_store(tmp_path)
    s = Session(offline, store, user="sea", max_new_tokens=24)
    say(s, "My name is Pavel.")
    user = store.user("sea")
    store.delete_memories(user, [m.id for m in store.memories(user)])  # as the Memory tab does
    for text in ("Tell me about the sea in one sentence.", "What's a good name for a cat?", "Thanks!"):
        say(s, text)
    assert store.memories(user) == []
    store.close()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the real model on two shared cores
def test_jokes_and_wishes_corrupt_no_memory(offline, tmp_path):
    from assistant.session import Session

    store = open_store(tmp_path)
    s = Session(offline, store, user="joker", max_new_tokens=24)
    say(s, "My name is Olga.")
    for text in ("My name is a secret.", "Forget everything."):
        say(s, text)
    user = store.user("joker")
    assert [m.text for m in store.memories(user)] == ["The user's name is Olga."]
    store.close()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the real model on two shared cores
def test_igor_demo_in_the_cli(tmp_path):
    """The README's demo as a user types it: each command a new process on one data dir."""
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "assistant", "--profile", "offline", "--user", "igor", *args],
                              capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    ask = ("ask", "--max-new-tokens", "24")
    cli(*ask, "My name is Egor.")
    cli(*ask, "No, my name is Igor.")
    answer = cli(*ask, "What is my name?").stdout
    assert "Igor" in answer and "Egor" not in answer and "the user" not in answer.casefold(), answer
    memories = json.loads(cli("memory", "list", "--all", "--json").stdout)
    status = {m["text"]: m["status"] for m in memories}
    assert status == {"The user's name is Egor.": "superseded", "The user's name is Igor.": "active"}, status
