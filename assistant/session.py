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
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from assistant.engine import Engine
from assistant.events import Done, Error, Event, Transcript
from assistant.reasoning import wants_thinking
from assistant.research.loop import wants_research
from assistant.turns import Message, Request, Turn
from memory import (
    DEFAULT_PERSONA,
    Exchange,
    Persona,
    Store,
    count_tokens,
    get_persona,
    outdated_messages,
    recall,
    remember,
    rule_facts,
)

__all__ = ["Session", "default_user", "fit_history"]

log = logging.getLogger(__name__)

HISTORY_ROWS = 200  # stored messages read before fitting the budget
MEMORY_WAIT_S = 300.0  # the longest an exchange's memory waits for the previous exchange's
# Who the user is, for every backend, after the persona: the 0.5B offline model answered "What is my
# name?" in the assistant's voice ("My name is Igor.") or about "the user", and gave the user the
# persona's traits ("Egor is a curious, direct and witty person").
ABOUT_THE_USER = (
    "The user is the person you are talking to; what you know about them is about them, not you. "
    "Speak to them as 'you': asked 'What is my name?', answer 'Your name is ...'; asked 'Who am I?', "
    "'You are ...'. Never call them 'the user'. Use what you know about them: an allergy means a food "
    "with it is not safe for them. Do not repeat their words back."
)
# A message says something about the user only if it speaks of them (I, my, me...): others (a
# question about the sea) are not given to the model's fact extraction at all.
_ASKS_NAME = re.compile(r"\b(?:what(?:'s| is) my name|who am i|do you (?:know|remember) my name|my name\?)", re.I)
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|my|me|mine|myself|we|our|us)\b", re.I)


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
    _writes: asyncio.Future | None = field(default=None, init=False, repr=False)  # the last exchange's writes
    _order: _InOrder = field(default_factory=lambda: _InOrder(), init=False, repr=False)
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
            stored = _current(stored, outdated_messages(self.store, self._user), self._profile())
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

    def _profile(self) -> str:
        return str(getattr(getattr(self.engine, "config", None), "profile", ""))

    def _remembered(self, query: str) -> str:
        """What is remembered about the user that bears on `query`, as a block of text ("" if nothing)."""
        if self.store is None or not query.strip():
            return ""
        known = recall(self.store, self._user, query, instance=self._instance, k=self.memory_k,
                       token_budget=self.memory_tokens)
        lines = [f"- {m.text}" for m in known]
        # the 0.5B, asked a name nobody told it, answered "My name is Owl." after a chat about owls
        if _ASKS_NAME.search(query) and not any(m.key == "user.name" for m in known) and not self.store.read(
                "SELECT 1 FROM memories WHERE user_id = ? AND key = 'user.name' AND status = 'active' LIMIT 1",
                (self._user.id,)):
            lines.append("- They have not told you their name. Asked it, answer: I don't know your name yet.")
        if not lines:
            return ""
        facts = "\n".join(lines)
        # Said as current and newer than the history: the offline 0.5B otherwise answered "What is
        # my name?" with the name the history corrected (0/5 phrasings right before, 5/5 after).
        return ("What you know about the user you are talking to now (true, and newer than the conversation "
                f"above; use it when relevant, and tell it to them as 'you'):\n{facts}")

    def instructions(self) -> str:
        """Who the assistant is (the persona) and who it talks to."""
        return f"{self.persona.instructions()}\n{ABOUT_THE_USER}"

    def system_prompt(self, query: str) -> str:
        """The persona's instructions plus what is remembered about the user that bears on `query`
        (the API uses it for a client's own conversation)."""
        remembered = self._remembered(query)
        return f"{self.instructions()}\n{remembered}" if remembered else self.instructions()

    def request_for(self, turn: Turn, speak: bool = True, voice: str | None = None,
                    seed: int | None = None, temperature: float = 0.0, reasoning: str | None = None,
                    attempts: int | None = None, sources: tuple = (), search_depth: str = "medium") -> Request:
        """The request the engine gets for `turn`: persona + memories, recent history, the turn.

        `reasoning` None: the user's own words decide ("think hard about this" thinks, and a
        spoken reply says a short filler first)."""
        current = Message("user", turn.text, turn.images, turn.audio)
        asked = reasoning is None and wants_thinking(turn.text)
        mode = reasoning or ("think" if asked else "none")
        if reasoning is None and wants_research(turn.text):  # "look it up": Deep Search
            mode, asked = "deep_search", False
        if mode == "deep_search" and not sources:
            from assistant.research.setup import research_sources

            sources = research_sources(self.engine, user_id=self.user, store=self.store)
        return self._request(current, turn.text, speak=speak, voice=voice or self.persona.voice,
                             max_new_tokens=self.max_new_tokens, temperature=temperature, seed=seed,
                             reasoning=mode, attempts=attempts, filler=asked and speak, sources=tuple(sources),
                             search_depth=search_depth)

    def _request(self, current: Message, text: str, **options) -> Request:
        history = self._history()
        # Spoken turns have no text yet: recall by what was said recently, plus who the user is.
        query = text or " ".join(m.text for m in history[-4:] if m.role == "user") or "about me, my name"
        return Request(messages=(*history, current), system=self.instructions(),
                       context=self._remembered(query) or None, **options)

    async def prepare_spoken_turn(self) -> None:
        """The user has begun to speak: have the engine compute what their turn's prompt will start
        with (persona, history, memories) meanwhile, so that the turn, once heard, computes only
        its own words (see Request.prefix_only; a no-op for backends that keep no prompt caches)."""
        placeholder = Message("user", "")  # what they are saying
        await self.stored()  # the exchanges before it are in the history
        request = await asyncio.to_thread(  # recall and history (SQLite) off the event loop
            self._request, placeholder, "", speak=False, max_new_tokens=1, prefix_only=True)
        await self.engine.warm(request)

    # ------------------------------------------------------------------ a turn
    async def converse(self, turn: Turn, speak: bool = True, voice: str | None = None,
                       seed: int | None = None, record: bool = True, reasoning: str | None = None,
                       attempts: int | None = None, sources: tuple = (),
                       search_depth: str = "medium") -> AsyncIterator[Event]:
        """Submit one turn and yield its events; the exchange is stored when it is done.
        (`reasoning="deep_search"` researches it in `sources`: see assistant/research/loop.py.)

        With `record=False` the caller stores it with `record()` (the voice loop does, once it
        knows how much of the reply was heard)."""
        await self.stored()  # the previous exchange is in the history before this turn reads it
        # recall (embedding, SQLite) off the event loop
        request = await asyncio.to_thread(self.request_for, turn, speak=speak, voice=voice, seed=seed,
                                          reasoning=reasoning, attempts=attempts, sources=sources,
                                          search_depth=search_depth)
        heard = ""
        async for event in self.engine.stream(request):
            yield event
            if isinstance(event, Transcript):
                heard = event.text  # the backend's own ASR (cascade): no second transcription
            elif isinstance(event, Done):
                if record:  # written off the event loop, before this turn's events end
                    await self.record(turn, event.text, heard=heard, done=event)
            elif isinstance(event, Error):
                return

    def record(self, turn: Turn, reply: str, heard: str = "", done: Done | None = None,
               interrupted: bool = False, extra_timings: dict | None = None) -> asyncio.Future:
        """Store one exchange: what the user said and the reply (as far as it was heard when
        `interrupted`); then extract facts from it off the latency path. Needs a running loop.

        The writes run on the store's writer thread (`Store.writer`), never on the event loop (a commit
        is synced to disk, and a write may wait for another process's lock), one exchange after
        another; the next turn waits for them (`stored()`). Returns the future of the writes: it raises what they raised
        (a full disk), and the conversation goes on either way.

        A spoken turn is stored with what was heard: the cascade's own transcript, else (omni,
        tiny, remote: the model heard the audio itself) a transcript made in the background by the
        bundled speech recognizer, written into the stored message, so later turns have it."""
        said = turn.text or heard
        loop = asyncio.get_running_loop()
        if self.store is None:
            self.history += [Message("user", said or "(spoken message)"), Message("assistant", reply)]
            done_now = loop.create_future()
            done_now.set_result(None)
            return done_now
        timings = dict(extra_timings or {})
        if done is not None:
            timings |= {"first_text_s": done.timings.first_text_s, "first_audio_s": done.timings.first_audio_s,
                        "total_s": done.timings.total_s}
        timings["profile"] = self._profile()  # see _current
        turn_id = done.turn_id if done is not None else None
        # Exchanges are written, and remembered, in the order they were said (a correction never
        # runs before what it corrects).
        ticket = self._order.ticket()

        def write() -> int:
            user_msg = self.store.append_message(self._instance, "user", said, turn_id=turn_id)
            self.store.append_message(self._instance, "assistant", reply, timings=timings, turn_id=turn_id,
                                      interrupted=interrupted)
            return user_msg

        # queued now, on the store's one writer thread: written in the order recorded
        written = loop.run_in_executor(self.store.writer(), write)

        async def store_then_remember() -> None:
            try:
                user_msg = await written
            except BaseException:
                self._order.done(ticket)  # nothing to remember: the next exchange need not wait
                raise
            # Fact extraction runs in a worker thread of its own pool: the reply is never delayed by it.
            pool = getattr(self.engine, "background_pool", None)  # not the default executor (to_thread's)
            task = loop.run_in_executor(pool, self._remember, turn, said, reply, user_msg, ticket)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        writes = loop.create_task(store_then_remember())
        self._writes = writes
        self._pending.add(writes)
        writes.add_done_callback(self._pending.discard)
        writes.add_done_callback(_log_failed_write)
        return writes

    async def stored(self) -> None:
        """Wait until the exchanges recorded so far are written (not their memories)."""
        if self._writes is not None and not self._writes.done():  # (a done one may be of an ended loop)
            await asyncio.gather(self._writes, return_exceptions=True)

    def _remember(self, turn: Turn, said: str, reply: str, message_id: int, ticket: int) -> None:
        text = said
        try:
            with self._order.turn("heard", ticket):
                if not text.strip() and turn.audio is not None:
                    text = _transcribe(turn.audio)
                    if text:
                        self.store.set_message_text(self._instance, message_id, text)
            exchange = Exchange(text, reply, speaker=self._user.name, message_id=message_id)
            with self._order.turn("rules", ticket):  # the explicit statements first: no model, fast
                if text.strip():
                    remember(self.store, self._user, exchange, instance=self._instance)
            with self._order.turn("model", ticket):
                if self.extract_with_model and _worth_asking(text):
                    remember(self.store, self._user, exchange, instance=self._instance, extract=self._extract,
                             rules=False, after_rules=True)  # fmt: skip
        except Exception:  # a failed extraction never breaks the conversation
            log.exception("remembering the exchange failed")
        finally:
            self._order.done(ticket)  # the phases it did not reach: the next exchange need not wait

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
        # the writes add their extraction task when they finish: wait again until nothing is left
        while pending := [t for t in self._pending if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)


