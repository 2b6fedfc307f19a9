"""The offline profile's small instruct LLM: prefill with a reused system-prompt cache, batched decode.

One `OfflineLLM` holds the weights; each reply is a `Generation` (its tokens, sampler and, while it
decodes alone, its own KV cache). `decode(generations)` advances all of them by one token in one
forward pass over a left-padded batch cache that is rebuilt only when the set of generations changes.
The KV cache of a prompt's stable part (the system prompt and the earlier turns: see
`encode`'s `keep`) is kept between turns, so a turn prefills only what follows the longest kept
prefix it shares.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from assistant.backends.batching import KVBatch, sample_token
from assistant.offline.w8a8 import available as w8a8_available
from assistant.offline.w8a8 import input_bits as w8a8_input_bits
from assistant.offline.w8a8 import multiply as w8a8_multiply
from assistant.offline.w8a8 import pack as w8a8_pack
from assistant.offline.w8a8 import packing_threads
from assistant.special_tokens import neutralize

__all__ = ["Generation", "Int4Linear", "Int8Linear", "OfflineLLM", "W8A8Linear", "int4_groups", "int8_rows", "load_llm",
           "quantize", "w8a8_available"]

log = logging.getLogger(__name__)

PREFIX_CACHE_SIZE = 8  # prompt prefixes whose KV cache is kept (conversations served at once)
MIN_REUSE_TOKENS = 8  # shorter shared prefixes are prefilled again (not worth a copy)


@dataclass(eq=False)
class Generation:
    """One reply being generated: prompt length, tokens so far, and the text not yet taken."""

    prompt_tokens: int
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    cache: object | None = field(default=None, repr=False)  # DynamicCache while not in the batch
    prefilled: int = 0  # prompt tokens computed at the start (the rest came from a kept cache)
    pending: list[int] = field(default_factory=list)  # prompt tokens still to prefill (see prefill_chunk)
    keep: tuple[int, ...] = ()  # the prompt prefix whose cache is kept for later turns once prefilled
    prompt_ids: list[int] = field(default_factory=list, repr=False)  # the whole prompt, until prefilled
    _emitted_chars: int = 0
    _text: str = ""

    @property
    def next_pos(self) -> int:
        """Position of the last sampled token, the one the next forward pass reads."""
        return self.prompt_tokens + len(self.tokens) - 1

    def take_text(self) -> str:
        """Text decoded since the last call (half a multi-byte character is held back)."""
        delta = self._text[self._emitted_chars :]
        self._emitted_chars = len(self._text)
        return delta


class OfflineLLM:
    """Owns the model and tokenizer; no I/O beyond loading them."""

    def __init__(self, model, tokenizer, path: Path | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.path = path  # the model folder, where low-bit weights are kept
        self.config = model.config
        self.n_layers = model.config.num_hidden_layers
        self.eos_ids = {
            i
            for i in (tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>"))
            if isinstance(i, int) and i >= 0
        }
        self._prefixes: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._batch = KVBatch(model.config, self.n_layers)
        self.last_batch_size = 0

    # ------------------------------------------------------------------ prompt
    def encode(self, messages: list[dict[str, str]], keep: int = 1) -> tuple[list[int], int]:
        """Token ids of the chat (ending with the assistant's turn opening) and the length of the
        part worth caching for later turns: the tokens of its first `keep` messages (the system
        prompt, and the earlier turns when the caller lays the chat out so that they stay the same);
        0 when the chat does not start with a system message."""
        ids = self._template(messages, add_generation_prompt=True)
        if not messages or messages[0]["role"] != "system" or keep < 1:
            return ids, 0
        prefix = self._template(messages[:keep], add_generation_prompt=False)
        n = len(prefix) if ids[: len(prefix)] == prefix else 0
        return ids, n

    def encode_start(self, messages: list[dict[str, str]], next_role: str | None = None) -> list[int]:
        """Token ids of the first messages of a chat, as they begin `encode`'s ids for the whole chat;
        with `next_role`, followed by the opening of a message of that role still to come
        ("<|im_start|>user\n": 3 of a spoken question's ~15 prompt tokens, computed ahead while the
        user speaks). The opening is what two such messages with different texts have in common."""
        ids = self._template(messages, add_generation_prompt=False)
        if next_role is None:
            return ids
        a, b = (self._template([*messages, {"role": next_role, "content": text}], add_generation_prompt=False)
                for text in ("A", "B"))  # fmt: skip
        common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        return a[:common] if common > len(ids) and a[: len(ids)] == ids else ids

    def tokens(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens)."""
        return list(self.tokenizer(neutralize(text), add_special_tokens=False)["input_ids"])

    def _template(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
        messages = [{**m, "content": neutralize(m["content"])} for m in messages]  # typed specials stay text
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "input_ids"):
            out = out["input_ids"]
        return list(out)

    # ------------------------------------------------------------------ prefill
    @torch.inference_mode()
    def start(
        self,
        ids: list[int],
        prefix_len: int = 0,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        chunk: int | None = None,
    ) -> Generation:
        """Prefill `ids` and sample the first token. The KV cache of the longest prefix seen before is
        reused, and that of `ids[:prefix_len]` (the system prompt) is kept for later turns.
        With `chunk`, nothing is computed yet: `prefill_chunk` then prefills `chunk` tokens a call
        (a turn that must not hold up others for a whole prompt's time)."""
        generator = None
        if temperature > 0:
            generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        gen = Generation(len(ids), max_new_tokens, temperature, top_p, generator, prompt_ids=list(ids))
        gen.cache, done = self._reusable(ids)
        gen.prefilled = len(ids) - done
        gen.pending = list(ids[done:])
        if prefix_len > done:
            gen.keep = tuple(ids[:prefix_len])
        self.prefill_chunk(gen, chunk)
        return gen

    @torch.inference_mode()
    def prefill_chunk(self, gen: Generation, chunk: int | None = None) -> None:
        """Prefill the next `chunk` prompt tokens of `gen` (None: all of them); after the last,
        the first token is sampled. `chunk` 0 does nothing."""
        if not gen.pending or chunk == 0:
            return
        if gen.prompt_ids and gen.prefilled == len(gen.pending):  # none of it computed yet: look again, a
            self._reuse_now(gen)  # prompt started beside it (Big Brain's attempts) may be kept by now
        take = gen.pending[:chunk] if chunk else gen.pending
        done = gen.prompt_tokens - len(gen.pending)
        out = self.model(
            input_ids=torch.tensor([take]),
            position_ids=torch.arange(done, done + len(take)).unsqueeze(0),
            past_key_values=gen.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        gen.cache = out.past_key_values
        gen.pending = gen.pending[len(take):]
        if gen.pending:
            return
        gen.prompt_ids = []
        if gen.keep:
            self._keep(gen.keep, gen.cache)
        if gen.max_new_tokens == 0:  # a prompt's start computed ahead (see warm): nothing to sample
            gen.finished = True
            return
        self._accept(gen, out.logits[0, -1])

    def _reuse_now(self, gen: Generation) -> None:
        """Take the longest kept prefix of a prompt not yet prefilled at all."""
        cache, done = self._reusable(gen.prompt_ids)
        if done > gen.prompt_tokens - len(gen.pending):
            gen.cache, gen.pending, gen.prefilled = cache, gen.prompt_ids[done:], gen.prompt_tokens - done

    def warm(self, ids: list[int], chunk: int | None = None) -> Generation | None:
        """Compute the KV cache of `ids`, the start of a prompt whose end is not known yet (a turn
        whose user is still speaking), and keep it, so that the prompt's prefill finds it. With
        `chunk`, `prefill_chunk` does the work, like `start`'s. None if it is kept already."""
        key = tuple(ids)
        if key in self._prefixes:
            self._prefixes.move_to_end(key)
            return None
        return self.start(ids, len(ids), max_new_tokens=0, chunk=chunk)

    def _reusable(self, ids: list[int]):
        """A fresh cache holding the longest kept prefix of `ids` (never all of it), and its length."""
        from transformers import DynamicCache

        best_key, best = None, 0
        for key in self._prefixes:
            n = min(len(key), len(ids) - 1)
            common = next((i for i in range(n) if key[i] != ids[i]), n)
            if common > best:
                best_key, best = key, common
        if best_key is None or best < MIN_REUSE_TOKENS:
            return DynamicCache(config=self.config), 0
        self._prefixes.move_to_end(best_key)
        return self._copy(self._prefixes[best_key], best), best

    def use_low_bit(self, bits: int = 4) -> None:
        """Decode with int4 or int8 weights from now on (see Int4Linear, Int8Linear); kept prompt
        caches stay valid, since prompts still run on the original weights."""
        if not any(isinstance(m, _LowBitLinear) for m in self.model.modules()):
            name = INT4_FILE if bits == 4 else INT8_FILE
            quantize(self.model, bits, self.path / name if self.path is not None else None)

    def _keep(self, key: tuple[int, ...], cache) -> None:
        self._prefixes[key] = self._copy(cache, len(key))
        while len(self._prefixes) > PREFIX_CACHE_SIZE:
            self._prefixes.popitem(last=False)

    def _copy(self, cache, length: int):
        """A new cache with the first `length` positions of `cache`. The tensors are shared, which
        is safe: caches only grow by concatenation into new tensors, never in place."""
        from transformers import DynamicCache

        copy = DynamicCache(config=self.config)
        for layer in range(self.n_layers):
            lay = cache.layers[layer]
            copy.update(lay.keys[..., :length, :], lay.values[..., :length, :], layer)
        return copy

    # ------------------------------------------------------------------ decode
    @torch.inference_mode()
    def decode(self, gens: list[Generation]) -> None:
        """Advance every unfinished generation by one token, all in one forward pass. Unfinished
        generations left out (paused) keep their cache for a later step."""
        rows = [g for g in gens if not g.finished and not g.pending]
        paused = [g for g in self._batch.rows if not g.finished]  # left out of this step, not ended
        self._batch.sync(rows, keep=paused)
        self.last_batch_size = len(rows)
        if not rows:
            return
        batch = self._batch
        n = len(rows)
        input_ids = torch.tensor([[g.tokens[-1]] for g in rows])
        position_ids = torch.tensor([[g.next_pos] for g in rows])
        mask = batch.grow()
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask if n > 1 else None,
            position_ids=position_ids,
            past_key_values=batch.cache,
            use_cache=True,
        )
        batch.cache = out.past_key_values
        for i, g in enumerate(rows):
            self._accept(g, out.logits[i, -1])
        if any(g.finished for g in rows):  # give finished rows' memory back now
            self._batch.sync([g for g in rows if not g.finished])

    def release(self, gen: Generation) -> None:
        """Drop a generation's cache (finished or cancelled)."""
        gen.finished = True
        if gen in self._batch.rows:
            self._batch.sync([g for g in self._batch.rows if g is not gen])
        gen.cache = None

    # ------------------------------------------------------------------ sampling
    def _accept(self, gen: Generation, logits: torch.Tensor) -> None:
        token = sample_token(logits, gen.temperature, gen.top_p, gen.generator)
        if token in self.eos_ids:
            gen.finished = True
            return
        gen.tokens.append(token)
        text = self.tokenizer.decode(gen.tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # hold back half a multi-byte character
            gen._text = text
        if len(gen.tokens) >= gen.max_new_tokens:
            gen.finished = True


INT8_FILE = "int8-v1.safetensors"  # int8 weights kept beside the model after the first quantization
INT4_FILE = "int4-g32-v2.safetensors"  # the same for int4 (with the INT4_KEEPS_INT8 layers in int8)
_CHUNK_ROWS = 8192  # rows quantized at a time (bounds the float32 temporaries)
INT4_GROUP = 32  # weights per int4 scale and zero point (one row's run of 32 inputs)
_INT4_CLIPS = (0.0, 0.03, 0.06, 0.09, 0.12)  # range trimmed off each end, tried per group (least error wins)
WEIGHT_BITS = (4, 8)
INT4_KEEPS_INT8 = ("lm_head", "v_proj", "down_proj")  # stay int8 when the rest is int4: see quantize
W8A8_LAYERS = ("lm_head",)  # int8 layers whose inputs are int8 too, with fbgemm's kernel: see W8A8Linear


class _LowBitLinear(torch.nn.Module):
    """A Linear layer that decodes with low-bit copies of its weights.

    Decoding one token per row is bound by reading the weights, so fewer bytes per weight make a
    decode step faster. A prompt (many positions) reads the weights once for all of its positions:
    it runs on int8 weights with int8 inputs (`use_int8_prompts`, fbgemm's kernel: see W8A8Linear;
    each position scaled alone, so its result does not depend on the rest of the prompt), or else
    on the original weights. A 16-token prompt of the 0.5B: 63-69 ms against 100 ms on bfloat16
    weights. With int4 decoding after a 40-token prompt, the next token is bfloat16's 80% of the time
    (KL 0.033) against 84% (KL 0.028) with the prompt on bfloat16 weights (`bench/offline.py
    --agreement`)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self._prompt_weights = None  # fbgemm's packed int8 weights for prompts (see use_int8_prompts)
        self._prompt_input_bits = 8

    def use_int8_prompts(self, weight_int8: torch.Tensor, scale: torch.Tensor, drop_original: bool = True,
                         input_bits: int = 8) -> None:  # fmt: skip
        """Prompts multiply int8 weights (one scale per output row) by inputs rounded to `input_bits`
        (8 or 7: see offline.w8a8) from now on; the original weights are dropped unless
        `drop_original` is False (an output layer tied to the embedding)."""
        self._prompt_weights = w8a8_pack(weight_int8, scale)
        self._prompt_input_bits = input_bits
        if drop_original:
            self.linear.weight = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if x.dim() > 1 and x.shape[-2] > 1:  # a prompt
            if self._prompt_weights is None:
                return self.linear(x)
            out = w8a8_multiply(flat, self._prompt_weights, self._prompt_input_bits)
        else:
            out = self._product(flat)
        if self.linear.bias is not None:
            out = out + self.linear.bias
        return out.reshape(*x.shape[:-1], self.linear.out_features)


class Int8Linear(_LowBitLinear):
    """int8 weights, one scale per output row: a decode step of the 0.5B model ~1.8x faster than
    bfloat16 on 2 cores."""

    def __init__(self, linear: torch.nn.Linear, weight_int8: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__(linear)
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale.to(linear.weight.dtype))

    def _product(self, flat: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(flat, self.weight_int8, self.scale)

    @staticmethod
    def quantize(weight: torch.Tensor) -> dict[str, torch.Tensor]:
        weight, scale = int8_rows(weight)
        return {"int8": weight, "scale": scale}

    @classmethod
    def wrap(cls, linear: torch.nn.Linear, saved: dict[str, torch.Tensor]) -> Int8Linear:
        return cls(linear, saved["int8"], saved["scale"])


class W8A8Linear(_LowBitLinear):
    """int8 weights (a scale per output row) times int8 inputs (a scale per row of the batch), with
    fbgemm's int8 kernel, which reads the weights at about twice the rate of `_weight_int8pack_mm`:
    the 0.5B's output layer (151936 x 896) takes 5.5 ms a decode step instead of 9, and about the
    same for 8 rows as for one (int8pack: 25 ms). Made for the output layer, whose input (the final
    norm) has no outlier channels: same next token as bfloat16 weights 90% of the time against 91%
    with Int8Linear there, the rest int4 (`bench/offline.py --agreement`); the MLP's down projection,
    whose inputs have outliers, lost 4 points this way. Each row is scaled alone, its inputs rounded
    to `input_bits` (8, or 7 where fbgemm's kernel would saturate: see offline.w8a8.multiply)."""

    def __init__(self, linear: torch.nn.Linear, weight_int8: torch.Tensor, scale: torch.Tensor,
                 input_bits: int = 8) -> None:  # fmt: skip
        super().__init__(linear)
        self._packed = w8a8_pack(weight_int8, scale)  # fbgemm's own copy of the weights
        self.input_bits = input_bits

    def _product(self, flat: torch.Tensor) -> torch.Tensor:
        return w8a8_multiply(flat, self._packed, self.input_bits)

    quantize = staticmethod(Int8Linear.quantize)

    @classmethod
    def wrap(cls, linear: torch.nn.Linear, saved: dict[str, torch.Tensor], input_bits: int = 8) -> W8A8Linear:
        return cls(linear, saved["int8"], saved["scale"], input_bits)


class Int4Linear(_LowBitLinear):
    """int4 weights with a scale and a zero point per 32 inputs of a row (half of int8's bytes):
    a decode step of the 0.5B model with every layer int4 takes 25 ms against int8's 42 ms on 2
    cores (`bench/offline.py --agreement`). The grid of each group is fitted to its weights (see
    int4_groups)."""

    def __init__(self, linear: torch.nn.Linear, packed: torch.Tensor, scales_zeros: torch.Tensor) -> None:
        super().__init__(linear)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_zeros", scales_zeros.to(linear.weight.dtype))

    def _product(self, flat: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(flat.to(self.scales_zeros.dtype), self.packed, INT4_GROUP,
                                                 self.scales_zeros)  # fmt: skip

    @staticmethod
    def quantize(weight: torch.Tensor) -> dict[str, torch.Tensor]:
        q, scales_zeros = int4_groups(weight)
        return {"int4": torch._convert_weight_to_int4pack_for_cpu(q, 1), "sz": scales_zeros}

    @classmethod
    def wrap(cls, linear: torch.nn.Linear, saved: dict[str, torch.Tensor]) -> Int4Linear:
        return cls(linear, saved["int4"], saved["sz"])

    @staticmethod
    def fits(linear: torch.nn.Linear) -> bool:
        return linear.in_features % INT4_GROUP == 0 and linear.out_features % 16 == 0


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 of a weight matrix, one float32 scale per row: (int8 weights, scales)."""
    scale = weight.abs().amax(1).float().clamp(min=1e-8) / 127
    out = torch.empty(weight.shape, dtype=torch.int8)
    for start in range(0, weight.shape[0], _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        out[rows] = (weight[rows].float() / scale[rows, None]).round_()
    return out, scale


def int4_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric int4 of a weight matrix in groups of INT4_GROUP inputs: (levels 0..15 as int32
    [rows, inputs], scales and zeros [inputs / group, rows, 2] float32 with w = (q - 8) * scale +
    zero). Each group tries a few trimmings of its range and keeps the one with the least squared
    error (an outlier then costs one clipped weight instead of the resolution of 31 others)."""
    rows, cols = weight.shape
    levels = torch.empty(rows, cols, dtype=torch.int32)
    params = torch.empty(rows, cols // INT4_GROUP, 2)
    for start in range(0, rows, _CHUNK_ROWS):
        part = slice(start, start + _CHUNK_ROWS)
        g = weight[part].float().reshape(-1, INT4_GROUP)
        lo, hi = g.amin(1), g.amax(1)
        best_err = best_q = best_lo = best_scale = None
        for clip in _INT4_CLIPS:
            a, b = lo + clip * (hi - lo), hi - clip * (hi - lo)
            scale = ((b - a) / 15).clamp(min=1e-10)
            q = ((g - a[:, None]) / scale[:, None]).round_().clamp_(0, 15)
            err = ((q * scale[:, None] + a[:, None] - g) ** 2).sum(1)
            if best_err is None:
                best_err, best_q, best_lo, best_scale = err, q, a, scale
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_q = torch.where(better[:, None], q, best_q)
            best_lo = torch.where(better, a, best_lo)
            best_scale = torch.where(better, scale, best_scale)
        levels[part] = best_q.to(torch.int32).reshape(-1, cols)
        params[part] = torch.stack([best_scale, best_lo + 8 * best_scale], -1).reshape(-1, cols // INT4_GROUP, 2)
    return levels, params.transpose(0, 1).contiguous()


@torch.inference_mode()
def quantize(model: torch.nn.Module, bits: int = 8, cache: Path | None = None,
             keep_int8: tuple[str, ...] = INT4_KEEPS_INT8, w8a8: tuple[str, ...] = W8A8_LAYERS,
             int8_prompts: bool = True, input_bits: int | Literal["auto"] | None = "auto") -> None:  # fmt: skip
    """Wrap every Linear layer of `model` in an Int8Linear or (bits=4) an Int4Linear, in place (a
    layer whose shape int4 cannot pack gets int8). With int4 the layers named in `keep_int8` stay
    int8: the output layer, whose error goes straight into the choice of the next token, and, as in
    llama.cpp's Q4_K_M, the attention values and the MLP outputs. Fed 160 tokens of text one at a
    time, the 0.5B then picks the same next token as with bfloat16 weights 92% of the time (int8
    everywhere: 97%, int4 everywhere: 87%), for a decode step of 32 ms (int8: 40 ms; int4: 26 ms).
    The int8 layers named in `w8a8` (the output layer) multiply int8 inputs too, with fbgemm (see
    W8A8Linear): a decode step of 28 ms instead of 32, for 90% instead of 91% same next tokens.
    With `int8_prompts` (and fbgemm), prompts run on int8 weights of every layer with int8 inputs
    (see _LowBitLinear), and the original weights are dropped (the 0.5B: ~0.4 GB less memory).
    int8 inputs are rounded to `input_bits`: "auto" picks 8 or 7 for this CPU and checks it once
    (offline.w8a8.input_bits); None keeps float inputs everywhere (no W8A8 layers, no int8 prompts).
    The low-bit weights are read from `cache` (a safetensors file) when it holds them all, else
    computed (0.5B: ~2 s for int8, ~8 s for int4) and saved there."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if bits not in WEIGHT_BITS:
        raise ValueError(f"weight bits must be one of {WEIGHT_BITS}, not {bits}")
    if input_bits == "auto":
        input_bits = w8a8_input_bits()
    holders = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    stored = safe_open(str(cache), "pt") if cache is not None and cache.is_file() else None
    with stored if stored is not None else nullcontext(), ThreadPoolExecutor(packing_threads()) as pool:
        keys = set(stored.keys()) if stored is not None else set()
        made: dict[str, torch.Tensor] = {}
        packing: deque = deque()  # prompt weights being packed, on the pool's threads (fbgemm packs on one
        # thread and lets go of the GIL: the 0.5B's layers in 0.6 s instead of 1.2)
        for prefix, module in list(model.named_modules()):
            for name, child in list(module.named_children()):
                if not isinstance(child, torch.nn.Linear):
                    continue
                key = f"{prefix}.{name}" if prefix else name
                four = bits == 4 and Int4Linear.fits(child) and not key.endswith(keep_int8)
                kind = Int4Linear if four else Int8Linear
                if kind is Int8Linear and key.endswith(w8a8) and input_bits is not None:
                    kind = W8A8Linear  # the same saved int8 weights
                fields = ("int4", "sz") if kind is Int4Linear else ("int8", "scale")
                # (the output layer reads one position of a prompt: its decode weights do)
                prompts = int8_prompts and kind is not W8A8Linear and input_bits is not None
                if prompts and kind is Int4Linear:
                    fields += ("int8", "scale")  # the prompts' weights
                if all(f"{key}.{f}" in keys for f in fields):
                    # copied: safetensors leaves tensors at any 8-byte offset of the file, and the
                    # int8 kernel crashed (SIGSEGV) on 4+ rows with weights off a 64-byte boundary
                    parts = {f: stored.get_tensor(f"{key}.{f}").clone() for f in fields}
                else:
                    parts = kind.quantize(child.weight)
                    if prompts and kind is Int4Linear:
                        parts |= Int8Linear.quantize(child.weight)
                    made |= {f"{key}.{f}": t for f, t in parts.items()}
                layer = W8A8Linear.wrap(child, parts, input_bits) if kind is W8A8Linear else kind.wrap(child, parts)
                if prompts:
                    drop = holders[id(child.weight)] == 1  # not an output layer tied to the embedding
                    packing.append(pool.submit(layer.use_int8_prompts, parts["int8"], parts["scale"], drop, input_bits))
                    while len(packing) > 2 * packing_threads():  # a few layers' weights in memory at once
                        packing.popleft().result()
                setattr(module, name, layer)
        for job in packing:
            job.result()
        if cache is not None and made:
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            try:
                save_file({**{k: stored.get_tensor(k) for k in keys - made.keys()}, **made}, str(tmp))
                os.replace(tmp, cache)
            except OSError as err:  # a read-only cache: quantize again next time
                log.warning("could not keep the low-bit weights in %s: %s", cache, err)
                tmp.unlink(missing_ok=True)


DECODE_ATTENTION = "offline_decode"  # the attention the offline LLM runs with (see decode_attention)


def decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs):  # fmt: skip
    """Attention for one new token per row as two small float32 products; prompts go to SDPA.

    torch's CPU flash-attention kernel, which SDPA picks, is made for blocks of queries: for one
    query per row it took 250 us a layer at 300 tokens of context and 460 us at 600, against 80 and
    110 us here (1.4 ms against 0.2 ms for three rows at 600), i.e. 4-9 ms of a 35-45 ms decode step
    of the 0.5B. The query heads that share a key/value head are multiplied with it as one group."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)  # fmt: skip
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim).float()
    scores = torch.matmul(q, key.float().transpose(-1, -2)) * (scaling if scaling is not None else dim**-0.5)
    if attention_mask is not None:  # (batch, 1, 1, context): bool (True: attend) or additive
        mask = attention_mask[..., : key.shape[-2]]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    out = torch.matmul(torch.softmax(scores, dim=-1), value.float())
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).to(query.dtype), None


def _register_decode_attention() -> None:
    """Make DECODE_ATTENTION known to transformers (its registries are keyed by name; idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)


def load_llm(path: Path, dtype: torch.dtype = torch.bfloat16, bits: int | None = None) -> OfflineLLM:
    """Load the converted model folder (see weights.llm_path); no network. `bits` 4 or 8: decode
    with low-bit weights (see use_low_bit), kept in the folder after the first time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _register_decode_attention()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                 attn_implementation=DECODE_ATTENTION).eval()  # fmt: skip
    llm = OfflineLLM(model, tokenizer, Path(path))
    if bits is not None:
        llm.use_low_bit(bits)
    return llm
