"""Load on the API: N concurrent clients on loopback for a while, chat and transcription mixed.

    python bench/api_load.py [--seconds 120] [--clients 32] [--tokens 16]
    python bench/api_load.py --seconds 10          (a short try)
    python bench/api_load.py --mix chat=0.7,transcribe=0.3 --rounds 2   (no speech; RSS after each round)
    python bench/api_load.py --mix transcribe=1 --rounds 6 --seconds 30 --malloc-trim   (leak or malloc?)
    python bench/api_load.py --worst   (the largest requests the caps allow, and a few past them: peak RSS)

Serves `assistant serve --profile tiny` in a subprocess (fresh data folder, one API key) and runs
--clients asyncio clients with the real `openai` client (AsyncOpenAI), each sending one request
after another until --seconds have passed. Each request is, by a seeded draw:
  chat         text in, text out (max_tokens --tokens), not streamed
  chat_audio   text in, text + speech out, streamed (latency: first audio chunk and whole reply)
  transcribe   an 11 s English clip (jfk.flac) -> json
Prints, per kind: requests done, errors by status, p50/p95 latency (and first-audio p50/p95 for
the stream; requests started before the end are waited for); the count of 5xx (goal: zero); the
server's resident memory (RSS, with its children) before the load (after a warm-up), its peak
during, and after. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import start_server, stop_server  # noqa: E402 - one way to run a server

CLIP = REPO.parent / "shared" / "data" / "speech" / "openai_whisper" / "jfk.flac"
KEY = "load-test-key-0001"
MIX = "chat=0.5,chat_audio=0.2,transcribe=0.3"  # kind=weight


@dataclass
class Tally:
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    first_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    def fail(self, kind: str, what: str) -> None:
        self.errors[kind][what] += 1


def parse_mix(text: str) -> list[tuple[str, float]]:
    mix = []
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in ("chat", "chat_audio", "transcribe") or not weight:
            raise SystemExit(f"--mix: {part!r} is not KIND=WEIGHT with KIND chat, chat_audio or transcribe")
        mix.append((kind, float(weight)))
    return mix


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def malloc_trim(pid: int) -> float:
    """Call glibc's malloc_trim(0) inside the server (through gdb); returns its RSS afterwards, MiB."""
    before = rss_mib(pid)
    done = subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-ex", "call (int) malloc_trim(0)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"gdb could not call malloc_trim: {done.stderr.strip().splitlines()[-1:]}")
    after = rss_mib(pid)
    print(
        f"server RSS: {before:.0f} MiB, after malloc_trim(0) {after:.0f} MiB (glibc kept {before - after:.0f} MiB "
        "of freed memory)"
    )
    return round(after, 1)


def rss_mib(pid: int) -> float:
    """Resident memory of the server and its children, MiB."""
    p = psutil.Process(pid)
    procs = [p, *p.children(recursive=True)]
    return sum(x.memory_info().rss for x in procs if x.is_running()) / 2**20


async def one(client: openai.AsyncOpenAI, kind: str, tokens: int, clip: bytes, i: int, tally: Tally) -> None:
    t0 = time.perf_counter()
    try:
        if kind == "chat":
            r = await client.chat.completions.create(
                model="tiny-qwen2_5_omni",
                max_tokens=tokens,
                messages=[{"role": "user", "content": f"Question {i}: what should I cook tonight?"}],
            )
            assert r.choices[0].message.content is not None
        elif kind == "chat_audio":
            stream = await client.chat.completions.create(
                model="tiny-qwen2_5_omni",
                max_tokens=tokens,
                stream=True,
                modalities=["text", "audio"],
                audio={"voice": "Chelsie", "format": "pcm16"},
                messages=[{"role": "user", "content": f"Question {i}: tell me a story."}],
            )
            first = None
            async for chunk in stream:
                audio = getattr(chunk.choices[0].delta, "audio", None) if chunk.choices else None
                if first is None and getattr(audio, "data", None):
                    first = time.perf_counter() - t0
            if first is not None:
                tally.first_s[kind].append(first)
        else:
            r = await client.audio.transcriptions.create(model="whisper-1", file=("jfk.flac", clip))
            assert r.text
    except openai.APIStatusError as err:
        tally.fail(kind, str(err.status_code))
        return
    except (openai.APIConnectionError, openai.APITimeoutError) as err:
        tally.fail(kind, type(err).__name__)
        return
    tally.latencies_s[kind].append(time.perf_counter() - t0)


