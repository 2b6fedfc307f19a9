"""Our transcription pipeline vs plain sequential faster-whisper, side by side, same model and
compute type, on the English clips of ../shared/data/speech. Prints WER, real-time factor, ratios.
--long: the long-form set of bench/longform.py (real speech with pauses, 1-10 min a file), per file
and overall, each file decoded once by each system in turn (the order alternates file by file).

    python bench/transcribe.py [--model PATH] [--device cpu|cuda] [--rounds 3]
    python bench/transcribe.py --long [--files N] [--set-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio import transcribe
from audio.io import load_audio, wav_bytes
from audio.models import resolve_whisper_model

SPEECH = Path(__file__).resolve().parents[2] / "shared/data/speech"


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "").split()


def edits(reference: str, hypothesis: str) -> tuple[int, int]:
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row = row, [i] + [0] * len(hyp)
        for j in range(1, len(hyp) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
    return row[-1], len(ref)


def clips() -> list[tuple[str, object, str]]:
    items = json.loads((SPEECH / "transcripts.json").read_text())["items"]
    out = []
    for it in items:
        if it["language"] != "en" or not it.get("reference"):
            continue
        channel = {"left": 0, "right": 1}.get(it.get("channel"))
        out.append((it["id"], load_audio(SPEECH / it["file"], channel=channel), it["reference"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the bundled tiny.en")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compute-type", default=None, help="default: int8 on cpu, float16 on cuda")
    ap.add_argument("--rounds", type=int, default=3, help="best of N per clip")
    ap.add_argument("--long", action="store_true", help="the long-form set (bench/longform.py)")
    ap.add_argument("--files", type=int, default=None, help="--long: only the first N files (shortest first)")
    ap.add_argument("--set-dir", default="/tmp/assistant-longform", help="--long: where the set is built")
    args = ap.parse_args()
    from faster_whisper import WhisperModel

    compute_type = args.compute_type or ("float16" if args.device == "cuda" else "int8")
    plain = WhisperModel(resolve_whisper_model(args.model), device=args.device, compute_type=compute_type)
    if args.long:
        return long_form(args, plain, compute_type)
    data = clips()

    def run_plain(pcm):
        segments, _ = plain.transcribe(pcm)  # the defaults: beam 5, sequential 30 s windows
        return " ".join(s.text for s in segments)

    def run_ours(pcm):
        return transcribe(wav_bytes(pcm, 16_000), model=args.model, device=args.device, compute_type=compute_type).text

    audio_s = sum(len(pcm) / 16_000 for _, pcm, _ in data)
    results = {}
    for name, fn in (("faster-whisper", run_plain), ("ours", run_ours)):
        fn(data[0][1])  # warm-up: model load, first-call allocations
        seconds, errors, n_words = 0.0, 0, 0
        for clip_id, pcm, reference in data:
            best, text = float("inf"), ""
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                text = fn(pcm)
                best = min(best, time.perf_counter() - t0)
            e, n = edits(reference, text)
            errors, n_words, seconds = errors + e, n_words + n, seconds + best
            print(f"  {name:15s} {clip_id:20s} {best:6.3f} s  WER {e}/{n}  {text.strip()[:70]}")
        results[name] = (seconds / audio_s, errors / n_words)
    setup = f"{compute_type} on {args.device}, best of {args.rounds}"
    print(f"\n{len(data)} clips, {audio_s:.1f} s of English speech, {setup}")
    for name, (rtf, w) in results.items():
        print(f"{name:15s} RTF {rtf:.4f}  ({1 / rtf:6.1f}x real time)  WER {w:.3f}")
    (p_rtf, p_wer), (o_rtf, o_wer) = results["faster-whisper"], results["ours"]
    print(f"speed-up {p_rtf / o_rtf:.2f}x   WER ours - plain = {o_wer - p_wer:+.3f}")


def long_form(args, plain, compute_type: str) -> None:
    """Per file: WER and RTF of both systems on the same file path, decoded once each."""
    from longform import LENGTHS_S, build

    files = build(Path(args.set_dir), lengths_s=LENGTHS_S[: args.files])

    def run_plain(path):
        segments, _ = plain.transcribe(str(path))  # the defaults: beam 5, sequential 30 s windows
        return " ".join(s.text for s in segments)

    def run_ours(path):
        return transcribe(path, model=args.model, device=args.device, compute_type=compute_type).text

    systems = {"faster-whisper": run_plain, "ours": run_ours}
    for fn in systems.values():
        fn(files[0].path)  # warm-up: model load, first-call allocations
    totals = {name: [0.0, 0, 0, 0.0] for name in systems}  # seconds, errors, words, CPU seconds
    worst = -1.0
    print(f"{'file':12s} {'audio s':>7s} | {'plain WER':>9s} {'RTF':>7s} | {'ours WER':>9s} {'RTF':>7s} | speed-up")
    for n, f in enumerate(files):
        row = {}
        order = list(systems) if n % 2 == 0 else list(systems)[::-1]
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            text = systems[name](f.path)
            seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
            e, w = edits(f.reference, text)
            row[name] = (seconds, e, w)
            totals[name][0] += seconds
            totals[name][1] += e
            totals[name][2] += w
            totals[name][3] += cpu_s
        (ps, pe, pw), (os_, oe, ow) = row["faster-whisper"], row["ours"]
        worst = max(worst, oe / ow - pe / pw)
        print(f"{f.path.name:12s} {f.duration_s:7.1f} | {pe / pw:9.3f} {ps / f.duration_s:7.4f} | "
              f"{oe / ow:9.3f} {os_ / f.duration_s:7.4f} | {ps / os_:5.2f}x", flush=True)  # fmt: skip
    audio_s = sum(f.duration_s for f in files)
    (ps, pe, pw, pc), (os_, oe, ow, oc) = totals["faster-whisper"], totals["ours"]
    print(f"\n{len(files)} files, {audio_s:.0f} s of audio, {compute_type} on {args.device}, one pass each")
    print(f"faster-whisper RTF {ps / audio_s:.4f}  WER {pe / pw:.3f}")
    print(f"ours           RTF {os_ / audio_s:.4f}  WER {oe / ow:.3f}")
    print(f"speed-up {ps / os_:.2f}x (in CPU time, all threads: {pc / oc:.2f}x, less swayed by other programs)")
    print(f"WER ours - plain = {oe / ow - pe / pw:+.3f} overall, {worst:+.3f} worst file")


if __name__ == "__main__":
    main()
