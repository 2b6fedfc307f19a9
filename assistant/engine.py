"""The engine: one object owns the core model; sessions submit turns and read events back.

A single worker thread is the one gate in front of the model. Each loop it admits new turns
(prefill), drops cancelled ones, and asks the backend to advance every active turn by one step,
so turns that arrive together or while others run share forward passes (continuous batching).
Events cross to the callers' asyncio loops with `call_soon_threadsafe`; model errors become
`Error` events for the turns they hit, and the engine keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field

import torch

from assistant.backends.base import Backend, Stream
from assistant.config import EngineConfig, Profile
from assistant.errors import AssistantError, BadInput, Code, ModelError
from assistant.events import AudioChunk, Done, Error, Event, TextDelta, Timings
from assistant.turns import Request

__all__ = ["MAX_TEXT_CHARS", "Engine", "EngineMetrics", "load_backend", "load_engine", "text_chars"]

log = logging.getLogger(__name__)

DEFAULT_OMNI_MODEL = "Qwen/Qwen2.5-Omni-7B"
MAX_HELD = 32  # background turns (memory extraction) that may wait for the foreground ones; more are refused
MAX_HELD_S = 120.0  # s: a background turn held longer than this is refused (its extraction is skipped)
# characters of text in one request (messages, system, context): tokenizing 60 MB of text took a
# tiny server past 12 GB; no model's context holds more than this (32k tokens at 8 characters each)
MAX_TEXT_CHARS = 256 * 1024
BACKGROUND_WORKERS = 2  # threads for sessions' background work (memory): never the loop's default executor


@dataclass
class EngineMetrics:
    """Counters a benchmark or a health endpoint can read (updated by the worker thread only)."""

    steps: int = 0
    turns_done: int = 0
    turns_failed: int = 0
    turns_cancelled: int = 0
    batch_sizes: Counter = field(default_factory=Counter)  # decode-step batch size -> steps

    @property
    def max_batch(self) -> int:
        return max(self.batch_sizes, default=0)


@dataclass(eq=False)
class _Turn:
    request: Request
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    first_text: float | None = None
    first_audio: float | None = None
    audio_s: float = 0.0
    cancelled: bool = False
    stream: Stream | None = None

    def deliver(self, event: Event | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


class Engine:
    """Owns a backend; schedules turns from any number of sessions onto it."""

    def __init__(self, backend: Backend, config: EngineConfig | None = None, start: bool = True) -> None:
        """With `start=False` the worker (and the backend's warm-up) waits for `start()`: a server
        builds its app first, then starts the engine and listens while the backend warms up."""
        self.backend = backend
        self.config = config or EngineConfig()
        self.metrics = EngineMetrics()
        self._inbox: queue.Queue[_Turn] = queue.Queue()
        self._held: list[_Turn] = []  # background turns waiting for the foreground ones to end
        self._quiet_until = 0.0  # monotonic time until which background turns wait (defer_background)
        self._turns: dict[str, _Turn] = {}
        self._lock = threading.Lock()
        self._sandbox = None  # see sandbox()
        self._encyclopedia = None  # see encyclopedia()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        # Sessions' memory extraction runs here, not in the default executor that asyncio.to_thread
        # (recall, uploads, encoding) uses: a burst of extractions could hold all of its threads.
        self.background_pool = ThreadPoolExecutor(BACKGROUND_WORKERS, thread_name_prefix="background")
        if start:
            self._thread.start()

    def start(self) -> None:
        """Start the worker: it warms the backend up, then serves the turns queued meanwhile."""
        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()

    # ------------------------------------------------------------------ public API
    @property
    def sample_rate(self) -> int:
        return self.backend.sample_rate

    @property
    def voices(self) -> tuple[str, ...]:
        return self.backend.voices

    async def stream(self, request: Request) -> AsyncIterator[Event]:
        """Submit `request` and yield its events until Done or Error. Closing the iterator
        early (a closed tab, a barge-in) cancels the turn (and every attempt of a Big Brain one).

        A thinking turn (`request.reasoning`) is run by assistant/reasoning.py, a Deep Search one by
        assistant/research/loop.py; their model calls come back through `submit`."""
        if request.reasoning == "none":
            source = self.submit(request)
        elif request.reasoning == "deep_search":
            from assistant.research.loop import deep_search

            source = deep_search(self, request)
        else:
            from assistant import reasoning

            source = (reasoning.big_brain if request.reasoning == "big_brain" else reasoning.think)(self, request)
        async with aclosing(source) as events:
            async for event in events:
                yield event

    def sandbox(self):
        """The wasm Python sandbox for programs a model wrote (compiled on first use, then kept)."""
        with self._lock:
            if self._sandbox is None:
                from assistant.config import cache_dir
                from assistant.sandbox import Sandbox

                self._sandbox = Sandbox(cache_dir())  # kept in <cache>/sandbox/
            return self._sandbox

    def encyclopedia(self, progress=None):
        """Deep Search's bundled encyclopedia, opened on first use and then kept (built into the cache
        folder the first time, `progress(done, total)` called as it goes)."""
        with self._lock:
            if self._encyclopedia is None:
                from assistant.config import cache_dir
                from assistant.research.encyclopedia import Encyclopedia

                self._encyclopedia = Encyclopedia(cache_dir(), progress=progress)
            return self._encyclopedia

    async def submit(self, request: Request) -> AsyncIterator[Event]:
        """One model turn as it is (no thinking orchestration): its events until Done or Error."""
        if request.say is not None and not getattr(self.backend, "speaks_verbatim", False):
            yield Error(request.turn_id, str(Code.BAD_INPUT), f"the {self.backend.name} backend cannot read out a text")
            return
        if self._stop.is_set():
            raise ModelError("the engine is shut down")
        chars = text_chars(request)
        if chars > MAX_TEXT_CHARS:  # refused before any tokenizer sees it
            yield Error(request.turn_id, str(Code.CONTEXT_TOO_LONG),
                        f"the request holds {chars} characters of text; this server takes at most {MAX_TEXT_CHARS}")
            return
        turn = _Turn(request, asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            self._turns[request.turn_id] = turn
        self._inbox.put(turn)
        try:
            while True:
                event = await turn.queue.get()
                if event is None or turn.cancelled:
                    return
                yield event
                if isinstance(event, Done | Error):
                    return
        finally:
            if not turn.cancelled and turn.request.turn_id in self._turns:
                self.cancel(request.turn_id)

    def defer_background(self, seconds: float) -> None:
        """A foreground turn is coming (a user is speaking): where the backend pauses background
        turns, they wait from now for `seconds` (renew it while the turn is still coming), so the
        turn finds the model free instead of in the middle of a memory extraction step."""
        self._quiet_until = max(self._quiet_until, time.monotonic() + seconds)

    async def warm(self, request: Request) -> None:
        """Have the backend compute the start of a coming turn's prompt (a `prefix_only` request:
        the conversation so far) while its user is still speaking; returns when it is done (at
        once where the backend keeps no prompt caches). Cancelling the task stops it."""
        if not request.prefix_only or not getattr(self.backend, "warms_prefixes", False):
            return
        async for _ in self.stream(request):
            pass

    def cancel(self, turn_id: str) -> bool:
        """Stop a turn: no more events reach its consumer; the worker frees its slot next step."""
        with self._lock:
            turn = self._turns.get(turn_id)
        if turn is None:
            return False
        turn.cancelled = True
        turn.deliver(None)
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=30)
        self.background_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        self._warm_up()
        active: list[_Turn] = []
        while not self._stop.is_set():
            self._admit(active)
            active = [t for t in active if not self._drop_if_cancelled(t)]
            if not self._runnable(active):
                continue
            self._step(active)
            active = [t for t in active if not self._finish_if_done(t)]

    def _warm_up(self) -> None:
        """Let the backend pay its one-off costs before the first turn (turns queue meanwhile)."""
        warm_up = getattr(self.backend, "warm_up", None)
        if warm_up is None:
            return
        t0 = time.perf_counter()
        try:
            warm_up()
        except Exception:  # a failed warm-up only costs the first turn its speed
            log.exception("warming up the %s backend failed", getattr(self.backend, "name", "model"))
        log.info("backend warmed up in %.2f s", time.perf_counter() - t0)

    def _pausing(self, active: list[_Turn]) -> bool:
        """Whether background turns wait now: the backend pauses them, and a foreground turn runs or
        is coming (defer_background)."""
        if not getattr(self.backend, "pauses_background", False):
            return False
        return time.monotonic() < self._quiet_until or any(not t.request.background for t in active)

    def _runnable(self, active: list[_Turn]) -> list[_Turn]:
        """The active turns a step would advance now."""
        if self._pausing(active):
            return [t for t in active if not t.request.background]
        return active

    def _admit(self, active: list[_Turn]) -> None:
        free = self.config.max_batch - len(active)
        if free <= 0:
            return
        arrivals: list[_Turn] = []
        self._expire_held()
        if self._held and not self._pausing(active):
            arrivals, self._held = self._held[:free], self._held[free:]
        else:
            try:  # idle: wait a little for work; busy: only take what is already there
                first = self._inbox.get(timeout=0.05) if not self._runnable(active) else self._inbox.get_nowait()
            except queue.Empty:
                return
            arrivals = [first]
            deadline = time.perf_counter() + self.config.batch_window_ms / 1000
            while len(arrivals) < free:
                try:
                    arrivals.append(self._inbox.get(timeout=max(0.0, deadline - time.perf_counter())))
                except queue.Empty:
                    break
        arrivals.sort(key=lambda t: t.request.background)  # foreground first (the sort is stable)
        for turn in arrivals:
            if turn.cancelled:
                self._forget(turn)
                continue
            if turn.request.background and self._pausing(active):
                self._hold(turn)  # its prefill would hold up the foreground turns
                continue
            turn.started = time.perf_counter()
            try:
                turn.stream = self.backend.start(turn.request)
            except AssistantError as err:
                self._fail(turn, err.code, err.message)
                continue
            except torch.cuda.OutOfMemoryError:
                self._oom([turn])
                continue
            except Exception as err:
                log.exception("prefill failed for turn %s", turn.request.turn_id)
                self._fail(turn, Code.MODEL_ERROR, f"the model failed on this input: {type(err).__name__}")
                continue
            self._deliver_pending(turn)
            if turn.stream.done:
                self._finish_if_done(turn)
            else:
                active.append(turn)

    def _hold(self, turn: _Turn) -> None:
        if len(self._held) >= MAX_HELD:
            self._fail(turn, Code.BUSY, f"{MAX_HELD} background turns are waiting already; this one is dropped")
            return
        self._held.append(turn)

    def _expire_held(self) -> None:
        """Background turns wait for the foreground ones, but not for ever (MAX_HELD_S)."""
        now = time.perf_counter()
        for turn in [t for t in self._held if t.cancelled or now - t.submitted > MAX_HELD_S]:
            self._held.remove(turn)
            if turn.cancelled:
                self._forget(turn)
            else:
                self._fail(turn, Code.BUSY, f"the model was busy for {MAX_HELD_S:g} s; this background turn is dropped")

    def _step(self, active: list[_Turn]) -> None:
        active = self._runnable(active)  # background turns may sit this step out
        streams = [t.stream for t in active]
        try:
            self.backend.step(streams)
        except torch.cuda.OutOfMemoryError:
            self._oom(active)
            return
        except Exception as err:
            if len(active) == 1:
                self._step_failed(active[0], err)
            else:  # one turn's fault must not fail the others: take the step again, one turn at a time
                log.warning("a step of %d turns failed (%s: %s); stepping each alone", len(active),
                            type(err).__name__, err)
                self._step_each(active)
            return
        self.metrics.steps += 1
        batched = getattr(self.backend, "last_batch_size", None)
        self.metrics.batch_sizes[batched if batched is not None else len(streams)] += 1
        for t in active:
            self._deliver_pending(t)

    def _step_each(self, active: list[_Turn]) -> None:
        for t in active:
            try:
                self.backend.step([t.stream])
            except torch.cuda.OutOfMemoryError:
                self._oom([t])
            except Exception as err:
                self._step_failed(t, err)
            else:
                self.metrics.steps += 1
                self.metrics.batch_sizes[1] += 1
                self._deliver_pending(t)

    def _step_failed(self, turn: _Turn, err: Exception) -> None:
        code = err.code if isinstance(err, AssistantError) else Code.MODEL_ERROR
        msg = err.message if isinstance(err, AssistantError) else f"the model failed: {type(err).__name__}"
        log.error("a step failed for turn %s", turn.request.turn_id, exc_info=err)
        self._fail(turn, code, msg)

    def _deliver_pending(self, turn: _Turn) -> None:
        now = time.perf_counter()
        for ev in turn.stream.drain():
            if isinstance(ev, TextDelta) and turn.first_text is None:
                turn.first_text = now
            elif isinstance(ev, AudioChunk):
                turn.audio_s += ev.duration_s
                if turn.first_audio is None:
                    turn.first_audio = now
            if not turn.cancelled:
                turn.deliver(ev)

    def _finish_if_done(self, turn: _Turn) -> bool:
        s = turn.stream
        if s is None:
            return True  # failed
        if not s.done:
            return False
        if s.error is not None:
            self._fail(turn, *s.error)
            return True
        t0 = turn.submitted
        timings = Timings(
            queued_s=(turn.started or t0) - t0,
            first_text_s=None if turn.first_text is None else turn.first_text - t0,
            first_audio_s=None if turn.first_audio is None else turn.first_audio - t0,
            total_s=time.perf_counter() - t0,
            audio_s=turn.audio_s,
        )
        turn.deliver(Done(turn.request.turn_id, s.text, timings, s.prompt_tokens, s.completion_tokens,
                          batch_size=getattr(s, "batch_size", 1), reasoning_tokens=s.reasoning_tokens))
        self.metrics.turns_done += 1
        s.close()
        self._forget(turn)
        return True

    def _drop_if_cancelled(self, turn: _Turn) -> bool:
        if not turn.cancelled:
            return False
        if turn.stream is not None:
            turn.stream.done = True
            turn.stream.close()
        self.metrics.turns_cancelled += 1
        self._forget(turn)
        return True

    def _fail(self, turn: _Turn, code: str, message: str) -> None:
        turn.deliver(Error(turn.request.turn_id, str(code), message))
        self.metrics.turns_failed += 1
        if turn.stream is not None:
            turn.stream.done = True
            turn.stream.close()
        turn.stream = None
        self._forget(turn)

    def _oom(self, turns: list[_Turn]) -> None:
        log.error("out of GPU memory; failing %d turn(s)", len(turns))
        for t in turns:
            self._fail(t, Code.OUT_OF_MEMORY, "the server ran out of GPU memory for this turn; try again")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _forget(self, turn: _Turn) -> None:
        with self._lock:
            self._turns.pop(turn.request.turn_id, None)


def text_chars(request: Request) -> int:
    """Characters of text in a request: its messages, system prompt and context."""
    return sum(len(m.text or "") for m in request.messages) + len(request.system or "") + len(request.context or "")


def load_backend(config: EngineConfig) -> Backend:
    """Load the backend a profile names. Model loading happens here, never at import."""
    if config.profile == Profile.TINY:
        from assistant.backends.omni import load_omni_backend
        from assistant.backends.tiny import tiny_model_path

        path = config.model or str(tiny_model_path(config.architecture))
        return load_omni_backend(path, device=config.device or "cpu", dtype=torch.float32,
                                 max_context_tokens=config.max_context_tokens, stream_speech=config.stream_speech,
                                 batch_speech=config.batch_speech)
    if config.profile == Profile.OMNI:
        from assistant.backends.omni import load_omni_backend

        return load_omni_backend(config.model or DEFAULT_OMNI_MODEL, device=config.device,
                                 max_context_tokens=config.max_context_tokens, stream_speech=config.stream_speech,
                                 batch_speech=config.batch_speech)
    if config.profile == Profile.REMOTE:
        import os

        from assistant.backends.remote import load_remote_backend

        if not config.model:
            raise BadInput("the remote profile needs --model http://host:port/v1 (an OpenAI-compatible server)")
        return load_remote_backend(config.model, os.environ.get("ASSISTANT_REMOTE_API_KEY"))
    try:
        from assistant.backends.cascade import load_cascade_backend
    except ImportError as err:
        raise ModelError("the offline profile is not available in this build") from err
    return load_cascade_backend(config)


def load_engine(config: EngineConfig, start: bool = True) -> Engine:
    """Load the profile's backend and put an engine in front of it (see Engine's `start`)."""
    return Engine(load_backend(config), config, start=start)
