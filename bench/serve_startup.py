"""`assistant serve` start-up: seconds from launch to /health ok, then to the first chat answer.

    python bench/serve_startup.py [--runs 3] [--profile offline] [--threads N]

Each run starts a fresh server on a free loopback port; /health answers "ok" once the app listens
(the engine may still be warming up: the first request then waits in its queue, which the second
figure shows). Prints the load average beside every run: on shared cores the figures move with it.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(profile: str, threads: int | None, timeout_s: float = 180) -> tuple[float, float, str]:
    port = free_port()
    args = [sys.executable, "-m", "assistant", "serve", "--profile", profile, "--port", str(port),
            "--allow-anonymous-loopback"] + (["--threads", str(threads)] if threads else [])  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited: {proc.stdout.read()[-2000:]}")
            if time.perf_counter() - t0 > timeout_s:
                raise SystemExit("the server did not get ready")
            try:
                if httpx.get(f"{url}/health", timeout=1).json().get("status") == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=timeout_s, json={
            "model": profile, "max_tokens": 16,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
        })  # fmt: skip
        answer = time.perf_counter() - t1
        text = reply.json()["choices"][0]["message"]["content"] if reply.status_code == 200 else reply.text
        return ready, answer, text
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--threads", type=int, help="passed to serve --threads")
    args = ap.parse_args()
    readies, answers = [], []
    for i in range(args.runs):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        ready, answer, text = one_run(args.profile, args.threads)
        readies.append(ready)
        answers.append(answer)
        print(f"  run {i + 1}: ready {ready:.2f} s, first answer {answer:.2f} s later ({text[:40]!r}); load {load}")
    print(f"ready: median {statistics.median(readies):.2f} s (min {min(readies):.2f}, max {max(readies):.2f});"
          f" first answer after ready: median {statistics.median(answers):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
