"""Speech chunks to segments: batched faster-whisper decoding that never drops speech the VAD saw.

The fast path decodes chunks in batches, greedily, each with only as much encoder context as it
needs (rounded up to CONTEXT_STEP_S). Each chunk's output is then checked against the speech the
VAD found in it, and decoded again where it falls short, like Whisper's temperature fallback:
- improbable or repetitive output: the chunk again with the full 30 s window and beam search;
- still repetitive (a loop, or lines that really repeat): each VAD region of the chunk alone;
- a VAD region that no segment covers (the decoder skipped a line, or called it silence): that
  region alone, with beam search. Its words are kept unless they are already in a neighbouring
  segment (the first pass's timestamps can be off by a few tenths of a second).
What is still empty after that is counted in `unheard_s` and logged, never dropped in silence.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from assistant.errors import BadInput, ModelError
from audio.vad import SpeechChunk

__all__ = ["ChunkDecoder", "Segment", "Whisper", "Word"]

log = logging.getLogger(__name__)

FULL_FRAMES = 3000  # mel frames in Whisper's 30 s window (100 frames per second)
CONTEXT_STEP_S = 5  # encoder context is the chunk length rounded up to this many seconds
COMPRESSION_RATIO_MAX = 2.4  # above: repetitive output, decode again (Whisper's threshold)
LOGPROB_MIN = -1.0  # below: improbable output, decode again (Whisper's threshold)
NO_SPEECH_MIN = 0.6  # with an improbable output: the segment is silence (Whisper's rule)
TOKENS_PER_S = 8  # a decode stops after 24 + this many tokens per second of audio: a loop guard
NO_SPEECH_SURE = 0.8  # a stretch decoded alone is silence whatever its words: tiny.en says "Thank you."
# to the applause at the end of JFK's clip with 0.87-0.89 (speech scores under 0.35)
STUCK_S = 0.1  # a segment shorter than this has no audio of its own
CORE_PAD_S = 0.3  # a VAD region is padded by 0.4 s a side: what lies further in must be in a segment
UNCOVERED_MIN_S = 1.0  # inside a region, a stretch this long outside every segment was skipped
# (timestamps are off by up to ~0.6 s; a skipped word or two is shorter and left to the first pass)
ALREADY_THERE = 0.8  # a re-decoded region whose words are this much in its neighbours is a duplicate
WORDS_PER_S_MAX = 8.0  # faster than anyone speaks (fast speech is 3-5 words a second): a segment
# this fast that only repeats the words before it is the decoder's echo, not speech


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


@dataclass
class Whisper:
    model: object  # faster_whisper.WhisperModel
    name: str
    device: str = "cpu"
    lock: threading.Lock = field(default_factory=threading.Lock)  # one decode at a time per model


class ChunkDecoder:
    """Batched decoding of speech chunks with one model and fixed options for one source."""

    def __init__(self, whisper: Whisper, language: str | None, task: str, word_timestamps: bool, batch_size: int):
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
        self.language_source = "given" if language else ("detected" if self.multilingual else "assumed")
        self.language_probability: float | None = None
        self.task = task
        self.word_timestamps = word_timestamps
        self.batch_size = batch_size
        self._tokenizer = None
        self._options = None
        self.speech_s = 0.0  # seconds of VAD speech decoded
        self.redecoded_s = 0.0  # seconds decoded a second (or third) time
        self.unheard_s = 0.0  # seconds of VAD speech that gave no words even when decoded alone

    def run(self, chunks: Iterable[SpeechChunk]) -> Iterator[tuple[list[Segment], float]]:
        """Yield (segments, audio position in seconds) per decoded batch. Batches grow 1, 2, 4 ...
        up to batch_size, so the first words (and progress) come after one chunk, not a batch."""
        batch: list[SpeechChunk] = []
        size = 1
        for chunk in chunks:
            batch.append(chunk)
            if len(batch) >= size:
                yield self._decode(batch), batch[-1].start_s + batch[-1].duration_s
                batch, size = [], min(self.batch_size, size * 2)
        if batch:
            yield self._decode(batch), batch[-1].start_s + batch[-1].duration_s

    def _decode(self, batch: list[SpeechChunk]) -> list[Segment]:
        feats = [self._features(c) for c in batch]
        with self.whisper.lock:
            if self._tokenizer is None:
                self._setup(feats[0])
            outputs = self._forward(batch, feats, _context(feats), self._options_for(batch, beam=False))
            out: list[Segment] = []
            for chunk, feat, result in zip(batch, feats, outputs, strict=True):
                self.speech_s += sum(b - a for a, b in chunk.regions) or chunk.duration_s
                out += self._settle(chunk, feat, result)
        return out

    def _settle(self, chunk: SpeechChunk, feat: np.ndarray, result: list[dict]) -> list[Segment]:
        """The chunk's segments, decoded again where the first pass fell short (see the module doc)."""
        end_s = chunk.start_s + chunk.duration_s
        if _needs_fallback(result, end_s):
            self.redecoded_s += chunk.duration_s
            result = self._forward([chunk], [feat], FULL_FRAMES, self._options_for([chunk], beam=True))[0]
        regions = chunk.regions or ((0.0, chunk.duration_s),)
        if _is_loop(result, end_s) and len(regions) > 1:
            log.debug("chunk at %.1f s repeats itself: decoding its %d regions alone", chunk.start_s, len(regions))
            return self._alone(chunk, regions, [])
        segments = _segments(result, chunk)
        if _is_loop(result, end_s):
            segments = _unlooped(segments)
        missing = _uncovered(chunk, regions, segments)
        if missing:
            log.debug("chunk at %.1f s: %d stretches of speech without words", chunk.start_s, len(missing))
            segments += self._alone(chunk, missing, segments)
        return segments

    def _alone(self, chunk: SpeechChunk, regions, neighbours: list[Segment]) -> list[Segment]:
        """Decode each region of `chunk` alone (beam search); the segments not already heard."""
        parts = [_part(chunk, a, b) for a, b in regions]
        self.redecoded_s += sum(p.duration_s for p in parts)
        results = []
        for i in range(0, len(parts), self.batch_size):  # one at a time on the CPU (see transcribe)
            group = parts[i : i + self.batch_size]
            feats = [self._features(p) for p in group]
            results += self._forward(group, feats, _context(feats), self._options_for(group, beam=True))
        out: list[Segment] = []
        for part, result in zip(parts, results, strict=True):
            log.debug("alone %.2f-%.2f: %s", part.start_s, part.start_s + part.duration_s,
                      [(s["text"], round(s["avg_logprob"], 2), round(s["no_speech_prob"], 2)) for s in result])
            segments = [s for s in _segments(result, part) if s.no_speech_prob <= NO_SPEECH_SURE]
            if _is_loop(result, part.start_s + part.duration_s):
                segments = _unlooped(segments)
            segments = [s for s in segments if not _already_there(s, neighbours)]
            if not segments and not _already_there_span(part, neighbours):
                self.unheard_s += part.duration_s
                log.info("no words in %.1f s of speech at %.1f s, even decoded alone", part.duration_s, part.start_s)
            out += segments
        return out

    def _features(self, chunk: SpeechChunk) -> np.ndarray:
        return self.model.feature_extractor(chunk.pcm)[..., :-1]

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

    def _options_for(self, batch: list[SpeechChunk], beam: bool):
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
        # A loop guard: speech runs at about 4 tokens a second, timestamps included.
        longest_s = max(c.duration_s for c in batch)
        options = replace(self._options, max_new_tokens=min(400, int(24 + TOKENS_PER_S * longest_s)))
        return replace(options, beam_size=5, best_of=5) if beam else options


