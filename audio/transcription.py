"""`transcribe(source) -> Transcript`: files of any length and format to timed text.

Pipeline: stream_audio (PyAV, one 60 s window in memory) -> speech_chunks (Silero VAD, chunks of
at most 30 s) -> batched faster-whisper decoding. Speed comes from three things, each measured in
bench/transcribe.py: silence is never decoded, chunks are decoded in batches, and each chunk is
encoded with only as much context as it needs (rounded up to CONTEXT_STEP_S) with greedy search.
A chunk whose output looks wrong (repetitive or improbable) is decoded again the classic way: the
full 30 s window and beam search, like Whisper's temperature fallback.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from assistant.errors import BadInput, ModelError, ModelNotFound
from audio.io import SAMPLE_RATE, probe_audio, stream_audio
from audio.models import resolve_whisper_model
from audio.vad import SpeechChunk, speech_chunks

if TYPE_CHECKING:
    from audio.diarize import Diarization

__all__ = ["Progress", "Segment", "Transcript", "Word", "transcribe"]

log = logging.getLogger(__name__)

FULL_FRAMES = 3000  # mel frames in Whisper's 30 s window (100 frames per second)
CONTEXT_STEP_S = 10  # encoder context is the chunk length rounded up to this many seconds
COMPRESSION_RATIO_MAX = 2.4  # above: repetitive output, decode again (Whisper's threshold)
LOGPROB_MIN = -1.0  # below: improbable output, decode again (Whisper's threshold)
NO_SPEECH_MIN = 0.6  # with an improbable output: the chunk is silence, drop it (Whisper's rule)
NOT_ENGLISH_LOGPROB = -0.75  # mean log-prob under which an English-only model is hearing another language
GPU_DEFAULT_MODEL = "large-v3-turbo"


@dataclass(frozen=True, slots=True)
class Word:
    start: float  # seconds from the start of the source
    end: float  # seconds
    text: str
    probability: float
    speaker: str | None = None  # with diarize: "SPEAKER_00", ...


@dataclass(frozen=True, slots=True)
class Segment:
    start: float  # seconds from the start of the source
    end: float  # seconds
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    speaker: str | None = None  # split_channels: "left", "right" or "channel N"; diarize: "SPEAKER_00", ...


@dataclass(frozen=True, slots=True)
class Transcript:
    segments: tuple[Segment, ...]
    language: str
    language_probability: float | None  # None when the language was given, not detected
    duration_s: float  # of the source audio
    model: str = ""

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported after each decoded batch; `total_s` is None when the length is unknown."""

    done_s: float  # audio seconds processed (over all channels)
    total_s: float | None
    segments: int


ProgressCallback = Callable[[Progress], None]
Source = str | os.PathLike | bytes | BinaryIO


def transcribe(
    source: Source,
    *,
    model: str | os.PathLike | None = None,
    language: str | None = None,
    task: str = "transcribe",
    word_timestamps: bool = False,
    split_channels: bool = False,
    device: str | None = None,
    compute_type: str | None = None,
    batch_size: int = 8,
    progress: ProgressCallback | None = None,
    diarize: Diarization | None = None,
) -> Transcript:
    """Transcribe (or translate to English) the speech in `source`: a path, bytes or a binary file (stdin).

    `model`: name ("tiny.en", "large-v3-turbo"), hub id or local CTranslate2 folder; default: the
    bundled tiny.en on CPU, large-v3-turbo on GPU (must be cached; nothing is downloaded).
    `diarize`: label who speaks when (audio.diarize, after decoding; implies word timestamps).
    Raises BadInput for undecodable input or clearly non-English speech given an English-only model.
    """
    if diarize is not None:
        return _diarized(source, diarize, model=model, language=language, task=task, split_channels=split_channels,
                         device=device, compute_type=compute_type, batch_size=batch_size, progress=progress)
    if task not in ("transcribe", "translate"):
        raise BadInput(f"unknown task {task!r}: use transcribe or translate")
    if batch_size < 1:
        raise BadInput("batch size must be at least 1")
    with _as_path(source) as path:
        info = probe_audio(path)
        whisper = _load_model(model, device, compute_type)
        channels = list(range(info.channels)) if split_channels and info.channels > 1 else [None]
        total_s = info.duration_s * len(channels) if info.duration_s is not None else None
        decoder = _Decoder(whisper, language, task, word_timestamps, batch_size)
        segments: list[Segment] = []
        done_s = 0.0
        decoded_s = 0.0  # the true length: headers (aac priming, vbr mp3) can be off a little
        for channel in channels:
            speaker = _speaker_name(channel, len(channels))
            counter = _Counter()
            for seg_batch, position_s in decoder.run(speech_chunks(counter.count(path, channel))):
                segments += [replace(s, speaker=speaker) for s in seg_batch]
                if progress:
                    progress(Progress(done_s + position_s, total_s, len(segments)))
            decoded_s = counter.samples / SAMPLE_RATE
            done_s += decoded_s
        if progress:
            progress(Progress(done_s, done_s, len(segments)))
    duration_s = decoded_s
    segments = [_clamp(s, duration_s) for s in segments]
    segments.sort(key=lambda s: (s.start, s.end))
    decoder.check_language(segments)
    return Transcript(
        segments=tuple(segments),
        language=decoder.language or "en",
        language_probability=decoder.language_probability,
        duration_s=duration_s,
        model=str(model or "bundled tiny.en"),
    )


