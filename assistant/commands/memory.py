"""`assistant memory list|search|forget|import|export --user U`: see and edit what it remembers."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from assistant.commands.persona import open_user
from assistant.errors import BadInput, NotFound

__all__ = ["add_parser", "run"]

IMPORT_CHUNK = 512  # lines embedded and committed together
IMPORT_BATCH = 128  # lines embedded between two progress updates


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("memory", parents=parents, help="list, search, forget, import or export memories")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", parents=parents, help="the user's memories, oldest first")
    ls.add_argument("--all", action="store_true", help="include superseded and deleted ones")
    ls.add_argument("--json", action="store_true", help="print JSON")
    search = sub.add_parser("search", parents=parents, help="ranked memories for a query")
    what = search.add_mutually_exclusive_group(required=True)
    what.add_argument("--query", help="what to look for")
    what.add_argument(
        "--queries", type=Path, metavar="FILE.jsonl", help='many queries, one {"query": ..., "id": ...} a line'
    )
    search.add_argument("--k", type=int, default=10, help="how many results (default 10)")
    search.add_argument("--instance", help="search as this instance: user-wide plus its private memories")
    search.add_argument("--json", action="store_true", help="print JSON (JSON lines with --queries)")
    forget = sub.add_parser("forget", parents=parents, help="delete memories by id, or the whole user")
    forget.add_argument("ids", nargs="*", type=int, metavar="ID", help="memory ids from `memory list`")
    forget.add_argument("--all", action="store_true", help="erase the user completely: rows, embeddings, files")
    imp = sub.add_parser(
        "import", parents=parents, help='load past conversation: {"text","speaker","time","source_id"}'
    )
    imp.add_argument("file", type=Path, metavar="FILE.jsonl", nargs="?", default=Path("-"),
                     help="conversation lines, or an `export --jsonl` dump (- or none: stdin)")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    exp = sub.add_parser("export", parents=parents, help="everything stored about the user, as JSON")
    exp.add_argument("--output", type=Path, help="write here instead of stdout")
    exp.add_argument("--jsonl", action="store_true",
                     help="every row of every table as JSON lines, for `memory import` into another store")
    exp.add_argument("--all-users", action="store_true", help="with --jsonl: every user's rows")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    action = {"list": _list, "search": _search, "forget": _forget, "import": _import, "export": _export}[args.action]
    if args.action == "export" and args.all_users:
        if not args.jsonl:
            raise BadInput("--all-users needs --jsonl")
        return _dump(args, None)
    if args.action == "import" and _is_dump(args):
        return _import_dump(args)
    store, user = open_user(args, create=args.action == "import")
    with store:
        return action(store, user, args)


def _list(store, user, args) -> int:
    memories = store.memories(user, include_inactive=args.all)
    if args.json:
        print(json.dumps([m.to_json() for m in memories], ensure_ascii=False, indent=2))
        return 0
    for m in memories:
        status = "" if m.status == "active" else f" [{m.status}]"
        print(f"{m.id}\t{m.kind}\t{m.scope}{status}\t{m.text}")
    return 0


def _search(store, user, args) -> int:
    from memory import recall

    if args.k < 1:
        raise BadInput("--k must be at least 1")
    instance = None
    if args.instance:
        found = [i for i in store.instances(user) if i.name.casefold() == args.instance.casefold()]
        if not found:
            raise NotFound(f"no instance called {args.instance!r} for user {user.name!r}")
        instance = found[0]
    if args.query is not None:
        results = recall(store, user, args.query, instance=instance, k=args.k)
        if args.json:
            print(json.dumps([m.to_json() for m in results], ensure_ascii=False, indent=2))
        for m in [] if args.json else results:
            print(f"{m.score:.4f}\t{m.source_id or m.id}\t{m.text}")
        return 0
    for n, (qid, query) in enumerate(_read_queries(args.queries), 1):
        results = recall(store, user, query, instance=instance, k=args.k)
        if args.json:
            print(
                json.dumps({"id": qid, "query": query, "results": [m.to_json() for m in results]}, ensure_ascii=False)
            )
        else:
            print(f"# {qid if qid is not None else n}: {query}")
            for m in results:
                print(f"{m.score:.4f}\t{m.source_id or m.id}\t{m.text}")
        sys.stdout.flush()
    return 0


def _read_queries(path: Path) -> list[tuple[object, str]]:
    out = []
    for n, line in _jsonl(path):
        query = line.get("query") if isinstance(line, dict) else line
        if not isinstance(query, str) or not query.strip():
            raise BadInput(f'{path}:{n}: no query (a line is {{"query": ...}} or a JSON string)')
        out.append((line.get("id") if isinstance(line, dict) else None, query))
    return out


def _forget(store, user, args) -> int:
    if args.all:
        if args.ids:
            raise BadInput("give memory ids or --all, not both")
        store.forget_user(user)
        print(f"erased user {user.name!r}")
        return 0
    if not args.ids:
        raise BadInput("give the ids of memories to forget (see `assistant memory list`), or --all")
    gone = store.delete_memories(user, args.ids)
    missing = sorted(set(args.ids) - set(gone))
    print(f"forgot {len(gone)} memor{'y' if len(gone) == 1 else 'ies'}")
    if missing:
        raise NotFound(f"no active memory with id {', '.join(map(str, missing))} for user {user.name!r}")
    return 0


def _import(store, user, args) -> int:
    """Each chunk of lines is one transaction, and a line whose source id the user already has is
    skipped, so an import that was cut off (a crash, Ctrl+C) completes when run again, without
    duplicates. A line without `source_id` gets one from its position and content."""
    from memory.types import embedding_text

    items = [_import_line(args.file, n, line) for n, line in _jsonl(args.file, getattr(args, "stdin", None))]
    progress = _Progress(len(items), enabled=not args.no_progress)
    added = 0
    for start in range(0, len(items), IMPORT_CHUNK):
        chunk = items[start : start + IMPORT_CHUNK]
        vectors = []
        for lo in range(0, len(chunk), IMPORT_BATCH):
            batch = chunk[lo : lo + IMPORT_BATCH]
            vectors.extend(store.embedder.embed([embedding_text(i.text, i.kind, i.speaker) for i in batch]))
            progress.update(start + lo + len(batch))
        added += store.import_memories(user, [replace(i, embedding=v) for i, v in zip(chunk, vectors, strict=True)])
    progress.close()
    skipped = f" ({len(items) - added} were there already)" if added < len(items) else ""
    print(f"imported {added} lines for user {user.name!r}{skipped}")
    return 0


class _Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line every 10% otherwise."""

    WIDTH = 30  # characters of bar

    def __init__(self, total: int, enabled: bool = True) -> None:
        import time

        self.total, self.enabled, self._clock = total, enabled and total > 0, time.monotonic
        self._start, self._tty, self._shown = self._clock(), sys.stderr.isatty(), -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        tenth = done * 10 // self.total
        if not self._tty and tenth == self._shown:
            return
        self._shown = tenth
        filled = done * self.WIDTH // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"importing [{bar}] {done}/{self.total} lines, {self._clock() - self._start:.1f} s"
        sys.stderr.write(f"\r{line}" if self._tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _import_line(path: Path, n: int, line: object):
    from memory import NewMemory
    from memory.types import MAX_MEMORY_CHARS

    if not isinstance(line, dict):
        raise BadInput(f"{path}:{n}: a line must be a JSON object")
    text = line.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"{path}:{n}: no text")
    if len(text) > MAX_MEMORY_CHARS:
        raise BadInput(f"{path}:{n}: text too long ({len(text)} characters > {MAX_MEMORY_CHARS})")
    speaker = line.get("speaker")
    said_at = None
    if line.get("time") is not None:
        try:
            when = datetime.fromisoformat(str(line["time"]))
        except ValueError as err:
            raise BadInput(f"{path}:{n}: time {line['time']!r} is not ISO 8601") from err
        said_at = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    source_id = line.get("source_id")
    if source_id is None:  # the same line of the same file gets the same id: a rerun skips it
        digest = hashlib.sha256(f"{n}\t{json.dumps(line, sort_keys=True)}".encode()).hexdigest()[:20]
        source_id = f"line:{digest}"
    return NewMemory(
        text=text,
        kind="utterance",
        speaker=str(speaker) if speaker is not None else None,
        said_at=said_at,
        source_id=None if source_id is None else str(source_id),
    )


