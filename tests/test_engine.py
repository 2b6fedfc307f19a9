"""The engine and the omni backend on tiny random models of both real architectures.

Random weights produce noise, so these tests assert shapes, rates, lengths and scheduling,
never words.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from assistant.config import EngineConfig, Profile
from assistant.engine import load_engine
from assistant.events import AudioChunk, Done, Error, TextDelta
from assistant.turns import Message, Request

ARCHS = ["qwen2_5_omni", "qwen3_omni"]


@pytest.fixture(scope="module", params=ARCHS)
def engine(request):
    eng = load_engine(EngineConfig(profile=Profile.TINY, architecture=request.param, max_context_tokens=2048))
    yield eng
    eng.close()


def run(engine, request: Request) -> list:
    async def go():
        return [ev async for ev in engine.stream(request)]

    return asyncio.run(go())


def ask(engine, text="hello", images=(), audio=None, speak=True, seed=0, max_new_tokens=12) -> list:
    msg = Message("user", text, tuple(images), audio)
    return run(engine, Request((msg,), speak=speak, seed=seed, max_new_tokens=max_new_tokens))


@pytest.fixture(scope="module")
def jfk(speech_dir):
    from audio.io import load_audio

    return load_audio(speech_dir / "openai_whisper" / "jfk.flac")


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))


@pytest.mark.parametrize("inputs", ["text", "audio", "image", "audio+image+text"])
def test_reply_has_text_and_24khz_speech(engine, inputs, jfk, photo):
    kwargs = {"text": "what is this?" if "text" in inputs else ""}
    if "audio" in inputs:
        kwargs["audio"] = jfk
    if "image" in inputs:
        kwargs["images"] = [photo]
    events = ask(engine, **kwargs)
    done = events[-1]
    assert isinstance(done, Done), events[-1]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert deltas and "".join(d.text for d in deltas) == done.text
    assert done.completion_tokens >= 1 and done.prompt_tokens > 5
    if "audio" in inputs:  # the clip became hundreds of audio tokens
        assert done.prompt_tokens > 100
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert chunks, "no speech produced"
    pcm = np.concatenate([c.pcm for c in chunks])
    assert {c.sample_rate for c in chunks} == {24_000}
    assert pcm.dtype == np.float32 and len(pcm) > 0 and np.isfinite(pcm).all()
    assert np.sqrt(np.mean(pcm**2)) > 0.01  # audible (the tiny vocoders are calibrated), not silence
    assert done.timings.first_text_s is not None and done.timings.first_audio_s is not None
    assert 0 < done.timings.first_text_s <= done.timings.first_audio_s <= done.timings.total_s
    assert done.timings.audio_s == pytest.approx(len(pcm) / 24_000)


def test_text_only_reply_has_no_audio(engine):
    events = ask(engine, speak=False)
    assert isinstance(events[-1], Done)
    assert not [e for e in events if isinstance(e, AudioChunk)]
    assert events[-1].timings.first_audio_s is None


def test_eight_sessions_at_once_batch_without_cross_talk(engine):
    requests = [Request((Message("user", f"question number {i}"),), speak=False, seed=i, max_new_tokens=16,
                        temperature=0.8) for i in range(8)]
    before = sum(n for size, n in engine.metrics.batch_sizes.items() if size > 1)

    async def together():
        async def one(r):
            return [ev async for ev in engine.stream(r)]

        return await asyncio.gather(*(one(r) for r in requests))

    results = asyncio.run(together())
    assert all(isinstance(r[-1], Done) for r in results)
    after = sum(n for size, n in engine.metrics.batch_sizes.items() if size > 1)
    assert after > before, "no decode step was shared by more than one turn"
    assert max(r[-1].batch_size for r in results) > 1
    # Each turn gets its own reply: the same as running it alone with the same seed.
    for req, res in zip(requests[:3], results[:3], strict=True):
        alone = run(engine, Request(req.messages, speak=False, seed=req.seed, max_new_tokens=16, temperature=0.8))
        assert alone[-1].text == res[-1].text
    assert len({r[-1].text for r in results}) > 1  # different prompts, different replies


def test_a_turn_joins_a_running_batch(engine):
    """A turn that arrives while another is decoding starts before that one finishes."""
    long = Request((Message("user", "tell me a long story"),), speak=False, seed=1, max_new_tokens=120)
    short = Request((Message("user", "hi"),), speak=False, seed=2, max_new_tokens=4)

    async def go():
        long_events, short_events = [], []

        async def read(req, sink):
            async for ev in engine.stream(req):
                sink.append((asyncio.get_running_loop().time(), ev))

        task = asyncio.create_task(read(long, long_events))
        while len(long_events) < 3:
            await asyncio.sleep(0.005)
        await read(short, short_events)
        await task
        return long_events, short_events

    long_events, short_events = asyncio.run(go())
    assert isinstance(long_events[-1][1], Done) and isinstance(short_events[-1][1], Done)
    assert short_events[-1][0] < long_events[-1][0], "the short turn waited for the long one to finish"
    assert short_events[-1][1].batch_size > 1


def test_cancel_stops_the_turn_and_the_next_starts(engine):
    req = Request((Message("user", "talk for a long time"),), speak=True, seed=3, max_new_tokens=200)

    async def go():
        seen = []
        gen = engine.stream(req)
        async for ev in gen:
            seen.append(ev)
            if len(seen) == 3:
                assert engine.cancel(req.turn_id)
                break
        after = [ev async for ev in gen]  # the stream is closed: nothing more arrives
        nxt = [ev async for ev in engine.stream(Request((Message("user", "next"),), speak=False,
                                                        max_new_tokens=5))]
        return seen, after, nxt

    seen, after, nxt = asyncio.run(go())
    assert len(seen) == 3 and not any(isinstance(e, Done) for e in seen)
    assert after == []
    assert isinstance(nxt[-1], Done)
    assert engine.metrics.turns_cancelled >= 1


def test_closing_the_stream_early_cancels(engine):
    req = Request((Message("user", "a long answer please"),), speak=False, max_new_tokens=200)
    cancelled = engine.metrics.turns_cancelled

    async def go():
        gen = engine.stream(req)
        async for _ in gen:
            break
        await gen.aclose()
        # the worker frees the slot at its next step: however slow a loaded machine makes that
        # step, it comes long before the 200 tokens the turn would otherwise take
        for _ in range(600):
            if engine.metrics.turns_cancelled > cancelled:
                break
            await asyncio.sleep(0.05)

    asyncio.run(go())
    assert engine.metrics.turns_cancelled == cancelled + 1


def test_prompt_longer_than_context_is_an_error_and_engine_keeps_serving(engine):
    huge = "word " * 5000
    events = ask(engine, text=huge)
    assert len(events) == 1 and isinstance(events[0], Error)
    assert events[0].code == "context_too_long"
    assert "context" in events[0].message
    assert isinstance(ask(engine, speak=False)[-1], Done)


def test_unknown_voice_is_a_clear_error(engine):
    events = run(engine, Request((Message("user", "hi"),), voice="Nobody"))
    assert isinstance(events[0], Error) and "Nobody" in events[0].message


def test_tiny_build_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from assistant.backends.tiny import tiny_model_path

    a = load_file(tiny_model_path("qwen2_5_omni", root=tmp_path / "a") / "model.safetensors")
    b = load_file(tiny_model_path("qwen2_5_omni", root=tmp_path / "b") / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in list(a)[:50])
