"""Sessions on the tiny engine with a real memory store: persistence, personas, instances.

The tiny model's random weights cannot extract facts or say a name, so the facts here come from
the memory package's explicit-statement rules (the scripted extractor the issue allows), while
the core model's own extraction still runs on every turn and must not corrupt anything. What is
asserted is what reaches the model: the recalled memories in the request it is given.
"""

from __future__ import annotations

import asyncio

import pytest

from assistant.config import EngineConfig, Profile
from assistant.engine import load_engine
from assistant.events import Done
from assistant.session import Session
from assistant.turns import Turn
from memory import Persona, create_persona, open_store


@pytest.fixture(scope="module")
def engine():
    eng = load_engine(EngineConfig(profile=Profile.TINY, max_context_tokens=4096))
    yield eng
    eng.close()


def say(session: Session, text: str) -> Done:
    async def go():
        events = [ev async for ev in session.converse(Turn(text=text), speak=False)]
        await session.wait_for_memory()
        return events[-1]

    done = asyncio.run(go())
    assert isinstance(done, Done)
    return done


def test_igor_correction_survives_a_restart(engine, tmp_path):
    store = open_store(tmp_path)
    s = Session(engine, store, user="egor-or-igor", max_new_tokens=8)
    say(s, "My name is Egor.")
    say(s, "No, my name is Igor.")
    store.close()

    store = open_store(tmp_path)  # a new process would see exactly this file
    s2 = Session(engine, store, user="egor-or-igor", max_new_tokens=8)
    request = s2.request_for(Turn(text="What is my name?"))
    assert "Igor" in request.system_prompt() and "Egor" not in request.system_prompt()
    # The earlier conversation is part of the prompt too, oldest first, without the exchange whose
    # fact was corrected since (the offline 0.5B answered with the old name while it was there).
    texts = [m.text for m in request.messages]
    assert texts[0] == "No, my name is Igor." and texts[-1] == "What is my name?"
    assert not any("Egor" in t for t in texts[::2]), texts
    say(s2, "What is my name?")  # the full turn still runs on the reopened store
    store.close()


def test_instances_share_user_facts_but_not_conversations(engine, tmp_path):
    store = open_store(tmp_path)
    user = store.user("ana")
    create_persona(store, user, Persona(name="Doctor", style="calm and precise", voice="Ethan"))
    create_persona(store, user, Persona(name="Coach", style="energetic"))
    doctor = Session(engine, store, user="ana", persona_name="Doctor", max_new_tokens=6)
    coach = Session(engine, store, user="ana", persona_name="Coach", max_new_tokens=6)
    say(doctor, "My name is Ana.")
    req = coach.request_for(Turn(text="what is my name"))
    assert "Ana" in req.system_prompt()  # user-wide memory reaches the other instance
    assert "You are Coach" in req.system_prompt() and req.voice is None
    assert [m.text for m in req.messages] == ["what is my name"]  # its own (empty) conversation
    assert doctor.request_for(Turn(text="hi")).voice == "Ethan"
    store.close()


def test_asked_a_name_never_given_the_model_is_told_it_is_unknown(engine, tmp_path):
    """The offline 0.5B, asked "What is my name?" by a user who never said it, made one up ("My name
    is Owl." after a chat about owls). It is told the name is unknown, until the user says it."""
    store = open_store(tmp_path)
    s = Session(engine, store, user="nameless", max_new_tokens=6)
    say(s, "Tell me a fun fact about owls.")
    assert "not told you their name" in (s.request_for(Turn(text="What is my name?")).context or "")
    assert "not told you their name" not in (s.request_for(Turn(text="What is an owl?")).context or "")
    say(s, "My name is Ada.")
    context = s.request_for(Turn(text="Do you know my name?")).context or ""
    assert "Ada" in context and "not told you their name" not in context
    store.close()


def test_another_user_never_sees_it(engine, tmp_path):
    store = open_store(tmp_path)
    say(Session(engine, store, user="igor", max_new_tokens=6), "My name is Igor.")
    other = Session(engine, store, user="mallory", max_new_tokens=6)
    req = other.request_for(Turn(text="What is my name? Igor?"))
    assert "Igor" not in (req.context or "")  # nothing of igor's is recalled for mallory
    assert all("Igor" not in m.text for m in req.messages[:-1])
    store.close()


def test_unknown_persona_is_a_clear_error(engine, tmp_path):
    from assistant.errors import NotFound

    store = open_store(tmp_path)
    with pytest.raises(NotFound, match="Nobody"):
        Session(engine, store, user="u", persona_name="Nobody")
    store.close()


