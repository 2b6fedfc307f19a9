"""Work that runs beside the model's decode loop: one thread, a bounded number of jobs in flight.

The offline backend's voice (Piper) and in-turn speech recognition used to run inside the engine's
step, so every turn's next token waited for one turn's sentence to be spoken or its speech to be
heard. Now a step hands the job to a `Beside` worker and goes on decoding; a later step collects
the result. `full()` is the back-pressure: a stream whose jobs would overflow the queue keeps its
text for a later step instead of queueing without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

__all__ = ["Beside"]


class Beside:
    """One worker thread; at most `max_jobs` jobs queued or running."""

    def __init__(self, name: str, max_jobs: int = 8) -> None:
        self.max_jobs = max_jobs
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._jobs: set[Future] = set()

    def full(self) -> bool:
        with self._lock:
            return len(self._jobs) >= self.max_jobs

    def submit(self, fn: Callable, *args) -> Future:
        """Queue fn(*args); callers check `full()` first (a full queue still takes it: never blocks)."""
        future = self._pool.submit(fn, *args)
        with self._lock:
            self._jobs.add(future)
        future.add_done_callback(self._done)
        return future

    def wait_any(self, futures: list[Future], timeout_s: float) -> None:
        """Block until one of `futures` is done or `timeout_s` has passed (a step with nothing to
        decode waits here instead of spinning against the worker for the CPU)."""
        if futures:
            wait(futures, timeout=timeout_s, return_when="FIRST_COMPLETED")

    def _done(self, future: Future) -> None:
        with self._lock:
            self._jobs.discard(future)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
