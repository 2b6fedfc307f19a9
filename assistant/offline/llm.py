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
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from assistant.backends.batching import KVBatch, sample_token

__all__ = ["Generation", "Int8Linear", "OfflineLLM", "int8_rows", "load_llm", "quantize_int8"]

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
        self.path = path  # the model folder, where int8 weights are kept
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

    def tokens(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _template(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
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
    ) -> Generation:
        """Prefill `ids` and sample the first token. The KV cache of the longest prefix seen before is
        reused, and that of `ids[:prefix_len]` (the system prompt) is kept for later turns."""
        generator = None
        if temperature > 0:
            generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        gen = Generation(len(ids), max_new_tokens, temperature, top_p, generator)
        cache, done = self._reusable(ids)
        gen.prefilled = len(ids) - done
        out = self.model(
            input_ids=torch.tensor([ids[done:]]),
            position_ids=torch.arange(done, len(ids)).unsqueeze(0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        gen.cache = out.past_key_values
        if prefix_len > done:
            self._keep(tuple(ids[:prefix_len]), gen.cache)
        self._accept(gen, out.logits[0, -1])
        return gen

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

    def use_int8(self) -> None:
        """Decode with int8 weights from now on (see Int8Linear); kept prompt caches stay valid,
        since prompts still run on the original weights."""
        if not any(isinstance(m, Int8Linear) for m in self.model.modules()):
            quantize_int8(self.model, self.path / INT8_FILE if self.path is not None else None)

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
        """Advance every unfinished generation by one token, all in one forward pass."""
        rows = [g for g in gens if not g.finished]
        self._batch.sync(rows)
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
_INT8_CHUNK_ROWS = 8192  # rows quantized at a time (bounds the float32 temporaries)


class Int8Linear(torch.nn.Module):
    """A Linear layer that decodes with int8 copies of its weights (one scale per output row).

    Decoding one token per row is bound by reading the weights, so int8 (half of bfloat16's bytes)
    makes a decode step of the 0.5B model ~1.8x faster on 2 cores. A prompt (many positions) is
    bound by arithmetic instead: it keeps the original weights and their faster bfloat16 kernels.
    Activations are never quantized, so a row's result does not depend on the rest of its batch
    (torch's dynamic quantization scales a whole batch at once)."""

    def __init__(self, linear: torch.nn.Linear, weight_int8: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale.to(linear.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 1 and x.shape[-2] > 1:  # a prompt
            return self.linear(x)
        flat = x.reshape(-1, x.shape[-1])
        out = torch._weight_int8pack_mm(flat, self.weight_int8, self.scale)
        if self.linear.bias is not None:
            out = out + self.linear.bias
        return out.reshape(*x.shape[:-1], self.linear.out_features)


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 of a weight matrix, one float32 scale per row: (int8 weights, scales)."""
    scale = weight.abs().amax(1).float().clamp(min=1e-8) / 127
    out = torch.empty(weight.shape, dtype=torch.int8)
    for start in range(0, weight.shape[0], _INT8_CHUNK_ROWS):
        rows = slice(start, start + _INT8_CHUNK_ROWS)
        out[rows] = (weight[rows].float() / scale[rows, None]).round_()
    return out, scale


@torch.inference_mode()
def quantize_int8(model: torch.nn.Module, cache: Path | None = None) -> None:
    """Wrap every Linear layer of `model` in an Int8Linear, in place. The int8 weights are read from
    `cache` (a safetensors file) when it exists, else computed (~1-4 s for 0.5B) and saved there."""
    from safetensors.torch import load_file, save_file

    saved = load_file(str(cache)) if cache is not None and cache.is_file() else {}
    made: dict[str, torch.Tensor] = {}
    for prefix, module in list(model.named_modules()):
        for name, child in list(module.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            key = f"{prefix}.{name}" if prefix else name
            if f"{key}.int8" in saved:
                weight, scale = saved[f"{key}.int8"], saved[f"{key}.scale"]
            else:
                weight, scale = int8_rows(child.weight)
                made |= {f"{key}.int8": weight, f"{key}.scale": scale}
            setattr(module, name, Int8Linear(child, weight, scale))
    if cache is not None and made and not saved:
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        try:
            save_file(made, str(tmp))
            os.replace(tmp, cache)
        except OSError as err:  # a read-only cache: quantize again next time
            log.warning("could not keep the int8 weights in %s: %s", cache, err)
            tmp.unlink(missing_ok=True)


def load_llm(path: Path, dtype: torch.dtype = torch.bfloat16, int8: bool = False) -> OfflineLLM:
    """Load the converted model folder (see weights.llm_path); no network. `int8`: decode with int8
    weights (see Int8Linear), kept in the folder after the first time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True).eval()
    llm = OfflineLLM(model, tokenizer, Path(path))
    if int8:
        llm.use_int8()
    return llm
