"""`transcribe(source) -> Transcript`: files of any length and format to timed text.

Pipeline: stream_audio (PyAV, one 60 s window in memory) -> speech_chunks (Silero VAD, chunks of
at most 15 s, each with the speech regions it holds) -> audio.decoding.ChunkDecoder (batched
greedy faster-whisper decoding with short encoder context; what falls short of the speech the VAD
saw is decoded again, never dropped). Speed and word error rate against plain faster-whisper:
bench/transcribe.py (--long for recordings of 1-10 minutes).

An English-only model refuses a recording only on strong evidence that it is not English (see
`_check_language`); otherwise the transcript says the language was assumed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from assistant.errors import BadInput, ModelError, ModelNotFound
from audio.decoding import ChunkDecoder, Segment, Whisper, Word
from audio.io import SAMPLE_RATE, probe_audio, stream_audio
from audio.models import resolve_whisper_model
from audio.vad import speech_chunks

if TYPE_CHECKING:
    from audio.diarize import Diarization

__all__ = ["Progress", "Segment", "Transcript", "Word", "transcribe"]

log = logging.getLogger(__name__)

# An English-only model hearing another language writes improbable English, or a few stock phrases
# ("Thank you very much") for seconds of speech. Both are evidence only over enough speech: on a
# short clip a clear English voice scores as low (Piper's "The capital of France is Paris.", 1.8 s
# of speech: -0.80). tiny.en on the shared clips, speech s / mean log-prob / words a second:
# English 5.8-15.8 s, -0.27 to -0.33, 2.1-2.8; es, de, ja, pt 4.0-8.7 s, -0.97 to -1.19;
# fr, it 5.2-5.6 s, -0.70 to -0.73, 1.3-1.4 (stock phrases). The int8 kernels differ between CPUs
# (CTranslate2 picks AVX-512, AVX2 or generic code at start-up), and so do these figures: the es clip
# scores -1.19 with AVX2 or AVX-512 but -0.76 with the generic kernels, as "Thank you so much for
# watching and I will see you in the next video, see you" at 1.8 words a second. A transcript made
# mostly of the stock phrases Whisper writes for speech it cannot follow is the third signal.
NOT_ENGLISH_MIN_SPEECH_S = 4.0  # less speech than this is never refused
NOT_ENGLISH_LOGPROB = -0.9  # mean log-prob under which the speech is taken for another language
DOUBTFUL_LOGPROB = -0.6  # ... or under this, with fewer words a second of speech than:
FEW_WORDS_PER_S = 1.6  # (English speech runs at 2-3)
STOCK_SHARE = 0.5  # ... or with at least this share of its words in stock phrases:
STOCK_PHRASES = re.compile(
    r"\b(?:thank you(?: (?:very|so) much)?(?: for watching)?|thanks(?: for watching)?|for watching"
    r"|(?:and )?(?:i|we)(?: will|'ll)? see you(?: all)?(?: again)?(?: in the next (?:one|video|episode))?"
    r"(?: next time)?|see you(?: next time| in the next (?:one|video|episode)| soon| later)?"
    r"|please (?:like and )?subscribe(?: to (?:my|the|our) channel)?|bye(?: bye)?)\b"
)
GPU_DEFAULT_MODEL = "large-v3-turbo"
CPU_BATCH = 4  # at most this many chunks decoded together on the CPU


@dataclass(frozen=True, slots=True)
class Transcript:
    segments: tuple[Segment, ...]
    language: str
    language_probability: float | None  # None when the language was given, not detected
    duration_s: float  # of the source audio
    model: str = ""
    language_source: str = "detected"  # "given", "detected" (by the model) or "assumed" (English-only model)

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
    `batch_size`: speech chunks decoded together (at most CPU_BATCH on the CPU); batches grow 1, 2, 4 ...
    `progress` is called with the seconds decoded so far, after each chunk (or batch).
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
        # On the CPU, batches of 2-4 chunks of up to 15 s took 20-25 % less CPU time than one by one
        # (8 chunks of long_03: 2.6-3.0 s against 3.5 s); larger ones wait longer for their longest member.
        batch = batch_size if whisper.device == "cuda" else min(batch_size, CPU_BATCH)
        decoder = ChunkDecoder(whisper, language, task, word_timestamps, batch)
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
    _check_language(decoder, segments)
    if decoder.unheard_s:
        log.warning("%.1f s of what sounded like speech gave no words", decoder.unheard_s)
    return Transcript(
        segments=tuple(segments),
        language=decoder.language or "en",
        language_probability=decoder.language_probability,
        duration_s=duration_s,
        model=str(model or "bundled tiny.en"),
        language_source=decoder.language_source,
    )


def _diarized(source: Source, options: Diarization, split_channels: bool, **kwargs) -> Transcript:
    from audio.diarize import diarize

    if split_channels:
        raise BadInput("--diarize and --split-channels do not go together: pick one way to tell speakers apart")
    with _as_path(source) as path:
        return diarize(path, transcribe(path, word_timestamps=True, **kwargs), options)


def _check_language(decoder: ChunkDecoder, segments: list[Segment]) -> None:
    """Refuse clearly non-English speech given to an English-only model; anything else passes.

    Not a language identifier (none ships with the bundled model): the English model's own
    confidence and word rate, taken as evidence only over NOT_ENGLISH_MIN_SPEECH_S of speech. A
    shorter clip is always transcribed, and the transcript says its language was assumed."""
    if decoder.multilingual or decoder.language_source == "given" or not segments:
        return
    if decoder.speech_s < NOT_ENGLISH_MIN_SPEECH_S:
        return
    weights = np.array([max(s.end - s.start, 0.1) for s in segments])
    mean = float(np.average([s.avg_logprob for s in segments], weights=weights))
    rate = sum(len(s.text.split()) for s in segments) / decoder.speech_s
    if mean < NOT_ENGLISH_LOGPROB or (
        mean < DOUBTFUL_LOGPROB and (rate < FEW_WORDS_PER_S or _stock_share(segments) >= STOCK_SHARE)
    ):
        raise BadInput(
            f"this does not sound like English (mean log-probability {mean:.2f}, {rate:.1f} words a second "
            f"over {decoder.speech_s:.0f} s of speech) and the model {Path(decoder.whisper.name).name} is "
            f"English-only: pass a multilingual model (e.g. --model small), or --language en to transcribe it anyway"
        )


def _stock_share(segments: list[Segment]) -> float:
    """The share of a transcript's words that are stock phrases ("Thank you for watching")."""
    text = " ".join(re.sub(r"[^\w' ]+", " ", s.text.lower()) for s in segments)
    words = len(text.split())
    stock = sum(len(m.group(0).split()) for m in STOCK_PHRASES.finditer(text))
    return stock / words if words else 0.0


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


def _load_model(model: str | os.PathLike | None, device: str | None, compute_type: str | None) -> Whisper:
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
def _cached_model(name: str, device: str, compute_type: str) -> Whisper:
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
    return Whisper(model=model, name=name, device=device)


