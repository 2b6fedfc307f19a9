"""In-turn speech recognition of the offline profile (the bundled faster-whisper tiny.en, real
weights): the short encoder window hears questions, silence and noise give nothing, and a decoder
that loops is caught and decoded again with Whisper's full window."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from assistant.offline.asr import FULL_S, WINDOW_S, WhisperTurns, _repeats
from audio.io import load_audio


@pytest.fixture(scope="module")
def whisper():
    return WhisperTurns.load()


def espeak(text: str, tmp_path, speed: int = 160) -> np.ndarray:
    out = tmp_path / "q.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", str(out), text], check=True)
    return np.asarray(load_audio(out), dtype=np.float32)


def test_questions_are_heard_with_the_short_window(whisper, tmp_path):
    assert WINDOW_S < FULL_S
    for question, words in [("No, my name is Igor.", ("name", "igor")),
                            ("Set a timer for ten minutes.", ("timer", "minutes"))]:
        pcm = espeak(question, tmp_path)
        text, looped = whisper._decode(pcm, WINDOW_S)
        assert not looped
        assert whisper.transcribe(pcm) == text
        assert all(w in text.lower() for w in words), text


def test_silence_and_quiet_noise_are_not_words(whisper):
    rng = np.random.default_rng(1)
    assert whisper.transcribe(np.zeros(16_000, dtype=np.float32)) == ""
    noise = rng.normal(0, 10 ** (-50 / 20), 32_000).astype(np.float32)  # -50 dBFS
    assert whisper.transcribe(noise) == ""
    assert whisper.transcribe(np.zeros(0, dtype=np.float32)) == ""


def test_a_looping_decoder_is_decoded_again_with_the_full_window(tmp_path):
    """With a 5 s window tiny.en repeats this question until its length guard stops it; the
    recognizer notices and decodes it again with the 30 s window."""
    short = WhisperTurns.load(window_s=5)
    pcm = espeak("How do I boil an egg?", tmp_path, speed=175)
    looped_text, looped = short._decode(pcm, 5)
    assert looped and looped_text.lower().count("egg") >= 2, looped_text
    text = short.transcribe(pcm)
    assert text.lower().count("egg") == 1 and not _repeats(short._tokenizer.encode(text)), text


def test_longer_speech_than_the_window_uses_whisper_windows(whisper):
    """A turn longer than Whisper's window (two utterances joined after a cut reply can be) is
    heard whole: real recordings, one after the other."""
    speech = Path(__file__).resolve().parent / "data"
    jfk = np.asarray(load_audio(speech / "openai_whisper/jfk.flac"), dtype=np.float32)
    leopard = np.asarray(load_audio(speech / "leopard/test.wav"), dtype=np.float32)
    pause = np.zeros(16_000, dtype=np.float32)
    long = np.concatenate([jfk, pause, leopard, pause, jfk, pause])
    assert len(long) > FULL_S * 16_000
    text = whisper.transcribe(long).lower()
    assert text.count("ask not what your country") == 2 and "quilter" in text, text
