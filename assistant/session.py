"""A session: one assistant instance (user x persona) with its conversation, on a shared engine.

Sessions never touch weights: they build a Request from the persona, the history and the new
turn, submit it to the engine and pass its events on, recording the reply in the history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from assistant.engine import Engine
from assistant.events import AudioChunk, Done, Error, Event, TextDelta
from assistant.turns import Message, Request, Turn

__all__ = ["DEFAULT_PERSONA", "Persona", "Session"]


@dataclass(frozen=True, slots=True)
class Persona:
    """Who the assistant is for this instance."""

    name: str = "Grok"
    voice: str | None = None  # a speaker of the core model; None: its default
    style: str = "curious, direct and witty; answers in a few spoken sentences"
    language: str = "en"
    greeting: str = "Hi, I'm Grok. What's up?"

    def system_prompt(self) -> str:
        return f"You are {self.name}, a voice assistant. Be {self.style}. Reply in language '{self.language}'."


DEFAULT_PERSONA = Persona()


@dataclass
class Session:
    """One assistant instance: persona + history, talking to a shared engine."""

    engine: Engine
    persona: Persona = DEFAULT_PERSONA
    user: str = "default"
    history: list[Message] = field(default_factory=list)
    max_history_messages: int = 20
    max_new_tokens: int = 256

    def request_for(self, turn: Turn, speak: bool = True, voice: str | None = None,
                    seed: int | None = None, temperature: float = 0.0) -> Request:
        """The request the engine gets for `turn`: persona, recent history (as text), the turn."""
        recent = self.history[-self.max_history_messages:]
        current = Message("user", turn.text, turn.images, turn.audio)
        return Request(
            messages=(*recent, current),
            system=self.persona.system_prompt(),
            speak=speak,
            voice=voice or self.persona.voice,
            max_new_tokens=self.max_new_tokens,
            temperature=temperature,
            seed=seed,
        )

    async def converse(self, turn: Turn, speak: bool = True, voice: str | None = None,
                       seed: int | None = None) -> AsyncIterator[Event]:
        """Submit one turn and yield its events; the exchange is added to the history when done."""
        request = self.request_for(turn, speak=speak, voice=voice, seed=seed)
        text_parts: list[str] = []
        async for event in self.engine.stream(request):
            if isinstance(event, TextDelta):
                text_parts.append(event.text)
            yield event
            if isinstance(event, Done):
                said = turn.text or ("(spoken message)" if turn.audio is not None else "(image)")
                self.history += [Message("user", said), Message("assistant", event.text)]
            elif isinstance(event, Error):
                return


def audio_of(events: list[Event]):
    """Concatenate the audio chunks of a turn (float32 mono) and return (pcm, sample_rate)."""
    import numpy as np

    chunks = [e for e in events if isinstance(e, AudioChunk)]
    if not chunks:
        return np.zeros(0, dtype=np.float32), 0
    return np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate
