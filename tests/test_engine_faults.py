"""Faults stay with the turn they belong to: a decode step that fails because of one turn fails
only that turn, the others in its batch finish; background turns wait for the foreground ones in a
bounded queue. On the real tiny omni backend, behind a wrapper that makes one turn's steps fail
(the way a bad input or a backend bug would) and that pauses background turns (as the offline
backend does)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from assistant.config import EngineConfig, Profile
from assistant.engine import MAX_HELD, Engine, load_backend
from assistant.events import AudioChunk, Done, Error, TextDelta
from assistant.turns import Message, Request

POISON = "this turn breaks the model"


class FaultyBackend:
    """The real backend, except that a step with the POISON turn in it raises once that turn has
    made two tokens; it pauses background turns."""

    pauses_background = True

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def start(self, request):
        return self.real.start(request)

    def step(self, streams) -> None:
        if any(s.request.messages[-1].text == POISON and s.completion_tokens >= 2 for s in streams):
            raise RuntimeError("a fault in this turn's step")
        self.real.step(streams)


@pytest.fixture(scope="module")
def engine():
    config = EngineConfig(profile=Profile.TINY, architecture="qwen2_5_omni", max_context_tokens=2048)
    eng = Engine(FaultyBackend(load_backend(config)), config)
    yield eng
    eng.close()


def _request(text: str, tokens: int = 12, background: bool = False, speak: bool = False) -> Request:
    return Request((Message("user", text),), speak=speak, max_new_tokens=tokens, seed=0, background=background)


async def _events(engine, request) -> list:
    return [ev async for ev in engine.stream(request)]


def test_one_turns_fault_fails_only_that_turn(engine):
    async def go():
        return await asyncio.gather(*(_events(engine, _request(t)) for t in ("hello", POISON, "how are you?")))

    first, poisoned, third = asyncio.run(go())
    assert isinstance(poisoned[-1], Error) and poisoned[-1].code == "model_error"
    for events in (first, third):
        assert isinstance(events[-1], Done) and events[-1].completion_tokens == 12
        assert any(isinstance(e, TextDelta) for e in events)
    assert engine.metrics.max_batch >= 2  # they did share steps before the fault
    assert isinstance(asyncio.run(_events(engine, _request("still there?", 3)))[-1], Done)


class MidForwardFault:
    """The real backend, with a fault inside a forward pass: the last decoder layer of the thinker
    (or of the talker, for speech) raises on a step that has the POISON turn in it, once it made
    two tokens (or two speech codes), after the layers before it have written this step's keys and
    values into the batch's KV cache."""

    def __init__(self, real, part: str) -> None:
        self.real = real
        self.part = part
        self.stepping: list = []
        self.faults = 0
        module = real.thinker.model.language_model if part == "thinker" else real.model.talker.model
        assert len(module.layers) >= 2  # a layer before the faulty one writes the cache first
        module.layers[-1].register_forward_pre_hook(self._fault)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def _poisoned(self, s) -> bool:
        if s.request.messages[-1].text != POISON:
            return False
        if self.part == "thinker":
            return s.phase == "text" and s.completion_tokens >= 2
        return s.talker is not None and len(s.talker.codes) >= 2

    def _in_this_pass(self) -> list:
        """The streams whose rows this forward pass computes: the thinker's are the engine's step
        (it retries a failed one turn by turn); the talkers' are those in the speech batch now (it
        retries a failed talker step talker by talker)."""
        if self.part == "thinker":
            return self.stepping
        rows = {id(r) for r in self.real._speech.batch.rows}
        return [s for s in self.stepping if id(s.talker) in rows]

    def _fault(self, module, args) -> None:
        if any(self._poisoned(s) for s in self._in_this_pass()):
            self.faults += 1
            raise RuntimeError("a fault in the middle of the forward pass")

    def start(self, request):
        self.stepping = []
        return self.real.start(request)

    def step(self, streams) -> None:
        self.stepping = list(streams)
        self.real.step(streams)


