"""End of the user's speech -> the first reply sample on the speaker, through real sound devices.

    python bench/talk_latency.py [--turns 10] [--profile tiny|offline] [--server] [--prepare-after 0.1,0.7]

A private PulseAudio daemon (tests/pulse.py) gives `assistant talk` a virtual microphone and
speaker. Each turn plays a spoken question into the microphone; the end of the speech is where
the question's last loud block reached the microphone, and the first reply sample is the first
loud block on the speaker's monitor after it: both recorded by this script on one clock. Besides
p50/p95 it splits the time into its parts: the silence the end of turn waits for, the engine's
own time to first audio, and the rest (the loop, the devices), as a share of the whole.
With several `--prepare-after` values (the silence after which the reply starts being prepared;
0.7, the end-of-turn silence, means only once the turn has ended: the baseline), the same turns
run once per value, one after another on the same devices, and the p50s are compared.
Before and after, a fixed workload is timed (`machine_check`): on this shared machine every stage
runs up to 1.5-2x slower in some periods, and the check tells which kind of period a run had.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audio.io import load_audio  # noqa: E402
from tests.pulse import PulseAudio  # noqa: E402

QUESTIONS = ["What is two plus two?", "What is the capital of France?", "Tell me a short joke.",
             "What colour is the sky?", "How many legs does a spider have?"]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def machine_check() -> str:
    """A fixed workload, timed: this machine's speed varies a lot over time (a shared host), and
    every stage of a turn with it. Single-threaded products: one reading 70 MB of weights, as a
    decode step does (~3.8 ms on these 2 cores in a quiet period; the talk p50s of 750-770 ms were
    measured then), and a small compute-bound one (~0.34 ms). Medians of 5 rounds."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        weights, x = torch.randn(4864, 3584, generator=gen), torch.randn(1, 3584, generator=gen)
        a = torch.randn(256, 256, generator=gen)
        reads, products = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                x @ weights.T
            reads.append((time.perf_counter() - t0) / 10)
            t0 = time.perf_counter()
            for _ in range(100):
                a @ a
            products.append((time.perf_counter() - t0) / 100)
    finally:
        torch.set_num_threads(threads)
    return (f"reading 70 MB {1000 * statistics.median(reads):.2f} ms (quiet ~3.8), "
            f"a 256x256 product {1000 * statistics.median(products):.3f} ms (quiet ~0.34)")


def spoken(text: str, folder: Path) -> np.ndarray:
    """`text` spoken by espeak-ng, as 16 kHz float32."""
    path = folder / f"q{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-s", "160", "-w", str(path), text], check=True, capture_output=True)
    return np.asarray(load_audio(path), dtype=np.float32)


