"""The omni backend: Qwen2.5-Omni and Qwen3-Omni through transformers' own classes.

Text is decoded by our own loop over the thinker so that turns can join and leave a running
batch at any step (continuous batching): every stream keeps its own KV cache rows, and the
streams that are decoding text share one forward pass per step. When a stream's text is done,
its speech (talker codes, then the waveform) is produced by the model's own talker and vocoder
code, fed with the thinker states our loop recorded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.backends.base import Stream
from assistant.backends.batching import KVBatch, sample_tokens
from assistant.errors import BadInput, Code, ModelError, ModelNotFound
from assistant.special_tokens import neutralize
from assistant.turns import Message, Request

__all__ = ["OmniBackend", "load_omni_backend"]

log = logging.getLogger(__name__)

SPEECH_RATE = 24_000  # Hz: both architectures' vocoders
QWEN2_5_SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)  # Qwen2.5-Omni speaks only under this exact system prompt


@dataclass(frozen=True)
class _Arch:
    name: str
    model_cls: str
    processor_cls: str
    voices: tuple[str, ...]
    default_voice: str


ARCHS = {
    "qwen2_5_omni": _Arch("qwen2_5_omni", "Qwen2_5OmniForConditionalGeneration", "Qwen2_5OmniProcessor",
                          ("Chelsie", "Ethan"), "Chelsie"),
    "qwen3_omni": _Arch("qwen3_omni", "Qwen3OmniMoeForConditionalGeneration", "Qwen3OmniMoeProcessor",
                        ("Ethan", "Chelsie", "Aiden"), "Ethan"),
}


def _detect_arch(path: Path) -> str:
    import json

    cfg = json.loads((path / "config.json").read_text())
    mt = cfg.get("model_type", "")
    if mt.startswith("qwen3_omni"):
        return "qwen3_omni"
    if mt.startswith("qwen2_5_omni"):
        return "qwen2_5_omni"
    raise BadInput(f"{path} is a {mt or 'unknown'} model, not Qwen2.5-Omni or Qwen3-Omni")


def _resolve(model: str) -> Path:
    """A local folder, or a hub id already in the local Hugging Face cache. Never downloads."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} has no config.json: not a model folder")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as err:  # the hub library raises several types for "not cached"
        raise ModelNotFound(
            f"model {model!r} is not on this machine; fetch it once with "
            f"`huggingface-cli download {model}` (or pass --model /path/to/folder)"
        ) from err


def load_omni_backend(model: str, device: str | None = None, dtype: torch.dtype | None = None,
                      max_context_tokens: int = 8192, stream_speech: bool = True,
                      batch_speech: bool = True) -> OmniBackend:
    """Load an omni model (folder or cached hub id) onto `device` (default: cuda if present)."""
    import transformers

    path = _resolve(model)
    arch = ARCHS[_detect_arch(path)]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    t0 = time.perf_counter()
    try:
        model_cls = getattr(transformers, arch.model_cls)
        processor_cls = getattr(transformers, arch.processor_cls)
        net = model_cls.from_pretrained(path, dtype=dtype, device_map=device).eval()
        processor = processor_cls.from_pretrained(path)
    except torch.cuda.OutOfMemoryError as err:
        raise ModelError(f"not enough GPU memory to load {model}", Code.OUT_OF_MEMORY) from err
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load {model}: {err}") from err
    if arch.name == "qwen3_omni":
        talker_cfg = net.config.talker_config
        if getattr(talker_cfg, "audio_config", None) is None:
            # transformers 5.23's Qwen3-Omni talker reads audio_config.n_window when laying out
            # positions for audio input, but its config does not carry it: lend the thinker's.
            talker_cfg.audio_config = net.config.thinker_config.audio_config
    log.info("loaded %s (%s) on %s in %.1f s", path.name, arch.name, device, time.perf_counter() - t0)
    return OmniBackend(net, processor, arch, torch.device(device), max_context_tokens, path, stream_speech,
                       batch_speech)


@dataclass(eq=False)
class OmniStream(Stream):
    """One turn's model state: cache rows, sampling state and the thinker states speech needs."""

    inputs: dict[str, Any] = field(default_factory=dict, repr=False)
    cache: Any = field(default=None, repr=False)  # per-stream KV cache while not in the batch
    tokens: list[int] = field(default_factory=list)
    next_pos: int = 0  # rope position of the next input token
    generator: torch.Generator | None = field(default=None, repr=False)
    phase: str = "text"  # text -> speech -> finished
    prompt_states: tuple | None = field(default=None, repr=False)  # (embeddings, last-needed layer)
    step_states: list = field(default_factory=list, repr=False)
    voice: str = ""
    emitted_chars: int = 0
    batch_size: int = 1
    talker: Any = field(default=None, repr=False)  # speech25.Talker25 while speaking (Qwen2.5)
    vocoder: Any = field(default=None, repr=False)  # speech25.Token2WavStream

    def close(self) -> None:
        if self.talker is not None:
            self.talker.close()  # a speech batch it sits in lets its rows go
        self.talker = None
        self.vocoder = None
        self.cache = None
        self.inputs = {}
        self.prompt_states = None
        self.step_states = []


