"""What every tab of the web UI shares: the engine, the store, the speech relay, and who is asking.

Everything a tab reads or writes goes through `user(request)`: the logged-in name (Gradio's login
with the server's API keys), or the anonymous user when the server has no keys. No tab takes a user
name from the page, so one person can never name another's data.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr

from assistant.engine import Engine
from assistant.errors import AssistantError
from assistant.session import Session
from memory import Store, User, list_personas
from ui.speech import SpeechRelay

__all__ = ["WebContext", "fail", "wire"]

log = logging.getLogger(__name__)


def fail(err: AssistantError | str) -> gr.Error:
    """A one-line message shown to the person (the server keeps serving)."""
    return gr.Error(err.message if isinstance(err, AssistantError) else err)


def wire(event, fn: Callable, inputs: list, outputs: list, doing: str = "do that", **kwargs):
    """`event(fn, inputs, outputs)` for a form handler whose last output is a status line: a user
    error becomes that line ("Could not `doing`: ...") and a toast, while the other outputs stay as
    they were. (A raised gr.Error would cover the outputs with an error mark that blocks clicks until
    their next update.)"""

    def failed(err: AssistantError | gr.Error) -> tuple:
        log.info("web UI: could not %s: %s", doing, err.message)
        gr.Warning(err.message)
        return (*[gr.skip()] * (len(outputs) - 1), f"**Could not {doing}:** {err.message}")

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def handler(*args):
            try:
                return await fn(*args)
            except (AssistantError, gr.Error) as err:
                return failed(err)
    else:
        @functools.wraps(fn)
        def handler(*args):
            try:
                return fn(*args)
            except (AssistantError, gr.Error) as err:
                return failed(err)

    return event(handler, inputs, outputs, **kwargs)


@dataclass
class WebContext:
    get_engine: Callable[[], Engine]
    store: Store
    relay: SpeechRelay
    anonymous_user: str = "local"
    max_new_tokens: int = 256
    transcriber: object | None = None  # audio.isolated.TranscriberProcess; None: audio.transcribe here
    _sessions: dict[tuple[str, str, str], Session] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.get_engine()

    def who(self, request: gr.Request | None) -> str:
        return (getattr(request, "username", None) or self.anonymous_user) if request else self.anonymous_user

    def user(self, request: gr.Request | None) -> User:
        return self.store.user(self.who(request))

    def persona_names(self, request: gr.Request | None) -> list[str]:
        return [p.name for p in list_personas(self.store, self.user(request))]

    def instance_names(self, request: gr.Request | None, persona: str) -> list[str]:
        """The user's instances of `persona` (its own, named like it, first)."""
        names = [i.name for i in self.store.instances(self.user(request)) if i.persona.casefold() == persona.casefold()]
        return sorted(set(names) | {persona}, key=lambda n: (n.casefold() != persona.casefold(), n.casefold()))

    def session(self, request: gr.Request | None, persona: str | None, instance: str | None = None) -> Session:
        """The user's instance `instance` of `persona` (default: the persona's own), kept while the server runs."""
        persona = persona or "Grok"
        key = (self.who(request), persona.casefold(), (instance or persona).casefold())
        if key not in self._sessions:
            taken = [i for i in self.store.instances(self.user(request)) if i.name.casefold() == key[2]]
            if taken and taken[0].persona.casefold() != key[1]:
                raise fail(f"the conversation {taken[0].name!r} belongs to the persona {taken[0].persona!r}")
            try:
                self._sessions[key] = Session(self.engine, self.store, user=key[0], persona_name=persona,
                                              instance_name=instance or None, max_new_tokens=self.max_new_tokens)
            except AssistantError as err:
                raise fail(err) from err
        return self._sessions[key]

    def forget_sessions(self, request: gr.Request | None, persona: str) -> None:
        """Drop kept sessions of a persona that was edited or deleted (they hold its old settings)."""
        user = self.who(request)
        for key in [k for k in self._sessions if k[0] == user and k[1] == persona.casefold()]:
            del self._sessions[key]
