"""`assistant ask`: one turn of text, images and speech in; text (and speech) out."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from assistant.errors import BadInput

__all__ = ["add_parser", "run"]


def add_parser(sub, parents) -> None:
    p = sub.add_parser("ask", parents=parents, help="ask one question (text, images, speech)",
                       description="Ask one question; prints the answer and can write it as speech.")
    p.add_argument("text", nargs="?", default="", help="the question (optional with --audio; - reads stdin)")
    p.add_argument("--image", action="append", default=[], metavar="PATH", help="an image (repeatable)")
    p.add_argument("--audio", metavar="PATH", help="spoken input: any audio file")
    p.add_argument("--speak", metavar="OUT.wav", help="write the spoken answer to this WAV file")
    p.add_argument("--voice", help="the voice to speak with (e.g. Chelsie, Ethan)")
    p.add_argument("--json", action="store_true", help="print one JSON event per line, with timings")
    p.add_argument("--model", help="hub id or local path of the core model")
    p.add_argument("--architecture", choices=["qwen2_5_omni", "qwen3_omni"], default="qwen2_5_omni",
                   help="for --profile tiny: which architecture to build")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest reply, in tokens")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (reproducible replies)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--think", action="store_const", const="think", dest="reasoning",
                     help="reason step by step first (the reasoning is shown apart, on stderr)")
    how.add_argument("--big-brain", action="store_const", const="big_brain", dest="reasoning",
                     help="several attempts at once (reasoned and as programs), the best kept")
    how.add_argument("--no-think", action="store_const", const="none", dest="reasoning",
                     help="answer at once even if the question says 'think hard'")
    how.add_argument("--deep-search", action="store_const", const="deep_search", dest="reasoning",
                     help="research the question in the sources (the bundled encyclopedia, your documents, "
                          "the web with --search-url) and answer with numbered citations")
    p.add_argument("--attempts", type=int, default=None, metavar="N",
                   help="Big Brain's attempts (1-16, default 5)")
    p.add_argument("--search-url", metavar="URL", help="with --deep-search: a SearxNG instance to search the web")
    p.add_argument("--search-depth", choices=["low", "medium", "high"], default="medium",
                   help="with --deep-search: how many rounds and passages (default medium)")
    p.set_defaults(run=run)


def _turn(args: argparse.Namespace):
    from assistant.turns import Turn
    from audio.io import load_audio
    from vision.images import load_image

    if args.speak:
        _check_writable(args.speak)
    images = tuple(load_image(path) for path in args.image)
    audio = None
    if args.audio:
        audio = load_audio(args.audio)
        if len(audio) < 1600:  # 0.1 s at 16 kHz
            raise BadInput(f"{args.audio} holds no usable speech (shorter than 0.1 s)")
    text = sys.stdin.read() if args.text == "-" else args.text or ""
    return Turn(text=text, images=images, audio=audio)


def _check_writable(path: str) -> None:
    from pathlib import Path

    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise BadInput(f"cannot write {path}: folder {parent} does not exist")


def run(args: argparse.Namespace) -> int:
    if args.attempts is not None and not 1 <= args.attempts <= 16:
        raise BadInput("--attempts must be between 1 and 16")
    if args.attempts is not None and args.reasoning != "big_brain":
        raise BadInput("--attempts goes with --big-brain")
    if args.search_url and args.reasoning != "deep_search":
        raise BadInput("--search-url goes with --deep-search")
    turn = _turn(args)  # validate input before loading any model
    if args.reasoning == "deep_search" and not turn.text.strip():
        raise BadInput("--deep-search needs the question as text")
    from assistant.config import EngineConfig, default_data_dir, resolve_profile
    from assistant.engine import load_engine
    from assistant.session import Session, default_user
    from memory import open_store

    store = open_store(args.data_dir or default_data_dir(), database=args.database)

    config = EngineConfig(profile=resolve_profile(args.profile), model=args.model,
                          architecture=args.architecture, device=args.device,
                          max_new_tokens=args.max_new_tokens)
    try:
        session_args = dict(user=args.user or default_user(), persona_name=args.persona,
                            max_new_tokens=args.max_new_tokens)
        Session(None, store, **session_args)  # unknown user/persona: fail before loading the model
        engine = load_engine(config)
        try:
            sources = _sources(args, store, session_args["user"], engine) if args.reasoning == "deep_search" else ()
            session = Session(engine, store, **session_args)
            return asyncio.run(_ask(session, turn, args, sources))
        finally:
            engine.close()
    finally:
        store.close()


async def _ask(session, turn, args, sources=()) -> int:
    from assistant.events import AudioChunk, Citations, Done, Error, TextDelta, ThinkingDelta
    from audio.io import write_wav

    chunks, cited = [], ()
    done = None
    thinking = False  # the reasoning goes to stderr, dimmed on a terminal; the answer to stdout
    dim = sys.stderr.isatty()
    async for ev in session.converse(turn, speak=bool(args.speak), voice=args.voice, seed=args.seed,
                                     reasoning=args.reasoning, attempts=args.attempts,
                                     sources=sources, search_depth=args.search_depth):
        if args.json:
            print(json.dumps(_event_json(ev)), flush=True)
        elif isinstance(ev, ThinkingDelta):
            if not thinking:
                print("\033[2m" if dim else "", end="", file=sys.stderr)
                thinking = True
            print(ev.text, end="", file=sys.stderr, flush=True)
        elif isinstance(ev, TextDelta):
            if thinking:
                print("\033[0m\n" if dim else "\n", end="", file=sys.stderr, flush=True)
                thinking = False
            print(ev.text, end="", flush=True)
        if isinstance(ev, Citations):
            cited = ev.citations
        elif isinstance(ev, AudioChunk):
            chunks.append(ev)
        elif isinstance(ev, Error):
            if not args.json:
                print(file=sys.stdout)
            print(f"assistant: error: {ev.message}", file=sys.stderr)
            return 2 if ev.code in ("bad_input", "context_too_long") else 1
        elif isinstance(ev, Done):
            done = ev
    if not args.json:
        print()
        if cited:
            print(sources_text(cited))
        if args.reasoning == "deep_search" and any(c.source == "encyclopedia" for c in cited):
            from assistant.research.encyclopedia import ATTRIBUTION

            print(ATTRIBUTION, file=sys.stderr)
    await session.wait_for_memory()
    if args.speak:
        import numpy as np

        pcm = np.concatenate([c.pcm for c in chunks]) if chunks else np.zeros(0, dtype=np.float32)
        rate = chunks[0].sample_rate if chunks else session.engine.sample_rate
        write_wav(args.speak, pcm, rate)
        if not args.json:
            print(f"(spoken answer: {args.speak}, {len(pcm) / rate:.2f} s at {rate} Hz)", file=sys.stderr)
    return 0 if done is not None else 1


def _sources(args, store, user: str, engine) -> list:
    """The Deep Search sources, the encyclopedia's index built first (once, with a progress bar)."""
    from tqdm import tqdm

    from assistant.research.setup import research_sources

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="indexing the encyclopedia (once)", unit="article", file=sys.stderr)
        bar.update(done - bar.n)

    try:
        engine.encyclopedia(progress=progress)
    finally:
        if bar is not None:
            bar.close()
    return research_sources(engine, user_id=user, store=store, search_url=args.search_url)


def sources_text(citations) -> str:
    """The numbered source list printed under a Deep Search answer: title, link, quoted passage."""
    lines = ["", "Sources:"]
    for c in citations:
        lines.append(f"[{c.number}] {c.title} <{c.url}>")
        lines.append(f'    "{c.quote}"')
    return "\n".join(lines)


def _event_json(ev) -> dict:
    from dataclasses import asdict

    from assistant.events import AudioChunk

    if isinstance(ev, AudioChunk):
        return {"type": "audio", "turn_id": ev.turn_id, "sample_rate": ev.sample_rate,
                "samples": len(ev.pcm), "duration_s": round(ev.duration_s, 4)}
    data = asdict(ev)
    return {"type": type(ev).__name__.lower(), **data}  # textdelta; thinkingdelta apart from it
