"""Which sources a Deep Search request searches: built in one place for every surface."""

from __future__ import annotations

from assistant.research.sources import Source

__all__ = ["research_sources"]


def research_sources(engine, *, user_id: str, store=None, search_url: str | None = None) -> list[Source]:
    """The sources for one request: the bundled encyclopedia (the engine's, opened once per engine:
    `engine.encyclopedia()`); the user's documents (`store`, for `user_id`) and the web
    (`search_url`, a SearxNG instance) are added where they are set up."""
    sources: list[Source] = [engine.encyclopedia()]
    if store is not None:
        from assistant.research.documents import DocumentSource

        sources.append(DocumentSource(store, store.user(user_id)))
    if search_url:
        from assistant.research.web import WebSource

        sources.append(WebSource(search_url))
    return sources
