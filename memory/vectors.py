"""One user's embedded memories in memory: a float32 unit-vector matrix, updated in place as rows change.

The store keeps one `VectorIndex` per user and feeds it only the rows changed since it was last
refreshed (every memory write stamps its rows with the user's new `mem_version`), so a write never
makes the next search re-read the user's whole matrix. A search is one exact float32
matrix-vector product up to SKETCH_MIN rows. Above, the scan reads memory bandwidth (154 MB of float32
at 100k rows: 15 ms on a loaded core), so `top` first scores a sketch, each row projected on the
SKETCH_DIM leading principal axes of the user's vectors (a third of the bytes, one float32 BLAS
product), and re-scores the best SKETCH_CANDIDATES exactly: the cosines it returns are exact, only
the choice of candidates is approximate (bench/memory.py checks it against the full scan). (A
bfloat16 first pass was tried before: 0.8-0.98x of the plain scan on the shared 2 cores; float16,
int8 in numpy and ONNX Runtime's MatMulInteger were 2-20x slower than float32 BLAS here.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from memory.embed import DIM

__all__ = ["VectorIndex"]

REMOVED = -1  # instance id of a row whose memory left the index (its slot is reused on compaction)
SKETCH_MIN = 20_000  # rows in use from which `top` scans the sketch first
SKETCH_DIM = 128  # principal axes kept in the sketch (of DIM)
SKETCH_CANDIDATES = 1000  # sketch hits re-scored exactly (at least 8x the rows asked for)
SKETCH_SAMPLE = 20_000  # rows the principal axes are computed from


@dataclass(frozen=True, slots=True)
class _Arrays:
    """What one search reads: published whole, so a concurrent update never tears it."""

    count: int  # rows in use (live and removed)
    ids: np.ndarray  # int64 (capacity,)
    instance_ids: np.ndarray  # int64 (capacity,); 0: user-wide, REMOVED: gone
    matrix: np.ndarray  # float32 (capacity, DIM), unit rows
    sketch: np.ndarray | None = None  # float32 (capacity, SKETCH_DIM): matrix @ axes
    axes: np.ndarray | None = None  # float32 (DIM, SKETCH_DIM), orthonormal columns


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
            ids, inst, matrix, count, sketch = a.ids, a.instance_ids, a.matrix, a.count, a.sketch
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
                        sketch = None if sketch is None else _grown_sketch(sketch, len(ids), count)
                    row, count = count, count + 1
                    self._rows[mid] = row
                    ids[row] = mid
                matrix[row] = np.frombuffer(blob, np.float32)
                if sketch is not None:
                    sketch[row] = matrix[row] @ a.axes
                inst[row] = instance_id
            self._arrays = _Arrays(count, ids, inst, matrix, sketch, a.axes if sketch is not None else None)
            if self._removed > max(1024, count // 4):
                self._compact()
            elif self._arrays.sketch is None and count >= SKETCH_MIN:
                self._arrays = _sketched(self._arrays)

    def _compact(self) -> None:
        arrays = self._arrays
        keep = np.flatnonzero(arrays.instance_ids[: arrays.count] != REMOVED)
        ids, inst, matrix = arrays.ids[keep], arrays.instance_ids[keep], arrays.matrix[keep]
        self._rows = {int(mid): row for row, mid in enumerate(ids)}
        self._removed = 0
        arrays = _Arrays(len(keep), ids, inst, matrix)
        self._arrays = _sketched(arrays) if len(keep) >= SKETCH_MIN else arrays

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
        wanted = max(SKETCH_CANDIDATES, 8 * n)
        if arrays.sketch is not None and arrays.count >= SKETCH_MIN and wanted < arrays.count // 4:
            rough = arrays.sketch[: arrays.count] @ (vec @ arrays.axes)
            rough[~visible] = -np.inf
            rows = np.argpartition(-rough, wanted - 1)[:wanted]
            rows = rows[visible[rows]]
            sims = arrays.matrix[rows] @ vec
        else:
            rows = np.flatnonzero(visible)
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


def _sketched(arrays: _Arrays) -> _Arrays:
    """`arrays` with a sketch: the rows projected on the SKETCH_DIM leading principal axes (of the
    uncentred second moment, which keeps inner products) of a sample of the rows in use."""
    count = arrays.count
    sample = arrays.matrix[: count : max(1, count // SKETCH_SAMPLE)]
    _, vectors = np.linalg.eigh(sample.T @ sample)  # ascending eigenvalues
    axes = np.ascontiguousarray(vectors[:, ::-1][:, :SKETCH_DIM], np.float32)
    sketch = np.zeros((len(arrays.ids), SKETCH_DIM), np.float32)
    for lo in range(0, count, 8192):  # in blocks: no second full-size temporary
        hi = min(count, lo + 8192)
        sketch[lo:hi] = arrays.matrix[lo:hi] @ axes
    return _Arrays(count, arrays.ids, arrays.instance_ids, arrays.matrix, sketch, axes)


def _grown_sketch(sketch: np.ndarray, capacity: int, count: int) -> np.ndarray:
    new = np.zeros((capacity, sketch.shape[1]), np.float32)
    new[:count] = sketch[:count]
    return new
