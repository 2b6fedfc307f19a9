"""Search latency of this checkout against another revision's, side by side on the same data.

    python bench/memory_search_ab.py --against DIR [--size 100000] [--queries 100] [--rounds 5]

One SQLite store of --size memories (made as bench/memory.py's latency set: varied lines, real
MiniLM vectors of a 2,000-line pool with small noise) is built once with this checkout's code;
then a worker process per revision opens it and times `recall` with the query vectors cached
(the store's own cost), the two taking turns round by round, so a busy machine slows both alike.
Prints each side's p50/p95 over all rounds and the ratio, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from memory import Embedder, open_store, recall
store = open_store(sys.argv[2], Embedder())
user = store.user("bench")
queries = json.loads(sys.argv[3])
recall(store, user, "warm up")
for q in queries:  # caches each query's vector
    recall(store, user, q, k=10)
print("ready", flush=True)
for _ in sys.stdin:
    times = []
    for q in queries:
        t = time.perf_counter()
        recall(store, user, q, k=10)
        times.append(time.perf_counter() - t)
    print(json.dumps(times), flush=True)
"""


def build(data: str, size: int, n_queries: int) -> list[str]:
    """The latency set of bench/memory.py, `size` memories of one user in `data`; the queries."""
    import random
    import time

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import importlib.util

    from memory import Embedder, open_store
    from memory.store import NewMemory

    spec = importlib.util.spec_from_file_location("memory_bench", Path(__file__).with_name("memory.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng, nrng = random.Random(7), np.random.default_rng(0)
    embedder = Embedder()
    texts = list({bench.filler(rng) + f" ({rng.randrange(10**6)})" for _ in range(2000)})
    pool = embedder.embed(texts)
    queries = [q for _, q in bench.EVIDENCE] + [f"what did {p} say about {t}?" for p in bench.PEOPLE
                                                 for t in bench.THINGS]  # fmt: skip
    with open_store(data, embedder) as store:
        user = store.user("bench")
        for lo in range(0, size, 5000):
            n = min(5000, size - lo)
            idx = nrng.integers(0, len(texts), n)
            vecs = pool[idx] + nrng.normal(0, 0.02, (n, pool.shape[1])).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            store.add_memories(user, [
                NewMemory(texts[i] + f" {bench.filler(rng)}", kind="utterance", speaker=rng.choice(bench.PEOPLE),
                          said_at=time.time() - rng.uniform(0, 3e7), embedding=v)
                for i, v in zip(idx, vecs, strict=True)])  # fmt: skip
    return rng.sample(queries, min(n_queries, len(queries)))


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", type=Path, required=True, help="a checkout of the other revision")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as data:
        queries = build(data, args.size, args.queries)
        sides = {"this": here, "against": args.against.resolve()}
        workers = {
            name: subprocess.Popen([sys.executable, "-c", WORKER, str(path), data, json.dumps(queries)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=path)
            for name, path in sides.items()
        }  # fmt: skip
        for w in workers.values():
            assert w.stdout.readline().strip() == "ready"
        times: dict[str, list[float]] = {name: [] for name in workers}
        for n in range(args.rounds):
            for name in (list(workers) if n % 2 == 0 else list(workers)[::-1]):  # alternate who goes first
                workers[name].stdin.write("go\n")
                workers[name].stdin.flush()
                times[name] += json.loads(workers[name].stdout.readline())
        for w in workers.values():
            w.stdin.close()
            w.wait()
    print(f"recall() at {args.size} memories, {len(queries)} queries x {args.rounds} rounds, query vectors cached (ms)")
    p = {name: (np.percentile(t, 50) * 1e3, np.percentile(t, 95) * 1e3) for name, t in times.items()}
    for name, path in sides.items():
        print(f"  {name:>8} p50 {p[name][0]:7.1f}  p95 {p[name][1]:7.1f}   {path}")
    ratio95, ratio50 = p['against'][1] / p['this'][1], p['against'][0] / p['this'][0]
    print(f"  p95 ratio against/this {ratio95:.2f}x, p50 ratio {ratio50:.2f}x;"
          f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