class OmniBackend:
    """Owns the omni model and processor; advances streams for the engine."""

    name = "omni"
    sample_rate = SPEECH_RATE

    def __init__(self, model, processor, arch: _Arch, device: torch.device, max_context_tokens: int,
                 path: Path | None = None, stream_speech: bool = True, batch_speech: bool = True) -> None:
        self.model = model
        self.processor = processor
        self.arch = arch
        self.device = device
        self.max_context_tokens = max_context_tokens
        self.path = path
        self.voices = arch.voices
        self.default_voice = arch.default_voice
        self.thinker = model.thinker
        self.text_config = model.config.thinker_config.get_text_config()
        tok = processor.tokenizer
        self.tokenizer = tok
        self.eos_ids = {i for i in (tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"))
                        if isinstance(i, int) and i >= 0}
        self.keep_layer = -1 if arch.name == "qwen2_5_omni" else model.config.talker_config.accept_hidden_layer
        self._batch = KVBatch(self.text_config, self.text_config.num_hidden_layers, device)
        self.last_batch_size = 0
        self.has_talker = bool(getattr(model, "has_talker", False))
        # Speech codes per text token, generously (~0.5 s of speech): 50 Hz codec vs 12.5 Hz.
        self.codes_per_token = 25 if arch.name == "qwen2_5_omni" else 7
        # Qwen2.5: talker beside the thinker and chunked vocoding; False: audio once, at the end.
        self.stream_speech = stream_speech
        self.talker_steps = 4  # codes per engine step once the text is done (keeps audio ahead)
        # False: each turn's talker and vocoder run alone (the baseline bench/engine.py compares)
        self.batch_speech = batch_speech
        from assistant.backends.speech_batch import SpeechBatch

        self._speech = SpeechBatch(self)
        self.speech_batch_sizes = self._speech.sizes  # (stage, rows) -> calls, for benchmarks

    # ------------------------------------------------------------------ prompt
    def _prompt(self, request: Request) -> tuple[str, list, list]:
        """ChatML text with the model's own placeholders, and the images and audio in order."""
        p = self.processor
        parts: list[str] = []
        images: list = []
        audios: list[np.ndarray] = []
        system, messages = self._system_and_messages(request)
        if system:
            parts.append(f"<|im_start|>system\n{neutralize(system)}<|im_end|>\n")
        for m in messages:
            body = ""
            if m.audio is not None and len(m.audio):
                body += p.audio_bos_token + p.audio_token + p.audio_eos_token
                audios.append(m.audio.astype(np.float32))
            for img in m.images:
                body += p.vision_bos_token + p.image_token + p.vision_eos_token
                images.append(img)
            body += neutralize(m.text)  # typed special tokens stay text
            parts.append(f"<|im_start|>{m.role}\n{body}<|im_end|>\n")
        parts.append("<|im_start|>assistant\n")
        return "".join(parts), images, audios

    def _system_and_messages(self, request: Request) -> tuple[str | None, list[Message]]:
        messages = list(request.messages)
        system = request.system_prompt()
        if self.arch.name == "qwen2_5_omni" and request.speak:
            # Speech needs Qwen's fixed system prompt; the persona goes in as a first exchange.
            if system:
                messages = [Message("user", f"From now on: {system}"),
                            Message("assistant", "Understood."), *messages]
            return QWEN2_5_SYSTEM, messages
        return system, messages

    def _encode(self, request: Request) -> dict[str, Any]:
        text, images, audios = self._prompt(request)
        try:
            inputs = self.processor(text=[text], images=images or None, audio=audios or None,
                                    return_tensors="pt", padding=True)
        except (ValueError, TypeError) as err:
            raise BadInput(f"cannot prepare the input for the model: {err}") from err
        return {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in inputs.items()}

    # ------------------------------------------------------------------ start (prefill)
    @torch.inference_mode()
    def start(self, request: Request) -> OmniStream:
        voice = request.voice or self.default_voice
        if request.speak:
            if not self.has_talker:
                raise BadInput("this model was loaded without its speech output (talker)")
            match = [v for v in self.voices if v.lower() == voice.lower()]
            if not match:
                raise BadInput(f"unknown voice {voice!r}; this model has: {', '.join(self.voices)}")
            voice = match[0]
        inputs = self._encode(request)
        n_prompt = int(inputs["input_ids"].shape[1])
        if n_prompt + request.max_new_tokens > self.max_context_tokens:
            raise BadInput(
                f"the conversation is {n_prompt} tokens; with a {request.max_new_tokens}-token reply it exceeds "
                f"the {self.max_context_tokens}-token context", Code.CONTEXT_TOO_LONG)
        stream = OmniStream(request=request, inputs=inputs, voice=voice, prompt_tokens=n_prompt)
        if request.seed is not None:
            stream.generator = torch.Generator(device="cpu").manual_seed(request.seed)
        position_ids = self._prompt_positions(inputs)
        out = self.thinker(
            **{k: v for k, v in inputs.items() if k != "num_audio_tokens"},
            position_ids=position_ids, use_cache=True, output_hidden_states=request.speak,
        )
        stream.cache = out.past_key_values
        stream.next_pos = int(position_ids[..., -1].max().item()) + 1
        if request.speak:
            hs = out.hidden_states
            stream.prompt_states = (hs[0], hs[self.keep_layer])
            self._new_talker(stream)
        self._accept(stream, out.logits[:, -1, :])
        return stream

    def _new_talker(self, stream: OmniStream) -> None:
        from assistant.backends.speech25 import Talker25, Token2WavStream

        gen = stream.generator
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) if gen is not None else \
            int(torch.randint(0, 2**31 - 1, (1,)))
        talk_gen = torch.Generator().manual_seed(seed)
        cap = self.codes_per_token * stream.request.max_new_tokens + 4 * self.codes_per_token
        if self.arch.name == "qwen2_5_omni":
            stream.talker = Talker25(self.model, talk_gen, max_codes=cap)
            stream.vocoder = Token2WavStream(self.model.token2wav, self.model.speaker_map[stream.voice], seed)
        else:
            from assistant.backends.speech3 import Code2WavStream, Talker3

            stream.talker = Talker3(self.model, talk_gen, max_codes=cap)
            stream.vocoder = Code2WavStream(self.model.code2wav)

    def _prompt_positions(self, inputs: dict[str, Any]) -> torch.Tensor:
        fam = inputs.get("feature_attention_mask")
        audio_lengths = fam.sum(-1) if fam is not None else None
        position_ids, _ = self.thinker.get_rope_index(
            inputs["input_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
            inputs["attention_mask"], False, audio_lengths, None,
        )
        return position_ids

    # ------------------------------------------------------------------ sampling
    def _accept(self, stream: OmniStream, logits: torch.Tensor) -> None:
        """Pick the next token for one stream from its (1, vocab) logits and emit text."""
        req = stream.request
        self._take(stream, sample_tokens(logits, [req.temperature], [req.top_p], [stream.generator])[0])

    def _take(self, stream: OmniStream, token: int) -> None:
        """Append a sampled token to the stream (or end its text) and emit the new text."""
        req = stream.request
        if token in self.eos_ids:
            self._end_text(stream)
            return
        stream.tokens.append(token)
        stream.completion_tokens = len(stream.tokens)
        text = self.tokenizer.decode(stream.tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # hold back half a multi-byte character
            stream.emit_text(text[stream.emitted_chars:])
            stream.emitted_chars = len(text)
        if len(stream.tokens) >= req.max_new_tokens:
            self._end_text(stream)

    def _end_text(self, stream: OmniStream) -> None:
        stream.emit_text("", final=True)  # what a thinking reply held back
        stream.phase = "speech" if stream.request.speak else "finished"
        if stream.phase == "finished":
            stream.done = True
        stream.cache = None  # the thinker cache is no longer needed

    # ------------------------------------------------------------------ step
    @torch.inference_mode()
    def step(self, streams: list[Stream]) -> None:
        texting = [s for s in streams if isinstance(s, OmniStream) and s.phase == "text"]
        self._sync_batch(texting)
        self.last_batch_size = max(1, len(texting))  # what the engine's metrics record
        if texting:
            self._decode_step()
        speaking = [s for s in streams if isinstance(s, OmniStream) and s.talker is not None and not s.done]
        if self.batch_speech:
            self._speech.step(speaking)
            return
        for s in speaking:
            try:
                if self.arch.name == "qwen2_5_omni":
                    self._talk(s)
                else:
                    self._talk3(s)
            except torch.cuda.OutOfMemoryError as err:
                raise ModelError("out of GPU memory while speaking", Code.OUT_OF_MEMORY) from err

    def _sync_batch(self, wanted: list[OmniStream]) -> None:
        # rows still decoding that sit this step out (the engine steps a subset: a paused background
        # turn, or each turn alone after a failed step) keep their cache rows
        keep = [r for r in self._batch.rows if r.phase == "text" and not r.done]
        self._batch.sync(wanted, keep=keep)
        for s in wanted:
            s.batch_size = max(s.batch_size, len(wanted))

    def _decode_step(self) -> None:
        batch = self._batch
        streams = batch.rows
        n = len(streams)
        input_ids = torch.tensor([[s.tokens[-1]] for s in streams], device=self.device)
        positions = torch.tensor([s.next_pos for s in streams], device=self.device)
        position_ids = positions.view(1, n, 1).expand(3, n, 1)
        # Qwen2.5's talker is conditioned on the thinker's last hidden states; Qwen3's on embeddings only.
        speak = self.arch.name == "qwen2_5_omni" and any(s.request.speak for s in streams)
        # a fault undoes the step whole (no row has taken a token yet), so the engine can take it
        # again without the faulty turn
        with batch.undone_on_error():
            mask = batch.grow()
            out = self.thinker(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                               past_key_values=batch.cache, use_cache=True, output_hidden_states=speak)
            tokens = sample_tokens(out.logits[:, -1, :], [s.request.temperature for s in streams],
                                   [s.request.top_p for s in streams], [s.generator for s in streams])
        batch.cache = out.past_key_values
        for i, (s, token) in enumerate(zip(streams, tokens, strict=True)):
            s.next_pos += 1
            if speak and s.request.speak:
                s.step_states.append((out.hidden_states[0][i:i + 1], out.hidden_states[self.keep_layer][i:i + 1]))
            try:
                self._take(s, token)
            except Exception as err:  # this row's own text failed (its token is in the cache): only it ends
                log.error("decoding a token failed for turn %s", s.request.turn_id, exc_info=err)
                s.error, s.done = (str(Code.MODEL_ERROR), f"the model failed: {type(err).__name__}"), True

    # ------------------------------------------------------------------ speech (Qwen2.5, streamed)
    def _reply_part(self, stream: OmniStream, k: int) -> torch.Tensor | None:
        """The thinker state the talker's k-th code is conditioned on; None: not decoded yet."""
        if k < len(stream.step_states):
            embed, last = stream.step_states[k]
            return embed + last
        if stream.phase == "text":
            return None
        marker = self.model.talker.text_eos_token if k == len(stream.step_states) else self.model.talker.text_pad_token
        return self.thinker.get_input_embeddings()(torch.tensor([[marker]], device=self.device))

    def _talk(self, stream: OmniStream) -> None:
        talker = stream.talker
        if not talker.done:
            if talker.cache is None and not talker.codes:
                if not stream.step_states and stream.phase == "text":
                    return  # the first reply token's state comes with the next thinker step
                if not stream.tokens:  # the reply is empty: nothing to say
                    talker.done = True
                else:
                    first = self._reply_part(stream, 0)
                    talker.start(stream.inputs, stream.prompt_states, first, stream.tokens[0],
                                 self.model.speaker_map[stream.voice])
            steps = 1 if stream.phase == "text" else self.talker_steps
            for _ in range(steps):
                if talker.done:
                    break
                part = self._reply_part(stream, len(talker.codes))
                if part is None:
                    break
                talker.step(part)
        new = talker.codes[len(stream.vocoder.codes):]
        stream.vocoder.push(new)
        finished = talker.done and stream.phase != "text"
        if self.stream_speech:
            stream.emit_audio(stream.vocoder.pull(final=finished), self.sample_rate)
        elif finished:
            stream.emit_audio(stream.vocoder.decode_all(talker.codes), self.sample_rate)
        if finished:
            stream.phase = "finished"
            stream.done = True

    # ------------------------------------------------------------------ speech (Qwen3, streamed)
    def _text_part3(self, stream: OmniStream, j: int) -> torch.Tensor | None:
        """Conditioning for the talker's (j+1)-th frame: reply token j+1, then text-eos, then pad."""
        talker = stream.talker
        if j + 1 < len(stream.tokens):
            return talker.text_part(stream.tokens[j + 1], self.device)
        if stream.phase == "text":
            return None
        _, eos, pad = talker.special(self.device)
        return eos if j + 1 == len(stream.tokens) else pad

    def _talk3(self, stream: OmniStream) -> None:
        talker = stream.talker
        if not talker.done:
            if not talker.started:
                if not stream.tokens:
                    talker.done = True
                else:
                    talker.start(stream.inputs, stream.prompt_states, stream.tokens[0], stream.voice)
            steps = 1 if stream.phase == "text" else self.talker_steps
            for _ in range(steps):
                if talker.done:
                    break
                part = self._text_part3(stream, len(talker.frames) - 1)
                if part is None:
                    break
                talker.step(part)
        ready = talker.complete_frames()
        stream.vocoder.push(ready[len(stream.vocoder.frames):])
        finished = talker.done and stream.phase != "text"
        if self.stream_speech:
            stream.emit_audio(stream.vocoder.pull(final=finished), self.sample_rate)
        elif finished:
            stream.emit_audio(stream.vocoder.decode_all(ready), self.sample_rate)
        if finished:
            stream.phase = "finished"
            stream.done = True
