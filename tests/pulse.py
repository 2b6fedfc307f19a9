"""A real PulseAudio daemon for the microphone-loop tests: a virtual speaker and microphone.

- sink `speaker` (the default output); its monitor is what the tests hear;
- sink `micfeed`, whose monitor is remapped as source `mic` (the default input): what the tests
  play into `micfeed` is what the assistant hears.

Idle null sinks deliver audio in 2 s bursts, so a zero stream plays into each sink all the time:
the feeder into `micfeed` (which also plays the test's speech, so that speech is placed on its
clock) and a keeper into `speaker`. Streams go through libpulse-simple (ctypes) with 10-20 ms
buffers, and every block is stamped with time.monotonic(), the same clock the assistant's JSON
events use, so positions in what was played and what was heard can be compared to ~20 ms.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

PA_SAMPLE_S16LE = 3
PA_STREAM_PLAYBACK, PA_STREAM_RECORD = 1, 2
NO_VALUE = 0xFFFFFFFF


class _SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


class _BufferAttr(ctypes.Structure):
    _fields_ = [("maxlength", ctypes.c_uint32), ("tlength", ctypes.c_uint32), ("prebuf", ctypes.c_uint32),
                ("minreq", ctypes.c_uint32), ("fragsize", ctypes.c_uint32)]


def _lib():
    lib = ctypes.CDLL("libpulse-simple.so.0")
    lib.pa_simple_new.restype = ctypes.c_void_p
    lib.pa_simple_new.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                                  ctypes.POINTER(_SampleSpec), ctypes.c_void_p, ctypes.POINTER(_BufferAttr),
                                  ctypes.POINTER(ctypes.c_int)]
    lib.pa_simple_write.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]
    lib.pa_simple_read.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]
    lib.pa_simple_get_latency.restype = ctypes.c_uint64
    lib.pa_simple_get_latency.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.pa_simple_free.argtypes = [ctypes.c_void_p]
    return lib


class _Stream:
    """A blocking libpulse-simple stream of mono s16le."""

    def __init__(self, lib, server: str, device: str, rate: int, record: bool, buffer_ms: int) -> None:
        self._lib, self.rate = lib, rate
        n = rate * 2 * buffer_ms // 1000
        attr = (_BufferAttr(NO_VALUE, NO_VALUE, NO_VALUE, NO_VALUE, n) if record
                else _BufferAttr(NO_VALUE, n, NO_VALUE, NO_VALUE, NO_VALUE))
        err = ctypes.c_int()
        self._h = lib.pa_simple_new(server.encode(), b"tests", PA_STREAM_RECORD if record else PA_STREAM_PLAYBACK,
                                    device.encode(), b"test", ctypes.byref(_SampleSpec(PA_SAMPLE_S16LE, rate, 1)),
                                    None, ctypes.byref(attr), ctypes.byref(err))
        if not self._h:
            raise RuntimeError(f"PulseAudio stream on {device} failed (error {err.value})")

    def write(self, pcm16: np.ndarray) -> None:
        data, err = pcm16.astype("<i2").tobytes(), ctypes.c_int()
        if self._lib.pa_simple_write(self._h, data, len(data), ctypes.byref(err)) != 0:
            raise OSError(f"PulseAudio write failed ({err.value})")

    def read(self, n: int) -> np.ndarray:
        buf, err = ctypes.create_string_buffer(n * 2), ctypes.c_int()
        if self._lib.pa_simple_read(self._h, buf, n * 2, ctypes.byref(err)) != 0:
            raise OSError(f"PulseAudio read failed ({err.value})")
        return np.frombuffer(buf.raw, dtype="<i2").copy()

    def latency(self) -> float:
        err = ctypes.c_int()
        return self._lib.pa_simple_get_latency(self._h, ctypes.byref(err)) / 1e6

    def close(self) -> None:
        if self._h:
            self._lib.pa_simple_free(self._h)
            self._h = None


def _close(thread: threading.Thread, stream: _Stream) -> None:
    """Free a stream once the thread using it has stopped. If the thread is still inside a libpulse
    call, freeing the stream under it is unsafe, so it is left (the call fails once the server goes,
    and the thread ends)."""
    thread.join(timeout=2)
    if not thread.is_alive():
        stream.close()


def to_int16(pcm: np.ndarray) -> np.ndarray:
    return (np.clip(pcm, -1, 1) * 32767).astype(np.int16)


class Feeder:
    """Plays into the virtual microphone without a break: zeros, or the clips given to `play`."""

    block = 320  # zeros are written 20 ms at a time into 40 ms of buffer (see Keeper)

    def __init__(self, lib, server: str, sink: str = "micfeed", rate: int = 16_000) -> None:
        self.rate = rate
        self._stream = _Stream(lib, server, sink, rate, record=False, buffer_ms=40)
        self._clips: deque[tuple[np.ndarray, threading.Event, list]] = deque()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def play(self, pcm: np.ndarray, wait: bool = False) -> float:
        """Queue a float32 16 kHz clip; returns the monotonic time its first sample reaches the
        microphone (waits until it has begun; with `wait`, until it has all played)."""
        started, at = threading.Event(), []
        self._clips.append((to_int16(pcm), started, at))
        started.wait(30)
        if wait:
            time.sleep(len(pcm) / self.rate + 0.05)
        return at[0]

    def _run(self) -> None:
        try:
            self._feed()
        except OSError:
            if not self._stop:
                raise

    def _feed(self) -> None:
        zeros = np.zeros(self.block, np.int16)
        while not self._stop:
            if self._clips:
                clip, started, at = self._clips.popleft()
                at.append(time.monotonic() + self._stream.latency())
                started.set()
                self._stream.write(clip)  # one call: libpulse paces it without the GIL
            else:
                self._stream.write(zeros)

    def close(self) -> None:
        self._stop = True
        _close(self._thread, self._stream)


class Keeper:
    """A zero stream into an otherwise idle sink."""

    def __init__(self, lib, server: str, sink: str, rate: int = 24_000) -> None:
        # 50 ms a write into 100 ms of buffer: its timing does not matter, and each wake-up of this
        # process takes a slice of the 2 cores from the assistant under test (10 ms writes: the whole
        # harness cost a decode step 15%)
        self._stream = _Stream(lib, server, sink, rate, record=False, buffer_ms=100)
        self._stop = False
        self._zeros = np.zeros(rate // 20, np.int16)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        zeros = self._zeros
        try:
            while not self._stop:
                self._stream.write(zeros)
        except OSError:
            if not self._stop:
                raise

    def close(self) -> None:
        self._stop = True
        _close(self._thread, self._stream)


class Recorder:
    """Records a source (the speaker's monitor) with a monotonic time stamp per 10 ms block."""

    def __init__(self, lib, server: str, source: str = "speaker.monitor", rate: int = 24_000) -> None:
        self.rate = rate
        self._stream = _Stream(lib, server, source, rate, record=True, buffer_ms=50)
        self._blocks: list[tuple[float, np.ndarray]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = self.rate // 100
        per_read = 5  # 10 ms blocks come 50 ms at a time, each stamped: fewer wake-ups (see Keeper)
        while not self._stop:
            try:
                blocks = self._stream.read(n * per_read)
            except OSError:
                if self._stop:
                    return
                raise
            t_first = time.monotonic() - self._stream.latency() - n * per_read / self.rate
            pcm = blocks.astype(np.float32) / 32768.0
            with self._lock:
                self._blocks.extend((t_first + i * n / self.rate, pcm[i * n : (i + 1) * n]) for i in range(per_read))

    def window(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """(times of 10 ms blocks, their RMS in dBFS) between t0 and t1."""
        with self._lock:
            blocks = [(t, b) for t, b in self._blocks if t0 <= t < t1]
        times = np.array([t for t, _ in blocks])
        levels = np.array([10 * np.log10(np.mean(b * b) + 1e-12) for _, b in blocks])
        return times, levels

    def loud_span(self, t0: float, t1: float, threshold_db: float = -50.0) -> tuple[float, float] | None:
        """First and last moment between t0 and t1 where the speaker was audible."""
        times, levels = self.window(t0, t1)
        loud = np.flatnonzero(levels > threshold_db)
        if not len(loud):
            return None
        return float(times[loud[0]]), float(times[loud[-1]] + 0.01)

    def loud_seconds(self, t0: float, t1: float, threshold_db: float = -50.0) -> float:
        _, levels = self.window(t0, t1)
        return float(np.sum(levels > threshold_db) * 0.01)

    def close(self) -> None:
        self._stop = True
        _close(self._thread, self._stream)


class PulseAudio:
    """A private PulseAudio daemon with the virtual speaker and microphone; `env` reaches it."""

    def __init__(self) -> None:
        if not shutil.which("pulseaudio") or not shutil.which("pactl"):
            raise RuntimeError("PulseAudio is not installed (apt install pulseaudio pulseaudio-utils)")
        self.dir = Path(tempfile.mkdtemp(prefix="pulse-"))
        self.dir.chmod(0o700)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(self.dir), "PULSE_SERVER": f"unix:{self.dir}/pulse/native",
                    "HOME": str(self.dir)}
        self._start()

    def _start(self) -> None:
        subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n", "--use-pid-file=yes",
                        "--high-priority=yes", "--realtime=yes",
                        "--load=module-native-protocol-unix", f"--log-target=file:{self.dir}/pulse.log"],
                       env=self.env, check=True, timeout=30)
        self._wait_ready()
        for args in (["module-null-sink", "sink_name=speaker", "rate=48000"],
                     ["module-null-sink", "sink_name=micfeed", "rate=48000"],
                     ["module-remap-source", "master=micfeed.monitor", "source_name=mic"]):
            self.pactl("load-module", *args)
        self.pactl("set-default-sink", "speaker")
        self.pactl("set-default-source", "mic")
        lib, server = _lib(), self.env["PULSE_SERVER"]
        self.feeder = Feeder(lib, server)
        self.keeper = Keeper(lib, server, "speaker")
        self.recorder = Recorder(lib, server)  # the speaker's monitor: what the assistant said
        self.heard = Recorder(lib, server, "mic", 16_000)  # what the assistant's microphone got
        time.sleep(2.5)  # let both sinks settle into small blocks before anything is measured

    def _stop(self) -> None:
        # Streams are freed while the server is still up: pa_simple_free on a connection whose server
        # has gone deadlocks on the mainloop's lock (a full run hung there). Then the server goes.
        for part in (self.feeder, self.keeper, self.recorder, self.heard):
            part._stop = True
        for part in (self.feeder, self.keeper, self.recorder, self.heard):
            part.close()
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=30)

    def restart(self, down_s: float) -> None:
        """The sound server goes away for `down_s` seconds (every device vanishes), then comes back."""
        self._stop()
        time.sleep(down_s)
        self._start()

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, check=True, capture_output=True, text=True,
                              timeout=30).stdout

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if subprocess.run(["pactl", "info"], env=self.env, capture_output=True, timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("PulseAudio did not start")

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def speech_span(pcm: np.ndarray, rate: int = 16_000, threshold_db: float = -40.0) -> tuple[float, float]:
    """Where the speech of a clean clip begins and ends (seconds), from its 10 ms levels."""
    n = rate // 100
    frames = pcm[: len(pcm) // n * n].reshape(-1, n)
    levels = 10 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
    loud = np.flatnonzero(levels > threshold_db)
    return loud[0] / 100, (loud[-1] + 1) / 100