class Events:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.items: list[dict] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            with self._cond:
                self.items.append(json.loads(line))
                self._cond.notify_all()

    def wait(self, kind: str, after: int, timeout: float = 120) -> tuple[int, dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.items)):
                    if self.items[i]["event"] == kind:
                        return i, self.items[i]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {kind} event")
                self._cond.wait(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--profile", default="tiny", choices=["tiny", "offline"])
    ap.add_argument("--architecture", default="qwen2_5_omni", choices=["qwen2_5_omni", "qwen3_omni"])
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--server", action="store_true", help="talk --server to a running assistant serve")
    ap.add_argument("--prepare-after", default="0.1", help="comma-separated seconds (talk --prepare-after)")
    ap.add_argument("--log", type=Path, help="write talk's debug log (-vv) here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="talk-bench-"))
    clips = [spoken(q, work) for q in QUESTIONS]
    print(f"machine check before: {machine_check()}", flush=True)
    pa = PulseAudio()
    p50s = {}
    try:
        for prepare in [float(v) for v in args.prepare_after.split(",")]:
            rows = measure(args, pa, clips, work / f"run-{prepare}", prepare)
            if rows:
                p50s[prepare] = report(args, rows, prepare)
    finally:
        pa.close()
    print(f"machine check after: {machine_check()}")
    if len(p50s) > 1:
        base = max(p50s)
        for prepare, p50 in p50s.items():
            print(f"prepare after {prepare:.2f} s: p50 {1000 * p50:.0f} ms, {p50 / p50s[base]:.2f}x of "
                  f"prepare after {base:.2f} s")
    return 0 if p50s else 1


def measure(args, pa, clips, work: Path, prepare: float) -> list[dict]:
    model = ["--profile", args.profile, "--max-new-tokens", str(args.max_new_tokens)]
    if args.profile == "tiny":
        model += ["--architecture", args.architecture]
    server = None
    env = {**pa.env, "ASSISTANT_DATA_DIR": str(work / "data")}
    try:
        if args.server:
            from tests.conftest import start_server

            server, url = start_server(*model, "--allow-anonymous-loopback", "--data-dir", str(work / "data"))
            cmd = ["talk", "--json", "--server", url]
        else:
            cmd = ["talk", "--json", *model]
        cmd += ["--prepare-after", str(prepare)]
        log = open(args.log.with_suffix(f".{prepare}.log"), "w") if args.log else subprocess.DEVNULL  # noqa: SIM115
        if args.log:
            cmd.insert(1, "-vv")
        proc = subprocess.Popen([sys.executable, "-m", "assistant", *cmd], env=env, stdout=subprocess.PIPE,
                                stderr=log, text=True, cwd=REPO)
        events = Events(proc)
        cursor, _ = events.wait("ready", 0, timeout=600)
        rows = []
        for n in range(args.turns + 1):  # turn 0 warms up (first model call, memory index)
            clip = clips[n % len(clips)]
            at = pa.feeder.play(clip)
            cursor, turn = events.wait("turn", cursor)
            cursor, started = events.wait("reply.started", cursor)
            cursor, audio = events.wait("reply.audio", cursor)
            cursor, _ = events.wait("reply.played", cursor, timeout=300)
            done = next((e for e in events.items if e["event"] == "reply.done" and e["id"] == started["id"]), None)
            time.sleep(0.3)
            heard = pa.heard.loud_span(at - 0.1, turn["t"] + 0.1, threshold_db=-40.0)
            said = pa.recorder.loud_span(heard[1], audio["first_sample"] + 2.0)
            if heard is None or said is None:
                print(f"turn {n}: nothing measured", file=sys.stderr)
                continue
            end_of_speech, first_sample = heard[1], said[0]
            if n == 0:
                print(f"first turn (cold): {1000 * (first_sample - end_of_speech):.0f} ms, not counted", flush=True)
                continue
            timings = (done or {}).get("timings") or {}
            rows.append({"latency": first_sample - end_of_speech, "loop_view": audio["latency_s"],
                         "engine": timings.get("first_audio_s"),
                         # end of speech -> the end of the turn seen by the loop (the silence and the
                         # microphone's path); -> the first sample handed to the speaker's stream
                         "turn_seen": turn["t"] - end_of_speech, "handed": audio["t"] - end_of_speech})
            engine = ", ".join(f"{k} {1000 * timings[k]:.0f}" for k in ("queued_s", "first_text_s", "first_audio_s")
                               if timings.get(k) is not None)
            print(f"turn {n}: end of speech -> first reply sample {1000 * rows[-1]['latency']:.0f} ms "
                  f"(the loop's own estimate {1000 * audio['latency_s']:.0f} ms; engine ms: {engine})", flush=True)
        proc.send_signal(2)  # Ctrl+C: it saves, and waits for memory extraction of the turns
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            print("talk did not stop within 300 s; killed", file=sys.stderr)
            proc.kill()
    finally:
        if server is not None:
            from tests.conftest import stop_server

            stop_server(server)
    if not rows:
        print("no turns measured", file=sys.stderr)
    return rows


def report(args, rows: list[dict], prepare: float) -> float:
    lat = [r["latency"] for r in rows]
    silence = 0.7
    print(f"\n{args.profile}{'' if args.profile != 'tiny' else ' ' + args.architecture}"
          f"{' --server' if args.server else ''}, prepare after {prepare:.2f} s, {len(lat)} turns: "
          f"end of speech -> first reply sample p50 {1000 * pct(lat, 0.5):.0f} ms, p95 {1000 * pct(lat, 0.95):.0f} ms")
    p50 = pct(lat, 0.5)
    print(f"  of the p50: end-of-turn silence {silence:.2f} s ({silence / p50:.0%}), "
          f"the rest (model to first audio, loop, devices) {p50 - silence:.2f} s ({(p50 - silence) / p50:.0%})")
    engine = [r["engine"] for r in rows if r["engine"] is not None]
    if engine:
        e50 = statistics.median(engine)
        print(f"  the engine's own time from the turn to its first audio: median {1000 * e50:.0f} ms; "
              f"loop and devices: {1000 * (p50 - silence - e50):.0f} ms")
    held = [r for r in rows if r["handed"] - r["turn_seen"] < 0.1]  # replies ready before the end of turn
    if held:
        print(f"  {len(held)} of {len(rows)} replies were ready when the turn ended; for those, after the end of "
              f"speech: the loop saw the end of turn at {1000 * statistics.median(r['turn_seen'] for r in held):.0f} ms"
              f", the first sample played at {1000 * statistics.median(r['handed'] for r in held):.0f} ms and "
              f"reached the speaker at {1000 * statistics.median(r['latency'] for r in held):.0f} ms (medians)")
    loop_err = [r["loop_view"] - r["latency"] for r in rows if r["loop_view"] is not None]
    if loop_err:
        print(f"  the loop's own latency estimate differs by {1000 * statistics.median(loop_err):+.0f} ms (median)")
    return p50


if __name__ == "__main__":
    raise SystemExit(main())
