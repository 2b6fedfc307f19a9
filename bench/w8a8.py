"""int8 inputs in 8 bits against 7 bits (offline.w8a8): time and error of the 0.5B's output layer
product, side by side in one process, on whichever fbgemm kernel this CPU gets.

    python bench/w8a8.py [--rows 1,8] [--repeats 50] [--threads N]
    FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python bench/w8a8.py   # fbgemm's AVX2 kernel (int16 pair sums),
        # what a CPU without AVX-512 VNNI runs, on any x86 CPU

Weights are the int8 rows of a random normal matrix (151936 x 896, the 0.5B's vocabulary x width);
inputs are random normal rows. The error is relative to the same int8 weights in float.
Measured (--threads 1 --repeats 200, a busy 2-core EPYC with VNNI): 7 bits take 0.94-0.99x the time
of 8 (the same kernel; only the rounding differs), and on the AVX2 kernel 1.04-1.05x; the error on
these inputs is 0.014 in 7 bits against 0.007 in 8 (VNNI) and 0.017 in 8 on the AVX2 kernel.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.offline import w8a8
from assistant.offline.llm import int8_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1,8", help="batch rows to time, comma-separated")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--width", type=int, default=896)
    ap.add_argument("--threads", type=int, help="torch threads (1 is steadier on a busy machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    weight, scale = int8_rows(torch.randn(args.vocab, args.width))
    packed = w8a8.pack(weight, scale)
    dense = weight.float() * scale[:, None]
    print(f"CPU has AVX-512 VNNI: {w8a8.vnni()}; this process's check: 8 bits {w8a8.check(8):.4f}, "
          f"7 bits {w8a8.check(7):.4f} (relative error; limit {w8a8.CHECK_LIMIT})")
    for rows in map(int, args.rows.split(",")):
        x = torch.randn(rows, args.width)
        want = x @ dense.T
        times: dict[int, list[float]] = {8: [], 7: []}
        with torch.inference_mode():
            for _ in range(3):  # warm-up
                for bits in times:
                    w8a8.multiply(x, packed, bits)
            for _ in range(args.repeats):  # alternating, so a slow moment of the machine hits both
                for bits in times:
                    t0 = time.perf_counter()
                    w8a8.multiply(x, packed, bits)
                    times[bits].append(time.perf_counter() - t0)
            errors = {bits: float((w8a8.multiply(x, packed, bits) - want).norm() / want.norm()) for bits in times}
        ms = {bits: 1000 * statistics.median(t) for bits, t in times.items()}
        print(f"{rows} rows: 8 bits {ms[8]:.2f} ms (error {errors[8]:.4f}), 7 bits {ms[7]:.2f} ms "
              f"(error {errors[7]:.4f}); 7/8 time {ms[7] / ms[8]:.2f}x")


if __name__ == "__main__":
    main()