def _context(feats: list[np.ndarray]) -> int:
    """Encoder frames for a batch: its longest member rounded up to CONTEXT_STEP_S, at most 30 s."""
    step = CONTEXT_STEP_S * 100
    return min(FULL_FRAMES, max(math.ceil(f.shape[1] / step) * step for f in feats))


def _part(chunk: SpeechChunk, a: float, b: float) -> SpeechChunk:
    pcm = chunk.pcm[int(a * 16_000) : int(b * 16_000)]
    return SpeechChunk(chunk.start_s + a, pcm, ((0.0, len(pcm) / 16_000),))


def _uncovered(chunk: SpeechChunk, regions, segments: list[Segment]) -> list[tuple[float, float]]:
    """Stretches of the chunk's speech (seconds from its start) that no segment covers: whole
    regions without a segment, and skipped stretches of UNCOVERED_MIN_S or more inside a region."""
    spans = sorted((s.start - chunk.start_s, s.end - chunk.start_s) for s in segments)
    out = []
    for a, b in regions:
        pad = min(CORE_PAD_S, (b - a) / 4)
        holes = _holes(a + pad, b - pad, spans)
        if holes == [(a + pad, b - pad)]:
            out.append((a, b))
            continue
        out += [(max(a, x - pad), min(b, y + pad)) for x, y in holes if y - x >= UNCOVERED_MIN_S]
    return out


