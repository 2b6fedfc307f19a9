"""Engine throughput and latency under concurrency, as ratios against one session, in one run.

    python bench/engine.py [--profile tiny] [--architecture qwen2_5_omni] [--tokens 64] [--rounds 3]
    python bench/engine.py --profile omni --model /path/or/hub-id --sessions 1 8 16   (on a GPU)

For each concurrency N, N sessions submit a text turn at the same moment; random weights never
stop on their own, so every reply is exactly --tokens long. Prints first-token latency (p50 over
sessions and rounds), aggregate tokens/s, and both as ratios to N=1, plus peak GPU memory.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch

from assistant.config import EngineConfig, Profile
from assistant.engine import load_engine
from assistant.events import Done, TextDelta
from assistant.turns import Message, Request


async def _session(engine, i: int, tokens: int, speak: bool) -> tuple[float, int, float]:
    req = Request((Message("user", f"Session {i}: tell me about the weather in Paris today."),),
                  speak=speak, max_new_tokens=tokens, seed=i, temperature=0.7)
    t0 = time.perf_counter()
    first = None
    n = 0
    async for ev in engine.stream(req):
        if isinstance(ev, TextDelta) and first is None:
            first = time.perf_counter() - t0
        if isinstance(ev, Done):
            n = ev.completion_tokens
    return first or float("nan"), n, time.perf_counter() - t0


async def _round(engine, n: int, tokens: int, speak: bool):
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_session(engine, i, tokens, speak) for i in range(n)))
    wall = time.perf_counter() - t0
    return [r[0] for r in results], sum(r[1] for r in results), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny", choices=["tiny", "omni"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--architecture", default="qwen2_5_omni")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--speak", action="store_true", help="also generate speech (default: text only)")
    args = ap.parse_args()

    config = EngineConfig(profile=Profile(args.profile), model=args.model, architecture=args.architecture,
                          max_batch=max(args.sessions), max_new_tokens=args.tokens)
    t0 = time.perf_counter()
    engine = load_engine(config)
    print(f"loaded {args.profile}/{args.architecture} in {time.perf_counter() - t0:.1f} s "
          f"on {getattr(engine.backend, 'device', '?')}; {torch.get_num_threads()} CPU threads")
    asyncio.run(_round(engine, 1, 8, args.speak))  # warm-up

    rows = []
    for n in args.sessions:
        firsts, total_tokens, walls = [], 0, 0.0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.rounds):
            f, toks, wall = asyncio.run(_round(engine, n, args.tokens, args.speak))
            firsts += f
            total_tokens += toks
            walls += wall
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        rows.append((n, statistics.median(firsts), total_tokens / walls, peak))
    engine.close()

    base_first, base_tps = rows[0][1], rows[0][2]
    header = f"{'sessions':>8} {'first token p50':>16} {'x vs 1':>7} {'tokens/s':>10} {'x vs 1':>7}"
    print(f"\n{header} {'peak GPU GiB':>13}")
    for n, first, tps, peak in rows:
        print(f"{n:>8} {first * 1000:>13.1f} ms {first / base_first:>7.2f} {tps:>10.1f} {tps / base_tps:>7.2f} "
              f"{peak:>13.2f}")
    print(f"\nbatch sizes seen (size: steps): {dict(sorted(engine.metrics.batch_sizes.items()))}")


if __name__ == "__main__":
    main()
