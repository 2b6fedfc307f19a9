"""Long recordings keep every line: real speech joined with pauses of 0.5-3 s, at several levels.

Real parts only: the bundled tiny.en model, Silero VAD, PyAV and the bundled Piper voice.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import numpy as np
import pytest

from audio import Progress, transcribe
from audio.io import load_audio, resample, wav_bytes, write_wav

DATA = Path(__file__).resolve().parent / "data" / "longform"
SENTENCES = {
    "jfk": "And so, my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country.",
    "quilter": "Mr. Quilter is the apostle of the middle classes and we are glad to welcome his gospel.",
    "wizard": "He began a confused complaint against the wizard, who had vanished behind the curtain on the left.",
    "horizon": "The horizon seems extremely distant.",
}
# A line counts as heard when this share of its words comes back in order: tiny.en slips a word or
# two in a sentence ("Francis" for "France is"); a dropped line scores 0.
HEARD = 0.75


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "").split()


def reading(seed: int = 0, rounds: int = 3) -> tuple[np.ndarray, list[str]]:
    """The four clips `rounds` times in shuffled orders, pauses of 0.5-3 s, levels -9 to +3 dB."""
    rng = np.random.default_rng(seed)
    clips = {name: load_audio(DATA / f"{name}.flac") for name in SENTENCES}
    parts, lines = [np.zeros(int(rng.uniform(0.5, 3.0) * 16_000), np.float32)], []
    for _ in range(rounds):
        for name in rng.permutation(list(SENTENCES)):
            gain = 10 ** (rng.uniform(-9.0, 3.0) / 20)
            parts += [clips[name] * gain, np.zeros(int(rng.uniform(0.5, 3.0) * 16_000), np.float32)]
            lines.append(SENTENCES[name])
    return np.concatenate(parts).astype(np.float32), lines


def heard_in_order(lines: list[str], text: str) -> list[tuple[str, float]]:
    """Each reference line with the share of its words found in the transcript, the lines and the
    transcript aligned word by word as wholes (so order counts)."""
    ref = [(n, w) for n, line in enumerate(lines) for w in words(line)]
    matcher = difflib.SequenceMatcher(a=[w for _, w in ref], b=words(text), autojunk=False)
    found = [0] * len(lines)
    for block in matcher.get_matching_blocks():
        for n, _ in ref[block.a : block.a + block.size]:
            found[n] += 1
    return [(line, found[n] / len(words(line))) for n, line in enumerate(lines)]


@pytest.fixture(scope="module", params=[0, 1, 2], ids=lambda seed: f"seed{seed}")
def long_reading(request, tmp_path_factory) -> tuple[Path, list[str]]:
    pcm, lines = reading(request.param)
    return write_wav(tmp_path_factory.mktemp("longform") / "reading.wav", pcm, 16_000), lines


def test_every_line_of_a_long_reading_is_transcribed_in_order(long_reading) -> None:
    """Before the fix, the second of these readings lost 2 of its 12 lines (the first and the third kept them)."""
    path, lines = long_reading
    t = transcribe(path)
    assert t.duration_s > 60
    missed = [(line, share) for line, share in heard_in_order(lines, t.text) if share < HEARD]
    assert not missed, (missed, t.text)
    assert len(words(t.text)) <= 1.15 * sum(len(words(line)) for line in lines), t.text  # no invented lines


def test_progress_moves_with_the_decoded_seconds(long_reading) -> None:
    path, _ = long_reading
    seen: list[Progress] = []
    t = transcribe(path, progress=seen.append)
    done = [p.done_s for p in seen]
    assert len(seen) >= 4, done  # one report per decoded batch (1, 2, 4 ... chunks), not one at the end
    assert done == sorted(done) and done[0] < 0.5 * t.duration_s, done
    assert all(p.total_s == pytest.approx(t.duration_s, abs=0.1) for p in seen)
    assert done[-1] == pytest.approx(t.duration_s)
    counts = [p.segments for p in seen]
    assert counts == sorted(counts) and counts[-1] == len(t.segments)


@pytest.mark.parametrize("sentence", ["The capital of France is Paris.", "Turn on the lights."])
def test_a_short_sentence_in_the_piper_voice_is_transcribed_not_refused(tmp_path: Path, sentence: str) -> None:
    from assistant.offline.tts import load_speaker

    speaker = load_speaker()
    pcm = resample(speaker.speak(sentence), speaker.sample_rate, 16_000)
    assert len(pcm) / 16_000 < 2.5
    t = transcribe(wav_bytes(pcm, 16_000))
    assert t.language == "en" and t.language_source == "assumed"
    ref, hyp = words(sentence), words(t.text)
    assert sum(b.size for b in difflib.SequenceMatcher(a=ref, b=hyp).get_matching_blocks()) >= 0.5 * len(ref), t.text