def _outcome(events) -> tuple:
    """What a user gets from a turn: its text and its audio."""
    audio = [ev.pcm for ev in events if isinstance(ev, AudioChunk)]
    return events[-1].text, np.concatenate(audio) if audio else None


@pytest.mark.parametrize(("architecture", "part"), [("qwen2_5_omni", "thinker"), ("qwen3_omni", "thinker"),
                                                    ("qwen2_5_omni", "talker")])
def test_a_fault_mid_forward_fails_only_that_turn(architecture, part):
    """The batch's cache is left half-written by the failed step (the first layer has the new token,
    the last does not): the other turns still finish, with the very text (and speech) they give
    without the fault."""
    config = EngineConfig(profile=Profile.TINY, architecture=architecture, max_context_tokens=2048)
    backend = MidForwardFault(load_backend(config), part)
    eng = Engine(backend, config)
    speak = part == "talker"
    try:
        alone = {t: _outcome(asyncio.run(_events(eng, _request(t, speak=speak)))) for t in ("hello", "how are you?")}
        assert backend.faults == 0

        async def go():
            return await asyncio.gather(*(_events(eng, _request(t, speak=speak))
                                          for t in ("hello", POISON, "how are you?")))

        first, poisoned, third = asyncio.run(go())
        assert backend.faults >= 1 and eng.metrics.max_batch >= 2  # it failed inside a shared step
        assert isinstance(poisoned[-1], Error) and poisoned[-1].code == "model_error"
        for text, events in (("hello", first), ("how are you?", third)):
            assert isinstance(events[-1], Done), events[-1]
            assert events[-1].completion_tokens == 12
            got, want = _outcome(events), alone[text]
            assert got[0] == want[0]
            if speak:
                assert got[1] is not None and got[1].shape == want[1].shape  # the same speech, to batching round-off
                assert np.allclose(got[1], want[1], atol=1e-4)
    finally:
        eng.close()


def test_background_turns_wait_in_a_bounded_queue(engine):
    async def go():
        engine.defer_background(3.0)  # a user is speaking: background turns are held
        runs = [asyncio.ensure_future(_events(engine, _request(f"fact {i}", 2, background=True)))
                for i in range(MAX_HELD + 6)]
        await asyncio.sleep(1.0)
        refused = [r.result() for r in runs if r.done()]
        return refused, await asyncio.gather(*runs)

    refused, everything = asyncio.run(go())
    assert len(refused) == 6  # the ones past MAX_HELD, at once, while the others wait
    assert all(isinstance(ev[-1], Error) and ev[-1].code == "busy" for ev in refused)
    assert sum(isinstance(ev[-1], Done) for ev in everything) == MAX_HELD  # then run once it is quiet


def test_held_memory_extraction_leaves_the_default_executor_free(engine, tmp_path):
    """Eight exchanges recorded while a user is speaking: their fact extractions wait for the model
    in the engine's own threads, and `asyncio.to_thread` (recall, uploads, encoding) still runs at
    once (before, they took the loop's default executor, 6 threads on 2 cores)."""
    from assistant.session import Session
    from assistant.turns import Turn
    from memory import open_store

    with open_store(tmp_path) as store:
        session = Session(engine, store, user="ann")

        async def go() -> float:
            engine.defer_background(6.0)
            for i in range(8):
                session.record(Turn(text=f"My sister number {i} lives in Oslo."), "Nice.")
            await asyncio.sleep(3.0)  # the extractions have reached the model and wait there
            t0 = asyncio.get_running_loop().time()
            await asyncio.wait_for(asyncio.to_thread(lambda: None), timeout=10)
            waited = asyncio.get_running_loop().time() - t0
            await session.wait_for_memory()  # they run once the 6 s are over
            return waited

        assert asyncio.run(go()) < 1.0
