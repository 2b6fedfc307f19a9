"""The desktop voice loop behind `assistant talk`: microphone in, speaker out, a status line.

The conversation itself (turn detection, replies, barge-in) is `assistant.voice.VoiceConversation`.
It runs either in this process (`LocalLink`, on a loaded engine) or in `assistant serve` behind the
realtime WebSocket (`RemoteLink`); this side is the same for both: it streams microphone blocks
up, plays reply audio as it arrives, pauses playback the moment speech may have begun, flushes it
on a barge-in, and reports what it played.

With `json_events` every step is one JSON line on stdout, stamped with `time.monotonic()` (the
system-wide clock on Linux), which is what the tests and bench/talk_latency.py read.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from assistant.errors import BadInput
from audio.devices import Microphone, Speaker
from audio.endpoint import SAMPLE_RATE, EndpointConfig
from audio.io import resample

__all__ = ["LocalLink", "RemoteLink", "TalkLoop", "TalkOptions"]

log = logging.getLogger(__name__)

STATUS = {"listening": "listening", "hearing": "hearing you", "thinking": "thinking", "speaking": "speaking"}
SEND_BYTES = SAMPLE_RATE * 2 // 50  # 20 ms of 16-bit microphone audio: one message to the server (see RemoteLink.feed)


@dataclass
class TalkOptions:
    input_device: int | None = None
    output_device: int | None = None
    push_to_talk: bool = False
    json_events: bool = False
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    voice: str | None = None
    speak: bool = True
    output_latency: float = 0.02  # seconds of buffer in the output stream
    record_input: str | None = None  # write what the microphone heard to this WAV file


class _Clock:
    """Maps microphone sample positions to the monotonic time they were captured.

    A block's own stamp can be late (its callback waited for the GIL, or the driver batched
    blocks) but never early, so where a run of blocks began is the earliest `stamp - position /
    rate` among them. The window is short (2 s) because an overflow drops samples and moves
    the true start later; each block keeps the estimate made when it came."""

    WINDOW = 2 * SAMPLE_RATE

    def __init__(self) -> None:
        self._recent: deque[tuple[int, float]] = deque()  # sliding-window minimum of origins
        self._pos: deque[int] = deque(maxlen=3000)  # a minute of 20 ms blocks
        self._origin: deque[float] = deque(maxlen=3000)

    def add(self, pos: int, t: float) -> None:
        origin = t - pos / SAMPLE_RATE
        while self._recent and self._recent[-1][1] >= origin:
            self._recent.pop()
        self._recent.append((pos, origin))
        while pos - self._recent[0][0] > self.WINDOW:
            self._recent.popleft()
        self._pos.append(pos)
        self._origin.append(self._recent[0][1])

    def time(self, pos: int) -> float | None:
        if not self._pos:
            return None
        i = max(0, bisect.bisect_right(self._pos, pos) - 1)
        # the estimate firms up as blocks come: prefer one made up to a second after `pos`
        j = min(len(self._pos) - 1, bisect.bisect_right(self._pos, pos + SAMPLE_RATE) - 1)
        return min(self._origin[i], self._origin[max(i, j)]) + pos / SAMPLE_RATE


class LocalLink:
    """The conversation in this process, on a loaded engine."""

    def __init__(self, session, options: TalkOptions) -> None:
        self.session, self.options = session, options
        self.conv = None

    async def start(self, on_event: Callable[[dict], None], on_audio) -> int:
        from assistant.voice import VoiceConversation

        o = self.options
        self.conv = VoiceConversation(self.session, send=on_event, send_audio=on_audio, endpoint=o.endpoint,
                                      speak=o.speak, voice=o.voice,
                                      turn_detection="manual" if o.push_to_talk else "server")
        return self.session.engine.sample_rate

    def feed(self, pcm: np.ndarray) -> None:
        self.conv.feed(pcm)

    def begin(self) -> None:
        self.conv.begin()

    def commit(self) -> None:
        self.conv.commit()

    def playback_started(self, reply_id: str) -> None:
        self.conv.playback_started(reply_id)

    def playback_done(self, reply_id: str, played_s: float, interrupted: bool) -> None:
        self.conv.playback_done(reply_id, played_s, interrupted)

    async def close(self) -> None:
        await self.conv.close()

    @property
    def lost(self) -> asyncio.Event | None:
        return None


CLOSE_TIMEOUT_S = 60.0  # how long `talk --server` waits on quitting for the server to save the conversation


class RemoteLink:
    """The conversation in `assistant serve`, over the realtime WebSocket."""

    def __init__(self, url: str, api_key: str | None, options: TalkOptions) -> None:
        self.url, self.api_key, self.options = url, api_key, options
        self.client = None
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._audio = b""  # microphone audio not sent yet (see feed)

    async def start(self, on_event, on_audio) -> int:
        from assistant.realtime import RealtimeClient

        o, cfg = self.options, self.options.endpoint
        self.client = RealtimeClient(self.url, self.api_key, on_event, on_audio)
        vad = {"silence_s": cfg.silence_s, "prepare_s": cfg.prepare_s, "detector": cfg.detector,
               "aggressiveness": cfg.aggressiveness, "silero_threshold": cfg.silero_threshold,
               "min_speech_s": cfg.min_speech_s,
               "threshold_db": cfg.threshold_db, "echo_threshold_db": cfg.echo_threshold_db}
        await self.client.connect({"turn_detection": "manual" if o.push_to_talk else "server",
                                   "playback_reports": True, "speak": o.speak, "vad": vad})
        self._writer = asyncio.get_running_loop().create_task(self._write())
        return self.client.output_rate

    async def _write(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while (item := await self._outbox.get()) is not None:
                if isinstance(item, bytes):
                    await self.client.send_audio(item)
                else:
                    await self.client.send(item)
        except ConnectionClosed:
            log.info("the server closed the conversation")

    def feed(self, pcm: np.ndarray) -> None:
        """Microphone audio goes up 20 ms a message (the microphone gives 10 ms blocks): each message
        wakes the server's event loop beside its engine, and with 10 ms messages the offline
        engine took a median 693 ms to a reply's first audio against 629 (bench/talk_latency.py
        --server, 20 turns each)."""
        self._audio += pcm.astype("<i2").tobytes()
        if len(self._audio) >= SEND_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._audio:
            self._outbox.put_nowait(self._audio)
            self._audio = b""

    def begin(self) -> None:
        self._flush()
        self._outbox.put_nowait({"type": "input.start"})

    def commit(self) -> None:
        self._flush()  # push-to-talk released: all of the speech before the commit
        self._outbox.put_nowait({"type": "input.commit"})

    def playback_started(self, reply_id: str) -> None:
        self._outbox.put_nowait({"type": "playback.started", "id": reply_id})

    def playback_done(self, reply_id: str, played_s: float, interrupted: bool) -> None:
        self._outbox.put_nowait({"type": "playback.done", "id": reply_id, "played_s": played_s,
                                 "interrupted": interrupted})

    async def close(self) -> None:
        """Ask the server to end the conversation and wait until it has saved it (its `turn.saved`
        events come first, then `session.closed`), then close the socket."""
        self._flush()
        self._outbox.put_nowait({"type": "session.close"})
        self._outbox.put_nowait(None)
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self.client is not None:
            try:
                await asyncio.wait_for(self.client.closed.wait(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.warning("the server did not confirm the end of the conversation within %.0f s",
                            CLOSE_TIMEOUT_S)
            await self.client.close()

    @property
    def lost(self) -> asyncio.Event | None:
        return self.client.closed if self.client else None


def _open_wav(path: str):
    import wave

    try:
        w = wave.open(path, "wb")  # noqa: SIM115 - closed when the conversation ends
    except OSError as err:
        raise BadInput(f"cannot write {path}: {err.strerror or err}") from err
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(SAMPLE_RATE)
    return w


class _NoSpeaker:
    """Stands in before the output device is open (events can come first); plays nothing."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def finish(self, turn: str) -> None: ...
    def play(self, turn: str, pcm: np.ndarray) -> None: ...

    def flush(self) -> tuple[str | None, float]:
        return None, 0.0