def _open(args):
    from assistant.config import default_data_dir
    from memory import open_store

    return open_store(Path(args.data_dir or default_data_dir()), database=args.database)


def _is_dump(args) -> bool:
    """Whether the file to import is an `export --jsonl` dump (its first line says); stdin is read
    here once and kept in `args.stdin`."""
    from memory.transfer import is_dump_line

    if str(args.file) == "-":
        args.stdin = _stdin().readlines()
        lines = iter(args.stdin)
    else:
        try:
            lines = args.file.open(encoding="utf-8")
        except OSError:
            return False  # the conversation import says why
    try:
        first = next((line for line in lines if line.strip()), "")
        return is_dump_line(json.loads(first))
    except ValueError:  # not JSON (or not UTF-8): the conversation import says where
        return False
    finally:
        if hasattr(lines, "close"):
            lines.close()


def _import_dump(args) -> int:
    """`import` of an `export --jsonl` dump: every row it holds, in one transaction (users by name)."""
    from memory.transfer import import_lines

    with _open(args) as store:
        added = import_lines(store, (line for _, line in _jsonl(args.file, getattr(args, "stdin", None))))
    print("imported " + ", ".join(f"{n} {table}" for table, n in added.items()))
    return 0


def _dump(args, store_user) -> int:
    """`export --jsonl`: the user's rows (or everyone's) as memory.transfer's JSON lines."""
    from memory.transfer import export_lines

    if store_user is None:
        store, user = _open(args), None
    else:
        store, user = store_user
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        for line in export_lines(store, user):
            out.write(line + "\n")
    finally:
        if args.output:
            out.close()
        if store_user is None:
            store.close()
    return 0


def _export(store, user, args) -> int:
    if args.jsonl:
        return _dump(args, (store, user))
    data = json.dumps(store.export_user(user), ensure_ascii=False, indent=2)
    if args.output:
        args.output.write_text(data + "\n", encoding="utf-8")
    else:
        print(data)
    return 0


def _jsonl(path: Path, stdin: list[str] | None = None):
    """(line number, parsed JSON) for each non-blank line; BadInput names the bad line. Path "-":
    the lines already read from stdin, or stdin."""
    if str(path) == "-":
        yield from _parsed(_stdin() if stdin is None else stdin, path)
        return
    try:
        handle = path.open(encoding="utf-8")
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror}") from err
    with handle:
        yield from _parsed(handle, path)


def _parsed(handle, path: Path):
    for n, raw in enumerate(_lines(handle, path), 1):
        if raw.strip():
            try:
                yield n, json.loads(raw)
            except ValueError as err:  # also UnicodeDecodeError
                raise BadInput(f"{path}:{n}: not JSON ({getattr(err, 'msg', err)})") from err


def _stdin():
    """stdin as UTF-8 text, whatever the locale says (left open when done)."""
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(encoding="utf-8")
    return sys.stdin


def _lines(handle, path: Path):
    try:
        yield from handle
    except UnicodeDecodeError as err:
        raise BadInput(f"{path}: not UTF-8 text") from err