def _holes(a: float, b: float, spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The parts of [a, b] outside every span (spans sorted by start)."""
    holes, at = [], a
    for x, y in spans:
        if y <= at:
            continue
        if x >= b:
            break
        if x > at:
            holes.append((at, x))
        at = max(at, y)
    if at < b:
        holes.append((at, b))
    return holes


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "").split()


def _already_there(s: Segment, neighbours: list[Segment]) -> bool:
    """Whether most of `s`'s words are in the segments next to it in time (within 2 s)."""
    near = {w for n in neighbours if n.start < s.end + 2.0 and n.end > s.start - 2.0 for w in _words(n.text)}
    mine = _words(s.text)
    return bool(mine) and sum(w in near for w in mine) >= ALREADY_THERE * len(mine)


def _already_there_span(part: SpeechChunk, neighbours: list[Segment]) -> bool:
    """Whether a neighbouring segment overlaps the part at all (its words may be those)."""
    return any(n.start < part.start_s + part.duration_s and n.end > part.start_s for n in neighbours)


def _needs_fallback(result: list[dict], end_s: float) -> bool:
    if not result:
        return False
    improbable = result[0]["avg_logprob"] < LOGPROB_MIN and result[0]["no_speech_prob"] <= NO_SPEECH_MIN
    return improbable or _is_loop(result, end_s)


def _is_loop(result: list[dict], end_s: float) -> bool:
    """Repetitive output: the whole text compresses like a loop, or one segment does on its own, or
    the decoder ran on past the audio (two or more segments of no length: "and", "so it begins",
    "and so it begins" all at 346.37 s)."""
    texts = [s["text"].strip() for s in result]
    stuck = sum(float(s["end"]) - float(s["start"]) < STUCK_S or float(s["start"]) > end_s - STUCK_S for s in result)
    return stuck >= 2 or _compression_ratio(" ".join(texts)) > COMPRESSION_RATIO_MAX or any(
        _compression_ratio(t) > COMPRESSION_RATIO_MAX for t in texts
    )


def _unlooped(segments: list[Segment]) -> list[Segment]:
    """A region that loops even alone: keep each distinct line once (the words heard, not the loop)."""
    seen: set[str] = set()
    out = []
    for s in map(_unrepeated, segments):
        key = " ".join(_words(s.text))
        if key in seen:
            continue
        seen.add(key)
        out.append(s)
    if len(out) < len(segments):
        log.info("a repetition loop at %.1f s: %d repeated segments left out", out[0].start, len(segments) - len(out))
    return out


def _unrepeated(s: Segment) -> Segment:
    """Runs of one phrase said back to back, said once: a phrase of 3+ words twice or more ("and so
    my fellow America and so my fellow America"), of 1-2 words three times or more ("s s s s",
    "I I I"). Such short loops compress too little to be seen by the compression ratio."""
    words = s.text.split()
    keys = [" ".join(_words(w)) for w in words]
    keep: list[int] = []
    i = 0
    while i < len(words):
        for size in range(1, (len(words) - i) // 2 + 1):
            phrase = keys[i : i + size]
            runs = 1
            while keys[i + runs * size : i + (runs + 1) * size] == phrase:
                runs += 1
            if runs >= (2 if size >= 3 else 3) and any(phrase):
                keep += range(i, i + size)
                i += runs * size
                break
        else:
            keep.append(i)
            i += 1
    if len(keep) == len(words):
        return s
    text = " ".join(words[j] for j in keep)
    kept = tuple(s.words[j] for j in keep if j < len(s.words)) if len(s.words) == len(words) else s.words
    return replace(s, text=text, words=kept)


def _deduplicated(segments: list[Segment]) -> list[Segment]:
    """Without a segment that repeats its neighbour in much less time: the greedy decoder's echo of a
    line ("Thank you" 18.69-19.95, then "Thank you" 19.95-19.95); the longer of the two is kept. An
    echo of the previous line's tail, said faster than anyone speaks, is left out too ("... some
    turbulence. Thank you" 12.66-19.02, then "We are expecting some turbulence. Thank you." in 0.64 s
    and "Thank you. Thank you." past the audio's end: seen with tiny.en on AVX-512 CPUs)."""
    out: list[Segment] = []
    for s in segments:
        if out and _echo(s, out[-1]):
            log.debug("left out an echo of the line before at %.2f s: %r", s.start, s.text)
            continue
        if out and _words(s.text) == _words(out[-1].text):
            mine, theirs = s.end - s.start, out[-1].end - out[-1].start
            if mine < 0.5 * theirs:
                continue
            if theirs < 0.5 * mine:
                out[-1] = s
                continue
        out.append(s)
    return out


def _echo(s: Segment, before: Segment) -> bool:
    """Whether `s` is too fast to be speech and its words are (almost all) the previous segment's."""
    mine = _words(s.text)
    if not mine or s.end - s.start >= len(mine) / WORDS_PER_S_MAX:
        return False
    theirs = set(_words(before.text))
    return sum(w in theirs for w in mine) >= ALREADY_THERE * len(mine)


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
        out.append(_unrepeated(Segment(start, end, text, words, float(s["avg_logprob"]), float(s["no_speech_prob"]))))
        prev = start
    return _deduplicated(out)
