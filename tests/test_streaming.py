"""Streamed speech (tiny, both architectures): chunks arrive early, match the one-shot decode, no seams.

Tolerance, Qwen2.5-Omni: the DiT vocoder integrates a flow-matching ODE whose every step lets a frame see one
more block ahead and behind, so a chunk decoded with bounded context cannot equal the one-shot
decode sample for sample. With the same codes and the same initial noise we require the streamed
waveform to stay within 12 dB SNR of it (measured here: about 21 dB), and no sample-to-sample
jump at a chunk boundary larger than the waveform's own largest jumps (no clicks).
Qwen3-Omni: Code2Wav is causal and each chunk gets the same 25 frames of left context as the
model's own one-shot `chunked_decode`, so the two agree closely (measured: about 60 dB SNR).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from assistant.config import EngineConfig, Profile
from assistant.engine import load_engine
from assistant.events import AudioChunk, Done
from assistant.turns import Message, Request


def timed(engine, request):
    async def go():
        t0 = time.perf_counter()
        return [(time.perf_counter() - t0, ev) async for ev in engine.stream(request)]

    return asyncio.run(go())


@pytest.fixture(scope="module", params=["qwen2_5_omni", "qwen3_omni"])
def engines(request):
    arch = request.param
    streamed = load_engine(EngineConfig(profile=Profile.TINY, architecture=arch, stream_speech=True))
    oneshot = load_engine(EngineConfig(profile=Profile.TINY, architecture=arch, stream_speech=False))
    yield streamed, oneshot
    streamed.close()
    oneshot.close()


def speech(events):
    return [ev for _, ev in events if isinstance(ev, AudioChunk)]


@pytest.mark.parametrize("seed", [5, 11])
def test_streamed_matches_one_shot_without_seams(engines, seed):
    streamed, oneshot = engines
    req = Request((Message("user", "tell me something"),), max_new_tokens=10, seed=seed)
    a_chunks = speech(timed(streamed, req))
    b_chunks = speech(timed(oneshot, Request(req.messages, max_new_tokens=10, seed=seed)))
    assert len(a_chunks) >= 2 and len(b_chunks) == 1
    a = np.concatenate([c.pcm for c in a_chunks])
    b = b_chunks[0].pcm
    assert len(a) == len(b)  # the same codes: the same length
    snr = 10 * np.log10(np.mean(b**2) / max(np.mean((a - b) ** 2), 1e-20))
    print(f"streamed vs one-shot: SNR {snr:.1f} dB over {len(a) / 24000:.1f} s, {len(a_chunks)} chunks")
    assert snr > 12, f"streamed differs from one-shot: SNR {snr:.1f} dB"
    jumps = np.abs(np.diff(a))
    bounds = np.cumsum([len(c.pcm) for c in a_chunks])[:-1]
    at_bounds = max(jumps[i - 2:i + 2].max() for i in bounds)
    assert at_bounds <= jumps.max() and at_bounds <= np.quantile(jumps, 0.9999) * 1.25


def test_first_chunk_is_small_and_arrives_before_the_end(engines):
    streamed, oneshot = engines
    events = timed(streamed, Request((Message("user", "hello"),), max_new_tokens=10, seed=3))
    chunks = [(t, ev) for t, ev in events if isinstance(ev, AudioChunk)]
    done_t, done = events[-1]
    assert isinstance(done, Done)
    first_t, first = chunks[0]
    assert first.duration_s < 0.2  # small first chunk
    assert all(c.duration_s > first.duration_s for _, c in chunks[1:-1])  # later chunks are larger
    assert first_t < done_t and first_t < chunks[-1][0]
    assert done.timings.first_audio_s < done.timings.total_s
    assert done.timings.audio_s == pytest.approx(sum(c.duration_s for _, c in chunks))
    # streaming speaks sooner: its first audio comes at a smaller share of its own run's time than
    # the one-shot decode's (each measured within its own run, so a slower moment of a loaded
    # machine in one of the two runs does not decide it)
    one = timed(oneshot, Request((Message("user", "hello"),), max_new_tokens=10, seed=3))[-1][1].timings
    assert done.timings.first_audio_s / done.timings.total_s < one.first_audio_s / one.total_s, (done.timings, one)


def test_cancel_stops_speech_within_one_chunk(engines):
    streamed, _ = engines
    req = Request((Message("user", "a long spoken answer"),), max_new_tokens=30, seed=7)

    async def go():
        got = []
        gen = streamed.stream(req)
        async for ev in gen:
            got.append(ev)
            if isinstance(ev, AudioChunk):
                streamed.cancel(req.turn_id)
                break
        got += [ev async for ev in gen]
        await asyncio.sleep(0.5)
        return got

    got = asyncio.run(go())
    assert sum(isinstance(e, AudioChunk) for e in got) == 1
    assert not any(isinstance(e, Done) for e in got)
    follow = timed(streamed, Request((Message("user", "next"),), max_new_tokens=4, seed=1, speak=False))
    assert isinstance(follow[-1][1], Done)
