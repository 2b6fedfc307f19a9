"""Speaker diarization on a development set assembled from real speakers: DER, count accuracy, RTF.

Each file joins turns of 1, 2 or 3 different speakers (real recordings from ../shared/data/speech
and the clips gradio ships; the bundled Piper voice is one extra speaker among them), with pauses
of 0-0.8 s between turns and a little noise under everything, so the turns are known exactly.
DER is scored at 10 ms with a 0.25 s collar around each reference boundary, no overlap, after the
best one-to-one mapping of speakers. Seeds are split into a dev half (to choose the threshold on)
and a held-out half. RTF: diarization time over audio time, beside the time to transcribe the same
audio (the side-by-side baseline), measured in this one process.

    python bench/diarize.py [--files 100] [--sweep] [--words 12] [--long 70]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio import diarize as dz
from audio.io import SAMPLE_RATE, load_audio, resample, write_wav
from audio.vad import speech_regions

SPEECH = Path(__file__).resolve().parents[2] / "shared/data/speech"
GRADIO = Path(__import__("gradio").__file__).resolve().parent / "media_assets/audio"
ENGLISH = {"jfk", "leopard_en", "fw_stereo_left", "fw_stereo_right", "fw_hotwords", "fw_multilingual",
           "cate_blanchett", "heath_ledger", "piper_joe", "A", "B", "C"}
COLLAR_S = 0.25
FRAME_S = 0.01
PIPER_TEXTS = (
    "Good morning everyone, thanks for joining the call today.",
    "I think we should look at the numbers from last quarter first.",
    "The shipment arrived on Tuesday, two days later than planned.",
    "Could you send me the slides after the meeting, please?",
    "We will need another week to finish the tests on the new version.",
)


@dataclass
class Speaker:
    name: str
    phrases: list[np.ndarray]  # 16 kHz mono speech pieces, in order


def sources() -> list[tuple[str, Path, int | None]]:
    items = json.loads((SPEECH / "transcripts.json").read_text())["items"]
    out = []
    for it in items:
        if it.get("speakers") != 1:
            continue
        out.append((it["id"], SPEECH / it["file"], {"left": 0, "right": 1}.get(it.get("channel"))))
    out += [("cate_blanchett", GRADIO / "cate_blanch.mp3", None), ("heath_ledger", GRADIO / "heath_ledger.mp3", None)]
    return out


def phrases(pcm: np.ndarray, max_s: float = 6.0) -> list[np.ndarray]:
    """Speech pieces of a one-speaker clip, cut at its pauses (VAD), at most max_s each."""
    out = []
    for start, end in speech_regions(pcm, pad_ms=60):
        piece = pcm[start:end]
        step = int(max_s * SAMPLE_RATE)
        out += [piece[i : i + step] for i in range(0, len(piece), step) if len(piece[i : i + step]) > 0.6 * SAMPLE_RATE]
    return out


def speakers() -> list[Speaker]:
    out = []
    for name, path, channel in sources():
        pcm = load_audio(path, channel=channel)
        if name == "fw_multilingual":
            pcm = pcm[: 30 * SAMPLE_RATE]  # one speaker; keep the set balanced
        out.append(Speaker(name, phrases(pcm)))
    try:
        from assistant.offline.tts import load_speaker

        voice = load_speaker()
        pcm = np.concatenate([resample(voice.speak(t), voice.sample_rate, SAMPLE_RATE) for t in PIPER_TEXTS])
        out.append(Speaker("piper_joe", phrases(pcm)))
    except Exception as err:  # the Piper voice is an optional extra speaker here
        print(f"(no Piper speaker: {err})", file=sys.stderr)
    return [s for s in out if s.phrases]


def assemble(chosen: list[Speaker], rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Alternate the speakers' phrases (each used once) into one recording with known turns."""
    queues = {s.name: list(s.phrases) for s in chosen}
    gains = {s.name: 10 ** (rng.uniform(-4, 4) / 20) for s in chosen}
    pieces, turns, t = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)], [], 0.5
    last = None
    while any(queues.values()):
        names = [n for n, q in queues.items() if q and n != last] or [n for n, q in queues.items() if q]
        name = names[rng.integers(len(names))]
        for _ in range(int(rng.integers(1, 3))):  # one or two phrases per turn
            if not queues[name]:
                break
            p = queues[name].pop(0)
            peak = float(np.max(np.abs(p))) or 1.0
            pieces.append(p / peak * 0.5 * gains[name])
            turns += [(t + a, t + b, name) for a, b in voiced(p)]
            t += len(p) / SAMPLE_RATE
            gap = 0.0 if rng.random() < 0.2 else rng.uniform(0.15, 0.8)
            pieces.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
            t += int(gap * SAMPLE_RATE) / SAMPLE_RATE
        last = name
    pcm = np.concatenate([*pieces, np.zeros(int(0.5 * SAMPLE_RATE), np.float32)])
    pcm = pcm + rng.normal(0, 10 ** (-55 / 20), len(pcm)).astype(np.float32)
    return pcm.astype(np.float32), _merge_turns(turns)


