"""Who spoke when: speaker labels (WhisperX's "SPEAKER_00") on a transcript's segments and words.

`diarize(path, transcript, options) -> Transcript` is the entry point; `audio.transcribe(...,
diarize=Diarization(...))` calls it after decoding. Steps, all offline:

1. speech regions: the Silero VAD the transcriber runs (audio.vad), with a tighter pad;
2. a GE2E speaker embedding (audio.voice_embedding) on sliding WINDOW_S windows every HOP_S;
3. clustering: average-linkage agglomerative on cosine distance, into the count given or cut at
   THRESHOLD (chosen on bench/diarize.py's development set), then each window moved to its
   nearest speaker centroid; speakers with too little speech merged into their nearest;
4. turns: each stretch of a region goes to the window centred nearest; islands shorter than
   MIN_ISLAND_S between two stretches of one speaker are smoothed away;
5. words: each word goes whole to the speaker it overlaps most, and a segment is split where the
   speaker of its words changes (so a word is never split between speakers).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from assistant.errors import BadInput
from audio.io import SAMPLE_RATE, stream_audio
from audio.transcription import Segment, Transcript, Word
from audio.vad import speech_chunks, speech_regions

__all__ = ["Diarization", "SpeakerTurn", "diarize", "rename_speakers", "speaker_turns"]

log = logging.getLogger(__name__)

WINDOW_S = 1.5  # seconds of speech per embedding
HOP_S = 0.75  # seconds between window starts
MIN_REGION_S = 0.4  # shorter speech regions get no window of their own (their words go to a neighbour)
VAD_PAD_MS = 100  # tighter than the transcriber's 400 ms: a pause between two speakers stays a pause
THRESHOLD = 0.38  # cosine distance at which the clustering stops merging (bench/diarize.py)
MIN_SPEAKER_S = 1.0  # an estimated speaker with less speech than this (one window) is merged into the nearest
MIN_ISLAND_S = 1.0  # a shorter turn between two turns of one speaker is that speaker's
MAX_SPEAKERS = 20
MAX_CLUSTERED = 4000  # windows in the clustering tree (its distances: 64 MB)
LABEL = "SPEAKER_{:02d}"  # WhisperX's convention
_NOT_IN_NAMES = str.maketrans("", "", "<>[]\t\r\n")  # would break a VTT voice tag or an SRT label
_NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}  # words are joined without spaces


@dataclass(frozen=True, slots=True)
class Diarization:
    """How many speakers to find: exactly `speakers`, or between min_speakers and max_speakers."""

    speakers: int | None = None
    min_speakers: int = 1
    max_speakers: int = MAX_SPEAKERS

    def __post_init__(self) -> None:
        if self.speakers is not None and not 1 <= self.speakers <= MAX_SPEAKERS:
            raise BadInput(f"the number of speakers must be between 1 and {MAX_SPEAKERS}, not {self.speakers}")
        if not 1 <= self.min_speakers <= self.max_speakers:
            raise BadInput(
                f"min speakers ({self.min_speakers}) must be at least 1 and at most max speakers ({self.max_speakers})"
            )
        if self.max_speakers > MAX_SPEAKERS:
            raise BadInput(f"at most {MAX_SPEAKERS} speakers can be told apart, not {self.max_speakers}")

    @property
    def bounds(self) -> tuple[int, int]:
        if self.speakers is not None:
            return self.speakers, self.speakers
        return self.min_speakers, self.max_speakers


@dataclass(frozen=True, slots=True)
class SpeakerTurn:
    start: float  # seconds from the start of the source
    end: float  # seconds
    speaker: str  # "SPEAKER_00", ...


@dataclass(frozen=True, slots=True)
class _Window:
    start: float  # seconds: where the embedded audio begins
    region: int  # index of the speech region it lies in

    @property
    def centre(self) -> float:
        return self.start + WINDOW_S / 2


def diarize(path: str | os.PathLike, transcript: Transcript, options: Diarization | None = None) -> Transcript:
    """`transcript` (of the audio at `path`) with a speaker on every segment and word; segments are
    split where the speaker changes. Audio with no speech gives the transcript back unlabelled."""
    turns = speaker_turns(path, options or Diarization())
    if not turns:
        return transcript
    joiner = "" if transcript.language in _NO_SPACE_LANGUAGES else " "
    segments: list[Segment] = []
    for seg in transcript.segments:
        segments += _label_segment(seg, turns, joiner)
    return replace(transcript, segments=tuple(segments))


def rename_speakers(transcript: Transcript, names: dict[str, str]) -> Transcript:
    """The transcript with speakers renamed (e.g. {"SPEAKER_00": "Alice"}); blank names are ignored,
    and <, >, [, ] and line breaks are dropped from names."""
    clean = {old: new.translate(_NOT_IN_NAMES).strip() for old, new in names.items()}
    clean = {old: new for old, new in clean.items() if new}

    def name(speaker: str | None) -> str | None:
        return clean.get(speaker, speaker) if speaker else speaker

    segments = tuple(
        replace(s, speaker=name(s.speaker), words=tuple(replace(w, speaker=name(w.speaker)) for w in s.words))
        for s in transcript.segments
    )
    return replace(transcript, segments=segments)


def speaker_turns(path: str | os.PathLike, options: Diarization) -> list[SpeakerTurn]:
    """The speaker turns of the audio at `path`, in time order; [] when it holds no speech."""
    regions, windows, embeddings = _embedded(path)
    if not windows:
        return []
    labels = _cluster(embeddings, options.bounds)
    return _turns(regions, windows, labels)


# --- windows ------------------------------------------------------------------------------------


def _embedded(path) -> tuple[list[tuple[float, float]], list[_Window], np.ndarray]:
    """Speech regions (seconds), the windows on them, and each window's embedding. The audio is
    read one chunk (<= 30 s of speech) at a time and only the embeddings are kept: ~1 KiB a window."""
    from audio.voice_embedding import EMBEDDING_SIZE, voice_encoder

    width, hop = round(WINDOW_S * SAMPLE_RATE), round(HOP_S * SAMPLE_RATE)
    regions: list[tuple[float, float]] = []
    windows: list[_Window] = []
    embeddings: list[np.ndarray] = [np.zeros((0, EMBEDDING_SIZE), np.float32)]
    for chunk in speech_chunks(stream_audio(path, sample_rate=SAMPLE_RATE, window_s=60.0)):
        pcm, audio = chunk.pcm, []
        for start, end in speech_regions(pcm, pad_ms=VAD_PAD_MS):
            if (end - start) < MIN_REGION_S * SAMPLE_RATE:
                continue
            index = len(regions)
            regions.append((chunk.start_s + start / SAMPLE_RATE, chunk.start_s + end / SAMPLE_RATE))
            for offset in _window_starts(start, end, width, hop, len(pcm)):
                piece = pcm[offset : offset + width]
                audio.append(np.pad(piece, (0, width - len(piece))))
                windows.append(_Window(chunk.start_s + offset / SAMPLE_RATE, index))
        if audio:
            with _torch_threads(1):  # 1 thread: 3-14x faster than 2 on this busy 2-core machine
                embeddings.append(voice_encoder().embed(audio))
    return regions, windows, np.concatenate(embeddings)


def _window_starts(start: int, end: int, width: int, hop: int, limit: int) -> list[int]:
    """Window offsets covering [start, end): evenly from start, the last one ending at `end`; a
    region shorter than a window gets one window centred on it."""
    if end - start <= width:
        return [max(0, min((start + end - width) // 2, limit - width))]
    starts = list(range(start, end - width + 1, hop))
    if end - width - starts[-1] > hop // 3:
        starts.append(end - width)
    return starts


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- clustering ---------------------------------------------------------------------------------


def _cluster(embeddings: np.ndarray, bounds: tuple[int, int], threshold: float = THRESHOLD) -> np.ndarray:
    """A speaker index per window (0, 1, ... in order of first appearance)."""
    lo, hi = bounds
    n = len(embeddings)
    if n == 1 or hi == 1:
        return np.zeros(n, dtype=int)
    from scipy.cluster.hierarchy import fcluster, linkage

    # The tree needs n^2/2 distances: past MAX_CLUSTERED windows (~50 min of speech) it is grown on
    # an even sample, and every window then goes to its nearest centroid.
    sample = np.linspace(0, n - 1, min(n, MAX_CLUSTERED)).astype(int)
    tree = linkage(embeddings[sample], method="average", metric="cosine")
    labels = fcluster(tree, threshold, criterion="distance") - 1
    count = len(set(labels))
    if not lo <= count <= hi:
        labels = fcluster(tree, min(max(count, lo), hi, len(sample)), criterion="maxclust") - 1
    if len(sample) < n:
        labels = _nearest(embeddings, embeddings[sample], labels)
    labels = _refine(embeddings, labels, merge_small=lo < hi, at_least=lo)
    _, first = np.unique(labels, return_index=True)
    order = {old: new for new, old in enumerate(labels[np.sort(first)])}
    return np.array([order[x] for x in labels])


def _nearest(embeddings: np.ndarray, sample: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each embedding's label: that of the nearest centroid of the labelled sample."""
    ids = np.unique(labels)
    centroids = np.stack([sample[labels == i].mean(axis=0) for i in ids])
    return ids[np.argmax(embeddings @ centroids.T, axis=1)]


