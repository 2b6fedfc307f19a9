"""Thinking and Big Brain (assistant/reasoning.py): the reasoning streams apart from the answer,
only the answer is spoken and stored, Big Brain's attempts run as one batch and a cancel frees
them all. Engine tests use the tiny random omni model (its words are noise: shapes, counts and
scheduling are asserted); the splitter, the vote and the program runs are exact."""

from __future__ import annotations

import asyncio
import os
import re

import pytest

from assistant.config import EngineConfig, Profile
from assistant.engine import load_engine
from assistant.errors import BadInput
from assistant.events import AudioChunk, Done, TextDelta, ThinkingDelta
from assistant.reasoning import (
    Attempt,
    ThoughtSplitter,
    mode_for_effort,
    normalise,
    run_program,
    vote,
    wants_thinking,
)
from assistant.turns import Message, Request


def split(chunks: list[str]) -> tuple[str, str]:
    s = ThoughtSplitter()
    out = []
    for i, c in enumerate(chunks):
        out += s.feed(c, final=i == len(chunks) - 1)
    return "".join(t for k, t in out if k == "thinking"), "".join(t for k, t in out if k == "answer")


@pytest.mark.parametrize(
    ("chunks", "thinking", "answer"),
    [
        (["Three apples", " and four more.\nThat is 7.\nAns", "wer: 7", ""],
         "Three apples and four more.\nThat is 7.\n", "7"),
        (["<thi", "nk>count them</th", "ink>\n\nThere are 9.", ""], "count them", "There are 9."),
        (["<think>x</think>\nAnswer: 12", ""], "x", "12"),
        (["**Final Answer:** 1,200 dollars", ""], "", "1,200 dollars"),
        (["Step 1: 6 x 7 = 42.\nSo the answer is 42.", ""],
         "Step 1: 6 x 7 = 42.\nSo the answer is 42.", "So the answer is 42."),
        (["The word answer: appears mid-line here\nAnswer: yes", ""],
         "The word answer: appears mid-line here\n", "yes"),
        (["Step.\n", "Answer:", " Farah", " gets", " $", "2", " in", " change.", ""], "Step.\n",
         "Farah gets $2 in change."),  # token by token: the words keep their spaces
    ],
)
def test_the_reasoning_and_the_answer_are_told_apart_as_they_stream(chunks, thinking, answer):
    assert split(chunks) == (thinking, answer)


def test_reasoning_streams_before_its_line_ends():
    """A long line of reasoning is let out as it comes (not held until its newline)."""
    s = ThoughtSplitter()
    out = s.feed("First we add the two prices together, which gives")
    assert out and out[0][0] == "thinking"
    assert s.feed(" 12.\nAnswer: 12", final=True)[-1] == ("answer", "12")


def test_answers_agree_on_their_numbers_and_programs_weigh_more():
    assert normalise("$1,200.00") == normalise("1200") == normalise("The total is 1200 dollars.") == "1200"
    assert normalise("Paris.") == "paris"
    a = [Attempt(0, "thought", "41", "41"), Attempt(1, "program", "42", "42"), Attempt(2, "thought", "41", "41"),
         Attempt(3, "thought", "", "", error="no answer")]
    assert vote(a) == ("41", ["41"])  # 2 reasoned beat 1 program
    tie = [Attempt(0, "thought", "41", "41"), Attempt(1, "program", "42", "42")]
    assert vote(tie) == ("42", ["42"])  # the computed one wins a 1:1
    assert vote([Attempt(0, "thought", "1", "1"), Attempt(1, "thought", "2", "2")])[0] is None  # a tie: the judge


def test_reasoning_effort_maps_to_modes_and_rejects_others():
    assert [mode_for_effort(e) for e in (None, "none", "minimal", "low", "medium", "high")] == [
        "none", "none", "none", "none", "think", "big_brain"]
    with pytest.raises(BadInput, match="minimal, low, medium, high"):
        mode_for_effort("extreme")
    assert wants_thinking("Please think hard about this: what is 17 times 23?")
    assert not wants_thinking("I think it is sunny")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from assistant.sandbox import Sandbox

    box = Sandbox(os.environ.get("ASSISTANT_CACHE_DIR") or tmp_path_factory.mktemp("cache"))
    box.warm()
    return box


def test_a_program_attempt_gives_what_it_printed(sandbox):
    answer, detail, error = run_program(sandbox, "Here:\n```python\nprint(sum([12, 30]))\n```")
    assert (answer, error) == ("42", "") and "print(sum" in detail


@pytest.mark.parametrize("code", ["while True:\n    pass", "x = []\nwhile True:\n    x.append('a' * 10**6)",
                                  "print(open('/etc/passwd').read())",
                                  "import socket\nsocket.create_connection(('127.0.0.1', 80))"])