def _diarized(source: Source, options: Diarization, split_channels: bool, **kwargs) -> Transcript:
    from audio.diarize import diarize

    if split_channels:
        raise BadInput("--diarize and --split-channels do not go together: pick one way to tell speakers apart")
    with _as_path(source) as path:
        return diarize(path, transcribe(path, word_timestamps=True, **kwargs), options)


class _Counter:
    """Counts the samples that stream past, to know the decoded length."""

    def __init__(self) -> None:
        self.samples = 0

    def count(self, path: str, channel: int | None) -> Iterator[np.ndarray]:
        for window in stream_audio(path, sample_rate=SAMPLE_RATE, channel=channel, window_s=60.0):
            self.samples += len(window)
            yield window


def _clamp(s: Segment, duration_s: float) -> Segment:
    if s.end <= duration_s:
        return s
    words = tuple(replace(w, start=min(w.start, duration_s), end=min(w.end, duration_s)) for w in s.words)
    return replace(s, start=min(s.start, duration_s), end=duration_s, words=words)


def _speaker_name(channel: int | None, n_channels: int) -> str | None:
    if channel is None:
        return None
    if n_channels == 2:
        return ("left", "right")[channel]
    return f"channel {channel}"


@contextmanager
def _as_path(source: Source) -> Iterator[str]:
    """A file path for `source`: streams and bytes are spooled to a temporary file on disk, so
    stdin works and memory stays bounded (the decoder needs to open the input more than once)."""
    if isinstance(source, str | os.PathLike):
        yield os.fspath(source)
        return
    with tempfile.NamedTemporaryFile(prefix="assistant-audio-", suffix=".bin") as tmp:
        if isinstance(source, bytes | bytearray):
            tmp.write(source)
        else:
            shutil.copyfileobj(source, tmp, length=1 << 20)
        tmp.flush()
        if tmp.tell() == 0:
            raise BadInput("the audio is empty (0 bytes)")
        yield tmp.name


# --- model --------------------------------------------------------------------------------------


@dataclass
class _Whisper:
    model: object  # faster_whisper.WhisperModel
    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)  # one decode at a time per model


def _load_model(model: str | os.PathLike | None, device: str | None, compute_type: str | None) -> _Whisper:
    device = _pick_device(device)
    if model is None and device == "cuda":
        model = GPU_DEFAULT_MODEL
    compute_type = compute_type or ("float16" if device == "cuda" else "int8")
    return _cached_model(resolve_whisper_model(model), device, compute_type)


def _pick_device(device: str | None) -> str:
    if device in (None, "auto"):
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device.startswith("cuda"):
        return "cuda"
    if device != "cpu":
        raise BadInput(f"transcription runs on cpu or cuda, not {device!r}")
    return device


