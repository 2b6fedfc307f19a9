"""Deep Search's arithmetic read by code, alone: for each arithmetic question of the development
set, the quantity each named article's passage gives (research/numbers.py) and the result, with the
question's own source articles as the evidence (retrieval left out). No model, seconds.

    python bench/deep_search_numbers.py            # every arithmetic question, dev and held-out
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: bench/memory.py is not memory/

from deep_search_set import HELD_OUT, SET

from assistant.config import cache_dir
from assistant.research.encyclopedia import Encyclopedia
from assistant.research.numbers import named, operation, pick, question_unit


def main() -> int:
    corpus = Encyclopedia(cache_dir())
    right = {"dev": [], "held": []}
    for kind, question, accepted, titles in SET:
        if kind != "arithmetic":
            continue
        unit, op = question_unit(question), operation(question)
        picked = [pick(question, corpus.article(t).text, t, about, unit) for t, about in named(question, titles)]
        result = None
        if len(picked) == 2 and all(picked):
            a, b = picked[0].value, picked[1].value
            result = {"sum": a + b, "ratio": a / b if b else None, "difference": abs(a - b)}[op]
        ok = result is not None and any(abs(result - float(x.replace(",", ""))) < 0.01 for x in accepted)
        part = "held" if question in HELD_OUT else "dev"
        right[part].append(ok)
        print(f"{'OK ' if ok else 'BAD'} {part:<4} {question}\n    {[q and q.text for q in picked]} -> {result}")
    for part, r in right.items():
        print(f"{part}: {sum(r)}/{len(r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