class TalkLoop:
    """Microphone -> link -> speaker, with the status line; `run()` returns at Ctrl+C."""

    def __init__(self, link, options: TalkOptions, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.link, self.options = link, options
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self._tty = not options.json_events and self.err.isatty()
        self._clock = _Clock()
        self._pos = 0
        self._rate = 24_000
        self._state = "listening"
        self._last_end: float | None = None  # monotonic time the user's last turn ended
        self._last_latency: float | None = None
        self._recording = False
        self._stop: asyncio.Event | None = None
        self._speaker: Speaker | _NoSpeaker = _NoSpeaker()  # until the device is open
        self._wav = None
        self.turns = 0

    # ------------------------------------------------------------------ output
    def _emit(self, event: str, **data) -> None:
        if self.options.json_events:
            print(json.dumps({"event": event, "t": time.monotonic(), **data}), file=self.out, flush=True)

    def _status(self) -> None:
        if not self._tty:
            return
        line = f"● {STATUS.get(self._state, self._state)}"
        if self._recording:
            line += " (press Enter to send)"
        elif self.options.push_to_talk and self._state == "listening":
            line += " (press Enter to talk)"
        if self._last_latency is not None:
            line += f" · last answer began {self._last_latency:.2f} s after you stopped"
        print(f"\r\033[K{line}", end="", file=self.err, flush=True)

    def _say(self, text: str) -> None:
        """A line for the person (above the status line)."""
        if self.options.json_events:
            return
        print(f"\r\033[K{text}" if self._tty else text, file=self.err, flush=True)
        self._status()

    def _problem(self, message: str) -> None:
        self._emit("device", message=message)
        if not self.options.json_events:
            self._say(f"assistant: {message}")

    # ------------------------------------------------------------------ events from the conversation
    def _on_event(self, ev: dict) -> None:
        kind = ev.get("type")
        if self._stop is not None and self._stop.is_set() and kind not in ("turn.saved", "error"):
            return  # quitting: only what is saved still matters
        sp = self._speaker
        if kind == "state":
            self._state = ev["state"]
            self._emit("state", state=self._state)
            self._status()
        elif kind == "speech.started":
            sp.pause()  # a barge-in is heard at once; resumed if it was only a blip
            self._emit("pause")
        elif kind == "speech.ignored":
            sp.resume()
            self._emit("resume")
        elif kind == "speech.stopped":
            start, end = self._clock.time(round(ev["start_s"] * SAMPLE_RATE)), self._clock.time(
                round(ev["end_s"] * SAMPLE_RATE))
            self._last_end = end
            self.turns += 1
            self._emit("turn", start=start, end=end, start_s=ev["start_s"], end_s=ev["end_s"], forced=ev["forced"])
        elif kind == "response.started":
            sp.resume()
            self._emit("reply.started", id=ev["id"])
        elif kind == "response.cancelled":
            turn, played = sp.flush()
            self._emit("reply.cancelled", id=ev["id"], played_s=played if turn == ev["id"] else 0.0)
            if turn == ev["id"]:
                self.link.playback_done(turn, played, True)
        elif kind == "response.done":
            sp.finish(ev["id"])
            self._emit("reply.done", id=ev["id"], audio_s=ev.get("audio_s", 0.0), text=ev.get("text", ""),
                       timings=ev.get("timings", {}))
            if ev.get("text"):
                self._say(f"  {ev['text'].strip()[:300]}")
        elif kind == "transcript":
            self._emit("transcript", id=ev.get("id"), text=ev.get("text", ""))
            self._say(f"you: {ev.get('text', '')}")
        elif kind == "turn.saved":
            self._emit("saved", id=ev["id"], interrupted=ev["interrupted"], text=ev["text"], played_s=ev["played_s"])
        elif kind == "error":
            self._emit("error", code=ev.get("code"), message=ev.get("message"))
            self._say(f"assistant: {ev.get('message')}")

    def _on_audio(self, reply_id: str, pcm: np.ndarray, rate: int) -> None:
        if self._stop is not None and self._stop.is_set():
            return  # quitting: nothing more is played
        if rate != self._rate:
            pcm = resample(pcm, rate, self._rate)
        self._speaker.play(reply_id, pcm)

    def _started(self, reply_id: str, t: float) -> None:
        self._last_latency = t - self._last_end if self._last_end is not None else None
        self._emit("reply.audio", id=reply_id, first_sample=t, latency_s=self._last_latency)
        self.link.playback_started(reply_id)

    def _done(self, reply_id: str, played_s: float) -> None:
        self._emit("reply.played", id=reply_id, played_s=played_s, interrupted=False)
        self.link.playback_done(reply_id, played_s, False)

    def _on_mic(self, pcm: np.ndarray, t_first: float) -> None:
        self._clock.add(self._pos, t_first)
        self._pos += len(pcm)
        self.link.feed(pcm)
        if self._wav is not None:
            self._wav.writeframes(pcm.astype("<i2").tobytes())

    # ------------------------------------------------------------------ push-to-talk
    def _toggle(self) -> None:
        if not self._recording:
            self._recording = True
            self.link.begin()
        else:
            self._recording = False
            self.link.commit()
        self._status()

    def _read_keys(self, loop: asyncio.AbstractEventLoop) -> None:
        for _line in sys.stdin:
            loop.call_soon_threadsafe(self._toggle)

    # ------------------------------------------------------------------ the loop
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        o = self.options
        self._rate = await self.link.start(self._on_event, self._on_audio)

        def later(fn):
            return lambda *a: loop.call_soon_threadsafe(fn, *a)

        self._speaker = Speaker(self._rate, device=o.output_device, latency=o.output_latency,
                                on_started=later(self._started), on_done=later(self._done),
                                on_error=later(self._problem))
        mic = Microphone(later(self._on_mic), device=o.input_device, on_error=later(self._problem))
        if o.record_input:
            self._wav = _open_wav(o.record_input)
        try:
            self._speaker.start()
            mic.start()
        except BadInput:
            self._speaker.close()
            await self.link.close()
            raise
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        if o.push_to_talk:
            threading.Thread(target=self._read_keys, args=(loop,), daemon=True).start()
        self._emit("ready", output_rate=self._rate)
        if not o.json_events:
            how = "press Enter to talk, Enter again to send" if o.push_to_talk else "just speak"
            self._say(f"Talking ({how}); Ctrl+C ends the conversation.")
        self._status()
        waits = [asyncio.ensure_future(self._stop.wait())]
        if self.link.lost is not None:
            waits.append(asyncio.ensure_future(self.link.lost.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            mic.close()
            turn, played = self._speaker.flush()
            if turn is not None:
                self._emit("reply.cancelled", id=turn, played_s=played)
                self.link.playback_done(turn, played, True)
            await self.link.close()
            self._speaker.close()
            if self._wav is not None:
                self._wav.close()
        lost = self.link.lost is not None and self.link.lost.is_set() and not self._stop.is_set()
        if lost:
            raise BadInput("the server closed the conversation")
        self._emit("stopped", turns=self.turns)
        if not o.json_events:
            self._say(f"Conversation saved ({self.turns} turn{'s' if self.turns != 1 else ''}).")
        return 0
