"""Personas: who the assistant is for a user (name, voice, manner, language, greeting).

Each user has their own personas. The built-in "Grok" exists for everyone without a row; a user
who edits it gets their own stored copy, and deleting that copy brings the built-in back.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, replace

from assistant.errors import BadInput, NotFound
from memory.store import Store, check_name
from memory.types import User

__all__ = [
    "DEFAULT_PERSONA",
    "Persona",
    "create_persona",
    "delete_persona",
    "edit_persona",
    "get_persona",
    "list_personas",
]

MAX_STYLE_CHARS = 4000
MAX_GREETING_CHARS = 500
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")  # BCP 47-ish: en, pt-BR, zh-Hans


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    voice: str | None = None  # a speaker of the core model (a Piper voice offline); None: default
    style: str = ""  # how it talks, in plain words
    language: str = "en"
    greeting: str = ""
    builtin: bool = False

    def __post_init__(self) -> None:
        check_name(self.name, "persona name")
        if len(self.style) > MAX_STYLE_CHARS:
            raise BadInput(f"persona style is too long ({len(self.style)} characters > {MAX_STYLE_CHARS})")
        if len(self.greeting) > MAX_GREETING_CHARS:
            raise BadInput(f"persona greeting is too long ({len(self.greeting)} characters > {MAX_GREETING_CHARS})")
        if not _LANGUAGE.match(self.language):
            raise BadInput(f"persona language {self.language!r} is not a language code like en or pt-BR")
        if self.voice is not None:
            check_name(self.voice, "voice")

    def instructions(self) -> str:
        """The persona as an instruction text; the session places it where the model allows."""
        parts = [f"You are {self.name}.", "You are the assistant."]
        if self.style:  # said as the assistant's manner: the 0.5B gave the user the traits of a bare style
            parts.append(f"Your manner, in every reply: {self.style.strip()}")
        parts.append(f"Answer in the language with code {self.language!r} unless asked otherwise.")
        return " ".join(parts)

    def to_json(self) -> dict:
        return asdict(self)


DEFAULT_PERSONA = Persona(
    name="Grok",
    style="Curious, direct and witty: you get to the point, ask what you do not know, and enjoy a good joke.",
    language="en",
    greeting="Hi, I'm Grok. What's on your mind?",
    builtin=True,
)
_FIELDS = ("voice", "style", "language", "greeting")


def list_personas(store: Store, user: User) -> list[Persona]:
    """The user's personas by name, with the built-in Grok unless the user has their own."""
    rows = store.read("SELECT * FROM personas WHERE user_id = ? ORDER BY name", (user.id,))
    out = [_persona(r) for r in rows]
    if not any(p.name.casefold() == DEFAULT_PERSONA.name.casefold() for p in out):
        out.insert(0, DEFAULT_PERSONA)
    return out


def get_persona(store: Store, user: User, name: str | None = None) -> Persona:
    """The persona called `name` (default Grok), or NotFound."""
    name = check_name(name or DEFAULT_PERSONA.name, "persona name")
    rows = store.read("SELECT * FROM personas WHERE user_id = ? AND name = ?", (user.id, name))
    if rows:
        return _persona(rows[0])
    if name.casefold() == DEFAULT_PERSONA.name.casefold():
        return DEFAULT_PERSONA
    raise NotFound(f"no persona called {name!r}; see `assistant persona list`")


def create_persona(store: Store, user: User, persona: Persona) -> Persona:
    """Store a new persona for the user; BadInput if the name is taken."""
    if persona.name.casefold() == DEFAULT_PERSONA.name.casefold():
        raise BadInput(f"{persona.name!r} is built in; change it with `assistant persona edit`")
    now = time.time()
    with store.transaction() as db:
        taken = db.execute("SELECT 1 FROM personas WHERE user_id = ? AND name = ?", (user.id, persona.name)).fetchone()
        if taken:
            raise BadInput(f"a persona called {persona.name!r} already exists")
        db.execute(
            "INSERT INTO personas (user_id, name, voice, style, language, greeting, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (user.id, persona.name, persona.voice, persona.style, persona.language, persona.greeting, now, now),
        )
    return replace(persona, builtin=False)


def edit_persona(store: Store, user: User, name: str, *, new_name: str | None = None, **changes: str | None) -> Persona:
    """Change some fields (voice, style, language, greeting) and/or the name; returns the result.
    A field given as None is kept; a voice given as "" goes back to the model's default."""
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise BadInput(f"unknown persona field(s): {', '.join(sorted(unknown))}")
    old = get_persona(store, user, name)
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes.get("voice") == "":
        changes["voice"] = None
    new = replace(old, **changes, name=new_name or old.name, builtin=False)
    now = time.time()
    with store.transaction() as db:
        if new.name.casefold() != old.name.casefold():
            taken = db.execute("SELECT 1 FROM personas WHERE user_id = ? AND name = ?", (user.id, new.name)).fetchone()
            if taken or new.name.casefold() == DEFAULT_PERSONA.name.casefold():
                raise BadInput(f"a persona called {new.name!r} already exists")
        if old.builtin:
            db.execute(
                "INSERT INTO personas (user_id, name, voice, style, language, greeting, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (user.id, new.name, new.voice, new.style, new.language, new.greeting, now, now),
            )
        else:
            db.execute(
                "UPDATE personas SET name = ?, voice = ?, style = ?, language = ?, greeting = ?, updated_at = ?"
                " WHERE user_id = ? AND name = ?",
                (new.name, new.voice, new.style, new.language, new.greeting, now, user.id, old.name),
            )
    return new


def delete_persona(store: Store, user: User, name: str) -> None:
    """Delete one of the user's personas (its instances and their conversations stay)."""
    name = check_name(name, "persona name")
    with store.transaction() as db:
        cur = db.execute("DELETE FROM personas WHERE user_id = ? AND name = ?", (user.id, name))
    if cur.rowcount == 0:
        if name.casefold() == DEFAULT_PERSONA.name.casefold():
            raise BadInput(f"{DEFAULT_PERSONA.name!r} is built in and cannot be deleted")
        raise NotFound(f"no persona called {name!r}; see `assistant persona list`")


def _persona(r) -> Persona:
    return Persona(name=r["name"], voice=r["voice"], style=r["style"], language=r["language"], greeting=r["greeting"])