def test_a_spoken_turn_is_transcribed_for_memory(engine, tmp_path, speech_dir):
    """The core model hears the audio itself; memory gets the words from the bundled ASR, off the
    reply's path."""
    from audio.io import load_audio

    store = open_store(tmp_path)
    s = Session(engine, store, user="listener", max_new_tokens=6)
    pcm = load_audio(speech_dir / "openai_whisper" / "jfk.flac")

    async def go():
        events = [ev async for ev in s.converse(Turn(audio=pcm), speak=False)]
        await s.wait_for_memory()
        return events

    assert isinstance(asyncio.run(go())[-1], Done)
    user = store.user("listener")
    heard = [m.text for inst in store.instances(user) for m in store.history(inst) if m.role == "user"]
    assert any("country" in t.lower() for t in heard), heard  # the stored turn has what was said
    # ... and the next turn's model input has it in the history, here and after a restart
    for session in (s, Session(engine, open_store(tmp_path), user="listener")):
        request = session.request_for(Turn(text="And then?"))
        assert any(m.role == "user" and "country" in m.text.lower() for m in request.messages[:-1])
    store.close()


def test_history_is_fitted_into_the_token_budget(engine, tmp_path):
    """A long conversation reaches the model as its newest messages only, within `history_tokens`
    (estimated so that Chinese, about a token a character, is not counted like English), starting
    with a user message; without a store the kept conversation stops growing as well."""
    from memory import count_tokens

    store = open_store(tmp_path)
    s = Session(engine, store, user="talkative", history_tokens=300, max_new_tokens=4)
    user = store.user("talkative")
    instance = store.open_instance(user, s.persona.name)
    for i in range(40):
        store.append_message(instance, "user", f"{i}: " + "我上周末和我妹妹去阿尔卑斯山远足。" * 3)
        store.append_message(instance, "assistant", f"{i}: " + "非常喜欢" * 20)
        store.append_message(instance, "system", "(the user said: " + "x" * 400 + ")")  # not for the model
    history = s.request_for(Turn(text="Hi")).messages[:-1]
    assert history[0].role == "user" and history[-1].text.startswith("39:")
    assert 2 <= len(history) < 80 and sum(count_tokens(m.text) for m in history) <= 300
    store.close()

    alone = Session(engine, None, history_tokens=300, max_new_tokens=4)
    for i in range(8):
        say(alone, f"{i}: " + "长城" * 60)
    history = alone.request_for(Turn(text="Hi")).messages[:-1]
    assert history[0].role == "user" and sum(count_tokens(m.text) for m in history) <= 300
    assert len(alone.history) == len(history) < 16


def test_the_history_window_keeps_its_start_until_it_outgrows_the_budget(engine, tmp_path):
    """So that a backend's cache of the conversation stays valid, the oldest message given to the model
    changes only when the history outgrows `history_tokens`, and then it is cut to `history_keep` of
    the budget in one step (not by one exchange every turn)."""
    from memory import count_tokens

    store = open_store(tmp_path)
    s = Session(engine, store, user="steady", history_tokens=200, max_new_tokens=4)
    instance = store.open_instance(store.user("steady"), s.persona.name)
    starts, sizes = [], []
    for i in range(30):
        store.append_message(instance, "user", f"{i}: what will the weather be like in town later today?")
        store.append_message(instance, "assistant", f"{i}: sunny and warm, with a light breeze from the west.")
        history = s.request_for(Turn(text="Hi")).messages[:-1]
        assert history[0].role == "user" and history[-1].text.startswith(f"{i}:")
        starts.append(history[0].text)
        sizes.append(sum(count_tokens(m.text) for m in history))
    assert max(sizes) <= 200
    cuts = [i for i in range(1, 30) if starts[i] != starts[i - 1]]
    assert 2 <= len(cuts) <= 10  # a sliding window would move on every one of the ~22 full turns
    assert all(sizes[i] <= 200 * s.history_keep for i in cuts)
    store.close()


