"""Find speech in a stream of audio windows and cut it into chunks of at most 15 s for Whisper.

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
# Whisper's window is 30 s, but tiny.en's encoder (int8, 2 CPU cores) takes 22 ms per second of
# audio at 30 s against 11 ms at 20 s and 9 ms at 15 s (a knee between 20 and 25 s: the attention
# no longer fits the cache), and the words are as good: on the first 6 files of bench/transcribe.py
# --long, chunks of at most 15 s (gaps of at most 1.5 s) against 20 s (3 s) had a lower word error
# rate on 3 files, the same on 2, higher on 1 (0.017 against 0.000).
MAX_CHUNK_S = 15.0
MAX_GAP_S = 1.5  # longer silences end a chunk: less silence encoded, fewer hallucinations
MARGIN_S = 2.0  # speech this close to the buffer's end waits for the next window
SILENCE_DBFS = -60.0  # a buffer quieter than this everywhere holds no speech
MIN_BUFFER_S = 30.0  # run the VAD on at least this much audio at a time
# Silero's speech probability falls with the level: at 0.5 (its default) the quiet first word of a
# line after a pause ("ask" in JFK's clip at -9 dB) was cut off. Noise taken for speech costs only
# a decode that finds no words.
THRESHOLD = 0.35
LOUD_FRAME_S = 0.1  # frames of the loudness check beside the VAD
LOUD_ABOVE_FLOOR_DB = 25.0  # a frame this far above the buffer's noise floor (10th percentile) ...
LOUD_MIN_DBFS = -35.0  # ... and at least this loud holds sound the VAD must not miss


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """A stretch of audio that holds speech, at most MAX_CHUNK_S long."""

    start_s: float  # where `pcm` begins in the source
    pcm: np.ndarray  # float32 mono at 16 kHz, shape (n,)
    regions: tuple[tuple[float, float], ...] = ()  # the VAD's speech inside it: (start s, end s) from pcm's start

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


def speech_chunks(windows: Iterable[np.ndarray], threshold: float = THRESHOLD) -> Iterator[SpeechChunk]:
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
    regions = _union(_vad(buf, threshold), _loud(buf))
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


def _loud(pcm: np.ndarray) -> list[tuple[int, int]]:
    """Stretches far louder than the buffer's noise floor (sample offsets), padded like the VAD's:
    Silero misses a short loud word after a pause ("ask" at -8 dBFS over a -38 dBFS floor in JFK's
    clip scored under 0.35). Noise that gets in costs a decode that finds no words."""
    frame = int(LOUD_FRAME_S * SAMPLE_RATE)
    n = len(pcm) // frame
    if not n:
        return []
    levels = 10 * np.log10(np.mean(np.square(pcm[: n * frame].reshape(n, frame), dtype=np.float64), axis=1) + 1e-12)
    floor = float(np.percentile(levels, 10))
    loud = np.flatnonzero(levels > max(floor + LOUD_ABOVE_FLOOR_DB, LOUD_MIN_DBFS))
    out: list[tuple[int, int]] = []
    pad = int(0.4 * SAMPLE_RATE)
    for i in loud:
        a, b = max(0, int(i) * frame - pad), min(len(pcm), (int(i) + 1) * frame + pad)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _union(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The sorted union of two lists of (start, end) spans; spans that overlap become one, and none
    grows past MAX_CHUNK_S (a long one is cut in pieces)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(a + b):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    limit = int(MAX_CHUNK_S * SAMPLE_RATE)
    return [(x, min(x + limit, end)) for start, end in out for x in range(start, end, limit)]


def _merge(buf: np.ndarray, buf_start: int, regions: list[tuple[int, int]]) -> Iterator[SpeechChunk]:
    """Join neighbouring regions (gaps kept, so times stay true) while the span fits a window."""
    max_len = int(MAX_CHUNK_S * SAMPLE_RATE)
    max_gap = int(MAX_GAP_S * SAMPLE_RATE)
    group: list[tuple[int, int]] = []
    for start, end in regions:
        if group and end - group[0][0] <= max_len and start - group[-1][1] <= max_gap:
            group.append((start, end))
            continue
        if group:
            yield _chunk(buf, buf_start, group)
        group = [(start, min(end, start + max_len))]
    if group:
        yield _chunk(buf, buf_start, group)


def _chunk(buf: np.ndarray, buf_start: int, group: list[tuple[int, int]]) -> SpeechChunk:
    start, end = group[0][0], group[-1][1]
    regions = tuple(((a - start) / SAMPLE_RATE, (b - start) / SAMPLE_RATE) for a, b in group)
    return SpeechChunk((buf_start + start) / SAMPLE_RATE, np.ascontiguousarray(buf[start:end]), regions)
