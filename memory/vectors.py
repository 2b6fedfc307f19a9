"""One user's embedded memories in memory: a float32 unit-vector matrix, updated in place as rows change.

The store keeps one `VectorIndex` per user and feeds it only the rows changed since it was last
refreshed (every memory write stamps its rows with the user's new `mem_version`), so a write never
makes the next search re-read the user's whole matrix. A search is one exact float32
matrix-vector product. (A bfloat16 first pass with exact re-scoring was tried: 2x faster on a quiet
machine, but 0.8-0.98x of the plain scan in every bench/memory.py run on the shared 2 cores.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from memory.embed import DIM

__all__ = ["VectorIndex"]

REMOVED = -1  # instance id of a row whose memory left the index (its slot is reused on compaction)


@dataclass(frozen=True, slots=True)
class _Arrays:
    """What one search reads: published whole, so a concurrent update never tears it."""

    count: int  # rows in use (live and removed)
    ids: np.ndarray  # int64 (capacity,)
    instance_ids: np.ndarray  # int64 (capacity,); 0: user-wide, REMOVED: gone
    matrix: np.ndarray  # float32 (capacity, DIM), unit rows


class VectorIndex:
    """The active, embedded memories of one user. Reads are lock-free; `apply` is serialised by the store."""

    def __init__(self, version: int, rows: Iterable[tuple[int, int, bytes]] = ()) -> None:
        self.version = version  # the user's mem_version this index reflects
        self._rows: dict[int, int] = {}  # memory id -> row
        self._removed = 0
        self._arrays = _Arrays(0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, DIM), np.float32))
        self._write = threading.Lock()
        self.apply([(mid, "active", instance_id, blob) for mid, instance_id, blob in rows])

    def __len__(self) -> int:
        return len(self._rows)

    # ------------------------------------------------------------------ updates
    def apply(self, changes: Iterable[tuple[int, str, int, bytes | None]]) -> None:
        """Bring rows up to date: (memory id, status, instance id or 0, embedding blob or None)."""
        with self._write:
            a = self._arrays
            ids, inst, matrix, count = a.ids, a.instance_ids, a.matrix, a.count
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
                        ids, inst, matrix = _grown(ids, inst, matrix, count)
                    row, count = count, count + 1
                    self._rows[mid] = row
                    ids[row] = mid
                matrix[row] = np.frombuffer(blob, np.float32)
                inst[row] = instance_id
            self._arrays = _Arrays(count, ids, inst, matrix)
            if self._removed > max(1024, count // 4):
                self._compact()

    def _compact(self) -> None:
        arrays = self._arrays
        keep = np.flatnonzero(arrays.instance_ids[: arrays.count] != REMOVED)
        ids, inst, matrix = arrays.ids[keep], arrays.instance_ids[keep], arrays.matrix[keep]
        self._rows = {int(mid): row for row, mid in enumerate(ids)}
        self._removed = 0
        self._arrays = _Arrays(len(keep), ids, inst, matrix)

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
        rows = np.flatnonzero(_visible(arrays, instance_id))
        sims = (arrays.matrix[: arrays.count] @ vec)[rows]
        if len(rows) > n:
            best = np.argpartition(-sims, n - 1)[:n]
            rows, sims = rows[best], sims[best]
        return {int(arrays.ids[r]): float(s) for r, s in zip(rows, sims, strict=True)}

    def cosines_of(self, memory_ids: list[int], vec: np.ndarray) -> list[float | None]:
        """`cosine` of each of these memories (None for one not in the index)."""
        return [self.cosine(m, vec) for m in memory_ids]

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


def _grown(ids, inst, matrix, count: int):
    """Buffers with room for about twice as many rows, holding the first `count`."""
    capacity = max(1024, 2 * len(ids))
    new_ids = np.zeros(capacity, np.int64)
    new_inst = np.full(capacity, REMOVED, np.int64)
    new_matrix = np.zeros((capacity, DIM), np.float32)
    new_ids[:count], new_inst[:count], new_matrix[:count] = ids[:count], inst[:count], matrix[:count]
    return new_ids, new_inst, new_matrix
