"""Sound devices for the live loop: a microphone that stamps every block with the time it was
captured, and a speaker that plays reply audio as it arrives, pauses, resumes and flushes at once.

Both wrap sounddevice (PortAudio). Both keep their stream open for the whole conversation: opening
an output stream through PulseAudio costs up to a second and a half before sound comes out, so
the speaker plays silence while it has nothing to say. When a device fails or vanishes the
stream is reopened, with a one-line message through `on_error`, until it works again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assistant.errors import BadInput

__all__ = ["Microphone", "Speaker", "list_devices", "resolve_device"]

log = logging.getLogger(__name__)


def _sd():
    try:
        import sounddevice
    except OSError as err:  # PortAudio itself is missing
        raise BadInput(f"no audio system: {err} (install libportaudio2)") from err
    return sounddevice


def list_devices() -> list[dict]:
    """Every device PortAudio sees: index, name, input and output channels, default marks."""
    sd = _sd()
    default_in, default_out = sd.default.device
    out = []
    for i, d in enumerate(sd.query_devices()):
        out.append({"index": i, "name": d["name"], "inputs": d["max_input_channels"],
                    "outputs": d["max_output_channels"], "default_input": i == default_in,
                    "default_output": i == default_out, "rate": d["default_samplerate"]})
    return out


def resolve_device(spec: str | int | None, kind: str) -> int | None:
    """A device by index or by (part of) its name; None is the system default."""
    if spec is None or spec == "":
        return None
    devices = list_devices()
    key = "inputs" if kind == "input" else "outputs"
    if isinstance(spec, int) or str(spec).isdigit():
        idx = int(spec)
        if idx < len(devices) and devices[idx][key] > 0:
            return idx
        raise BadInput(f"no {kind} device with index {idx}; see `assistant talk --list-devices`")
    matches = [d for d in devices if d[key] > 0 and str(spec).lower() in d["name"].lower()]
    exact = [d for d in matches if d["name"].lower() == str(spec).lower()]
    if exact or len(matches) == 1:
        return (exact or matches)[0]["index"]
    if not matches:
        raise BadInput(f"no {kind} device named {spec!r}; see `assistant talk --list-devices`")
    names = ", ".join(repr(d["name"]) for d in matches)
    raise BadInput(f"{kind} device {spec!r} is ambiguous: {names}")


class _Reopening:
    """Opens a stream, and reopens it when it fails; reports each failure once, in one line."""

    retry_s = 1.0
    stale_s = 1.5  # no callback for this long while running: the device is gone
    close_wait_s = 2.0  # the longest a failed stream's close is waited for

    def __init__(self, what: str, on_error: Callable[[str], None] | None) -> None:
        self._what = what
        self._on_error = on_error or (lambda msg: log.warning("%s", msg))
        self._stream = None
        self._lock = threading.Lock()
        self._closed = False
        self._last_callback = 0.0
        self._failing = False
        self._watch: threading.Thread | None = None

    def _open_stream(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> None:
        """Open the stream (retrying until it opens or `close()`); then keep it alive."""
        self._try_open(first=True)
        self._watch = threading.Thread(target=self._watchdog, name=f"{self._what}-watch", daemon=True)
        self._watch.start()

    def _try_open(self, first: bool = False) -> bool:
        sd = _sd()
        try:
            stream = self._open_stream()
            stream.start()
        except (sd.PortAudioError, OSError, ValueError) as err:
            if first:
                raise BadInput(f"cannot open the {self._what}: {err}") from err
            if not self._failing:
                self._on_error(f"the {self._what} failed ({err}); retrying")
                self._failing = True
            return False
        with self._lock:
            self._stream, self._last_callback = stream, time.monotonic()
        if self._failing:
            self._on_error(f"the {self._what} is back")
            self._failing = False
        return True

    def _watchdog(self) -> None:
        while not self._closed:
            time.sleep(0.25)
            with self._lock:
                stream = self._stream
            stale = time.monotonic() - self._last_callback > self.stale_s
            if stream is not None and (stale or not stream.active):
                if not self._failing:
                    self._on_error(f"the {self._what} stopped delivering audio; reopening it")
                    self._failing = True
                self._drop(stream)
                stream = None
            if stream is None and not self._closed and not self._try_open():
                time.sleep(self.retry_s)

    def _drop(self, stream) -> None:
        """Forget a failed stream and close it. The close runs on its own thread and is waited for
        at most `close_wait_s`: a stream whose sound server has gone can hang in it, and a new
        stream is still worth trying."""
        with self._lock:
            if self._stream is stream:
                self._stream = None
        closer = threading.Thread(target=self._close_quietly, args=(stream,), name=f"{self._what}-close",
                                  daemon=True)  # fmt: skip
        closer.start()
        closer.join(self.close_wait_s)
        if closer.is_alive():
            log.warning("closing the failed %s hangs; opening a new one anyway", self._what)

    @staticmethod
    def _close_quietly(stream) -> None:
        try:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
        except Exception:  # the device is already gone
            log.debug("closing a failed stream", exc_info=True)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            self._drop(stream)
        if self._watch is not None:
            self._watch.join(timeout=2)


class Microphone(_Reopening):
    """16 kHz mono int16 capture. `on_audio(pcm, t_first)` gets each block and the monotonic time
    its first sample was captured; it runs on PortAudio's thread, so it must be quick. Blocks of
    10 ms, the endpointer's frame: with 20 ms blocks the end of a turn was seen ~10 ms later
    (`bench/talk_latency.py`: 713-722 ms after the end of speech against 706)."""

    def __init__(self, on_audio: Callable[[np.ndarray, float], None], device: int | None = None,
                 sample_rate: int = 16_000, block: int = 160,
                 on_error: Callable[[str], None] | None = None) -> None:
        super().__init__("microphone", on_error)
        self.device, self.sample_rate, self.block = device, sample_rate, block
        self._on_audio = on_audio

    def _open_stream(self):
        sd = _sd()

        def callback(indata, frames, ti, status) -> None:
            now = time.monotonic()
            self._last_callback = now
            lag = ti.currentTime - ti.inputBufferAdcTime if ti.inputBufferAdcTime else frames / self.sample_rate
            if not 0 <= lag < 1:
                lag = frames / self.sample_rate
            self._on_audio(indata[:, 0].copy(), now - lag)

        return sd.InputStream(samplerate=self.sample_rate, channels=1, dtype="int16", blocksize=self.block,
                              device=self.device, latency="low", callback=callback)


@dataclass
class _Reply:
    turn: str
    queued: int = 0  # samples given to play
    played: int = 0  # samples sent to the device
    finished: bool = False  # no more audio will come
    first_out: float | None = None  # monotonic time the first sample reached the device's output
    done_sent: bool = False


class Speaker(_Reopening):
    """Plays float32 mono audio at `sample_rate` as it arrives, one reply at a time.

    `on_started(turn, t)` fires when a reply's first sample leaves the device (monotonic time),
    `on_done(turn, played_s)` when its last queued sample has played after `finish(turn)`. Both run
    on PortAudio's thread: keep them quick (hand over to an event loop)."""

    def __init__(self, sample_rate: int, device: int | None = None, latency: float = 0.03,
                 on_started: Callable[[str, float], None] | None = None,
                 on_done: Callable[[str, float], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        super().__init__("speaker", on_error)
        self.device, self.sample_rate, self.latency = device, sample_rate, latency
        self._on_started = on_started or (lambda turn, t: None)
        self._on_done = on_done or (lambda turn, played: None)
        self._queue: deque[np.ndarray] = deque()
        self._head = 0  # samples of queue[0] already played
        self._reply: _Reply | None = None
        self._paused = False
        self._qlock = threading.Lock()

    # ------------------------------------------------------------------ control (any thread)
    def play(self, turn: str, pcm: np.ndarray) -> None:
        with self._qlock:
            if self._reply is None or self._reply.turn != turn:
                self._queue.clear()
                self._head = 0
                self._reply = _Reply(turn)
            self._queue.append(np.asarray(pcm, dtype=np.float32))
            self._reply.queued += len(pcm)

    def finish(self, turn: str) -> None:
        """No more audio will come for `turn`: report it done once the queue has played."""
        with self._qlock:
            if self._reply is not None and self._reply.turn == turn:
                self._reply.finished = True
            else:  # a reply without audio
                self._reply = _Reply(turn, finished=True)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def flush(self) -> tuple[str | None, float]:
        """Stop the current reply now; returns its turn and the seconds of it that were played."""
        with self._qlock:
            reply, self._reply = self._reply, None
            self._queue.clear()
            self._head = 0
        self._paused = False
        if reply is None:
            return None, 0.0
        return reply.turn, reply.played / self.sample_rate

    @property
    def playing(self) -> bool:
        """Audio is queued and not paused (the assistant is audible)."""
        with self._qlock:
            return bool(self._queue) and not self._paused

    @property
    def busy(self) -> bool:
        """A reply is in hand (playing, paused or waiting for audio)."""
        with self._qlock:
            return self._reply is not None

    # ------------------------------------------------------------------ device side
    def _open_stream(self):
        sd = _sd()

        def callback(outdata, frames, ti, status) -> None:
            now = time.monotonic()
            self._last_callback = now
            out = outdata[:, 0]
            out[:] = 0.0
            started = done = None
            with self._qlock:
                reply = self._reply
                if reply is not None and not self._paused:
                    filled = 0
                    while filled < frames and self._queue:
                        chunk = self._queue[0]
                        take = min(frames - filled, len(chunk) - self._head)
                        out[filled : filled + take] = chunk[self._head : self._head + take]
                        filled += take
                        self._head += take
                        if self._head >= len(chunk):
                            self._queue.popleft()
                            self._head = 0
                    if filled and reply.first_out is None:
                        delay = ti.outputBufferDacTime - ti.currentTime if ti.outputBufferDacTime else 0.0
                        reply.first_out = now + (delay if 0 <= delay < 1 else 0.0)
                        started = (reply.turn, reply.first_out)
                    reply.played += filled
                    if reply.finished and not self._queue and not reply.done_sent:
                        reply.done_sent = True
                        done = (reply.turn, reply.played / self.sample_rate)
                        self._reply = None
            if started:
                self._on_started(*started)
            if done:
                self._on_done(*done)

        return sd.OutputStream(samplerate=self.sample_rate, channels=1, dtype="float32",
                               blocksize=max(1, self.sample_rate // 100), device=self.device,
                               latency=self.latency, callback=callback)