async def load(
    url: str,
    clients: int,
    seconds: float,
    tokens: int,
    seed: int,
    pid: int,
    mix: list[tuple[str, float]],
    every_s: float = 10.0,
) -> tuple[Tally, float, float, list]:
    clip = CLIP.read_bytes()
    tally = Tally()
    peak = [rss_mib(pid)]
    timeline = []  # (seconds into the round, RSS MiB) every `every_s`: growth that goes on, or levels off
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=clients * 2), timeout=600)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, http_client=http)
    deadline = time.perf_counter() + seconds
    rng = random.Random(seed)
    kinds, weights = zip(*mix, strict=True)

    async def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            await one(client, rng.choices(kinds, weights)[0], tokens, clip, w * 100_000 + i, tally)
            i += 1

    async def watch() -> None:
        while time.perf_counter() < deadline + 600:
            rss = rss_mib(pid)
            peak[0] = max(peak[0], rss)
            if not timeline or time.perf_counter() - t0 >= timeline[-1][0] + every_s:
                timeline.append((round(time.perf_counter() - t0), round(rss)))
            await asyncio.sleep(1)

    t0 = time.perf_counter()
    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - t0
    watcher.cancel()
    await http.aclose()
    return tally, elapsed, peak[0], timeline


def report(tally: Tally, elapsed: float, rss: dict, health: dict, args) -> dict:
    out = {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "tokens": args.tokens,
        "kinds": {},
        "rss_mib": rss,
        "server": health,
    }
    fivexx = 0
    for kind, _ in args.mix:
        lat = tally.latencies_s.get(kind, [])
        errs = dict(tally.errors.get(kind, {}))
        fivexx += sum(n for code, n in errs.items() if code.startswith("5"))
        row = {
            "done": len(lat),
            "errors": errs,
            "per_s": round(len(lat) / elapsed, 2),
            "p50_s": round(pct(lat, 0.5), 3),
            "p95_s": round(pct(lat, 0.95), 3),
            "mean_s": round(statistics.fmean(lat), 3) if lat else None,
        }
        if kind in tally.first_s:
            row["first_audio_p50_s"] = round(pct(tally.first_s[kind], 0.5), 3)
            row["first_audio_p95_s"] = round(pct(tally.first_s[kind], 0.95), 3)
        out["kinds"][kind] = row
    out["5xx"] = fivexx
    print(
        f"{args.clients} clients sending for {args.seconds:.0f} s (all answered after {elapsed:.0f} s), "
        f"tiny profile, max_tokens {args.tokens}, loopback, {psutil.cpu_count()} CPU cores, "
        f"load average before {args.load_before:.2f}"
    )
    print(f"{'kind':<12}{'done':>6}{'per s':>8}{'p50 s':>8}{'p95 s':>8}  errors")
    for kind, row in out["kinds"].items():
        extra = (
            f"   first audio p50 {row['first_audio_p50_s']} s, p95 {row['first_audio_p95_s']} s"
            if "first_audio_p50_s" in row
            else ""
        )
        print(
            f"{kind:<12}{row['done']:>6}{row['per_s']:>8}{row['p50_s']:>8}{row['p95_s']:>8}  "
            f"{row['errors'] or 'none'}{extra}"
        )
    print(f"5xx responses: {fivexx} (goal 0)")
    print(
        f"server RSS: {rss['before']:.0f} MiB before (after warm-up), peak {rss['peak']:.0f} MiB, "
        f"{rss['after']:.0f} MiB after (x{rss['after'] / rss['before']:.2f})"
    )
    print(f"engine: {health}")
    return out


