"""The contract between the engine and a backend (omni, cascade, remote).

The engine owns scheduling; a backend owns weights and per-turn model state. Each turn is a
`Stream`: a small state machine the backend advances. `Backend.step(streams)` moves every given
stream forward by one unit of work (a decode step, a chunk of speech), batching the streams that
are in the same stage into one forward pass. After each step the engine drains the events the
streams produced and delivers them. This keeps every turn moving: no turn waits for another's
whole reply, only for one step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from assistant.events import AudioChunk, Event, TextDelta, ThinkingDelta
from assistant.turns import Request

__all__ = ["Backend", "Stream"]


@dataclass(eq=False)
class Stream:
    """Per-turn state. Backends subclass it; the engine reads only these fields."""

    request: Request
    done: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    text: str = ""  # the whole reply text so far
    error: tuple[str, str] | None = None  # (code, message): this turn failed; the others go on
    thinking: str = ""  # the visible reasoning so far (reasoning="think"): never in `text`
    _pending: list[Event] = field(default_factory=list, repr=False)
    _splitter: object | None = field(default=None, repr=False)

    @property
    def turn_id(self) -> str:
        return self.request.turn_id

    def emit_text(self, delta: str, final: bool = False) -> None:
        """The model's new text. With reasoning="think" the reasoning goes out as ThinkingDelta and
        only the answer is `text` (what is spoken and stored); `final` (the model has stopped)
        settles what was held back. Backends pass final=True once, at the end of the text."""
        if self.request.reasoning == "think":
            if self._splitter is None:
                from assistant.reasoning import ThoughtSplitter

                self._splitter = ThoughtSplitter()
            for kind, text in self._splitter.feed(delta, final):
                if kind == "thinking":
                    self.thinking += text
                    self._pending.append(ThinkingDelta(self.turn_id, text))
                else:
                    self.text += text
                    self._pending.append(TextDelta(self.turn_id, text))
            return
        if delta:
            self.text += delta
            self._pending.append(TextDelta(self.turn_id, delta))

    @property
    def reasoning_tokens(self) -> int:
        """Of completion_tokens, about how many were the reasoning (by its share of the characters)."""
        if not self.thinking:
            return 0
        share = len(self.thinking) / max(1, len(self.thinking) + len(self.text))
        return round(self.completion_tokens * share)

    def emit_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        if len(pcm):
            self._pending.append(AudioChunk(self.turn_id, np.asarray(pcm, dtype=np.float32), sample_rate))

    def drain(self) -> list[Event]:
        """Events produced since the last drain, in order."""
        out, self._pending = self._pending, []
        return out

    def close(self) -> None:
        """Free model state (caches) held for this turn. Called once, when done or cancelled."""


class Backend(Protocol):
    name: str
    sample_rate: int  # Hz of the speech it produces
    voices: tuple[str, ...]
    default_voice: str

    def start(self, request: Request) -> Stream:
        """Validate and encode the prompt (prefill). Raises AssistantError for bad input."""
        ...

    def step(self, streams: list[Stream]) -> None:
        """Advance every stream by one unit of work, batching where the model allows."""
        ...
