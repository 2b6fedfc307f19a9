"""Which sources a Deep Search request searches: built in one place for every surface."""

from __future__ import annotations

import threading
from collections.abc import Callable

from assistant.research.sources import Source

__all__ = ["encyclopedia", "research_sources"]

_lock = threading.Lock()
_encyclopedia = None  # one index per process, opened on first use


def encyclopedia(progress: Callable[[int, int], None] | None = None):
    """The bundled encyclopedia, opened once per process (built into the cache folder the first
    time, `progress(done, total)` called as it goes)."""
    global _encyclopedia
    with _lock:
        if _encyclopedia is None:
            from assistant.config import cache_dir
            from assistant.research.encyclopedia import Encyclopedia

            _encyclopedia = Encyclopedia(cache_dir(), progress=progress)
        return _encyclopedia


def research_sources(*, user_id: str, store=None, search_url: str | None = None) -> list[Source]:
    """The sources for one request: the bundled encyclopedia; the user's documents (`store`, for
    `user_id`) and the web (`search_url`, a SearxNG instance) are added where they are set up."""
    sources: list[Source] = [encyclopedia()]
    if store is not None:
        from assistant.research.documents import DocumentSource

        sources.append(DocumentSource(store, store.user(user_id)))
    if search_url:
        from assistant.research.web import WebSource

        sources.append(WebSource(search_url))
    return sources