def _ffmpeg(*args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-loglevel", "error", *args], check=True, capture_output=True).stdout


def worst_requests() -> list[tuple[str, str, dict]]:
    """(name, path, httpx request kwargs): the largest requests each cap allows, and some past them."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from assistant.engine import MAX_TEXT_CHARS
    from audio.io import MAX_TURN_AUDIO_S, wav_bytes

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    def chat(*parts) -> dict:
        return {"json": {"messages": [{"role": "user", "content": list(parts)}], "max_tokens": 4}}

    def audio(data: bytes, fmt: str) -> dict:
        return {"type": "input_audio", "input_audio": {"data": b64(data), "format": fmt}}

    rng = np.random.default_rng(0)
    speechlike = wav_bytes((rng.standard_normal(int((MAX_TURN_AUDIO_S - 1) * 16_000)) * 0.05).astype(np.float32),
                           16_000)
    silence_10h = _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "36000", "-c:a", "flac", "-f",
                          "flac", "pipe:1")  # 7 MB, no duration in its header
    buf = io.BytesIO()
    Image.new("RGB", (8000, 8000), (120, 30, 200)).save(buf, format="PNG")  # 64 MP: the pixel cap
    big_image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(buf.getvalue())}}
    silence_4h = _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(4 * 3600 - 60), "-c:a",
                         "libopus", "-b:a", "6k", "-f", "ogg", "pipe:1")

    def chunked(n_mib: int):
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(n_mib):
            yield b"\0" * 2**20
        yield b"\r\n--b--\r\n"

    return [
        ("chat: 299 s of audio (the cap is 300 s)", "/v1/chat/completions", chat(audio(speechlike, "wav"))),
        ("chat: 10 h of silent FLAC, 7 MB (refused at the cap)", "/v1/chat/completions",
         chat(audio(silence_10h, "flac"))),
        ("chat: 16 images of 64 MP (the image caps)", "/v1/chat/completions", chat(*[big_image] * 16)),
        ("chat: 256 K characters of text (the text cap)", "/v1/chat/completions",
         {"json": {"messages": [{"role": "user", "content": "word " * (MAX_TEXT_CHARS // 5)}], "max_tokens": 4}}),
        ("chat: a 60 MiB JSON body of text (refused at the text cap)", "/v1/chat/completions",
         {"json": {"messages": [{"role": "user", "content": "x" * (60 * 2**20)}], "max_tokens": 4}}),
        ("transcribe: 4 h of silence, 11 MB Opus (the file cap is 4 h)", "/v1/audio/transcriptions",
         {"files": {"file": ("long.ogg", silence_4h)}}),
        ("transcribe: a 200 MiB chunked upload (refused at 26 MiB)", "/v1/audio/transcriptions",
         {"content": chunked(200), "headers": {"Content-Type": "multipart/form-data; boundary=b"}}),
    ]


def worst(url: str, pid: int) -> list[dict]:
    """Send each of `worst_requests()` alone; the server's RSS (with its children) sampled every 50 ms."""
    import threading

    rows = []
    for name, path, kwargs in worst_requests():
        kwargs = dict(kwargs)
        headers = {"Authorization": f"Bearer {KEY}", **kwargs.pop("headers", {})}
        before = rss_mib(pid)
        peak = [before]
        stop = threading.Event()

        def sample(stop: threading.Event, peak: list[float]) -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], rss_mib(pid))

        sampler = threading.Thread(target=sample, args=(stop, peak), daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        try:
            status = httpx.post(url + path, headers=headers, timeout=1800, **kwargs).status_code
        except httpx.HTTPError as err:  # a refused upload may close the connection before it is all sent
            status = f"closed ({type(err).__name__})"
        elapsed = time.perf_counter() - t0
        stop.set()
        sampler.join()
        alive = httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
        row = {"request": name, "status": status, "seconds": round(elapsed, 2), "rss_before_mib": round(before),
               "rss_peak_mib": round(peak[0]), "rss_after_mib": round(rss_mib(pid)), "server_up": alive}
        rows.append(row)
        print(f"{name:62} {status!s:>5} {elapsed:7.2f} s  RSS {row['rss_before_mib']:5} -> peak "
              f"{row['rss_peak_mib']:5} -> {row['rss_after_mib']:5} MiB  up={alive}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="how long the clients send requests")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=16, help="max_tokens of each chat reply")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mix", default=MIX, help=f"request kinds and their weights (default: {MIX})")
    ap.add_argument("--rounds", type=int, default=1, help="load rounds on one server (RSS after each)")
    ap.add_argument("--rss-every", type=float, default=10.0, help="seconds between the RSS samples printed per round")
    ap.add_argument(
        "--malloc-trim",
        action="store_true",
        help="after each round, make the server's C allocator give freed memory back (gdb: "
        "malloc_trim(0)) and print RSS after: what stays is memory in use, the rest was only kept "
        "by malloc (a leak grows round after round even so)",
    )
    ap.add_argument("--worst", action="store_true",
                    help="instead of the load: the largest requests the caps allow, one at a time, with peak RSS")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    args.mix = parse_mix(args.mix)
    args.load_before = psutil.getloadavg()[0]
    with tempfile.TemporaryDirectory() as data:
        proc, url = start_server("--profile", "tiny", "--data-dir", data, "--api-key", f"{KEY}=load", timeout_s=300)
        try:
            rss = {"started": rss_mib(proc.pid)}
            warm = Tally()

            async def warm_up() -> None:  # one of each kind: models loaded, caches filled
                async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as c:
                    for i, (kind, _) in enumerate(args.mix):
                        await one(c, kind, args.tokens, CLIP.read_bytes(), i, warm)

            asyncio.run(warm_up())
            rss["before"] = rss_mib(proc.pid)
            if args.worst:
                rows = worst(url, proc.pid)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1))
                return
            rounds = []
            for r in range(args.rounds):  # a second round on the same server: does memory keep growing?
                tally, elapsed, peak, timeline = asyncio.run(
                    load(
                        url, args.clients, args.seconds, args.tokens, args.seed + r, proc.pid, args.mix, args.rss_every
                    )
                )
                rss["peak"] = max(rss.get("peak", 0.0), peak)
                rss["after"] = rss_mib(proc.pid)
                if args.rounds > 1:
                    print(f"--- round {r + 1} of {args.rounds}")
                health = httpx.get(f"{url}/health").json()
                rounds.append(report(tally, elapsed, {k: round(v, 1) for k, v in rss.items()}, health, args))
                rounds[-1]["rss_timeline"] = timeline
                print("server RSS during the round (s: MiB): " + ", ".join(f"{t}: {m}" for t, m in timeline))
                if args.malloc_trim:
                    rounds[-1]["rss_mib"]["after_malloc_trim"] = malloc_trim(proc.pid)
            if args.json:
                Path(args.json).write_text(json.dumps(rounds if args.rounds > 1 else rounds[0], indent=1))
        finally:
            stop_server(proc, timeout_s=60)


if __name__ == "__main__":
    main()
