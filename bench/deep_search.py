"""Deep Search on its development set: accuracy per kind, citation precision and recall, time.

    python bench/deep_search.py                           # offline profile (bundled Qwen2.5 0.5B), 54 questions
    python bench/deep_search.py --limit 12 --model 1.5b   # the first 4 of each kind, the 1.5B model
    python bench/deep_search.py --part held               # only the held-out third (never tuned on)

Questions come from bench/deep_search_set.py (54, written by reading the bundled encyclopedia: one
fact phrased differently, two hops, arithmetic over two articles). An answer is right when it holds
one of the accepted answers (a number: any number in the answer equal to it, commas dropped).
Citation precision: the cited articles that are among the question's source articles; recall: the
source articles that are cited. Questions run one at a time, so the times are a user's waits.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: bench/memory.py is not memory/

from deep_search_set import HELD_OUT, SET

from assistant.config import EngineConfig, resolve_profile
from assistant.engine import load_engine
from assistant.events import Citations, Done, Error
from assistant.turns import Message, Request

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
KINDS = ("fact", "two_hop", "arithmetic")


def right(answer: str, accepted: list[str]) -> bool:
    """Whether the answer holds an accepted answer (numbers compared as numbers)."""
    numbers = {float(n.replace(",", "")) for n in _NUMBER.findall(answer) if n.replace(",", "").strip("-")}
    for a in accepted:
        if _NUMBER.fullmatch(a.strip()):
            if float(a.replace(",", "")) in numbers:
                return True
        elif a.lower() in answer.lower():
            return True
    return False


def pick(limit: int, part: str = "all") -> list[tuple]:
    """The first questions of each kind, in turn (a --limit of 12 is 4 of each), of `part`: dev (the
    questions tuned on), held (the held-out third) or all."""
    chosen = [q for q in SET if part == "all" or (q[1] in HELD_OUT) == (part == "held")]
    by_kind = {k: [q for q in chosen if q[0] == k] for k in KINDS}
    out = []
    for i in range(max(len(v) for v in by_kind.values())):
        out += [by_kind[k][i] for k in KINDS if i < len(by_kind[k])]
    return out[:limit]


async def ask(engine, sources, question: str, depth: str) -> tuple[str, list[str], float]:
    t0 = time.perf_counter()
    request = Request((Message("user", question),), speak=False, reasoning="deep_search", sources=tuple(sources),
                      search_depth=depth)
    answer, cited = "", []
    async for ev in engine.stream(request):
        if isinstance(ev, Citations):
            cited = [c.title for c in ev.citations]
        elif isinstance(ev, Done):
            answer = ev.text
        elif isinstance(ev, Error):
            answer = f"(error: {ev.message})"
    return answer, cited, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--model", default=None, help="offline: 0.5b or 1.5b")
    ap.add_argument("--limit", type=int, default=len(SET))
    ap.add_argument("--depth", default="medium", choices=["low", "medium", "high"])
    ap.add_argument("--part", default="all", choices=["all", "dev", "held"], help="dev: tuned on; held: held out")
    ap.add_argument("--verbose", action="store_true", help="print every answer")
    args = ap.parse_args()
    items = pick(args.limit, args.part)
    engine = load_engine(EngineConfig(profile=resolve_profile(args.profile), model=args.model))
    sources = [engine.encyclopedia()]
    results: dict[str, list[bool]] = defaultdict(list)
    by_part: dict[tuple[str, str], list[bool]] = defaultdict(list)
    cited_right = cited_all = sources_found = sources_all = 0
    times = []
    try:
        for kind, question, accepted, titles in items:
            answer, cited, took = asyncio.run(ask(engine, sources, question, args.depth))
            ok = right(answer, accepted)
            results[kind].append(ok)
            by_part[kind, "held" if question in HELD_OUT else "dev"].append(ok)
            cited_all += len(cited)
            cited_right += sum(t in titles for t in cited)
            sources_all += len(titles)
            sources_found += sum(t in cited for t in titles)
            times.append(took)
            if args.verbose:
                mark = ("OK " if ok else "BAD") + ("H" if question in HELD_OUT else " ")
                print(f"{mark} {took:5.1f}s [{kind}] {question}\n    -> {answer!r}\n    cited: {cited}", flush=True)
    finally:
        engine.close()
    print(f"\nDeep Search, profile {args.profile}, model {args.model or 'default'}, depth {args.depth}, "
          f"{len(items)} questions ({args.part})")
    for kind in KINDS:
        r = results.get(kind, [])
        if r:
            split = "  ".join(f"{p} {sum(x)}/{len(x)}" for p in ("dev", "held") if (x := by_part.get((kind, p))))
            print(f"  {kind:<11} accuracy {sum(r) / len(r):6.1%}  ({sum(r)}/{len(r)}; {split})")
    every = [x for r in results.values() for x in r]
    print(f"  {'all':<11} accuracy {sum(every) / len(every):6.1%}  ({sum(every)}/{len(every)})")
    print(f"  citation precision {cited_right / cited_all if cited_all else 0:.1%} ({cited_right}/{cited_all}), "
          f"recall {sources_found / sources_all:.1%} ({sources_found}/{sources_all})")
    print(f"  time: median {statistics.median(times):.1f} s, max {max(times):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
