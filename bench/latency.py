"""Submitted turn -> first audio chunk, streamed against one-shot speech, in one run.

    python bench/latency.py [--turns 20] [--tokens 24]
    python bench/latency.py --profile omni --model /path/to/Qwen2.5-Omni-7B   (on a GPU)

Each turn is a short text question answered with speech (one session at a time, then
--concurrent sessions at once). Prints p50/p95 first-audio latency for both modes, their ratio,
and how fast audio is generated relative to real time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from assistant.config import EngineConfig, Profile
from assistant.engine import load_engine
from assistant.events import AudioChunk, Done
from assistant.turns import Message, Request


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def turn(engine, i: int, tokens: int) -> tuple[float, float, float]:
    req = Request((Message("user", f"Question {i}: what should I cook tonight?"),), max_new_tokens=tokens, seed=i)
    t0 = time.perf_counter()
    first = None
    async for ev in engine.stream(req):
        if isinstance(ev, AudioChunk) and first is None:
            first = time.perf_counter() - t0
        if isinstance(ev, Done):
            return first, ev.timings.audio_s, ev.timings.total_s
    raise RuntimeError("turn failed")


def run(engine, turns: int, tokens: int, concurrent: int):
    async def go():
        out = []
        for r in range(0, turns, concurrent):
            out += await asyncio.gather(*(turn(engine, r + j, tokens) for j in range(concurrent)))
        return out

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny", choices=["tiny", "omni"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--architecture", default="qwen2_5_omni", choices=["qwen2_5_omni", "qwen3_omni"])
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--concurrent", type=int, default=1)
    args = ap.parse_args()
    results = {}
    for stream in (True, False):
        cfg = EngineConfig(profile=Profile(args.profile), model=args.model, architecture=args.architecture,
                           stream_speech=stream)
        engine = load_engine(cfg)
        run(engine, 1, 4, 1)  # warm-up
        results[stream] = run(engine, args.turns, args.tokens, args.concurrent)
        engine.close()
    print(f"{args.turns} turns, {args.concurrent} at a time, {args.tokens}-token replies, "
          f"profile {args.profile}, {args.architecture}")
    print(f"{'mode':>9} {'first audio p50':>16} {'p95':>9} {'audio s / wall s':>17}")
    for stream, rows in results.items():
        firsts = [r[0] for r in rows]
        rt = statistics.mean(r[1] / r[2] for r in rows)
        print(f"{'streamed' if stream else 'one-shot':>9} {pct(firsts, 0.5) * 1000:>13.0f} ms "
              f"{pct(firsts, 0.95) * 1000:>6.0f} ms {rt:>17.2f}")
    s50 = pct([r[0] for r in results[True]], 0.5)
    o50 = pct([r[0] for r in results[False]], 0.5)
    print(f"first audio p50: streamed / one-shot = {s50 / o50:.2f} ({o50 / s50:.1f}x sooner)")


if __name__ == "__main__":
    main()
