"""`assistant persona list|show|create|edit|delete`: who the assistant is, per user."""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path

from assistant.config import default_data_dir

__all__ = ["add_parser", "open_user", "run"]


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("persona", parents=parents, help="list, show, create, edit or delete personas")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", parents=parents, help="the user's personas")
    ls.add_argument("--json", action="store_true", help="print JSON")
    show = sub.add_parser("show", parents=parents, help="one persona's fields")
    show.add_argument("name", nargs="?", help="persona name (default: --persona, else Grok)")
    show.add_argument("--json", action="store_true", help="print JSON")
    create = sub.add_parser("create", parents=parents, help="a new persona")
    create.add_argument("name")
    _fields(create)
    edit = sub.add_parser("edit", parents=parents, help="change a persona (editing Grok makes your own copy)")
    edit.add_argument("name")
    edit.add_argument("--rename", metavar="NEW", help="a new name")
    _fields(edit)
    delete = sub.add_parser("delete", parents=parents, help="delete a persona")
    delete.add_argument("name")
    p.set_defaults(run=run)


def _fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voice", help="a speaker of the core model (a Piper voice offline)")
    p.add_argument("--style", help="how it talks, in plain words")
    p.add_argument("--language", help="language code, like en or pt-BR")
    p.add_argument("--greeting", help="what it says first")


def open_user(args: argparse.Namespace, create: bool = True):
    """The store in --data-dir and the --user (default: the OS user)."""
    from memory import open_store

    store = open_store(Path(getattr(args, "data_dir", None) or default_data_dir()),
                       database=getattr(args, "database", None))  # fmt: skip
    try:
        user = store.user(getattr(args, "user", None) or getpass.getuser(), create=create)
    except BaseException:
        store.close()
        raise
    return store, user


def run(args: argparse.Namespace) -> int:
    from memory import Persona, create_persona, delete_persona, edit_persona, get_persona, list_personas

    store, user = open_user(args)
    with store:
        if args.action == "list":
            personas = list_personas(store, user)
            if args.json:
                print(json.dumps([p.to_json() for p in personas], ensure_ascii=False, indent=2))
            for p in [] if args.json else personas:
                tag = " (built in)" if p.builtin else ""
                print(f"{p.name}{tag}\tvoice={p.voice or 'default'}\tlanguage={p.language}\t{_short(p.style)}")
        elif args.action == "show":
            p = get_persona(store, user, args.name or getattr(args, "persona", None))
            if args.json:
                print(json.dumps(p.to_json(), ensure_ascii=False, indent=2))
            else:
                for key, value in p.to_json().items():
                    print(f"{key}: {'' if value is None else value}")
        elif args.action == "create":
            p = Persona(
                name=args.name,
                voice=args.voice,
                style=args.style or "",
                language=args.language or "en",
                greeting=args.greeting or "",
            )
            create_persona(store, user, p)
            print(f"created persona {p.name!r}")
        elif args.action == "edit":
            changes = dict(voice=args.voice, style=args.style, language=args.language, greeting=args.greeting)
            p = edit_persona(store, user, args.name, new_name=args.rename, **changes)
            print(f"updated persona {p.name!r}")
        elif args.action == "delete":
            delete_persona(store, user, args.name)
            print(f"deleted persona {args.name!r}")
    return 0


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