def test_storing_an_exchange_never_blocks_the_event_loop(engine, tmp_path):
    """Another process holds the database's write lock for a while: the exchange is stored once it
    is released, and meanwhile the server's event loop (every other conversation) runs on."""
    import sqlite3
    import threading
    import time

    store = open_store(tmp_path)
    s = Session(engine, store, user="locked", max_new_tokens=4)
    say(s, "Hello there.")  # warm: the first turn loads what it needs
    hold_s = 1.5
    other = sqlite3.connect(str(store.path), check_same_thread=False)

    async def go():
        gaps, last = [], time.monotonic()
        stop = asyncio.Event()

        async def ticker():
            nonlocal last
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        other.execute("BEGIN IMMEDIATE")  # the lock another writer (a second serve, an import) holds
        threading.Timer(hold_s, other.rollback).start()
        started = time.monotonic()
        events = [ev async for ev in s.converse(Turn(text="Remember that my car is red."), speak=False)]
        stored_after = time.monotonic() - started
        stop.set()
        await tick
        await s.wait_for_memory()
        return events, max(gaps), stored_after

    events, worst_gap, stored_after = asyncio.run(go())
    other.close()
    assert isinstance(events[-1], Done)
    assert stored_after >= hold_s * 0.9  # the turn ended only once its exchange was written...
    assert worst_gap < hold_s / 3, worst_gap  # ...and the loop never stood still for the lock
    texts = [m.text for m in store.history(s._instance, limit=10)]
    assert "Remember that my car is red." in texts
    store.close()


def _hold_write_lock(store, hold_s: float):
    """Another connection (a second serve, an import) takes the database's write lock for `hold_s`."""
    import sqlite3
    import threading

    other = sqlite3.connect(str(store.path), check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")

    def release():
        other.rollback()
        other.close()

    threading.Timer(hold_s, release).start()


def test_writes_waiting_for_a_lock_leave_the_default_executor_free(engine, tmp_path):
    """More sessions than the loop's default executor has threads store an exchange while another
    connection holds the write lock: the writes wait on the store's own writer thread, so
    `asyncio.to_thread` (recall, uploads, encoding: every other conversation) still runs at once;
    once the lock is gone every exchange is on disk, each session's in the order recorded (before,
    each write held a default-executor thread, and recall waited for the lock)."""
    import os
    import time

    store = open_store(tmp_path)
    n = min(32, (os.cpu_count() or 1) + 4) + 4  # more than asyncio's default executor has threads
    sessions = [Session(engine, store, user=f"user{i}", extract_with_model=False) for i in range(n)]
    hold_s = 2.0

    async def go() -> float:
        _hold_write_lock(store, hold_s)
        writes = [s.record(Turn(text=f"Note {k} of {s.user}."), f"Reply {k}.") for k in range(3) for s in sessions]
        await asyncio.sleep(0.3)  # the writes have started and wait for the lock
        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.to_thread(lambda: None), timeout=30)
        waited = time.monotonic() - t0
        await asyncio.gather(*writes)
        for s in sessions:
            await s.wait_for_memory()
        return waited

    waited = asyncio.run(go())
    assert waited < hold_s / 4, waited
    store.close()
    with open_store(tmp_path) as again:  # durable: a new connection reads them from the file
        for s in sessions:
            texts = [m.text for m in again.history(s._instance, limit=10)]
            assert texts == [t for k in range(3) for t in (f"Note {k} of {s.user}.", f"Reply {k}.")], texts


def test_a_failed_write_is_logged_and_the_conversation_goes_on(engine, tmp_path, caplog):
    """A write that fails (here the instance was deleted by another connection: a foreign key) is not
    lost silently: the future `record` returns raises it, it is logged as an error, and the next
    exchange is stored."""
    import sqlite3

    store = open_store(tmp_path)
    s = Session(engine, store, user="gone", extract_with_model=False)
    other = sqlite3.connect(str(store.path))
    other.execute("PRAGMA foreign_keys = ON")
    other.execute("DELETE FROM instances WHERE id = ?", (s._instance.id,))
    other.commit()
    other.close()

    async def go():
        failed = s.record(Turn(text="This cannot be stored."), "No.")
        with pytest.raises(sqlite3.IntegrityError):
            await failed
        await s.wait_for_memory()
        again = Session(engine, store, user="gone", extract_with_model=False)  # makes the instance again
        await again.record(Turn(text="This can."), "Yes.")  # on the same writer thread
        await again.wait_for_memory()
        return again

    with caplog.at_level("ERROR", logger="assistant.session"):
        again = asyncio.run(go())
    assert any("could not be stored" in r.getMessage() and "FOREIGN KEY" in r.getMessage() for r in caplog.records)
    instance = store.open_instance(store.user("gone"), again.persona.name)
    assert [m.text for m in store.history(instance, limit=10)] == ["This can.", "Yes."]
    store.close()
