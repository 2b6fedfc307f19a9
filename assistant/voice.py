"""A spoken conversation over a live audio stream: turn detection, replies, barge-in.

`VoiceConversation` is the one state machine behind `assistant talk` (in process) and the
realtime WebSocket of `assistant serve`: microphone audio goes in (`feed`), protocol events and
reply audio come out through two callbacks, and the player on the other side reports back what
it played (`playback_started` / `playback_done`). The events are the realtime protocol's
(`assistant/realtime.py` documents them); positions are seconds of the input stream.

- End of turn: `audio.endpoint.Endpointer` (webrtcvad, pre-roll, blips ignored).
- Replies are prepared early: at a pause in the user's speech (`Pause`, 0.1 s of silence by
  default) the reply starts being generated, held back, while the end of the turn is still being
  confirmed (`silence_s`, 0.7 s); at the end it is released at once, with whatever it has made so
  far, so the silence wait and the reply's thinking overlap. If the user goes on (`Resume`), the
  prepared reply is dropped unseen.
- The utterance goes to the session as audio: the core model hears it itself.
- Barge-in: at a speech onset the player pauses at once (`speech.started`); if it was only a blip
  it resumes (`speech.ignored`); if it is speech the reply is cancelled (`response.cancelled`), the
  player flushes, and the history stores the reply as interrupted, with only what was heard.
- A reply cancelled before a sound of it was played is not a turn: the user was still talking
  (a pause mid-sentence), so their two utterances go to the model as one.
- While the user speaks and waits for the reply, background work (memory extraction of the last
  exchange) waits, and the engine computes the turn's prompt start (persona, history, memories), so
  the turn finds the model free and prefills only its own words.
- Echo: while the reply is audible, the endpointer's gate rises (see `EndpointConfig`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from assistant.errors import AssistantError
from assistant.events import AudioChunk, Done, Error, TextDelta, Transcript
from assistant.session import Session
from assistant.turns import Turn, new_turn_id
from audio.endpoint import SAMPLE_RATE, Blip, End, EndpointConfig, Endpointer, Onset, Pause, Resume, Start, as_int16

__all__ = ["STATES", "VoiceConversation"]

log = logging.getLogger(__name__)

STATES = ("listening", "hearing", "thinking", "speaking")
WORDS_PER_S = 2.5  # speaking rate, to place a cut in a reply whose audio is not all made yet
MERGE_GAP_S = 0.3  # silence put between two utterances that make one turn
QUIET_S = 0.5  # background work waits this long after the last sign that a turn is coming (renewed)


@dataclass
class _Reply:
    id: str
    turn: Turn
    user_audio: np.ndarray | None
    text: list[str] = field(default_factory=list)
    heard: str = ""  # the user's words, when the backend transcribed them
    audio_s: float = 0.0  # reply audio generated
    done: Done | None = None
    failed: bool = False
    audible: bool = False  # the player started playing it
    cancelled: bool = False
    task: asyncio.Task | None = None
    first_sent: float | None = None  # loop time the first audio went out (players that do not report)
    estimate: asyncio.TimerHandle | None = None
    held: bool = False  # prepared at a pause: nothing is sent until the end of the turn releases it
    outbox: list = field(default_factory=list)  # what it made while held: (message | None, audio | None)
    span: tuple[int, int] | None = None  # the utterance it answers (start, end samples)
    generated: bool = False  # its generation ended while it was held


class VoiceConversation:
    """One live conversation. Call everything from the event loop that created it."""

    def __init__(self, session: Session, send: Callable[[dict], None],
                 send_audio: Callable[[str, np.ndarray, int], None],
                 endpoint: EndpointConfig | None = None, speak: bool = True, voice: str | None = None,
                 turn_detection: str = "server", player_reports: bool = True) -> None:
        self.session = session
        self._send = send
        self._send_audio = send_audio
        self.endpointer = Endpointer(endpoint)
        self.speak = speak
        self.voice = voice
        self.turn_detection = turn_detection  # "server" (VAD) or "manual" (push-to-talk)
        self.player_reports = player_reports  # False: assume replies play in real time once sent
        self._reply: _Reply | None = None
        self._held: _Reply | None = None  # prepared at a pause, not yet released
        self._carry: np.ndarray | None = None  # an utterance whose reply was cut before it was heard
        self._state = ""
        self._manual_open = False
        self._manual: list[np.ndarray] = []  # push-to-talk: the int16 audio since the key went down
        self._manual_samples = 0  # ... and how many samples it holds
        self._saving: set[asyncio.Task] = set()
        self._pending_cuts: dict[str, _Reply] = {}  # cut while audible: each waits for the player's played_s
        self._hearing = False
        self._warming: asyncio.Task | None = None  # the coming turn's prompt start (see _warm)
        self.turns = 0
        self._set_state("listening")

    # ------------------------------------------------------------------ input side
    def feed(self, pcm: np.ndarray) -> None:
        """Microphone audio: int16 (or float32 in [-1, 1]) mono 16 kHz, any length."""
        if self.turn_detection == "manual":
            # no detection: all of it is kept, pauses too, and taken whole at commit()
            self.endpointer.position += len(pcm)
            if self._manual_open:
                self._manual.append(as_int16(pcm).copy())
                self._manual_samples += len(pcm)
                self._turn_coming()
                if self._manual_samples >= self.endpointer.config.max_utterance_s * SAMPLE_RATE:
                    self.commit()  # as long as a turn gets: it is sent, as in hands-free mode
            return
        for event in self.endpointer.feed(pcm):
            self._on_endpoint(event)
        if self.endpointer.in_speech or self._state in ("hearing", "thinking"):
            self._turn_coming()

    def _turn_coming(self) -> None:
        """The user is speaking or waiting for the reply: background work (memory extraction) waits."""
        self.session.engine.defer_background(QUIET_S)

    def begin(self) -> None:
        """Push-to-talk pressed: start collecting an utterance (and stop any reply)."""
        self.endpointer.reset()
        self._manual_open, self._manual, self._manual_samples = True, [], 0
        self._send({"type": "speech.started", "at_s": self._pos_s(self.endpointer.position)})
        self._interrupt()
        self._hearing = True
        self._update_state()

    def commit(self) -> None:
        """End the utterance now (push-to-talk released, or the client decided)."""
        end = self._take_manual() if self.turn_detection == "manual" else self.endpointer.commit()
        self._manual_open = False
        if end is None or len(end.pcm) < SAMPLE_RATE * 0.1:
            self._hearing = False
            self._update_state()
            return
        self._on_endpoint(end)

    def _take_manual(self) -> End | None:
        """Everything heard since push-to-talk was pressed, as one utterance; None if nothing."""
        chunks, self._manual, self._manual_samples = self._manual, [], 0
        if not chunks:
            return None
        pcm = np.concatenate(chunks).astype(np.float32) / 32768.0
        end = self.endpointer.position
        return End(end - len(pcm), end, pcm, forced=True)

    def set_endpoint(self, config: EndpointConfig) -> None:
        """New turn-detection settings; the stream position carries on."""
        old = self.endpointer
        self.endpointer = Endpointer(config)
        self.endpointer.position, self.endpointer.playing = old.position, old.playing

    def error(self, message: str, code: str = "bad_input") -> None:
        """Tell the client its message was wrong; the conversation goes on."""
        self._send({"type": "error", "code": code, "message": message})

    def text(self, text: str) -> None:
        """A typed turn in the same conversation."""
        self._interrupt()
        self._respond(Turn(text=text), None)

    def cancel(self) -> None:
        """The client asked to stop the reply."""
        self._interrupt()

    def playback_started(self, reply_id: str) -> None:
        r = self._reply
        if r is not None and r.id == reply_id and not r.cancelled:
            r.audible = True
            self.endpointer.playing = True
            self._update_state()

    def playback_done(self, reply_id: str, played_s: float, interrupted: bool = False) -> None:
        """The player finished (or, after `response.cancelled`, stopped) a reply."""
        self.endpointer.playing = False
        r = self._reply
        if r is not None and r.id == reply_id and not r.cancelled:
            self._finish(r, played_s, interrupted=interrupted)
        elif reply_id in self._pending_cuts:
            self._save(self._pending_cuts.pop(reply_id), played_s, interrupted=True)
        self._update_state()

    async def close(self) -> None:
        """The conversation ends (Ctrl+C, the socket closed): stop the reply, save, wait for memory."""
        self._drop_prepared()
        if self._warming is not None:
            self._warming.cancel()
        r = self._reply
        if r is not None:
            self._reply = None
            if r.task is not None:
                r.task.cancel()
            if r.audible or r.done is not None:
                self._save(r, self._heard_estimate(r) if r.audible else 0.0, interrupted=True)
        for cut in self._pending_cuts.values():  # cut, and the player never said how much was heard
            self._save(cut, self._heard_estimate(cut), interrupted=True)
        self._pending_cuts.clear()
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)
        await self.session.wait_for_memory()

    # ------------------------------------------------------------------ turn detection
    def _on_endpoint(self, event) -> None:
        if isinstance(event, Onset):
            self._send({"type": "speech.started", "at_s": self._pos_s(event.at)})
        elif isinstance(event, Blip):
            self._send({"type": "speech.ignored", "at_s": self._pos_s(event.at)})
        elif isinstance(event, Start):
            self._interrupt()
            self._hearing = True
            self._update_state()
            self._warm()
        elif isinstance(event, Pause):
            self._prepare(event.utterance)
        elif isinstance(event, Resume):
            self._drop_prepared()
        elif isinstance(event, End):
            self._hearing = False
            self._send({"type": "speech.stopped", "start_s": self._pos_s(event.start),
                        "end_s": self._pos_s(event.end), "forced": event.forced})
            held, self._held = self._held, None
            if held is not None and held.span == (event.start, event.end) and not held.cancelled:
                self._carry = None
                self._release(held)
                return
            if held is not None:
                self._cancel_task(held)
            audio = self._with_carry(event.pcm)
            self._carry = None
            self._respond(Turn(audio=audio), audio)

    def _warm(self) -> None:
        """The user has begun a turn: the engine computes what its prompt starts with meanwhile."""
        if self._warming is not None and not self._warming.done():
            return  # still at it (from the start of this utterance, before a pause)
        self._warming = asyncio.get_running_loop().create_task(self.session.prepare_spoken_turn())
        self._warming.add_done_callback(_log_failure)

    def _with_carry(self, pcm: np.ndarray) -> np.ndarray:
        """The utterance, after the one whose reply was cut before it was heard (they are one turn)."""
        if self._carry is None:
            return pcm
        gap = np.zeros(int(MERGE_GAP_S * SAMPLE_RATE), dtype=np.float32)
        return np.concatenate([self._carry, gap, pcm])

    def _prepare(self, utterance: End) -> None:
        """A pause in the user's speech: start their reply now, held back until the turn ends."""
        self._drop_prepared()
        audio = self._with_carry(utterance.pcm)
        r = _Reply(new_turn_id(), Turn(audio=audio), audio, held=True, span=(utterance.start, utterance.end))
        self._held = r
        r.task = asyncio.get_running_loop().create_task(self._generate(r))

    def _drop_prepared(self) -> None:
        """The user went on speaking (or the turn was abandoned): the prepared reply is not needed."""
        held, self._held = self._held, None
        if held is not None:
            self._cancel_task(held)

    @staticmethod
    def _cancel_task(r: _Reply) -> None:
        r.cancelled = True
        if r.task is not None and not r.task.done():
            r.task.cancel()

    def _release(self, r: _Reply) -> None:
        """The turn ended as prepared: the held reply becomes the reply, and what it made goes out."""
        r.held = False
        self._reply = r
        self.turns += 1
        self._send({"type": "response.started", "id": r.id})
        self._set_state("thinking")
        outbox, r.outbox = r.outbox, []
        for message, audio in outbox:
            if message is not None:
                self._send(message)
            else:
                self._send_reply_audio(r, *audio)
        if r.generated:
            self._after_generate(r)

    def _interrupt(self) -> None:
        """Stop the reply in progress (a barge-in, a new typed turn, a cancel)."""
        self._drop_prepared()
        r = self._reply
        if r is None:
            return
        self._reply = None
        r.cancelled = True
        if r.task is not None and not r.task.done():
            r.task.cancel()
        if r.estimate is not None:
            r.estimate.cancel()
        if r.audible:
            # it was being heard: the player says how much once it has stopped
            if self.player_reports:
                self._pending_cuts[r.id] = r  # before the event: an in-process player answers at once
            self._send({"type": "response.cancelled", "id": r.id})
            if not self.player_reports:
                self._save(r, self._heard_estimate(r), interrupted=True)
        else:
            # nothing of it was heard: the user was not finished; their words join the next turn
            self._send({"type": "response.cancelled", "id": r.id})
            self._carry = r.user_audio
        self.endpointer.playing = False

    # ------------------------------------------------------------------ replies
    def _respond(self, turn: Turn, user_audio: np.ndarray | None) -> None:
        r = _Reply(new_turn_id(), turn, user_audio)
        self._reply = r
        self.turns += 1
        self._send({"type": "response.started", "id": r.id})
        self._set_state("thinking")
        r.task = asyncio.get_running_loop().create_task(self._generate(r))

    async def _generate(self, r: _Reply) -> None:
        try:
            async for ev in self.session.converse(r.turn, speak=self.speak, voice=self.voice, record=False):
                if r.cancelled:
                    return
                if isinstance(ev, TextDelta):
                    r.text.append(ev.text)
                    self._out(r, {"type": "text.delta", "id": r.id, "text": ev.text})
                elif isinstance(ev, AudioChunk):
                    r.audio_s += ev.duration_s
                    if r.held:
                        r.outbox.append((None, (ev.pcm, ev.sample_rate)))
                    else:
                        self._send_reply_audio(r, ev.pcm, ev.sample_rate)
                elif isinstance(ev, Transcript):
                    r.heard = ev.text
                    self._out(r, {"type": "transcript", "id": r.id, "text": ev.text})
                elif isinstance(ev, Done):
                    r.done = ev
                    t = ev.timings
                    self._out(r, {"type": "response.done", "id": r.id, "text": ev.text, "audio_s": t.audio_s,
                                  "timings": {"queued_s": t.queued_s, "first_text_s": t.first_text_s,
                                              "first_audio_s": t.first_audio_s, "total_s": t.total_s}})
                elif isinstance(ev, Error):
                    r.failed = True
                    self._out(r, {"type": "error", "id": r.id, "code": ev.code, "message": ev.message})
        except asyncio.CancelledError:
            raise
        except AssistantError as err:
            r.failed = True
            self._out(r, {"type": "error", "id": r.id, "code": str(err.code), "message": str(err)})
        except Exception as err:  # a bug: the conversation goes on
            log.exception("reply failed")
            r.failed = True
            self._out(r, {"type": "error", "id": r.id, "code": "internal", "message": f"the reply failed: {err}"})
        if r.cancelled:
            return
        if r.held:
            r.generated = True  # the end of the turn releases it
        elif self._reply is r:
            self._after_generate(r)

    def _out(self, r: _Reply, message: dict) -> None:
        if r.held:
            r.outbox.append((message, None))
        else:
            self._send(message)

    def _send_reply_audio(self, r: _Reply, pcm: np.ndarray, sample_rate: int) -> None:
        self._send_audio(r.id, pcm, sample_rate)
        if not self.player_reports and not r.audible:
            r.audible, r.first_sent = True, asyncio.get_running_loop().time()
            self.endpointer.playing = True
            self._update_state()

    def _after_generate(self, r: _Reply) -> None:
        """The reply's generation is over: finish it now if there is nothing to play."""
        if r.failed:
            self._reply = None
            self._update_state()
        elif r.audio_s == 0:
            self._finish(r, 0.0)  # nothing to play (a text-only reply)
        elif not self.player_reports:
            # nobody tells us when it has played: assume real time from the first chunk on
            r.estimate = asyncio.get_running_loop().call_later(
                r.audio_s, lambda: self._reply is r and self._finish(r, r.audio_s))
        self._update_state()

    def _finish(self, r: _Reply, played_s: float, interrupted: bool = False) -> None:
        if self._reply is r:
            self._reply = None
        if interrupted:  # the player stopped it (its user quit): make no more of it
            r.cancelled = True
            if r.task is not None and not r.task.done():
                r.task.cancel()
        self._save(r, played_s, interrupted=interrupted)
        self._update_state()

    @staticmethod
    def _heard_estimate(r: _Reply) -> float:
        """How much of a reply was heard when the player cannot say: real time since it began."""
        if r.first_sent is None:
            return 0.0
        return max(0.0, min(r.audio_s, asyncio.get_running_loop().time() - r.first_sent))

    def _save(self, r: _Reply, played_s: float, interrupted: bool) -> None:
        text = "".join(r.text).strip()
        if interrupted:
            text = _heard_part(text, played_s, r.audio_s, complete=r.done is not None)
        def saved(writes: asyncio.Future) -> None:
            if writes.cancelled() or writes.exception() is not None:  # a full disk must not end the conversation
                self._send({"type": "error", "id": r.id, "code": "internal", "message": "the turn could not be saved"})
                return
            self._send({"type": "turn.saved", "id": r.id, "interrupted": interrupted, "text": text,
                        "played_s": round(played_s, 3)})

        try:  # the writes run off the event loop; the event follows them
            writes = self.session.record(r.turn, text, heard=r.heard, done=r.done, interrupted=interrupted,
                                         extra_timings={"played_s": round(played_s, 3)})
        except Exception:
            log.exception("saving the turn failed")
            self._send({"type": "error", "id": r.id, "code": "internal", "message": "the turn could not be saved"})
            return
        writes.add_done_callback(saved)

    # ------------------------------------------------------------------ state
    def _update_state(self) -> None:
        r = self._reply
        if self._hearing:
            self._set_state("hearing")
        elif r is None:
            self._set_state("listening")
        elif r.audible:
            self._set_state("speaking")
        else:
            self._set_state("thinking")

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._send({"type": "state", "state": state})

    @property
    def state(self) -> str:
        return self._state

    @staticmethod
    def _pos_s(samples: int) -> float:
        return round(samples / SAMPLE_RATE, 4)


def _heard_part(text: str, played_s: float, audio_s: float, complete: bool) -> str:
    """The words of `text` the user heard before the cut, marked as cut short."""
    words = text.split()
    if not words or played_s <= 0:
        return "…"
    if complete and audio_s > 0:
        n = math.ceil(len(words) * min(1.0, played_s / audio_s))
    else:  # audio still being made: place the cut by a usual speaking rate
        n = math.ceil(played_s * WORDS_PER_S)
    n = max(0, min(len(words), n))
    return " ".join(words[:n]) + " …"  # cut short, even if every word had been said


def _log_failure(task: asyncio.Task) -> None:
    """A failed warm-up costs the turn only its head start."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("preparing the turn's prompt failed: %s", task.exception())
