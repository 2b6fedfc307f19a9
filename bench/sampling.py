"""Talker code sampling, side by side in one run: main's one-row-at-a-time sampler (copied here as
it was) against batching.sample_codes for 8 rows, at the tiny (512) and a large (8448) codec vocab.

    python bench/sampling.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from assistant.backends.batching import sample_codes


def _per_row(logits, history, gen, bos=505, penalty=1.05, temperature=0.9, top_k=40, top_p=0.8) -> int:
    logits = logits.float().cpu()[0]
    seen = torch.tensor(sorted(set(history)), dtype=torch.long)
    picked = logits[seen]
    logits[seen] = torch.where(picked < 0, picked * penalty, picked / penalty)
    logits[bos] = float("-inf")
    logits = logits / temperature
    kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
    logits[logits < kth] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    sorted_p, idx = torch.sort(probs, descending=True)
    keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p
    probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, steps = args.rows, args.steps
    for vocab in (512, 8448):
        logits = torch.randn(rows, vocab)
        history = [508] * 130 + [504, 505] + list(range(200))
        seen = torch.zeros(rows, vocab, dtype=torch.bool)
        seen[:, history] = True
        gens = [torch.Generator().manual_seed(i) for i in range(rows)]
        for _ in range(2):  # the first round warms up
            t0 = time.perf_counter()
            for _ in range(steps):
                for r in range(rows):
                    _per_row(logits[r:r + 1], history, gens[r])
            a = (time.perf_counter() - t0) / steps
            t0 = time.perf_counter()
            for _ in range(steps):
                sample_codes(logits, seen, [505], [0.9] * rows, [40] * rows, [0.8] * rows, [1.05] * rows, gens)
            b = (time.perf_counter() - t0) / steps
        print(f"vocab {vocab}, {rows} rows, {torch.get_num_threads()} threads: per row {a * 1e3:.2f} ms/step, "
              f"one pass {b * 1e3:.2f} ms/step, x{a / b:.1f}")


if __name__ == "__main__":
    main()
