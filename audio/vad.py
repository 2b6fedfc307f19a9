"""Find speech in a stream of audio windows and cut it into chunks of at most 30 s for Whisper.

Silero VAD (the ONNX model bundled inside faster-whisper, nothing downloaded) runs over a rolling
buffer, so memory stays bounded however long the input is. Stretches that are digitally silent
skip the neural VAD entirely: on a mostly silent recording that is most of the work saved.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["SpeechChunk", "speech_chunks", "speech_regions"]

SAMPLE_RATE = 16_000  # Hz
MAX_CHUNK_S = 30.0  # Whisper's input window
MAX_GAP_S = 3.0  # longer silences end a chunk: less silence in the window, fewer hallucinations
MARGIN_S = 2.0  # speech this close to the buffer's end waits for the next window
SILENCE_DBFS = -60.0  # a buffer quieter than this everywhere holds no speech
MIN_BUFFER_S = 30.0  # run the VAD on at least this much audio at a time


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """A stretch of audio that holds speech, at most MAX_CHUNK_S long."""

    start_s: float  # where `pcm` begins in the source
    pcm: np.ndarray  # float32 mono at 16 kHz, shape (n,)

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


def speech_chunks(windows: Iterable[np.ndarray], threshold: float = 0.5) -> Iterator[SpeechChunk]:
    """Yield the speech in `windows` (consecutive 16 kHz mono PCM arrays) as chunks, in order."""
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # samples: where buf begins in the source
    for window in windows:
        buf = np.concatenate([buf, window]) if len(buf) else window
        if len(buf) < MIN_BUFFER_S * SAMPLE_RATE:
            continue
        regions, keep_from = _settled_regions(buf, threshold, final=False)
        yield from _merge(buf, buf_start, regions)
        buf, buf_start = buf[keep_from:], buf_start + keep_from
    if len(buf):
        regions, _ = _settled_regions(buf, threshold, final=True)
        yield from _merge(buf, buf_start, regions)


def _settled_regions(buf: np.ndarray, threshold: float, final: bool) -> tuple[list[tuple[int, int]], int]:
    """Speech regions (sample offsets) that end well before the buffer's end, and where the rest
    of the buffer (unfinished speech, or the last MARGIN_S) begins."""
    margin = int(MARGIN_S * SAMPLE_RATE)
    keep_from = len(buf) if final else max(0, len(buf) - margin)
    if _is_silent(buf):
        return [], keep_from
    regions = _vad(buf, threshold)
    settled: list[tuple[int, int]] = []
    for start, end in regions:
        if not final and end > len(buf) - margin:
            keep_from = min(keep_from, start)
            break
        settled.append((start, end))
    return settled, keep_from


def _is_silent(pcm: np.ndarray) -> bool:
    peak = float(np.max(np.abs(pcm))) if len(pcm) else 0.0
    return peak < 10 ** (SILENCE_DBFS / 20)


def speech_regions(pcm: np.ndarray, threshold: float = 0.5, pad_ms: int = 400) -> list[tuple[int, int]]:
    """(start, end) sample offsets of the speech in 16 kHz mono `pcm`, each padded by `pad_ms`."""
    return _vad(pcm, threshold, pad_ms)


def _vad(pcm: np.ndarray, threshold: float, pad_ms: int = 400) -> list[tuple[int, int]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=threshold,
        max_speech_duration_s=MAX_CHUNK_S,
        min_silence_duration_ms=160,  # what faster-whisper's batched pipeline uses
        speech_pad_ms=pad_ms,
    )
    return [(r["start"], r["end"]) for r in get_speech_timestamps(pcm, options, sampling_rate=SAMPLE_RATE)]


def _merge(buf: np.ndarray, buf_start: int, regions: list[tuple[int, int]]) -> Iterator[SpeechChunk]:
    """Join neighbouring regions (gaps kept, so times stay true) while the span fits a window."""
    max_len = int(MAX_CHUNK_S * SAMPLE_RATE)
    max_gap = int(MAX_GAP_S * SAMPLE_RATE)
    current: tuple[int, int] | None = None
    for start, end in regions:
        if current and end - current[0] <= max_len and start - current[1] <= max_gap:
            current = (current[0], end)
            continue
        if current:
            yield _chunk(buf, buf_start, current)
        current = (start, min(end, start + max_len))
    if current:
        yield _chunk(buf, buf_start, current)


def _chunk(buf: np.ndarray, buf_start: int, span: tuple[int, int]) -> SpeechChunk:
    start, end = span
    return SpeechChunk(start_s=(buf_start + start) / SAMPLE_RATE, pcm=np.ascontiguousarray(buf[start:end]))