def _refine(embeddings: np.ndarray, labels: np.ndarray, merge_small: bool, at_least: int) -> np.ndarray:
    """Move each window to its nearest centroid (twice); with an estimated count, merge speakers
    with under MIN_SPEAKER_S of windows into their nearest (down to `at_least` speakers)."""
    min_windows = max(2, round(MIN_SPEAKER_S / HOP_S))
    for _ in range(2):
        ids = np.unique(labels)
        centroids = np.stack([embeddings[labels == i].mean(axis=0) for i in ids])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        counts = np.array([(labels == i).sum() for i in ids])
        if merge_small and len(ids) > at_least:
            keep = counts >= min_windows
            if not keep.any():
                keep[np.argmax(counts)] = True
            while keep.sum() < at_least:
                keep[np.argmax(np.where(keep, -1, counts))] = True
            centroids = centroids[keep]
            ids = ids[keep]
        new = ids[np.argmax(embeddings @ centroids.T, axis=1)]
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


# --- turns --------------------------------------------------------------------------------------


def _turns(regions: list[tuple[float, float]], windows: list[_Window], labels: np.ndarray) -> list[SpeakerTurn]:
    """Cut each region between neighbouring windows' centres, label by window, smooth, merge."""
    pieces: list[tuple[float, float, int]] = []
    for index, (r_start, r_end) in enumerate(regions):
        mine = [(w.centre, int(labels[i])) for i, w in enumerate(windows) if w.region == index]
        if not mine:
            continue
        cuts = [r_start] + [(a[0] + b[0]) / 2 for a, b in itertools.pairwise(mine)] + [r_end]
        pieces += [(cuts[i], cuts[i + 1], label) for i, (_, label) in enumerate(mine)]
    pieces = _merge(_smooth(_merge(pieces)))
    return [SpeakerTurn(round(s, 3), round(e, 3), LABEL.format(label)) for s, e, label in pieces]


