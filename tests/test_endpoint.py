"""Replies prepared during the pause at the end of a turn (Endpointer `Pause`/`Resume`, and the voice
conversation holding the prepared reply back until the end of the turn is confirmed).

Real speech: prompts spoken by espeak-ng, fed as 10 ms frames the way a microphone delivers them.
The conversation runs on the tiny engine (noise replies: what is asserted is which events go out
and when, and that the turn heard is the whole utterance).
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import wave

import numpy as np
import pytest

from assistant.config import EngineConfig, Profile
from assistant.engine import load_engine
from assistant.session import Session
from assistant.voice import VoiceConversation
from audio.endpoint import FRAME, SAMPLE_RATE, End, EndpointConfig, Endpointer, Pause, Resume, Start
from audio.io import resample


def spoken(text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", f.name, text], check=True)
        with wave.open(f.name) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    pcm = resample(pcm, rate, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(pcm) > 1e-3)
    return pcm[loud[0] : loud[-1] + 1]  # espeak's own leading and trailing silence cut off


def silence(seconds: float, seed: int = 0) -> np.ndarray:
    """A quiet room (-70 dBFS noise), not digital zero."""
    return (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * 10**(-70 / 20)).astype(
        np.float32
    )


def frames(pcm: np.ndarray):
    ints = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
    for i in range(0, len(ints) // FRAME * FRAME, FRAME):
        yield ints[i : i + FRAME]


def run(endpointer: Endpointer, pcm: np.ndarray) -> list[tuple[int, object]]:
    """Every event with the stream position (samples) at which it was raised."""
    out = []
    for frame in frames(pcm):
        for event in endpointer.push(frame):
            out.append((endpointer.position, event))
    return out


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return spoken("What is the capital of France?")


def test_a_pause_comes_before_the_end_with_the_same_utterance(question):
    cfg = EndpointConfig()
    events = run(Endpointer(cfg), np.concatenate([silence(0.5), question, silence(1.0, seed=1)]))
    pauses = [(at, e) for at, e in events if isinstance(e, Pause)]
    ends = [(at, e) for at, e in events if isinstance(e, End)]
    assert len(pauses) == 1 and len(ends) == 1 and not any(isinstance(e, Resume) for _, e in events)
    (pause_at, pause), (end_at, end) = pauses[0], ends[0]
    # raised prepare_s and silence_s after the last speech frame (one frame of rounding)
    assert abs((pause_at - end.end) / SAMPLE_RATE - cfg.prepare_s) <= 0.011
    assert abs((end_at - end.end) / SAMPLE_RATE - cfg.silence_s) <= 0.011
    # what was prepared from is exactly what the turn is
    assert (pause.utterance.start, pause.utterance.end) == (end.start, end.end)
    assert np.array_equal(pause.utterance.pcm, end.pcm)


def test_digital_silence_between_questions_keeps_the_gate_down():
    """A gated or virtual microphone gives exact zeros between turns. They count as the quietest
    room: when they were skipped, the soft edges of the speech set the noise floor, the gate rose
    (to -37 dBFS here, -25 through PulseAudio) and questions spoken at -33 dBFS were cut at their
    softer words, each cut dropping a prepared reply (14 in these ten questions, preparing from
    0.15 s of silence on; from 0.1 s, espeak's longer gaps between words drop 6 with the fix)."""
    cfg = EndpointConfig(prepare_s=0.15)
    endpointer = Endpointer(cfg)
    questions = [spoken(q) * 0.25 for q in ("What is two plus two?", "What is the capital of France?",
                                            "Tell me a short joke.", "What colour is the sky?",
                                            "How many legs does a spider have?")]  # fmt: skip
    events = []
    for q in questions * 2:
        events += [e for _, e in run(endpointer, np.concatenate([np.zeros(3 * SAMPLE_RATE, np.float32), q]))]
    events += [e for _, e in run(endpointer, np.zeros(SAMPLE_RATE, np.float32))]
    assert sum(isinstance(e, End) for e in events) == 10
    assert endpointer.gate() == cfg.threshold_db
    assert sum(isinstance(e, Resume) for e in events) <= 2  # (14 before)


def test_speech_after_a_pause_resumes_the_utterance(question):
    two = np.concatenate([silence(0.5), question, silence(0.4, seed=2), spoken("And of Spain?"), silence(1.0, seed=3)])
    events = [e for _, e in run(Endpointer(), two)]
    kinds = [type(e).__name__ for e in events if isinstance(e, Pause | Resume | End)]
    assert kinds == ["Pause", "Resume", "Pause", "End"]
    first, end = events[[type(e) for e in events].index(Pause)], events[-1]
    assert first.utterance.end < end.end - 0.5 * SAMPLE_RATE  # the turn holds both phrases
    assert len(end.pcm) > len(first.utterance.pcm) + 0.9 * SAMPLE_RATE


def test_no_pause_when_preparing_is_off(question):
    cfg = EndpointConfig(prepare_s=0.7)
    events = [e for _, e in run(Endpointer(cfg), np.concatenate([silence(0.5), question, silence(1.0)]))]
    assert not any(isinstance(e, Pause) for e in events)
    assert sum(isinstance(e, End) for e in events) == 1


@pytest.fixture(scope="module")
def engine():
    eng = load_engine(EngineConfig(profile=Profile.TINY, max_context_tokens=4096))
    yield eng
    eng.close()


class Client:
    """The other end of a conversation: every message and audio frame, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []

    def send(self, message: dict) -> None:
        self.log.append((message["type"], message))

    def send_audio(self, reply_id: str, pcm: np.ndarray, rate: int) -> None:
        self.log.append(("audio", len(pcm) / rate))

    def types(self) -> list[str]:
        return [t for t, _ in self.log]


async def feed(conv: VoiceConversation, pcm: np.ndarray) -> None:
    for frame in frames(pcm):
        conv.feed(frame)
    await asyncio.sleep(0)


async def until(condition, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_the_prepared_reply_is_held_until_the_turn_ends_then_sent_at_once(engine, question):
    async def go():
        client = Client()
        session = Session(engine, None, max_new_tokens=6)
        conv = VoiceConversation(session, client.send, client.send_audio, player_reports=False)
        await feed(conv, np.concatenate([silence(0.5), question, silence(0.4, seed=4)]))  # past prepare_s only
        held = conv._held
        assert held is not None and held.task is not None
        await until(lambda: held.generated)  # the whole reply was made during the pause...
        assert "response.started" not in client.types() and "audio" not in client.types()  # ...and not sent
        assert conv.state == "hearing"
        before = len(client.log)
        await feed(conv, silence(0.35, seed=5))  # the end of the turn is confirmed
        after = client.types()[before:]
        # released in the same call that saw the end: no wait for the model
        assert after[0] == "speech.stopped" and after[1] == "response.started"
        assert "audio" in after and "response.done" in after
        assert after.index("response.done") > after.index("audio")
        assert conv.turns == 1
        await conv.close()

    asyncio.run(go())


def test_a_reply_prepared_at_a_mid_sentence_pause_is_dropped(engine, question):
    async def go():
        client = Client()
        session = Session(engine, None, max_new_tokens=6)
        conv = VoiceConversation(session, client.send, client.send_audio, player_reports=False)
        await feed(conv, np.concatenate([silence(0.5), question, silence(0.4, seed=6)]))
        first = conv._held
        assert first is not None
        await feed(conv, spoken("And what about Spain?"))  # the user goes on
        assert first.cancelled and conv._held is None
        await feed(conv, silence(1.0, seed=7))
        reply = conv._reply
        assert reply is not None and len(reply.user_audio) > len(question) + SAMPLE_RATE  # both phrases
        await until(lambda: "response.done" in client.types())
        types = client.types()
        assert types.count("response.started") == 1 and types.count("speech.stopped") == 1
        assert "response.cancelled" not in types  # nothing of the dropped one was ever seen
        assert conv.turns == 1
        await conv.close()

    asyncio.run(go())


def test_silero_finds_the_turn_where_the_speech_is(question):
    lead = 0.5
    events = [e for _, e in run(Endpointer(EndpointConfig(detector="silero")),
                                np.concatenate([silence(lead), question, silence(1.0, seed=8)]))]  # fmt: skip
    ends = [e for e in events if isinstance(e, End)]
    assert len(ends) == 1
    assert abs(ends[0].start / SAMPLE_RATE - lead) <= 0.1
    assert abs(ends[0].end / SAMPLE_RATE - (lead + len(question) / SAMPLE_RATE)) <= 0.1


@pytest.mark.parametrize("kind", ["noise", "clatter"])
def test_silero_takes_no_turn_from_noise_that_fools_webrtcvad(kind):
    rng = np.random.default_rng(11)
    if kind == "noise":  # a fan or a hiss at -30 dBFS, well above the -45 dBFS gate
        sound = (rng.standard_normal(4 * SAMPLE_RATE) * 10 ** (-30 / 20)).astype(np.float32)
    else:  # dishes and keys: 30 sharp knocks in 4 s
        sound = np.zeros(4 * SAMPLE_RATE, dtype=np.float32)
        decay = np.exp(-np.arange(800) / 150)
        for at in rng.integers(0, len(sound) - 800, 30):
            sound[at : at + 800] += (rng.standard_normal(800) * 0.3 * decay).astype(np.float32)
    audio = np.concatenate([silence(1.0), sound, silence(1.0, seed=9)])

    def turns(detector: str) -> int:
        return sum(isinstance(e, Start) for _, e in run(Endpointer(EndpointConfig(detector=detector)), audio))

    assert turns("webrtc") >= 1  # the sound is hard: the default detector takes it for speech
    assert turns("silero") == 0


def test_silero_leaves_torch_threads_alone():
    import torch

    before = torch.get_num_threads()
    Endpointer(EndpointConfig(detector="silero")).feed(np.zeros(SAMPLE_RATE, dtype=np.int16))
    assert torch.get_num_threads() == before


def test_an_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown speech detector 'rnnoise'"):
        EndpointConfig(detector="rnnoise")
