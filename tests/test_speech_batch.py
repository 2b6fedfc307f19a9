"""Spoken turns batched across sessions (tiny, both architectures): the talkers of concurrent turns
share forward passes and their vocoder chunks share calls, yet each turn speaks as it would alone;
one turn's fault or cancel leaves the others in its batch speaking.

Tolerance: a batched pass computes a row with other rows beside it (left-padded attention in the
talker, stacked windows in the vocoder), which moves float32 results by a few ULPs; the codes are
sampled from the same logits up to that, so the audio must agree to 1e-4 (measured: ~4e-7).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from assistant.config import EngineConfig, Profile
from assistant.engine import Engine, load_backend
from assistant.events import AudioChunk, Done, Error
from assistant.turns import Message, Request

POISON = "this turn breaks the talker"


class FaultyTalker:
    """The real backend, except that the POISON turn's talker gets a code no embedding has once it
    has made a few (as a backend bug would): the batched talker pass it is in fails."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def start(self, request):
        return self.real.start(request)

    def step(self, streams) -> None:
        for s in streams:
            talker = s.talker
            if s.request.messages[-1].text != POISON or talker is None or talker.done:
                continue
            if getattr(talker, "codes", None) and len(talker.codes) >= 3:  # seed 2 makes 4 codes, then eos
                talker.codes[-1] = 10**9
            elif getattr(talker, "frames", None) and len(talker.frames) >= 5:
                talker.frames[-1][0] = 10**9
        self.real.step(streams)


@pytest.fixture(scope="module", params=["qwen2_5_omni", "qwen3_omni"])
def engines(request):
    config = EngineConfig(profile=Profile.TINY, architecture=request.param, max_batch=8)
    batched = Engine(FaultyTalker(load_backend(config)), config)
    alone = Engine(load_backend(EngineConfig(profile=Profile.TINY, architecture=request.param, batch_speech=False)))
    yield batched, alone
    batched.close()
    alone.close()


def _request(text: str, seed: int) -> Request:
    return Request((Message("user", text),), speak=True, seed=seed, max_new_tokens=6, temperature=0.8)


async def _events(engine, request, cancel_after_chunks: int | None = None) -> list:
    out = []
    async for ev in engine.stream(request):
        out.append(ev)
        if cancel_after_chunks is not None and sum(isinstance(e, AudioChunk) for e in out) >= cancel_after_chunks:
            engine.cancel(request.turn_id)
            break
    return out


def _together(engine, requests, cancel: dict | None = None) -> list[list]:
    cancel = cancel or {}

    async def go():
        return await asyncio.gather(*(_events(engine, r, cancel.get(i)) for i, r in enumerate(requests)))

    return asyncio.run(go())


def _audio(events) -> np.ndarray:
    return np.concatenate([e.pcm for e in events if isinstance(e, AudioChunk)])


def _assert_same_speech(a: list, b: list) -> None:
    assert isinstance(a[-1], Done) and isinstance(b[-1], Done), (a[-1], b[-1])
    assert a[-1].text == b[-1].text
    pa, pb = _audio(a), _audio(b)
    assert len(pa) == len(pb) > 0
    np.testing.assert_allclose(pa, pb, atol=1e-4)


def test_a_batched_turn_speaks_as_it_would_alone(engines):
    batched, alone = engines
    requests = [_request(f"question {i} about the weather", seed=i) for i in range(3)]
    before = dict(batched.backend.speech_batch_sizes)
    together = _together(batched, requests)
    sizes = batched.backend.speech_batch_sizes
    assert sizes["talker", 3] > before.get(("talker", 3), 0), dict(sizes)  # the talkers shared passes
    assert any(n > 1 and sizes[stage, n] > before.get((stage, n), 0) for stage, n in sizes
               if stage != "talker"), dict(sizes)  # and the vocoder calls
    for req, got in zip(requests, together, strict=True):
        # alone, on the engine that runs speech one turn at a time (the code before batching)
        ref = asyncio.run(_events(alone, Request(req.messages, speak=True, seed=req.seed, max_new_tokens=6,
                                                 temperature=0.8)))
        _assert_same_speech(got, ref)
        # and alone on the batching engine (a batch of one)
        one = asyncio.run(_events(batched, Request(req.messages, speak=True, seed=req.seed, max_new_tokens=6,
                                                   temperature=0.8)))
        _assert_same_speech(got, one)


def test_one_turns_fault_or_cancel_leaves_the_others_speaking(engines):
    batched, alone = engines
    requests = [_request("first of four", 1), _request(POISON, 2), _request("the one that is cancelled", 3),
                _request("last of four", 4)]
    got = _together(batched, requests, cancel={2: 1})
    assert isinstance(got[1][-1], Error), got[1][-1]
    assert sum(isinstance(e, AudioChunk) for e in got[2]) == 1 and not any(isinstance(e, Done) for e in got[2])
    for i in (0, 3):
        req = requests[i]
        ref = asyncio.run(_events(alone, Request(req.messages, speak=True, seed=req.seed, max_new_tokens=6,
                                                 temperature=0.8)))
        _assert_same_speech(got[i], ref)
    follow = asyncio.run(_events(batched, _request("after the fault", 5)))
    assert isinstance(follow[-1], Done)
