"""The one search-tool interface that every Deep Search source implements.

A source answers a query with passages: short stretches of text (a paragraph or a few sentences)
with where they come from, so that an answer can quote and cite them. Sources never raise on a
query they cannot answer: they return no passages (and log why); a source that is down raises
`SourceUnavailable` with a one-line reason the answer can show ("the web search did not answer in
5 s").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Passage", "Source", "SourceUnavailable"]


class SourceUnavailable(RuntimeError):
    """A source that cannot be searched now (a web search that is down, slow or misconfigured)."""


@dataclass(frozen=True, slots=True)
class Passage:
    source: str  # the source's name: "encyclopedia", "documents" or "web"
    doc_id: str  # the document's stable id within its source (an article title, a document id, a URL)
    title: str  # shown in the list of sources
    url: str  # where a user can read it: a wikipedia.org link, /v1/documents/{id}, or the web page
    text: str  # the passage itself (what is quoted and what evidence is taken from)
    score: float = 0.0  # the source's own relevance (higher is better); comparable within one source only


@runtime_checkable
class Source(Protocol):
    name: str

    def search(self, query: str, k: int = 5) -> list[Passage]:
        """The k passages most relevant to `query`, best first."""
        ...
