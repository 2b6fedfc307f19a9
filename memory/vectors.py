"""One user's embedded memories in memory: a float32 unit-vector matrix, updated in place as rows change.

The store keeps one `VectorIndex` per user and feeds it only the rows changed since it was last
refreshed (every memory write stamps its rows with the user's new `mem_version`), so a write never
makes the next search re-read the user's whole matrix. Searching a large matrix first scans a
bfloat16 copy (half the bytes of float32; ~2.3 ms instead of ~5 ms at 100k rows on 2 cores), then
re-scores the best few hundred rows exactly in float32, so the result is the exact float32 ranking
whenever the true best rows are among them (bfloat16 dot products of unit vectors err by < 0.002).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from memory.embed import DIM

__all__ = ["COARSE_MIN_ROWS", "VectorIndex"]

COARSE_MIN_ROWS = 20_000  # from this many rows on, a bfloat16 scan picks the rows to score exactly
COARSE_FACTOR = 4  # the bfloat16 scan keeps this many times the rows asked for
REMOVED = -1  # instance id of a row whose memory left the index (its slot is reused on compaction)


@dataclass(frozen=True, slots=True)
class _Arrays:
    """What one search reads: published whole, so a concurrent update never tears it."""

    count: int  # rows in use (live and removed)
    ids: np.ndarray  # int64 (capacity,)
    instance_ids: np.ndarray  # int64 (capacity,); 0: user-wide, REMOVED: gone
    matrix: np.ndarray  # float32 (capacity, DIM), unit rows
    coarse: object | None  # torch bfloat16 (capacity, DIM) copy of matrix, once count >= COARSE_MIN_ROWS


class VectorIndex:
    """The active, embedded memories of one user. Reads are lock-free; `apply` is serialised by the store."""

    def __init__(self, version: int, rows: Iterable[tuple[int, int, bytes]] = ()) -> None:
        self.version = version  # the user's mem_version this index reflects
        self._rows: dict[int, int] = {}  # memory id -> row
        self._removed = 0
        self._arrays = _Arrays(0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), None)
        self._write = threading.Lock()
        self.apply([(mid, "active", instance_id, blob) for mid, instance_id, blob in rows])

    def __len__(self) -> int:
        return len(self._rows)

    # ------------------------------------------------------------------ updates
    def apply(self, changes: Iterable[tuple[int, str, int, bytes | None]]) -> None:
        """Bring rows up to date: (memory id, status, instance id or 0, embedding blob or None)."""
        with self._write:
            a = self._arrays
            ids, inst, matrix, coarse, count = a.ids, a.instance_ids, a.matrix, a.coarse, a.count
            written = []
            for mid, status, instance_id, blob in changes:
                row = self._rows.get(mid)
                if status != "active" or blob is None:
                    if row is not None:
                        inst[row] = REMOVED
                        del self._rows[mid]
                        self._removed += 1
                    continue
                if row is None:
                    if count == len(ids):
                        ids, inst, matrix, coarse = _grown(ids, inst, matrix, coarse, count)
                    row, count = count, count + 1
                    self._rows[mid] = row
                    ids[row] = mid
                matrix[row] = np.frombuffer(blob, np.float32)
                inst[row] = instance_id
                written.append(row)
            if coarse is not None and written:
                coarse[written] = _torch().from_numpy(matrix[written]).to(coarse.dtype)
            elif coarse is None and count >= COARSE_MIN_ROWS:
                coarse = _bfloat16(matrix)
            self._arrays = _Arrays(count, ids, inst, matrix, coarse)
            if self._removed > max(1024, count // 4):
                self._compact()

    def _compact(self) -> None:
        arrays = self._arrays
        keep = np.flatnonzero(arrays.instance_ids[: arrays.count] != REMOVED)
        ids, inst, matrix = arrays.ids[keep], arrays.instance_ids[keep], arrays.matrix[keep]
        coarse = _bfloat16(matrix) if len(keep) >= COARSE_MIN_ROWS else None
        self._rows = {int(mid): row for row, mid in enumerate(ids)}
        self._removed = 0
        self._arrays = _Arrays(len(keep), ids, inst, matrix, coarse)

    # ------------------------------------------------------------------ reads
    def cosines(self, vec: np.ndarray, instance_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(memory ids, exact cosines) of every row visible to `instance_id` (None: every row;
        0: user-wide rows only; an id: user-wide rows and that instance's)."""
        arrays = self._arrays
        visible = _visible(arrays, instance_id)
        return arrays.ids[: arrays.count][visible], (arrays.matrix[: arrays.count] @ vec)[visible]

    def top(self, vec: np.ndarray, n: int, instance_id: int | None = None) -> dict[int, float]:
        """{memory id: cosine} of the `n` rows most similar to the unit vector `vec` that
        `instance_id` may see (as in `cosines`), by exact float32 cosine."""
        arrays = self._arrays
        visible = _visible(arrays, instance_id)
        if arrays.coarse is not None and arrays.count > COARSE_FACTOR * n:
            torch = _torch()
            rough = arrays.coarse[: arrays.count] @ torch.tensor(vec, dtype=torch.bfloat16)
            rough = _bfloat16_to_numpy(rough)  # numpy from here: small steps, no thread hand-offs
            rough[~visible] = -np.inf
            rows = np.argpartition(-rough, COARSE_FACTOR * n - 1)[: COARSE_FACTOR * n]
            rows = rows[visible[rows]]
            sims = arrays.matrix[rows] @ vec
        else:
            rows = np.flatnonzero(visible)
            sims = (arrays.matrix[: arrays.count] @ vec)[rows]
        if len(rows) > n:
            best = np.argpartition(-sims, n - 1)[:n]
            rows, sims = rows[best], sims[best]
        return {int(arrays.ids[r]): float(s) for r, s in zip(rows, sims, strict=True)}

    def cosine(self, memory_id: int, vec: np.ndarray) -> float | None:
        """The cosine of one memory to `vec`, or None if it is not in the index."""
        arrays = self._arrays
        row = self._rows.get(memory_id)
        if row is None or row >= arrays.count:
            return None
        return float(arrays.matrix[row] @ vec)


def _visible(arrays: _Arrays, instance_id: int | None) -> np.ndarray:
    inst = arrays.instance_ids[: arrays.count]
    if instance_id is None:
        return inst != REMOVED
    return (inst == 0) | (inst == instance_id) if instance_id else inst == 0


def _grown(ids, inst, matrix, coarse, count: int):
    """Buffers with room for about twice as many rows, holding the first `count`."""
    capacity = max(1024, 2 * len(ids))
    new_ids = np.zeros(capacity, np.int64)
    new_inst = np.full(capacity, REMOVED, np.int64)
    new_matrix = np.zeros((capacity, DIM), np.float32)
    new_ids[:count], new_inst[:count], new_matrix[:count] = ids[:count], inst[:count], matrix[:count]
    new_coarse = None
    if coarse is not None:
        torch = _torch()
        new_coarse = torch.zeros((capacity, DIM), dtype=torch.bfloat16)
        new_coarse[:count] = coarse[:count]
    return new_ids, new_inst, new_matrix, new_coarse


def _bfloat16_to_numpy(tensor) -> np.ndarray:
    """float32 values of a 1-D bfloat16 tensor (bfloat16 is the top half of a float32's bits)."""
    bits = tensor.view(_torch().int16).numpy().astype(np.int32) << 16
    return bits.view(np.float32)


def _bfloat16(matrix: np.ndarray):
    torch = _torch()
    return torch.from_numpy(matrix).to(torch.bfloat16)


def _torch():
    import torch  # only large indexes need it (for the bfloat16 scan)

    return torch
