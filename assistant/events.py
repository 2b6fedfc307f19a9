"""The one event vocabulary every front end consumes.

The engine emits these for a turn; the CLI, the mic loop, the web UI and the HTTP API all
read the same types. Events flow one way: engine -> session -> front end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["AudioChunk", "Citation", "Citations", "Done", "Error", "Event", "TextDelta", "ThinkingDelta", "Timings",
           "Transcript"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's text, in order."""

    turn_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """A piece of the visible reasoning (thinking, Big Brain attempts, Deep Search steps), in order.

    Shown apart from the answer (the API's `reasoning_content`, the web UI's thinking box); never
    spoken, never stored in the history and never read for memories.
    """

    turn_id: str
    text: str


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of the spoken reply: mono float32 PCM in [-1, 1]."""

    turn_id: str
    pcm: np.ndarray = field(repr=False)  # shape (n_samples,), float32
    sample_rate: int  # Hz

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the user said, when a front end or backend knows it (ASR or input text)."""

    turn_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Timings:
    """Per-turn timings in seconds from submission; None where the stage did not happen."""

    queued_s: float = 0.0  # waited before the model took the turn
    first_text_s: float | None = None
    first_audio_s: float | None = None
    total_s: float = 0.0
    audio_s: float = 0.0  # seconds of speech generated


@dataclass(frozen=True, slots=True)
class Done:
    """The turn finished (or was cancelled); nothing follows it for this turn."""

    turn_id: str
    text: str
    timings: Timings
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cancelled: bool = False
    batch_size: int = 1  # the largest batch this turn's decoding shared
    reasoning_tokens: int = 0  # of completion_tokens, those spent thinking (not in `text`)


@dataclass(frozen=True, slots=True)
class Citation:
    """One source an answer cites as [number]: where to read it and the passage that holds the claim."""

    number: int  # the [n] in the answer's text
    source: str  # the source's name: "encyclopedia", "documents", "web"
    title: str
    url: str
    quote: str  # the passage's words that hold what the answer says


@dataclass(frozen=True, slots=True)
class Citations:
    """The sources a Deep Search answer cites, after its text and before its Done."""

    turn_id: str
    citations: tuple[Citation, ...]


@dataclass(frozen=True, slots=True)
class Error:
    """The turn failed; a person can read `message`, a program can branch on `code`."""

    turn_id: str
    code: str
    message: str


Event = TextDelta | ThinkingDelta | AudioChunk | Transcript | Citations | Done | Error