def _log_failed_write(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the exchange could not be stored: %s", task.exception())


class _InOrder:
    """Tickets handed out in the order exchanges are recorded; each phase of remembering (hearing,
    the rules, the model) runs for one ticket after another, on any thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._issued = 0
        self._serving: dict[str, int] = {}

    def ticket(self) -> int:
        with self._cond:
            self._issued += 1
            return self._issued - 1

    def done(self, ticket: int) -> None:
        """Every phase is over for `ticket` (some may have been skipped by an error)."""
        with self._cond:
            for phase in ("heard", "rules", "model"):
                self._serving[phase] = max(self._serving.get(phase, 0), ticket + 1)
            self._cond.notify_all()

    @contextmanager
    def turn(self, phase: str, ticket: int) -> Iterator[None]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._serving.get(phase, 0) >= ticket, MEMORY_WAIT_S):
                log.warning("remembering went on without waiting for an earlier exchange (%s)", phase)
        try:
            yield
        finally:
            with self._cond:
                self._serving[phase] = max(self._serving.get(phase, 0), ticket + 1)
                self._cond.notify_all()


def _worth_asking(text: str) -> bool:
    """Whether the model should look for facts in `text`: the user speaks of themselves in a statement
    the rules did not read (questions and "tell me about the sea" state nothing about them)."""
    statements = [s for s in re.findall(r"[^.!?]+[.!?]*", text) if s.strip() and not s.strip().endswith("?")]
    unread = [s for s in statements if _FIRST_PERSON.search(s) and not rule_facts(s)]
    return bool(unread)


def _current(stored: list, outdated: set[int], profile: str) -> list:
    """The stored conversation without the exchanges whose facts were since corrected or deleted,
    and, on a real model, without the noise replies of the tiny random one (and their questions)."""
    skip = set()
    for i, m in enumerate(stored):
        if m.role == "assistant" and profile != "tiny" and m.timings.get("profile") == "tiny":
            skip.add(i)
            if i and stored[i - 1].role == "user":
                skip.add(i - 1)
        if m.role == "user" and m.id in outdated:
            skip.add(i)
            if i + 1 < len(stored) and stored[i + 1].role == "assistant":
                skip.add(i + 1)
    return [m for i, m in enumerate(stored) if i not in skip]


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
