"""Engine throughput and latency under concurrency, as ratios against one session, in one run.

    python bench/engine.py [--profile tiny] [--architecture qwen2_5_omni] [--tokens 64] [--rounds 3]
    python bench/engine.py --profile omni --model /path/or/hub-id --sessions 1 8 16   (on a GPU)
    python bench/engine.py --speak --sessions 1 4 8 16 [--no-batch-speech]   (spoken turns)

For each concurrency N, N sessions submit a text turn at the same moment; random weights never
stop on their own, so every reply is exactly --tokens long. Prints first-token latency (p50 over
sessions and rounds), aggregate tokens/s, and both as ratios to N=1, plus peak GPU memory. With
--speak also first-audio latency (p50, p95) and seconds of audio produced per wall second, each
as a ratio to N=1; --no-batch-speech runs the talker and vocoder one turn at a time (the baseline),
--compare runs both engines one after the other in the same process and prints both tables.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field, replace

import torch

from assistant.config import EngineConfig, Profile
from assistant.engine import load_engine
from assistant.events import AudioChunk, Done, TextDelta
from assistant.turns import Message, Request


@dataclass
class _Row:
    sessions: int
    first_token: list[float] = field(default_factory=list)  # s
    first_audio: list[float] = field(default_factory=list)  # s
    tokens: int = 0
    audio_s: float = 0.0  # seconds of speech produced
    wall_s: float = 0.0
    peak_gib: float = float("nan")


async def _session(engine, i: int, tokens: int, speak: bool) -> tuple[float, float, int, float]:
    req = Request((Message("user", f"Session {i}: tell me about the weather in Paris today."),),
                  speak=speak, max_new_tokens=tokens, seed=i, temperature=0.7)
    t0 = time.perf_counter()
    first = first_audio = None
    n, audio_s = 0, 0.0
    async for ev in engine.stream(req):
        if isinstance(ev, TextDelta) and first is None:
            first = time.perf_counter() - t0
        elif isinstance(ev, AudioChunk):
            audio_s += ev.duration_s
            if first_audio is None:
                first_audio = time.perf_counter() - t0
        if isinstance(ev, Done):
            n = ev.completion_tokens
    nan = float("nan")
    return first if first is not None else nan, first_audio if first_audio is not None else nan, n, audio_s


async def _round(engine, row: _Row, tokens: int, speak: bool) -> None:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_session(engine, i, tokens, speak) for i in range(row.sessions)))
    row.wall_s += time.perf_counter() - t0
    for first, first_audio, n, audio_s in results:
        row.first_token.append(first)
        row.first_audio.append(first_audio)
        row.tokens += n
        row.audio_s += audio_s


def _p(values: list[float], q: float) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def measure(config: EngineConfig, sessions: list[int], tokens: int, rounds: int, speak: bool):
    """Rows of figures for each concurrency, and the engine's batch sizes."""
    t0 = time.perf_counter()
    engine = load_engine(config)
    print(f"loaded {config.profile}/{config.architecture} in {time.perf_counter() - t0:.1f} s "
          f"on {getattr(engine.backend, 'device', '?')}; {torch.get_num_threads()} CPU threads; "
          f"batch_speech={config.batch_speech}")
    asyncio.run(_round(engine, _Row(1), 8, speak))  # warm-up
    rows = []
    for n in sessions:
        row = _Row(n)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        for _ in range(rounds):
            asyncio.run(_round(engine, row, tokens, speak))
        if torch.cuda.is_available():
            row.peak_gib = torch.cuda.max_memory_allocated() / 2**30
        rows.append(row)
    engine.close()
    return rows, dict(sorted(engine.metrics.batch_sizes.items())), dict(sorted(
        getattr(engine.backend, "speech_batch_sizes", {}).items()))


def report(title: str, rows: list[_Row], speak: bool) -> None:
    base = rows[0]
    b_first, b_tps = statistics.median(base.first_token), base.tokens / base.wall_s
    print(f"\n{title}")
    header = f"{'sessions':>8} {'first token p50':>16} {'x vs 1':>7} {'tokens/s':>10} {'x vs 1':>7}"
    if speak:
        header += f" {'first audio p50':>16} {'x vs 1':>7} {'p95':>9} {'x vs 1':>7} {'audio s/s':>10} {'x vs 1':>7}"
        b_fa, b_fa95, b_aps = _p(base.first_audio, 0.5), _p(base.first_audio, 0.95), base.audio_s / base.wall_s
    print(f"{header} {'peak GPU GiB':>13}")
    for r in rows:
        first, tps = statistics.median(r.first_token), r.tokens / r.wall_s
        line = f"{r.sessions:>8} {first * 1000:>13.1f} ms {first / b_first:>7.2f} {tps:>10.1f} {tps / b_tps:>7.2f}"
        if speak:
            fa, fa95, aps = _p(r.first_audio, 0.5), _p(r.first_audio, 0.95), r.audio_s / r.wall_s
            line += (f" {fa * 1000:>13.1f} ms {fa / b_fa:>7.2f} {fa95 * 1000:>6.0f} ms {fa95 / b_fa95:>7.2f}"
                     f" {aps:>10.2f} {aps / b_aps:>7.2f}")
        print(f"{line} {r.peak_gib:>13.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny", choices=["tiny", "omni"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--architecture", default="qwen2_5_omni")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--speak", action="store_true", help="also generate speech (default: text only)")
    ap.add_argument("--no-batch-speech", action="store_true",
                    help="talker and vocoder one turn at a time (the baseline before batching)")
    ap.add_argument("--compare", action="store_true", help="run unbatched and batched speech, one after the other")
    ap.add_argument("--cprofile", metavar="OUT", default=None,
                    help="profile the engine's worker thread (cProfile) and print where its time went")
    args = ap.parse_args()
    prof = _profile_engine_thread() if args.cprofile else None

    config = EngineConfig(profile=Profile(args.profile), model=args.model, architecture=args.architecture,
                          max_batch=max(args.sessions), max_new_tokens=args.tokens,
                          batch_speech=not args.no_batch_speech)
    variants = [False, True] if args.compare else [config.batch_speech]
    for batch in variants:
        cfg = replace(config, batch_speech=batch)
        rows, sizes, speech_sizes = measure(cfg, args.sessions, args.tokens, args.rounds, args.speak)
        report(f"speech {'batched' if batch else 'one turn at a time'}:", rows, args.speak)
        print(f"thinker batch sizes (size: steps): {sizes}")
        if speech_sizes:
            print(f"speech batch sizes (stage, size: calls): {speech_sizes}")
    if prof is not None:
        prof.dump_stats(args.cprofile)
        pstats.Stats(args.cprofile).sort_stats("tottime").print_stats(25)


def _profile_engine_thread() -> cProfile.Profile:
    """A profiler that each thread named "engine" started from now on switches on for itself (the
    engine's work runs there, not in the main thread that cProfile would see)."""
    prof = cProfile.Profile()

    def hook(*_):
        if threading.current_thread().name == "engine":
            prof.enable()  # replaces this hook with cProfile's, for this thread
        else:
            sys.setprofile(None)

    threading.setprofile(hook)
    return prof


if __name__ == "__main__":
    main()
