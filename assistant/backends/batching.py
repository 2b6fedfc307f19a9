"""Shared pieces of our decode loops: a batch of rows over one left-padded KV cache, and sampling.

Each row (a turn's generation) owns its KV cache while it decodes alone. When the set of rows that
decode together changes, `KVBatch.sync` hands the staying rows their cache rows back and merges
the new set into one cache, left-padded to the longest, with an attention mask; between changes
every step reuses it. Positions are given explicitly per row, so padding never shifts them.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["KVBatch", "sample_token"]


class KVBatch:
    """Rows decoding together. A row is any object with a `cache` attribute (a DynamicCache)."""

    def __init__(self, config, n_layers: int, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.n_layers = n_layers
        self.device = device
        self.rows: list[Any] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # (B, T), 1 = real token

    def sync(self, wanted: list[Any]) -> None:
        """Make the batch hold exactly `wanted` (order kept); rebuild the cache only on change.
        Rows that leave lose their cache rows (they are finished or cancelled)."""
        if [id(r) for r in self.rows] == [id(r) for r in wanted]:
            return
        staying = {id(r) for r in wanted}
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
