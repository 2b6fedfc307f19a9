"""A session: one assistant instance (user x persona) with its conversation, on a shared engine.

Sessions never touch weights. Before a turn they recall what they know about the user and the
instance's recent history from the memory store; they build a Request (persona + memories +
history + the new turn), submit it to the engine and pass its events on. After the reply they
store both messages and, off the latency path, extract durable facts from the exchange.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from assistant.engine import Engine
from assistant.events import Done, Error, Event, Transcript
from assistant.turns import Message, Request, Turn
from memory import (
    DEFAULT_PERSONA,
    Exchange,
    Persona,
    Store,
    count_tokens,
    get_persona,
    recall,
    remember,
)

__all__ = ["Session", "default_user", "fit_history"]

log = logging.getLogger(__name__)

HISTORY_ROWS = 200  # stored messages read before fitting the budget


def default_user() -> str:
    try:
        return getpass.getuser() or "default"
    except (KeyError, OSError):
        return "default"


@dataclass
class Session:
    """One assistant instance. With a `store` its conversation and memories persist."""

    engine: Engine
    store: Store | None = None
    user: str = field(default_factory=default_user)
    persona_name: str | None = None
    instance_name: str | None = None
    max_new_tokens: int = 256
    history_tokens: int = 1500  # recent conversation given to the model
    history_keep: float = 0.6  # when the history outgrows its budget, it is cut to this share of it
    memory_k: int = 8  # memories recalled per turn
    memory_tokens: int = 400
    extract_with_model: bool = True  # ask the core model for facts (besides the explicit rules)
    persona: Persona = field(init=False)
    history: list[Message] = field(default_factory=list, init=False)  # used without a store
    _pending: set = field(default_factory=set, init=False, repr=False)
    _window_start: object = field(default=None, init=False, repr=False)  # first message of the history window

    def __post_init__(self) -> None:
        if self.store is None:
            self.persona = DEFAULT_PERSONA
            self._user = self._instance = None
            return
        self._user = self.store.user(self.user)
        self.persona = get_persona(self.store, self._user, self.persona_name)
        self._instance = self.store.open_instance(self._user, self.persona.name, self.instance_name)

    # ------------------------------------------------------------------ read path
    def _history(self) -> list[Message]:
        """The recent conversation within `history_tokens`, as a window whose start stays put from
        turn to turn, so the model's cache of it stays valid (see the offline backend): only when it
        outgrows the budget is it cut, to the newest `history_keep` of the budget, in one step."""
        if self.store is None:
            items = [(id(m), m) for m in self.history]
        else:
            stored = self.store.history(self._instance, limit=HISTORY_ROWS)
            items = [(m.id, Message(m.role, m.text)) for m in stored if m.role in ("user", "assistant") and m.text]
        keys = [key for key, _ in items]
        if self._window_start in keys:
            window = [m for _, m in items[keys.index(self._window_start) :]]
            if sum(count_tokens(m.text) for m in window) <= self.history_tokens:
                return window
        messages = [m for _, m in items]
        window = fit_history(messages, self.history_tokens)
        if len(window) < len(messages):  # it outgrew the budget: cut deeper, once
            window = fit_history(messages, int(self.history_tokens * self.history_keep))
        self._window_start = items[len(items) - len(window)][0] if window else None
        if self.store is None:
            self.history = window  # what no longer fits is dropped
        return list(window)

    def _remembered(self, query: str) -> str:
        """What is remembered about the user that bears on `query`, as a block of text ("" if nothing)."""
        if self.store is None or not query.strip():
            return ""
        known = recall(self.store, self._user, query, instance=self._instance, k=self.memory_k,
                       token_budget=self.memory_tokens)
        if not known:
            return ""
        facts = "\n".join(f"- {m.text}" for m in known)
        # Said as current and newer than the history: the offline 0.5B otherwise answered "What is
        # my name?" with the name the history corrected (0/5 phrasings right before, 5/5 after).
        return ("What you know about the user now (true, and newer than the conversation above; use it when "
                f"relevant, and speak to the user as 'you'):\n{facts}")

    def system_prompt(self, query: str) -> str:
        """The persona's instructions plus what is remembered about the user that bears on `query`
        (the API uses it for a client's own conversation)."""
        remembered = self._remembered(query)
        return f"{self.persona.instructions()}\n{remembered}" if remembered else self.persona.instructions()

    def request_for(self, turn: Turn, speak: bool = True, voice: str | None = None,
                    seed: int | None = None, temperature: float = 0.0) -> Request:
        """The request the engine gets for `turn`: persona + memories, recent history, the turn."""
        current = Message("user", turn.text, turn.images, turn.audio)
        return self._request(current, turn.text, speak=speak, voice=voice or self.persona.voice,
                             max_new_tokens=self.max_new_tokens, temperature=temperature, seed=seed)

    def _request(self, current: Message, text: str, **options) -> Request:
        history = self._history()
        # Spoken turns have no text yet: recall by what was said recently, plus who the user is.
        query = text or " ".join(m.text for m in history[-4:] if m.role == "user") or "about me, my name"
        return Request(messages=(*history, current), system=self.persona.instructions(),
                       context=self._remembered(query) or None, **options)

    async def prepare_spoken_turn(self) -> None:
        """The user has begun to speak: have the engine compute what their turn's prompt will start
        with (persona, history, memories) meanwhile, so that the turn, once heard, computes only
        its own words (see Request.prefix_only; a no-op for backends that keep no prompt caches)."""
        placeholder = Message("user", "")  # what they are saying
        request = await asyncio.to_thread(  # recall and history (SQLite) off the event loop
            self._request, placeholder, "", speak=False, max_new_tokens=1, prefix_only=True)
        await self.engine.warm(request)

    # ------------------------------------------------------------------ a turn
    async def converse(self, turn: Turn, speak: bool = True, voice: str | None = None,
                       seed: int | None = None, record: bool = True) -> AsyncIterator[Event]:
        """Submit one turn and yield its events; the exchange is stored when it is done.

        With `record=False` the caller stores it with `record()` (the voice loop does, once it
        knows how much of the reply was heard)."""
        # recall (embedding, SQLite) off the event loop
        request = await asyncio.to_thread(self.request_for, turn, speak=speak, voice=voice, seed=seed)
        heard = ""
        async for event in self.engine.stream(request):
            yield event
            if isinstance(event, Transcript):
                heard = event.text  # the backend's own ASR (cascade): no second transcription
            elif isinstance(event, Done):
                if record:
                    self.record(turn, event.text, heard=heard, done=event)
            elif isinstance(event, Error):
                return

    def record(self, turn: Turn, reply: str, heard: str = "", done: Done | None = None,
               interrupted: bool = False, extra_timings: dict | None = None) -> None:
        """Store one exchange: what the user said and the reply (as far as it was heard when
        `interrupted`); then extract facts from it off the latency path. Needs a running loop."""
        said = turn.text or heard
        if self.store is None:
            self.history += [Message("user", said or "(spoken message)"), Message("assistant", reply)]
            return
        timings = dict(extra_timings or {})
        if done is not None:
            timings |= {"first_text_s": done.timings.first_text_s, "first_audio_s": done.timings.first_audio_s,
                        "total_s": done.timings.total_s}
        turn_id = done.turn_id if done is not None else None
        user_msg = self.store.append_message(self._instance, "user", said, turn_id=turn_id)
        self.store.append_message(self._instance, "assistant", reply, timings=timings, turn_id=turn_id,
                                  interrupted=interrupted)
        # Fact extraction runs in a worker thread: the reply is never delayed by it.
        pool = getattr(self.engine, "background_pool", None)  # not the default executor (to_thread's)
        task = asyncio.get_running_loop().run_in_executor(pool, self._remember, turn, said, reply, user_msg)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _remember(self, turn: Turn, said: str, reply: str, message_id: int) -> None:
        text = said
        try:
            if not text.strip() and turn.audio is not None:
                text = _transcribe(turn.audio)
                if text:
                    self.store.append_message(self._instance, "system", f"(the user said: {text})")
            if not text.strip():
                return
            exchange = Exchange(text, reply, speaker=self._user.name, message_id=message_id)
            extract = self._extract if self.extract_with_model else None
            remember(self.store, self._user, exchange, instance=self._instance, extract=extract)
        except Exception:  # a failed extraction never breaks the conversation
            log.exception("remembering the exchange failed")

    def _extract(self, prompt: str) -> str:
        """Ask the core model (text only) for the facts; runs in a worker thread."""
        req = Request((Message("user", prompt),), speak=False, max_new_tokens=200, background=True)

        async def collect() -> str:
            async for ev in self.engine.stream(req):
                if isinstance(ev, Done):
                    return ev.text
                if isinstance(ev, Error):
                    raise RuntimeError(ev.message)
            return ""

        return asyncio.run(collect())

    async def wait_for_memory(self) -> None:
        """Wait until the background fact extraction of earlier turns has finished."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def fit_history(messages: list[Message], token_budget: int) -> list[Message]:
    """The newest messages whose estimated tokens (memory.count_tokens) fit in `token_budget`,
    oldest first, starting with a user message (a reply without its question is dropped too)."""
    out, used = [], 0
    for message in reversed(messages):
        used += count_tokens(message.text)
        if used > token_budget:
            break
        out.append(message)
    out.reverse()
    while out and out[0].role != "user":
        out.pop(0)
    return out


def _transcribe(pcm) -> str:
    """What the user said, for memory (the core model heard the audio itself)."""
    from audio import transcribe
    from audio.io import SAMPLE_RATE, wav_bytes

    try:
        return transcribe(wav_bytes(pcm, SAMPLE_RATE)).text.strip()
    except Exception as err:  # an English-only model refusing, a missing model...
        log.info("no transcript for memory: %s", err)
        return ""
