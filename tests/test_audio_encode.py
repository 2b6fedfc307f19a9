"""audio.encode: every format the API returns decodes back to the same length of sound."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.errors import BadInput
from audio.encode import FORMATS, encode_audio
from audio.io import load_audio


@pytest.fixture(scope="module")
def speech(speech_dir) -> np.ndarray:
    return load_audio(speech_dir / "openai_whisper" / "jfk.flac", sample_rate=24_000)[: 24_000 * 3]  # 3 s


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "pcm"])
def test_round_trip_keeps_the_duration(speech, fmt):
    back = load_audio(encode_audio(speech, 24_000, fmt))  # decoded at 16 kHz
    assert len(back) / 16_000 == pytest.approx(3.0, abs=0.08)  # codec padding, frame rounding
    assert np.sqrt(np.mean(back**2)) > 0.01  # sound, not silence


def test_pcm_is_16_bit_little_endian(speech):
    data = encode_audio(speech, 24_000, "pcm")
    assert len(data) == 2 * len(speech)
    back = np.frombuffer(data, "<i2").astype(np.float32) / 32767
    assert np.max(np.abs(back - np.clip(speech, -1, 1))) < 1e-4


def test_empty_audio_and_unknown_format():
    assert encode_audio(np.zeros(0, np.float32), 24_000, "mp3") == b""
    with pytest.raises(BadInput):
        encode_audio(np.zeros(10, np.float32), 24_000, "ogg-vorbis")
