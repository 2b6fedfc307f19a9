"""Thinking and Big Brain on word problems: accuracy and median time per mode, in one run.

    python bench/reasoning.py                       # offline profile, 60 problems, none/think/big_brain
    python bench/reasoning.py --limit 20 --modes none,think --model 1.5b
    python bench/reasoning.py --seed 7             # a held-out set (the prompts were tuned on seed 21)

Problems come from bench/reasoning_set.py (generated, integer answers). An answer is right when
its normalised form (the last number in it) equals the expected integer. Each problem is asked
on its own, one at a time, so the times are a user's waits.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reasoning_set import problems

from assistant.config import EngineConfig, resolve_profile
from assistant.engine import load_engine
from assistant.events import Done, Error
from assistant.reasoning import normalise
from assistant.turns import Message, Request


async def ask(engine, question: str, mode: str, attempts: int, max_new_tokens: int) -> tuple[str, float]:
    t0 = time.perf_counter()
    request = Request((Message("user", question),), speak=False, reasoning=mode, max_new_tokens=max_new_tokens,
                      attempts=attempts if mode == "big_brain" else None)
    answer = ""
    async for ev in engine.stream(request):
        if isinstance(ev, Done):
            answer = ev.text
        elif isinstance(ev, Error):
            answer = f"(error: {ev.message})"
    return answer, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--model", default=None, help="offline: 0.5b or 1.5b")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--seed", type=int, default=21, help="which generated set")
    ap.add_argument("--modes", default="none,think,big_brain")
    ap.add_argument("--attempts", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--verbose", action="store_true", help="print every answer")
    args = ap.parse_args()
    modes = args.modes.split(",")
    engine = load_engine(EngineConfig(profile=resolve_profile(args.profile), model=args.model))
    results: dict[str, list[tuple[str, bool, float]]] = defaultdict(list)
    try:
        for i, p in enumerate(problems(args.limit, args.seed)):
            for mode in modes:
                answer, took = asyncio.run(ask(engine, p.question, mode, args.attempts, args.max_new_tokens))
                right = normalise(answer) == str(p.answer)
                results[mode].append((p.kind, right, took))
                if args.verbose or not right:
                    print(f"{i + 1:3d} {mode:9s} {'ok ' if right else 'BAD'} {took:6.1f} s  want {p.answer}: "
                          f"{answer.strip()[:100]!r}", file=sys.stderr)
            print(f"  {i + 1}/{args.limit} " + "  ".join(
                f"{m} {sum(r for _, r, _ in results[m])}/{len(results[m])}" for m in modes), file=sys.stderr)
    except KeyboardInterrupt:  # Ctrl+C: the figures of the problems every mode finished
        done = min(len(results[m]) for m in modes)
        for m in modes:
            del results[m][done:]
        print(f"interrupted after {done} problems", file=sys.stderr)
    finally:
        engine.close()
    count = min(len(results[m]) for m in modes)
    print(f"\n{args.profile} profile, model {args.model or 'default'}, {count} problems (seed {args.seed}), "
          f"attempts {args.attempts}")
    base = results.get("none")
    base_acc = sum(r for _, r, _ in base) / len(base) if base else None
    base_t = statistics.median(t for _, _, t in base) if base else None
    for mode in modes:
        rows = results[mode]
        acc = sum(r for _, r, _ in rows) / len(rows)
        med = statistics.median(t for _, _, t in rows)
        vs = ""
        if base_acc is not None and mode != "none":
            vs = f"  ({(acc - base_acc) * 100:+.0f} points, time x{med / base_t:.1f} of none)"
        print(f"{mode:10s} accuracy {acc:.0%} ({sum(r for _, r, _ in rows)}/{len(rows)})  median {med:.1f} s{vs}")
        kinds = defaultdict(list)
        for kind, r, _ in rows:
            kinds[kind].append(r)
        print("           " + "  ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(kinds.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
