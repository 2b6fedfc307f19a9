"""The read path: hybrid recall of a user's memories for a query.

Candidates come from two rankers: cosine similarity over the user's in-memory vector index (see
memory/vectors.py) and FTS5 BM25 over text indexed with speaker and date.
They are fused as cosine + a saturating BM25 bonus + a small recency bonus (rank fusion would
weigh a near-useless keyword hit, such as a speaker's name in every line, like a real one), then
trimmed to `k` and to a token budget. Only the given user's rows are ever read; an instance
sees user-wide memories and its own.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import replace

from assistant.errors import BadInput
from memory.store import Store, count_tokens
from memory.types import Instance, Memory, User, embedding_text

__all__ = ["fts_query", "recall"]

CANDIDATES = 50  # taken from each ranker before fusing
MAX_TERM_DOCS = 2000  # a query term held by more memories than this is not searched by keyword
BM25_WEIGHT = 0.3  # the most a keyword match adds to a cosine (score = cosine + keyword + recency)
BM25_HALF = 5.0  # the BM25 at which the keyword bonus is half of BM25_WEIGHT (saturates, corpus-agnostic)
RECENCY_HALF_LIFE_S = 30 * 86400.0
RECENCY_WEIGHT = 0.05  # a memory said just now gains this much; half as much after RECENCY_HALF_LIFE_S
_STOPWORD_TEXT = (
    "a an and are as at be been but by can could did do does for from had has have he her him his how i if in "
    "into is it its me my of on or our she so than that the their them then there these they this to was we "
    "were what when where which who whom why will with would you your yours am about"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def recall(
    store: Store,
    user: User,
    query: str,
    *,
    instance: Instance | None = None,
    k: int = 10,
    token_budget: int | None = None,
    now: float | None = None,
) -> list[Memory]:
    """The user's `k` memories most relevant to `query`, best first, `score` set.

    With an instance: user-wide memories plus that instance's private ones. Without: all of the
    user's memories (the user's own view, as in `assistant memory search`). `token_budget` stops
    adding memories once their text would exceed it (estimated tokens).
    """
    if k < 1:
        raise BadInput("k must be at least 1")
    if instance is not None and instance.user_id != user.id:
        raise BadInput("that instance belongs to another user")
    query = (query or "").strip()
    if not query:
        return []
    _embed_missing(store, user)
    now = time.time() if now is None else now
    vec = store.embedder.embed_one(query)
    index = store.vector_index(user)
    cosines = index.top(vec, CANDIDATES, instance.id if instance is not None else None)
    match = fts_query(query, store.term_documents)
    bm25 = dict(store.fts_search(user, match, CANDIDATES)) if match else {}
    missing = list(bm25.keys() - cosines.keys())
    cosines.update({mid: c or 0.0 for mid, c in zip(missing, index.cosines_of(missing, vec), strict=True)})
    found = store.get_memories(user, list(cosines))
    ranked: list[Memory] = []
    for mid, memory in found.items():
        if memory.status != "active":
            continue
        if instance is not None and memory.instance_id not in (None, instance.id):
            continue
        b = max(0.0, bm25.get(mid, 0.0))
        recency = math.exp(-max(0.0, now - memory.said_at) * math.log(2) / RECENCY_HALF_LIFE_S)
        score = cosines[mid] + BM25_WEIGHT * b / (b + BM25_HALF) + RECENCY_WEIGHT * recency
        ranked.append(replace(memory, score=score))
    ranked.sort(key=lambda m: (-m.score, -m.id))
    out, used = [], 0
    for memory in ranked[:k]:
        used += count_tokens(memory.text)
        if token_budget is not None and used > token_budget:
            break
        out.append(memory)
    return out


def fts_query(text: str, term_documents: Callable[[list[str]], dict[str, int]] | None = None) -> str:
    """An FTS5 query OR-ing the content words of `text`; '' when there are none.

    Given `term_documents` (term -> how many memories hold it), terms in more than MAX_TERM_DOCS
    memories are left out: BM25 gives them almost no weight, yet scoring their postings is what
    makes a keyword search slow at 100k memories.
    """
    words = []
    for word in re.findall(r"\w+", text.casefold()):
        if (len(word) > 1 or not word.isascii()) and word not in _STOPWORDS and word not in words:
            words.append(word)
    words = words[:24]
    if term_documents is not None and words:
        counts = term_documents(words)
        words = [w for w in words if counts.get(w, 0) <= MAX_TERM_DOCS]
    return " OR ".join(f'"{w}"' for w in words)


def _embed_missing(store: Store, user: User) -> None:
    """Embed memories stored without a vector (imported in bulk, or written by a lighter process)."""
    while rows := store.unembedded(user):
        vectors = store.embedder.embed([embedding_text(r["text"], r["kind"], r["speaker"]) for r in rows])
        store.set_embeddings(user, [r["id"] for r in rows], vectors)
