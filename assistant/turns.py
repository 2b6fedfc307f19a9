"""What a session hands the engine: a request built from history, persona and the new turn."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from assistant.errors import BadInput

__all__ = ["Message", "Request", "Turn", "new_turn_id"]

Role = Literal["system", "user", "assistant"]


def new_turn_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class Turn:
    """One user turn: any mix of text, images and speech (16 kHz mono float32)."""

    text: str = ""
    images: tuple[Image.Image, ...] = ()
    audio: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        has_audio = self.audio is not None and len(self.audio) > 0
        if not self.text.strip() and not self.images and not has_audio:
            raise BadInput("the turn is empty: give text, an image or audio")
        if self.audio is not None and self.audio.ndim != 1:
            raise BadInput("audio must be mono")


@dataclass(frozen=True, slots=True)
class Message:
    """A message of the conversation as the model sees it."""

    role: Role
    text: str = ""
    images: tuple[Image.Image, ...] = ()
    audio: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Request:
    """Everything the backend needs for one reply; immutable once submitted."""

    messages: tuple[Message, ...]  # earlier turns (assistant turns as text) + the new user turn last
    system: str | None = None  # persona / instructions; backends place it where the model allows
    # what is remembered about the user for this turn; it changes from turn to turn, so a backend
    # that keeps the KV cache of the conversation places it late (the cascade: just before the
    # user's last message); by default it follows the system text (`system_prompt()`)
    context: str | None = None
    speak: bool = True  # produce speech as well as text
    voice: str | None = None  # a speaker of the core model; None: the backend's default
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    # nobody waits for it (memory extraction): a backend that can pause turns (`pauses_background`)
    # runs it only while no other turn is in progress
    background: bool = False
    # compute only what comes before the last message, whose content is not known yet (the user is
    # still speaking), so that the turn that follows finds it cached; no reply (see Engine.warm)
    prefix_only: bool = False
    # "none" | "think" (visible reasoning, then the answer) | "big_brain" (several attempts, the
    # best kept); see assistant/reasoning.py | "deep_search" (researched in `sources`, cited; see
    # assistant/research/loop.py)
    reasoning: str = "none"
    attempts: int | None = None  # Big Brain's attempts (None: the default)
    filler: bool = False  # thinking in a voice conversation: say "Let me think about that." first
    # run on the backend's larger model where it has one (the offline 1.5B: Big Brain, thinking);
    # quick answers stay on the fast one
    thinker: bool = False
    # keep the KV cache of this whole prompt: more requests with the same prompt follow at once
    # (Big Brain's attempts), and each of them then prefills only its last token
    keep_prompt: bool = False
    # the reply is done once its first code block closes (Big Brain's programs: what a model adds
    # after the program is never read); a backend that cannot stop there reads the block alone
    ends_with_code: bool = False
    say: str | None = None  # speak exactly this (no model); only where the backend `speaks_verbatim`
    # Deep Search: what it searches (assistant.research.sources.Source objects; never seen by a
    # backend) and how far ("low" | "medium" | "high": rounds and passages read)
    sources: tuple = ()
    search_depth: str = "medium"
    turn_id: str = field(default_factory=new_turn_id)

    def system_prompt(self) -> str | None:
        """The system text with the remembered context after it (for backends that place them together)."""
        parts = [p.strip() for p in (self.system, self.context) if p and p.strip()]
        return "\n".join(parts) or None

    def __post_init__(self) -> None:
        if not self.messages or self.messages[-1].role != "user":
            raise BadInput("a request must end with a user message")
        if self.max_new_tokens < 1:
            raise BadInput("max_new_tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise BadInput("temperature must be >= 0 and top_p in (0, 1]")
        if self.reasoning not in ("none", "think", "big_brain", "deep_search"):
            raise BadInput(f"reasoning must be none, think, big_brain or deep_search (got {self.reasoning!r})")
        if self.search_depth not in ("low", "medium", "high"):
            raise BadInput(f"search_depth must be low, medium or high (got {self.search_depth!r})")
        if self.attempts is not None and not 1 <= self.attempts <= 16:
            raise BadInput("attempts must be between 1 and 16")
