"""The records the memory package hands out: frozen dataclasses, never raw rows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = [
    "Exchange",
    "Fact",
    "Instance",
    "Memory",
    "RememberResult",
    "StoredMessage",
    "User",
    "embedding_text",
    "index_text",
]

MAX_MEMORY_CHARS = 8000  # a stored memory (an imported utterance may be long); longer is refused
MAX_FACT_CHARS = 1000  # an extracted fact; a longer "fact" is not a fact


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Instance:
    """One running assistant of a user: a persona with its own conversation."""

    id: int
    user_id: int
    persona: str
    name: str


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    instance_id: int
    role: str  # system | user | assistant
    text: str
    attachments: tuple[str, ...] = ()  # paths relative to the data dir
    timings: dict = field(default_factory=dict)  # seconds
    interrupted: bool = False
    turn_id: str | None = None
    created_at: float = 0.0  # unix seconds


@dataclass(frozen=True, slots=True)
class Memory:
    id: int
    user_id: int
    instance_id: int | None  # None: user-wide, else private to that instance
    kind: str  # fact | preference | event | utterance | note
    text: str
    key: str | None = None
    speaker: str | None = None
    said_at: float = 0.0  # unix seconds
    source_id: str | None = None
    status: str = "active"  # active | superseded | deleted
    created_at: float = 0.0
    updated_at: float = 0.0
    score: float = 0.0  # set by recall; higher is better

    @property
    def scope(self) -> str:
        return "user" if self.instance_id is None else "instance"

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "source_id": self.source_id,
            "text": self.text,
            "score": round(self.score, 6),
            "kind": self.kind,
            "key": self.key,
            "scope": self.scope,
            "speaker": self.speaker,
            "said_at": iso(self.said_at),
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class Fact:
    """A durable fact to store, from the extractor or from an explicit request."""

    text: str
    kind: str = "fact"
    key: str | None = None  # slot like 'user.name'; a new value for the slot supersedes the old
    scope: str = "user"  # user | instance
    action: str = "add"  # add | delete (delete: forget memories matching `text`)
    replaces: str | None = None  # text of an older fact this one corrects


@dataclass(frozen=True, slots=True)
class Exchange:
    """One finished turn, as the write path sees it."""

    user_text: str
    assistant_text: str = ""
    speaker: str = "user"  # the user's display name, used when indexing
    said_at: float = field(default_factory=time.time)
    message_id: int | None = None  # the stored user message that caused the writes


@dataclass(frozen=True, slots=True)
class RememberResult:
    """What one `remember` call did; `rejected` holds (text, reason) for facts not stored."""

    added: tuple[int, ...] = ()
    superseded: tuple[int, ...] = ()
    deleted: tuple[int, ...] = ()
    duplicates: tuple[int, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def index_text(text: str, speaker: str | None, said_at: float) -> str:
    """What gets full-text indexed: when (two date forms) and who said it, then the text."""
    day = datetime.fromtimestamp(said_at, UTC)
    return f"[{day:%Y-%m-%d} {day.day} {day:%B %Y}] {speaker or 'user'}: {text}"


def embedding_text(text: str, kind: str, speaker: str | None) -> str:
    """What gets embedded. A conversation line keeps its speaker; a fact is already about the user.

    Dates stay out of the vector: on short texts the date's tokens dominate all-MiniLM-L6-v2's
    mean pooling and squeeze every cosine into 0.6-0.9 (measured), so dates go to FTS5 only.
    """
    return f"{speaker}: {text}" if kind == "utterance" and speaker else text
