"""Keep third-party packages from changing this process's thread settings.

Some packages set OMP/BLAS thread counts in `os.environ` or call `torch.set_num_threads` when they
are imported or constructed (tinyocr sets them all to 1). Those settings leak into everything
loaded later, so the offline parts are loaded inside `preserve_threads()`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["THREAD_ENV_VARS", "preserve_threads"]

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


@contextmanager
def preserve_threads() -> Iterator[None]:
    """Restore the thread variables in os.environ and torch's thread counts on exit."""
    import torch

    saved_env = {key: os.environ.get(key) for key in THREAD_ENV_VARS}
    saved_threads = torch.get_num_threads()
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch.get_num_threads() != saved_threads:
            torch.set_num_threads(saved_threads)