@lru_cache(maxsize=4)
def _cached_model(name: str, device: str, compute_type: str) -> _Whisper:
    from faster_whisper import WhisperModel

    try:
        model = WhisperModel(
            name, device=device, compute_type=compute_type, local_files_only=True, cpu_threads=os.cpu_count() or 0
        )
    except (OSError, ValueError) as err:
        if not Path(name).exists():
            raise ModelNotFound(
                f"speech model {name!r} is not on this machine: download it once with "
                f"`huggingface-cli download Systran/faster-whisper-{name}` or pass a local folder"
            ) from err
        raise ModelError(f"cannot load speech model {name}: {err}") from err
    return _Whisper(model=model, name=name)


# --- decoding -----------------------------------------------------------------------------------


class _Decoder:
    """Batched decoding of speech chunks with one model and fixed options for one source."""

    def __init__(self, whisper: _Whisper, language: str | None, task: str, word_timestamps: bool, batch_size: int):
        from faster_whisper import BatchedInferencePipeline

        self.whisper = whisper
        self.model = whisper.model
        self.pipeline = BatchedInferencePipeline(self.model)
        self.multilingual = bool(self.model.model.is_multilingual)
        if language and not self.multilingual and language != "en":
            raise BadInput(f"the model {Path(whisper.name).name} is English-only; it cannot transcribe {language!r}")
        if language and self.multilingual and language not in self.model.supported_languages:
            raise BadInput(f"unknown language code {language!r}")
        if task == "translate" and not self.multilingual:
            task = "transcribe"  # an English-only model's output is already English
        self.language = language if language or self.multilingual else "en"
        self.language_probability: float | None = None
        self.task = task
        self.word_timestamps = word_timestamps
        self.batch_size = batch_size
        self._tokenizer = None
        self._options = None
        self.speech_s = 0.0  # seconds of speech decoded
        self.rejected_s = 0.0  # seconds whose output was a repetition loop even after the fallback

    def run(self, chunks: Iterable[SpeechChunk]) -> Iterator[tuple[list[Segment], float]]:
        """Yield (segments, audio position in seconds) per decoded batch."""
        batch: list[SpeechChunk] = []
        for chunk in chunks:
            batch.append(chunk)
            if len(batch) == self.batch_size:
                yield self._decode(batch), batch[-1].start_s + batch[-1].duration_s
                batch = []
        if batch:
            yield self._decode(batch), batch[-1].start_s + batch[-1].duration_s

    def _decode(self, batch: list[SpeechChunk]) -> list[Segment]:
        feats = [self.model.feature_extractor(c.pcm)[..., :-1] for c in batch]
        step = CONTEXT_STEP_S * 100  # frames
        frames = min(FULL_FRAMES, max(math.ceil(f.shape[1] / step) * step for f in feats))
        with self.whisper.lock:
            if self._tokenizer is None:
                self._setup(feats[0])
            outputs = self._forward(batch, feats, frames, self._options_for(batch, greedy=True))
            out: list[Segment] = []
            for i, (chunk, result) in enumerate(zip(batch, outputs, strict=True)):
                if _needs_fallback(result):
                    full = self._options_for([chunk], greedy=False)
                    result = self._forward([chunk], [feats[i]], FULL_FRAMES, full)[0]
                    if _is_loop(result):  # still looping after the fallback: noise, not speech
                        self.rejected_s += chunk.duration_s
                        continue
                self.speech_s += chunk.duration_s
                out += _segments(result, chunk)
        return out

    def _forward(self, batch, feats, frames: int, options) -> list[list[dict]]:
        x = np.zeros((len(feats), feats[0].shape[0], frames), dtype=np.float32)
        for i, f in enumerate(feats):
            x[i, :, : min(frames, f.shape[1])] = f[:, :frames]
        meta = [{"offset": c.start_s, "duration": c.duration_s, "segments": []} for c in batch]
        try:
            return self.pipeline.forward(x, self._tokenizer, meta, options)
        except RuntimeError as err:
            raise ModelError(f"speech model failed: {err}") from err

    def _setup(self, first_features: np.ndarray) -> None:
        from faster_whisper.tokenizer import Tokenizer

        if self.language is None:
            x = np.zeros((first_features.shape[0], FULL_FRAMES), dtype=np.float32)
            x[:, : min(FULL_FRAMES, first_features.shape[1])] = first_features[:, :FULL_FRAMES]
            language, probability, _ = self.model.detect_language(features=x)
            self.language, self.language_probability = language, float(probability)
        self._tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.multilingual, task=self.task, language=self.language or "en"
        )

    def _options_for(self, batch: list[SpeechChunk], greedy: bool):
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        if self._options is None:
            self._options = TranscriptionOptions(
                beam_size=1,
                best_of=1,
                patience=1.0,
                length_penalty=1.0,
                repetition_penalty=1.0,
                no_repeat_ngram_size=0,
                log_prob_threshold=LOGPROB_MIN,
                no_speech_threshold=NO_SPEECH_MIN,
                compression_ratio_threshold=COMPRESSION_RATIO_MAX,
                condition_on_previous_text=False,
                prompt_reset_on_temperature=0.5,
                temperatures=[0.0],
                initial_prompt=None,
                prefix=None,
                suppress_blank=True,
                suppress_tokens=get_suppressed_tokens(self._tokenizer, [-1]),
                without_timestamps=False,
                max_initial_timestamp=0.0,
                word_timestamps=self.word_timestamps,
                prepend_punctuations="\"'“¿([{-",
                append_punctuations="\"'.。,，!！?？:：”)]}、",
                multilingual=False,
                max_new_tokens=None,
                clip_timestamps=[],
                hallucination_silence_threshold=None,
                hotwords=None,
            )
        if not greedy:
            return replace(self._options, beam_size=5, best_of=5)
        # A loop guard: speech runs well under 12 tokens a second, timestamps included.
        longest_s = max(c.duration_s for c in batch)
        return replace(self._options, max_new_tokens=min(400, int(24 + 12 * longest_s)))

    def check_language(self, segments: list[Segment]) -> None:
        """An English-only model hearing another language writes improbable English: say so."""
        if self.multilingual:
            return
        if self.rejected_s > 0.5 * (self.rejected_s + self.speech_s):
            raise BadInput(
                f"this does not sound like English (the output was a repetition loop), and the model "
                f"{Path(self.whisper.name).name} is English-only: pass a multilingual model, e.g. --model small"
            )
        if not segments:
            return
        weights = np.array([max(s.end - s.start, 0.1) for s in segments])
        mean = float(np.average([s.avg_logprob for s in segments], weights=weights))
        if mean < NOT_ENGLISH_LOGPROB:
            raise BadInput(
                f"this does not sound like English (mean log-probability {mean:.2f}), and the model "
                f"{Path(self.whisper.name).name} is English-only: pass a multilingual model, e.g. --model small"
            )