def test_a_harmful_program_is_stopped_and_counts_as_failed(sandbox, code):
    answer, _, error = run_program(sandbox, f"```python\n{code}\n```")
    assert answer == "" and error


@pytest.fixture(scope="module")
def engine():
    eng = load_engine(EngineConfig(profile=Profile.TINY, max_context_tokens=2048))
    yield eng
    eng.close()


def events_of(engine, **options) -> list:
    request = Request((Message("user", "A shop sells pens at 3 dollars. How much are 4 pens?"),), **options)

    async def go():
        return [ev async for ev in engine.stream(request)]

    return asyncio.run(go())


def test_thinking_streams_apart_and_before_the_answer(engine):
    evs = events_of(engine, speak=False, reasoning="think", max_new_tokens=24)
    kinds = [type(e) for e in evs]
    done = evs[-1]
    assert isinstance(done, Done)
    assert ThinkingDelta in kinds and TextDelta in kinds
    assert kinds.index(ThinkingDelta) < kinds.index(TextDelta)  # the reasoning first
    assert done.text == "".join(e.text for e in evs if isinstance(e, TextDelta))  # the answer alone
    thought = "".join(e.text for e in evs if isinstance(e, ThinkingDelta))
    assert thought and thought not in done.text
    assert 0 < done.reasoning_tokens <= done.completion_tokens


def test_a_spoken_thinking_reply_speaks_only_after_the_thinking(engine):
    evs = events_of(engine, speak=True, reasoning="think", max_new_tokens=16)
    kinds = [type(e) for e in evs]
    assert AudioChunk in kinds and isinstance(evs[-1], Done)
    last_thought = max(i for i, k in enumerate(kinds) if k is ThinkingDelta)
    assert kinds.index(AudioChunk) > last_thought  # no sound while it thinks: the answer is what is said
    assert evs[-1].timings.audio_s > 0


def test_big_brain_runs_its_attempts_as_one_batch(engine):
    before = engine.metrics.batch_sizes.copy()
    evs = events_of(engine, speak=False, reasoning="big_brain", attempts=4, max_new_tokens=12)
    done = evs[-1]
    assert isinstance(done, Done), done
    thinking = "".join(e.text for e in evs if isinstance(e, ThinkingDelta))
    stopped = re.search(r"(\d+) attempt\(s\) stopped", thinking)  # the vote was settled early
    assert thinking.count("\nAttempt ") + (int(stopped.group(1)) if stopped else 0) == 4 and "Kept" in thinking
    assert done.batch_size == 4
    steps = engine.metrics.batch_sizes - before
    assert steps[4] > 0, steps  # the four decoded side by side
    assert done.text.strip() and done.text == "".join(e.text for e in evs if isinstance(e, TextDelta))
    assert done.reasoning_tokens == done.completion_tokens > 0


def test_a_cancelled_big_brain_turn_frees_every_attempt(engine):
    request = Request((Message("user", "hard question"),), speak=False, reasoning="big_brain", attempts=5,
                      max_new_tokens=400)

    async def go():
        stream = engine.stream(request)
        async for ev in stream:
            if isinstance(ev, ThinkingDelta):  # the attempts are submitted: leave now
                break
        await stream.aclose()
        for _ in range(100):
            if not engine._turns:
                return True
            await asyncio.sleep(0.05)
        return False

    assert asyncio.run(go()), "attempts still running after the cancel"
    assert events_of(engine, speak=False, max_new_tokens=4)[-1].text is not None  # the engine goes on


def test_a_bad_mode_is_refused():
    with pytest.raises(BadInput, match="reasoning"):
        Request((Message("user", "x"),), reasoning="deep")
    with pytest.raises(BadInput, match="attempts"):
        Request((Message("user", "x"),), reasoning="big_brain", attempts=99)


def test_the_history_and_memory_keep_only_the_answer(engine, tmp_path):
    from assistant.session import Session
    from assistant.turns import Turn
    from memory import open_store

    store = open_store(tmp_path)
    session = Session(engine, store, user="u", max_new_tokens=16)

    async def go():
        evs = [ev async for ev in session.converse(Turn(text="think hard about this: what is 6 times 7?"),
                                                     speak=False)]
        await session.wait_for_memory()
        return evs

    evs = asyncio.run(go())
    thought = "".join(e.text for e in evs if isinstance(e, ThinkingDelta))
    assert thought  # the words turned thinking on
    stored = [m.text for m in session._history()]
    assert stored[-1] == evs[-1].text and thought.strip() not in stored[-1]
    store.close()