def _merge(pieces: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Join touching pieces of one speaker."""
    out: list[tuple[float, float, int]] = []
    for start, end, label in pieces:
        if out and out[-1][2] == label and start - out[-1][1] < 0.01:
            out[-1] = (out[-1][0], end, label)
        else:
            out.append((start, end, label))
    return out


def _smooth(pieces: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """A short piece between two pieces of one other speaker, with no pause around it, is theirs."""
    out = list(pieces)
    for i in range(1, len(out) - 1):
        (_, prev_end, a), (start, end, b), (next_start, _, c) = out[i - 1], out[i], out[i + 1]
        touching = start - prev_end < 0.01 and next_start - end < 0.01
        if a == c != b and end - start < MIN_ISLAND_S and touching:
            out[i] = (start, end, a)
    return out


# --- words and segments -------------------------------------------------------------------------


def _speaker_at(start: float, end: float, turns: list[SpeakerTurn]) -> str:
    """The speaker overlapping [start, end] most; with no overlap, the nearest turn's."""
    overlap: dict[str, float] = {}
    for t in turns:
        o = min(end, t.end) - max(start, t.start)
        if o > 0:
            overlap[t.speaker] = overlap.get(t.speaker, 0.0) + o
    if overlap:
        return max(overlap, key=overlap.__getitem__)
    mid = (start + end) / 2
    return min(turns, key=lambda t: max(t.start - mid, mid - t.end, 0.0)).speaker


def _label_segment(seg: Segment, turns: list[SpeakerTurn], joiner: str) -> list[Segment]:
    """The segment with its words labelled, split into one segment per run of one speaker."""
    if not seg.words:
        return [replace(seg, speaker=_speaker_at(seg.start, seg.end, turns))]
    words = [replace(w, speaker=_speaker_at(w.start, w.end, turns)) for w in seg.words]
    runs: list[list[Word]] = []
    for w in words:
        if runs and runs[-1][-1].speaker == w.speaker:
            runs[-1].append(w)
        else:
            runs.append([w])
    if len(runs) == 1:
        return [replace(seg, words=tuple(words), speaker=words[0].speaker)]
    return [
        replace(
            seg,
            start=run[0].start if i else seg.start,
            end=run[-1].end if i < len(runs) - 1 else seg.end,
            text=joiner.join(w.text for w in run).strip(),
            words=tuple(run),
            speaker=run[0].speaker,
        )
        for i, run in enumerate(runs)
    ]