def voiced(p: np.ndarray, floor_db: float = 35.0, fill_s: float = 0.25) -> list[tuple[float, float]]:
    """The reference speech of one phrase (seconds from its start): 10 ms frames within floor_db of
    its loudest, pauses shorter than fill_s filled. Energy only, so the reference owes nothing to
    the VAD under test."""
    hop = int(FRAME_S * SAMPLE_RATE)
    n = len(p) // hop
    level = 10 * np.log10(np.mean(np.square(p[: n * hop].reshape(n, hop), dtype=np.float64), axis=1) + 1e-12)
    on = level > level.max() - floor_db
    spans, start = [], None
    for i, v in enumerate([*on, False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if spans and (start - spans[-1][1]) * FRAME_S < fill_s:
                spans[-1] = (spans[-1][0], i)
            else:
                spans.append((start, i))
            start = None
    return [(a * FRAME_S, b * FRAME_S) for a, b in spans if (b - a) * FRAME_S >= 0.05]


def _merge_turns(turns):
    out = []
    for s, e, n in turns:
        if out and out[-1][2] == n and s - out[-1][1] < 0.01:
            out[-1] = (out[-1][0], e, n)
        else:
            out.append((s, e, n))
    return out


def frames(turns, n: int, names: dict[str, int]) -> np.ndarray:
    lab = np.full(n, -1)
    for s, e, name in turns:
        lab[round(s / FRAME_S) : round(e / FRAME_S)] = names.setdefault(name, len(names))
    return lab


def der(reference, hypothesis, duration_s: float) -> float:
    """Diarization error rate (missed + false alarm + confusion over reference speech), with collar."""
    from scipy.optimize import linear_sum_assignment

    n = int(np.ceil(duration_s / FRAME_S)) + 1
    ref, hyp = frames(reference, n, {}), frames([(t.start, t.end, t.speaker) for t in hypothesis], n, {})
    scored = np.ones(n, bool)
    for s, e, _ in reference:
        for b in (s, e):
            scored[max(0, int((b - COLLAR_S) / FRAME_S)) : int((b + COLLAR_S) / FRAME_S)] = False
    ref, hyp = ref[scored], hyp[scored]
    total = int((ref >= 0).sum())
    if total == 0:
        return 0.0
    missed = int(((ref >= 0) & (hyp < 0)).sum())
    false_alarm = int(((ref < 0) & (hyp >= 0)).sum())
    both = (ref >= 0) & (hyp >= 0)
    if both.any():
        m = np.zeros((ref.max() + 1, hyp.max() + 1))
        np.add.at(m, (ref[both], hyp[both]), 1)
        rows, cols = linear_sum_assignment(-m)
        confusion = int(both.sum() - m[rows, cols].sum())
    else:
        confusion = 0
    return (missed + false_alarm + confusion) / total


def dataset(n_files: int, seed: int = 0):
    """(name, pcm, turns, split) for n_files assembled files plus the real 3-speaker leopard clip."""
    spk = speakers()
    out = []
    for i in range(n_files):
        rng = np.random.default_rng([seed, i])  # per file: Piper's speech varies a little from run to run
        k = (2, 3, 2, 3, 1)[i % 5]
        chosen = [spk[j] for j in rng.choice(len(spk), size=k, replace=False)]
        pcm, turns = assemble(chosen, rng)
        out.append((f"{k}spk-{i:02d}", pcm, turns, "dev" if i % 2 == 0 else "held-out"))
    pcm = load_audio(SPEECH / "leopard/diarization_test.wav")
    # turns from the vendor's speaker-tagged words, timed by word timestamps (tiny.en), speech only
    coarse = [(1.75, 3.7, "A"), (6.0, 12.9, "B"), (12.9, 19.4, "C")]
    sr = SAMPLE_RATE
    turns = [(s + a, s + b, n) for s, e, n in coarse for a, b in voiced(pcm[round(s * sr) : round(e * sr)])]
    out.append(("leopard_diarization", pcm, turns, "held-out"))
    return out


def embed_all(files, tmp: Path):
    """Per file: regions, windows, embeddings, and the seconds spent on them."""
    from audio.voice_embedding import voice_encoder

    encoder = voice_encoder()
    encoder.embed([np.zeros(int(dz.WINDOW_S * SAMPLE_RATE), np.float32)])  # load + warm up
    out = []
    for name, pcm, _turns, _split in files:
        path = write_wav(tmp / f"{name}.wav", pcm, SAMPLE_RATE)
        t0 = time.perf_counter()
        regions, windows, emb = dz._embedded(path)
        out.append((path, regions, windows, emb, time.perf_counter() - t0))
    return out


def score(files, embedded, threshold: float, split: str | None, given: bool = False):
    ders, right, n, secs, cluster_s = [], 0, 0, 0.0, 0.0
    for (_name, pcm, turns, sp), (_path, regions, windows, emb, _s) in zip(files, embedded, strict=True):
        if split and sp != split:
            continue
        t0 = time.perf_counter()
        if windows:
            k = len({t[2] for t in turns})
            labels = dz._cluster(emb, (k, k) if given else (1, dz.MAX_SPEAKERS), threshold)
            hyp = dz._turns(regions, windows, labels)
        else:
            hyp = []
        cluster_s += time.perf_counter() - t0
        ders.append(der(turns, hyp, len(pcm) / SAMPLE_RATE))
        right += len({t.speaker for t in hyp}) == len({t[2] for t in turns})
        n += 1
        secs += len(pcm) / SAMPLE_RATE
    return ders, right, n, secs, cluster_s


def report(files, embedded, threshold: float) -> None:
    for split in ("dev", "held-out", None):
        ders, right, n, _, _ = score(files, embedded, threshold, split)
        print(f"{split or 'all':>9}: {n:3d} files  mean DER {100 * np.mean(ders):5.1f}%  median "
              f"{100 * np.median(ders):5.1f}%  count right {right}/{n} ({100 * right / n:.0f}%)")
    for k in (1, 2, 3):
        sel = [(f, e) for f, e in zip(files, embedded, strict=True) if len({t[2] for t in f[2]}) == k]
        ders, right, n, _, _ = score([f for f, _ in sel], [e for _, e in sel], threshold, None)
        given, _, _, _, _ = score([f for f, _ in sel], [e for _, e in sel], threshold, None, given=True)
        print(f"  {k} speaker(s): {n:3d} files  mean DER {100 * np.mean(ders):5.1f}%  count right {right}/{n}"
              f"  (count given: DER {100 * np.mean(given):5.1f}%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=60, help="assembled files (plus the real 3-speaker clip)")
    ap.add_argument("--sweep", action="store_true", help="print DER and count accuracy for several thresholds")
    ap.add_argument("--words", type=int, default=0, help="also transcribe N files with --diarize: word accuracy, RTF")
    ap.add_argument("--verbose", action="store_true", help="one line per file")
    ap.add_argument("--long", type=float, default=0, help="also diarize one file this many minutes long")
    args = ap.parse_args()
    if args.long:
        long_run(args.long)
    files = dataset(args.files)
    with tempfile.TemporaryDirectory() as tmp:
        embedded = embed_all(files, Path(tmp))
        secs = sum(len(f[1]) for f in files) / SAMPLE_RATE
        embed_s = sum(e[4] for e in embedded)
        print(f"{len(files)} files, {secs:.0f} s of audio, {sum(len(e[2]) for e in embedded)} windows")
        if args.sweep:
            for th in (0.25, 0.28, 0.3, 0.32, 0.35, 0.38, 0.4, 0.45):
                ders, right, n, _, _ = score(files, embedded, th, "dev")
                print(f"threshold {th:.2f} (dev): mean DER {100 * np.mean(ders):5.1f}%  count right {right}/{n}")
        print(f"threshold {dz.THRESHOLD}:")
        report(files, embedded, dz.THRESHOLD)
        _, _, _, _, cluster_s = score(files, embedded, dz.THRESHOLD, None)
        print(f"diarization RTF {(embed_s + cluster_s) / secs:.4f} (VAD + embeddings {embed_s:.1f} s, "
              f"clustering {cluster_s:.2f} s, for {secs:.0f} s of audio; torch on 1 thread)")
        if args.verbose:
            for f, e in zip(files, embedded, strict=True):
                hyp = dz._turns(e[1], e[2], dz._cluster(e[3], (1, dz.MAX_SPEAKERS))) if e[2] else []
                print(f"  {f[0]:22s} {f[3]:8s} ref {len({t[2] for t in f[2]})} hyp {len({t.speaker for t in hyp})} "
                      f"DER {100 * der(f[2], hyp, len(f[1]) / SAMPLE_RATE):5.1f}%  {sorted({t[2] for t in f[2]})}")
        if args.words:  # English speakers only: the bundled model is tiny.en
            english = [(f, e) for f, e in zip(files, embedded, strict=True)
                       if {t[2] for t in f[2]} <= ENGLISH and len({t[2] for t in f[2]}) > 1][: args.words]
            words_bench([f for f, _ in english], [e for _, e in english])


def long_run(minutes: float) -> None:
    """Four turns of three people (the test clips) over and over: time, memory, speakers found."""
    import resource

    from audio.io import load_audio

    clips = Path(__file__).resolve().parents[1] / "tests/data/diarize"
    jfk, left, right = (load_audio(clips / f"{n}.flac") for n in ("jfk", "librispeech_left", "librispeech_right"))
    gap = np.zeros(int(0.4 * SAMPLE_RATE), np.float32)
    unit = np.concatenate([jfk[: 2 * SAMPLE_RATE + 12800], gap, left, gap, right[: 3 * SAMPLE_RATE], gap,
                           jfk[5 * SAMPLE_RATE :], gap])
    pcm = np.tile(unit, int(minutes * 60 * SAMPLE_RATE / len(unit)))
    pcm = pcm + np.random.default_rng(0).normal(0, 1e-3, len(pcm)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_wav(Path(tmp) / "long.wav", pcm, SAMPLE_RATE)
        dz.speaker_turns(path, dz.Diarization())  # model loaded, file in the page cache
        t0 = time.perf_counter()
        turns = dz.speaker_turns(path, dz.Diarization())
        took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    secs = len(pcm) / SAMPLE_RATE
    print(f"long file: {secs:.0f} s, diarized in {took:.1f} s (RTF {took / secs:.4f}), "
          f"{len({t.speaker for t in turns})} speakers (3 expected), peak RSS {peak:.0f} MiB")


def words_bench(files, embedded) -> None:
    """Transcribe with and without diarize, side by side: the share of words on the right speaker."""
    from scipy.optimize import linear_sum_assignment

    from audio import transcribe
    from audio.diarize import Diarization

    transcribe(embedded[0][0])  # load the model first
    plain_s = diar_s = audio_s = 0.0
    right = total = 0
    for (_name, pcm, turns, _sp), (path, *_rest) in zip(files, embedded, strict=True):
        plain, diar = [], []
        for _ in range(2):  # alternated, best of two each: this machine is shared
            t0 = time.perf_counter()
            transcribe(path, word_timestamps=True)
            t1 = time.perf_counter()
            t = transcribe(path, diarize=Diarization())
            plain.append(t1 - t0)
            diar.append(time.perf_counter() - t1)
        plain_s, diar_s, audio_s = plain_s + min(plain), diar_s + min(diar), audio_s + len(pcm) / SAMPLE_RATE
        names, hyps = sorted({n for *_, n in turns}), sorted({w.speaker for s in t.segments for w in s.words})
        m = np.zeros((len(names), max(len(hyps), 1)))
        for seg in t.segments:
            for w in seg.words:
                mid = (w.start + w.end) / 2
                near = min(turns, key=lambda r, mid=mid: max(r[0] - mid, mid - r[1], 0.0))
                m[names.index(near[2]), hyps.index(w.speaker)] += 1
        rows, cols = linear_sum_assignment(-m)
        right, total = right + int(m[rows, cols].sum()), total + int(m.sum())
    print(f"words on the right speaker: {right}/{total} ({100 * right / max(total, 1):.1f}%); "
          f"transcribe {plain_s / audio_s:.3f} RTF, with --diarize {diar_s / audio_s:.3f} RTF "
          f"(x{diar_s / plain_s:.2f}), {audio_s:.0f} s of audio")


if __name__ == "__main__":
    main()
