"""`assistant docs add PATH...|list|remove ID... --user U`: the user's own documents, for Deep Search."""

from __future__ import annotations

import argparse
import json
import sys

from assistant.commands.persona import open_user
from assistant.errors import BadInput, NotFound

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("docs", parents=parents, help="add, list or remove your documents (for Deep Search)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", parents=parents,
                         help="index files and folders (txt, md, html, pdf; folders recursively; rerun to resume)")
    add.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    ls = sub.add_parser("list", parents=parents, help="the user's documents, oldest first")
    ls.add_argument("--json", action="store_true", help="print JSON")
    rm = sub.add_parser("remove", parents=parents, help="remove documents by id (see `docs list`)")
    rm.add_argument("ids", nargs="+", type=int, metavar="ID")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    action = {"add": _add, "list": _list, "remove": _remove}[args.action]
    store, user = open_user(args, create=args.action == "add")
    with store:
        return action(store, user, args)


def _add(store, user, args) -> int:
    """Each file is committed on its own: an add cut off (Ctrl+C, a crash) resumes when run again,
    skipping the files already indexed. A bad file is one line on stderr; the others go on."""
    from tqdm import tqdm

    from assistant.research.documents import add_files, find_files

    files, failed, other = find_files(args.paths)
    counts = dict.fromkeys(("added", "updated", "skipped", "failed"), 0)
    for result in failed:
        print(f"assistant: {result.line()}", file=sys.stderr)
        counts["failed"] += 1
    with tqdm(total=len(files), unit="file", desc="indexing", disable=None, file=sys.stderr,
              dynamic_ncols=True) as bar:  # fmt: skip
        for result in add_files(store, user, files):
            counts[result.status] += 1
            bar.update()
            if result.status == "failed":
                tqdm.write(f"assistant: {result.line()}", file=sys.stderr)
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    if other:
        summary += f", {other} of other types left out"
    print(f"documents of {user.name!r}: {summary or 'nothing to add'}")
    return 2 if counts["failed"] else 0


def _list(store, user, args) -> int:
    from assistant.research.documents import documents_of

    docs = documents_of(store).documents(user)
    if args.json:
        print(json.dumps([d.to_json() for d in docs], ensure_ascii=False, indent=2))
        return 0
    for d in docs:
        print(f"{d.id}\t{d.kind}\t{d.passages} passages\t{d.title}\t{d.path}")
    return 0


def _remove(store, user, args) -> int:
    from assistant.research.documents import documents_of

    if not args.ids:
        raise BadInput("give the ids of documents to remove (see `assistant docs list`)")
    gone = documents_of(store).remove(user, args.ids)
    print(f"removed {len(gone)} document{'' if len(gone) == 1 else 's'}")
    missing = sorted(set(args.ids) - set(gone))
    if missing:
        raise NotFound(f"no document with id {', '.join(map(str, missing))} for user {user.name!r}")
    return 0
