"""A long-form development set made of real speech: the English clips of ../shared/data/speech
joined end to end with natural pauses (0.5-3 s), 1-10 minutes a file.

Each file is a seeded random sequence of clip pieces (every clip is cut at its own pauses into
sentences or phrases, so one file holds many short lines, like a reading or a meeting), each piece
at a random level (-9 to +3 dB), some files a few percent faster or slower (resampled: a different
pitch and pace of the same real voices), some over a quiet noise floor (-55 to -45 dBFS). The
reference is the pieces' transcripts in order. Nothing is committed: the files are rebuilt from the
clips and the seed.

    python bench/longform.py OUT_DIR        # writes OUT_DIR/long_NN.flac and OUT_DIR/references.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio.io import SAMPLE_RATE, load_audio, resample, write_wav

SPEECH = Path(__file__).resolve().parents[2] / "shared/data/speech"
LENGTHS_S = (60, 75, 90, 120, 150, 180, 240, 300, 420, 600)  # one file each
PAUSE_S = (0.5, 3.0)  # silence between two pieces, uniform
GAIN_DB = (-9.0, 3.0)
NOISE_DBFS = (-55.0, -45.0)  # the floor of the files that have one (every third)
SPEED = (0.94, 1.06)  # the pace of the files that are resampled (every other)
RECENT = 5  # a piece is not used again within this many pieces

# Pieces: (clip id, start s, end s, words), cut at the clip's own pauses (read off its loudness in
# 0.1 s steps); the words are the clip's reference, split there.
PIECES = (
    ("jfk", 0.0, 2.6, "And so, my fellow Americans,"),
    ("jfk", 2.6, 11.0, "ask not what your country can do for you, ask what you can do for your country."),
    ("leopard_en", 0.0, 5.86,
     "Mr. Quilter is the apostle of the middle classes and we are glad to welcome his gospel."),
    ("fw_stereo_left", 0.0, 5.0,
     "He began a confused complaint against the wizard, who had vanished behind the curtain on the left."),
    ("fw_stereo_right", 0.0, 5.0, "The horizon seems extremely distant."),
    ("leopard_diarization", 0.0, 4.0, "and so it begins"),
    ("leopard_diarization", 6.0, 11.2,
     "this is what a crocodile sounds like it's like meditating in the water and it's like"),
    ("leopard_diarization", 12.7, 18.65,
     "ladies and gentlemen please fasten your seat belts we are expecting some turbulence"),
    ("leopard_diarization", 18.65, 19.83, "thank you"),
)


@dataclass(frozen=True)
class LongFile:
    path: Path
    reference: str
    duration_s: float
    lines: tuple[tuple[float, float, str], ...]  # each piece: start s, end s, words


def clip_audio() -> dict[str, np.ndarray]:
    items = {it["id"]: it for it in json.loads((SPEECH / "transcripts.json").read_text())["items"]}
    out = {}
    for clip_id in {p[0] for p in PIECES}:
        it = items[clip_id]
        channel = {"left": 0, "right": 1}.get(it.get("channel"))
        out[clip_id] = load_audio(SPEECH / it["file"], channel=channel)
    return out


def _trimmed(pcm: np.ndarray) -> np.ndarray:
    """Without the leading and trailing near-silence, so the pause between pieces is the one drawn."""
    loud = np.flatnonzero(np.abs(pcm) > 10 ** (-40 / 20))
    if not len(loud):
        return pcm
    return pcm[max(0, loud[0] - 800) : loud[-1] + 800]


def build(out_dir: Path, seed: int = 19, lengths_s=LENGTHS_S) -> list[LongFile]:
    """Write the set into `out_dir` (rebuilt only when missing) and return its files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = clip_audio()
    pieces = [(_trimmed(audio[c][int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)]), text) for c, a, b, text in PIECES]
    rng = np.random.default_rng(seed)
    files = []
    for n, length_s in enumerate(lengths_s):
        parts: list[np.ndarray] = [np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), np.float32)]
        lines: list[tuple[int, int, str]] = []
        total = len(parts[0])
        recent: list[int] = []  # a reading does not repeat a line within half a minute
        while total < length_s * SAMPLE_RATE:
            i = int(rng.integers(len(pieces)))
            if i in recent:
                continue
            recent = [*recent, i][-RECENT:]
            pcm, text = pieces[i]
            gain = 10 ** (rng.uniform(*GAIN_DB) / 20)
            pause = np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), np.float32)
            parts += [np.clip(pcm * gain, -1, 1).astype(np.float32), pause]
            lines.append((total, total + len(pcm), text))
            total += len(pcm) + len(pause)
        pcm = np.concatenate(parts)
        speed = 1.0
        if n % 2 == 1:
            speed = rng.uniform(*SPEED)
            pcm = resample(pcm, int(SAMPLE_RATE * speed), SAMPLE_RATE)
        if n % 3 == 2:
            floor = 10 ** (rng.uniform(*NOISE_DBFS) / 20)
            pcm = (pcm + rng.normal(0, floor, len(pcm))).astype(np.float32)
        path = out_dir / f"long_{n:02d}.wav"
        if not path.exists():
            write_wav(path, pcm, SAMPLE_RATE)
        times = tuple((a / SAMPLE_RATE / speed, b / SAMPLE_RATE / speed, text) for a, b, text in lines)
        files.append(LongFile(path, " ".join(t for *_, t in lines), len(pcm) / SAMPLE_RATE, times))
    rows = [{"file": f.path.name, "duration_s": round(f.duration_s, 2), "reference": f.reference,
             "lines": [(round(a, 2), round(b, 2), t) for a, b, t in f.lines]} for f in files]  # fmt: skip
    (out_dir / "references.json").write_text(json.dumps(rows, indent=1) + "\n")
    return files


if __name__ == "__main__":
    for f in build(Path(sys.argv[1])):
        print(f"{f.path}  {f.duration_s:6.1f} s  {len(f.lines)} lines")
