"""`assistant serve`: the HTTP API (OpenAI-compatible, /v1) on one engine."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
from pathlib import Path

from assistant.errors import BadInput

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)

KEYS_ENV = "ASSISTANT_API_KEYS"  # KEY[=USER] separated by commas or spaces: keys kept out of `ps`
MALLOC_ARENAS = 2  # glibc heaps for the server's threads (glibc's default: up to 8 per core)


def add_parser(sub, parents) -> None:
    p = sub.add_parser(
        "serve",
        parents=parents,
        help="serve the API (and web UI) over HTTP",
        description="Serve the OpenAI-compatible API at /v1 on one loaded core model.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--model", help="hub id or local path of the core model")
    p.add_argument(
        "--architecture",
        choices=["qwen2_5_omni", "qwen3_omni"],
        default="qwen2_5_omni",
        help="for --profile tiny: which architecture to build",
    )
    p.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY[=USER]",
        help="accept this bearer key (repeatable); KEY=USER maps it to a user. Visible to other users in "
        "`ps`: prefer --api-keys-file or $ASSISTANT_API_KEYS",
    )
    p.add_argument(
        "--api-keys-file",
        metavar="PATH",
        help="read keys from this file, one KEY[=USER] a line (# comments); also $ASSISTANT_API_KEYS "
        "(KEY[=USER] separated by commas or spaces)",
    )
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest reply in the web UI, in tokens")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for the model's tensor operations (default: one per core); on cores shared "
        "with other busy programs 1 can be several times faster (bench/offline.py --threads)",
    )
    p.add_argument(
        "--allow-anonymous-loopback",
        action="store_true",
        help="let API clients on this machine (loopback) in without a key",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages of ORIGIN (scheme://host:port; * for any) use the API and the realtime socket "
        "(repeatable; default: only the server's own pages)",
    )
    p.add_argument("--search-url", metavar="URL",
                   help="a SearxNG instance that Deep Search also searches (the web; default: offline sources only)")
    p.add_argument("--no-anonymous-loopback", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.set_defaults(run=run)


def _cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Let glibc use at most `arenas` heaps (as MALLOC_ARENA_MAX does; a set MALLOC_ARENA_MAX wins).

    With a heap per busy thread, glibc kept what bursts of concurrent uploads freed, scattered over
    many heaps: under 32 clients transcribing, the server's RSS grew ~35 MiB per round of ~100
    requests and did not level off (still ~33 MiB per round after malloc_trim). With two heaps it
    stayed flat after trimming, at the same throughput (bench/api_load.py --malloc-trim, 2 cores).
    Called before the server starts any thread; a no-op off glibc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (macOS, musl): nothing to tune
    m_arena_max = -8  # malloc.h
    if not libc.mallopt(m_arena_max, arenas):
        log.warning("could not limit glibc to %d malloc arenas", arenas)


def _key_file(path: str | None) -> list[str]:
    """The KEY[=USER] lines of a keys file (blank lines and # comments skipped)."""
    if path is None:
        return []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read the API keys file {path}: {getattr(err, 'strerror', None) or err}") from err
    items = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    if not any(items):
        raise BadInput(f"the API keys file {path} holds no keys")
    return [item for item in items if item]


def _keys(items: list[str]) -> dict[str, str]:
    keys = {}
    for item in items:
        key, _, user = item.partition("=")
        if len(key) < 8:
            raise BadInput("an API key must be at least 8 characters")
        keys[key] = user or "default"
    return keys


def _origins(items: list[str]) -> tuple[str, ...]:
    from ui.origins import normalize_origin

    try:
        return tuple(normalize_origin(o) for o in items)
    except ValueError as err:
        raise BadInput(f"--allow-origin: {err}") from err


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from assistant.config import EngineConfig, resolve_profile
    from ui.app import ServeConfig, create_app

    from_env = os.environ.get(KEYS_ENV, "").replace(",", " ").split()
    keys = _keys([*args.api_key, *_key_file(args.api_keys_file), *from_env])
    origins = _origins(args.allow_origin)
    _cap_malloc_arenas()
    if args.threads is not None:
        if args.threads < 1:
            raise BadInput("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)  # the process's setting, chosen here at its entry point
    if args.host not in ("127.0.0.1", "localhost", "::1") and not keys:
        raise BadInput("serving beyond loopback needs at least one --api-key")
    profile = resolve_profile(args.profile)
    engine = EngineConfig(
        profile=profile,
        model=args.model,
        architecture=args.architecture,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
    )
    name = (
        f"tiny-{args.architecture}"
        if profile.value == "tiny"
        else ("remote" if profile.value == "remote" else args.model or profile.value)
    )
    from assistant.engine import load_engine

    # Load the model before listening: a missing model is a one-line error, not a server traceback.
    # The engine starts (and warms the model up) only once the app is built: on two cores, warming
    # up beside the web UI's imports slowed both down.
    loaded = load_engine(engine, start=False)
    try:
        app = create_app(
            ServeConfig(
                engine=engine,
                api_keys=keys,
                allow_anonymous_loopback=args.allow_anonymous_loopback,
                model_name=name,
                data_dir=args.data_dir,
                database=args.database,
                allowed_origins=origins,
                search_url=args.search_url,
            ),
            engine=loaded,
        )
        loaded.start()  # turns that arrive while it warms up wait in its queue
        print(f"serving on http://{args.host}:{args.port} (web UI at /, API at /v1)", flush=True)
        if not keys and not args.allow_anonymous_loopback:
            print(
                "the API answers 401 to every request: add --api-key KEY[=USER] or --allow-anonymous-loopback",
                flush=True,
            )
        level = "warning" if not args.verbose else "info"
        server = uvicorn.Config(app, host=args.host, port=args.port, log_level=level)
        from assistant.local_only import RedactKeys

        for name in ("uvicorn.access", "uvicorn.error"):  # request lines carry ?api_key= (browsers' sockets)
            logging.getLogger(name).addFilter(RedactKeys())
        uvicorn.Server(server).run()
    finally:
        loaded.close()
    return 0
