"""Shared pieces of our decode loops: a batch of rows over one left-padded KV cache, and sampling.

Each row (a turn's generation) owns its KV cache while it decodes alone. When the set of rows that
decode together changes, `KVBatch.sync` hands the staying rows their cache rows back and merges
the new set into one cache, left-padded to the longest, with an attention mask; between changes
every step reuses it. Positions are given explicitly per row, so padding never shifts them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["KVBatch", "group_indices", "sample_codes", "sample_token", "sample_tokens"]


class KVBatch:
    """Rows decoding together. A row is any object with a `cache` attribute (a DynamicCache)."""

    def __init__(self, config, n_layers: int, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.n_layers = n_layers
        self.device = device
        self.rows: list[Any] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # (B, T), 1 = real token

    def sync(self, wanted: list[Any], keep: list[Any] = ()) -> None:
        """Make the batch hold exactly `wanted` (order kept); rebuild the cache only on change.
        Rows that leave lose their cache rows (they are finished or cancelled), except those in
        `keep` (paused: they take their cache rows with them and may come back later)."""
        if [id(r) for r in self.rows] == [id(r) for r in wanted]:
            return
        staying = {id(r) for r in wanted} | {id(r) for r in keep}
        for i, r in enumerate(self.rows):
            r.cache = self._row_cache(i) if id(r) in staying else None
        self.rows = list(wanted)
        if not wanted:
            self.cache, self.mask = None, None
            return
        lengths = [r.cache.get_seq_length() for r in wanted]
        total = max(lengths)
        if len(wanted) == 1:
            self.cache = wanted[0].cache
        else:
            from transformers import DynamicCache

            self.cache = DynamicCache(config=self.config)
            for layer in range(self.n_layers):
                ks, vs = [], []
                for r, n in zip(wanted, lengths, strict=True):
                    lay = r.cache.layers[layer]
                    ks.append(torch.nn.functional.pad(lay.keys, (0, 0, total - n, 0)))
                    vs.append(torch.nn.functional.pad(lay.values, (0, 0, total - n, 0)))
                self.cache.update(torch.cat(ks), torch.cat(vs), layer)
        self.mask = torch.zeros(len(wanted), total, dtype=torch.long, device=self.device)
        for i, n in enumerate(lengths):
            self.mask[i, total - n:] = 1
        for r in wanted:
            r.cache = None

    def grow(self) -> torch.Tensor:
        """The attention mask for the next step (one more real token per row)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        return self.mask

    @contextmanager
    def undone_on_error(self) -> Iterator[None]:
        """Around a step (`grow` and the forward pass): if it raises, the cache and the mask are put
        back as they were before it. A forward that fails after some layers wrote their new keys
        and values leaves the layers of unequal lengths (and the mask one longer), and then no row's
        cache could be taken out again (each turn's retry alone would fail too). Free when nothing
        fails: a DynamicCache layer grows by concatenation into new tensors, never in place."""
        length = self.cache.get_seq_length() if self.cache is not None else 0
        mask = self.mask
        try:
            yield
        except BaseException:
            self.mask = mask
            for lay in self.cache.layers if self.cache is not None else ():
                if getattr(lay, "keys", None) is not None and lay.keys.dim() == 4 and lay.keys.shape[-2] > length:
                    lay.keys = lay.keys[..., :length, :]
                    lay.values = lay.values[..., :length, :]
            raise

    def _row_cache(self, row: int):
        if len(self.rows) == 1:
            return self.cache
        from transformers import DynamicCache

        keep = self.mask[row].bool()
        cache = DynamicCache(config=self.config)
        for layer in range(self.n_layers):
            lay = self.cache.layers[layer]
            cache.update(lay.keys[row:row + 1, :, keep], lay.values[row:row + 1, :, keep], layer)
        return cache


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0, else nucleus sampling from a (vocab,) logits vector."""
    logits = logits.float().cpu()
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def sample_tokens(logits: torch.Tensor, temperatures: list[float], top_ps: list[float],
                  generators: list[torch.Generator | None]) -> list[int]:
    """One token per row of (rows, vocab) logits, computed where the logits are (one transfer back).

    Greedy rows take the argmax; the others are nucleus-sampled by the inverse CDF with one uniform
    number drawn from the row's own generator, so a seeded turn is reproducible and does not depend
    on the other rows of its batch. (Per-row `torch.multinomial` on the CPU over a 152k vocabulary
    took several ms a row: most of a decode step at 16 rows.)"""
    logits = logits.float()
    vocab = logits.shape[-1]
    greedy = [t <= 0 for t in temperatures]
    if all(greedy):
        return logits.argmax(-1).tolist()
    device = logits.device
    temps = torch.tensor([1.0 if g else t for g, t in zip(greedy, temperatures, strict=True)], device=device)
    probs = torch.softmax(logits / temps.unsqueeze(1), dim=-1)
    tops = [1.0 if g else p for g, p in zip(greedy, top_ps, strict=True)]
    order = None
    if min(tops) < 1.0:
        probs, order = torch.sort(probs, dim=-1, descending=True)
        top = torch.tensor(tops, device=device).unsqueeze(1)
        probs = probs * (torch.cumsum(probs, -1) - probs < top)
    cdf = torch.cumsum(probs, -1)
    u = torch.cat([torch.zeros(1) if g else torch.rand(1, generator=gen)
                   for g, gen in zip(greedy, generators, strict=True)]).to(device)
    tokens = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).clamp_max(vocab - 1)
    if order is not None:
        tokens = order.gather(1, tokens)
    tokens = tokens.squeeze(1)
    if any(greedy):
        tokens = torch.where(torch.tensor(greedy, device=device), logits.argmax(-1), tokens)
    return tokens.tolist()


def sample_codes(logits: torch.Tensor, seen: torch.Tensor, banned: list[int], temperatures: list[float],
                 top_ks: list[int], top_ps: list[float], penalties: list[float],
                 generators: list[torch.Generator | None]) -> list[int]:
    """One codec code per row of (rows, vocab) logits, as Qwen's talker samples them (repetition
    penalty on the codes a row has `seen` (rows, vocab) bool, `banned` codes never, temperature,
    top-k, top-p), all rows in one pass of tensor ops. Each row draws one uniform number from its
    own generator (inverse CDF), so a seeded turn makes the same codes alone or in any batch.
    Computed where the logits are; only the top k of each row is sorted (topk sorts them).
    (One row at a time, the sort and multinomial per row were a fixed cost per code and per turn.)"""
    logits = logits.float()
    device, vocab = logits.device, logits.shape[-1]
    pen = torch.tensor(penalties, device=device).unsqueeze(1)
    logits = torch.where(seen.to(device), torch.where(logits < 0, logits * pen, logits / pen), logits)
    if banned:
        logits[:, banned] = float("-inf")
    logits = logits / torch.tensor(temperatures, device=device).unsqueeze(1)
    ks = torch.tensor([min(k, vocab) for k in top_ks], device=device)
    # only the top k can be drawn: softmax, top-p and the draw over (rows, k), already sorted
    top, order = torch.topk(logits, int(ks.max()), dim=-1)
    top = top.masked_fill(torch.arange(top.shape[1], device=device) >= ks.unsqueeze(1), float("-inf"))
    # softmax by hand (top is sorted: column 0 is the row's max): torch.softmax splits even (8, 40)
    # over its threads, and on a loaded 2-core machine that took 17 ms a call instead of 15 us
    probs = torch.exp(top - top[:, :1])
    probs = probs / probs.sum(-1, keepdim=True)
    probs = probs * (torch.cumsum(probs, -1) - probs < torch.tensor(top_ps, device=device).unsqueeze(1))
    cdf = torch.cumsum(probs, -1)
    u = torch.cat([torch.rand(1, generator=gen) for gen in generators]).to(device)
    picks = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).clamp_max(top.shape[1] - 1)
    return order.gather(1, picks).squeeze(1).tolist()  # the one transfer back: (rows,) codes


def group_indices(items: list, key) -> dict:
    """The indices of `items` grouped by `key(item)`, in order (items that can share one call)."""
    out: dict = {}
    for i, item in enumerate(items):
        out.setdefault(key(item), []).append(i)
    return out