def _needs_fallback(result: list[dict]) -> bool:
    if not result:
        return False
    return _is_loop(result) or (result[0]["avg_logprob"] < LOGPROB_MIN and result[0]["no_speech_prob"] <= NO_SPEECH_MIN)


def _is_loop(result: list[dict]) -> bool:
    return _compression_ratio("".join(s["text"] for s in result).strip()) > COMPRESSION_RATIO_MAX


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _segments(result: list[dict], chunk: SpeechChunk) -> list[Segment]:
    """faster-whisper's sub-segments of one chunk -> our Segments, times clamped inside the chunk."""
    lo, hi = chunk.start_s, chunk.start_s + chunk.duration_s
    out: list[Segment] = []
    prev = lo
    for s in result:
        text = s["text"].strip()
        if not text or (s["no_speech_prob"] > NO_SPEECH_MIN and s["avg_logprob"] < LOGPROB_MIN):
            continue
        start = min(max(float(s["start"]), prev), hi)
        end = min(max(float(s["end"]), start), hi)
        words = tuple(
            Word(
                start=min(max(float(w["start"]), start), end),
                end=min(max(float(w["end"]), float(w["start"]), start), end),
                text=w["word"].strip(),
                probability=float(w["probability"]),
            )
            for w in s.get("words") or ()
        )
        out.append(Segment(start, end, text, words, float(s["avg_logprob"]), float(s["no_speech_prob"])))
        prev = start
    return out
