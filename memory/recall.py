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
from datetime import UTC, datetime

from assistant.errors import BadInput
from memory.store import Store, count_tokens
from memory.types import Instance, Memory, User, embedding_text

__all__ = ["as_said_by", "fts_query", "recall"]

CANDIDATES = 50  # taken from each ranker before fusing
MAX_TERM_DOCS = 2000  # a query term held by more memories than this is not searched by keyword
BM25_WEIGHT = 0.3  # the most a keyword match adds to a cosine (score = cosine + keyword + recency)
BM25_HALF = 5.0  # the BM25 at which the keyword bonus is half of BM25_WEIGHT (saturates, corpus-agnostic)
RECENCY_HALF_LIFE_S = 30 * 86400.0
RECENCY_WEIGHT = 0.05  # a memory said just now gains this much; half as much after RECENCY_HALF_LIFE_S
SPEAKER_WEIGHT = 0.08  # a line said by the speaker the query names gains this
DATE_WEIGHT = 0.1  # a line said in the month (or on the day) the query names gains this
SMALL_TALK_WORDS = 5  # a line with fewer content words than this says little ("Enjoy it while it lasts.")
SMALL_TALK_WEIGHT = 0.2  # what a line with no content word loses (less for more words)
HOP_SEEDS = 2  # the best first hits whose rarest words are searched again (multi-hop)
HOP_WORDS = 6  # of each such hit's words, how many are looked up for rarity (names first, then the longest)
HOP_TERMS = 2  # how many of each one's rarest words (names first)
HOP_LINES = 2  # lines taken from each such search
HOP_MAX_DOCS = 40  # a word held by more memories than this is not rare enough to follow
HOP_INHERIT = 0.8  # a second-hop line scores this share of the first hit's score (if it has no better own)
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
    speakers = store.speakers_among(user, _names(query))
    vec = store.embedder.embed_one(as_said_by(query, speakers[0]) if speakers else query)
    index = store.vector_index(user)
    visible = instance.id if instance is not None else None
    cosines = index.top(vec, CANDIDATES * (2 if speakers else 1), visible)
    match = fts_query(query, store.term_documents)
    bm25 = dict(store.fts_search(user, match, CANDIDATES)) if match else {}
    score = _Scorer(store, user, index, vec, cosines, bm25, instance, now, set(speakers), _dates_named(query))
    ranked = score({})
    seeds = [replace(score.found[mid], score=value) for value, mid in ranked[:HOP_SEEDS]]
    hops = _hops(store, user, seeds, query, speakers)
    if hops:  # a second keyword search on the rarest words of the best first hits (multi-hop)
        ranked = score(hops)
    out, used, seen = [], 0, set()
    for value, mid in ranked:
        memory = score.found[mid]
        line = (memory.speaker, " ".join(memory.text.casefold().split()))
        if line in seen:  # a line said again comes back once
            continue
        seen.add(line)
        used += count_tokens(memory.text)
        if len(out) == k or (token_budget is not None and used > token_budget):
            break
        out.append(replace(memory, score=value))
    return out


class _Scorer:
    """Fuses the rankers' candidates into one ranking (see the module's docstring); each candidate is
    fetched and scored once, the second hop only adds to them."""

    def __init__(self, store, user, index, vec, cosines, bm25, instance, now, speakers, when) -> None:
        self.store, self.user, self.index, self.vec, self.cosines = store, user, index, vec, cosines
        self.bm25, self.instance, self.now, self.speakers, self.when = bm25, instance, now, speakers, when
        self.found: dict[int, Memory] = {}
        self.values: dict[int, float] = {}  # memory id -> its score before any second hop

    def __call__(self, hop: dict[int, float]) -> list[tuple[float, int]]:
        """(score, memory id), best first."""
        unscored = list((self.bm25.keys() | hop.keys()) - self.cosines.keys())  # one query on PostgreSQL's HNSW
        scored = self.index.cosines_of(unscored, self.vec)
        self.cosines.update({mid: c or 0.0 for mid, c in zip(unscored, scored, strict=True)})
        missing = [mid for mid in self.cosines if mid not in self.found]
        self.found.update(self.store.get_memories(self.user, missing))
        for mid in missing:
            memory = self.found.get(mid)
            if memory is None or memory.status != "active":
                continue
            if self.instance is not None and memory.instance_id not in (None, self.instance.id):
                continue
            self.values[mid] = self._value(mid, memory)
        ranked = [(max(value, hop.get(mid, value)), mid) for mid, value in self.values.items()]
        ranked.sort(key=lambda pair: (-pair[0], -pair[1]))
        return ranked

    def _value(self, mid: int, memory: Memory) -> float:
        b = max(0.0, self.bm25.get(mid, 0.0))
        recency = math.exp(-max(0.0, self.now - memory.said_at) * math.log(2) / RECENCY_HALF_LIFE_S)
        value = self.cosines[mid] + BM25_WEIGHT * b / (b + BM25_HALF) + RECENCY_WEIGHT * recency
        if memory.speaker in self.speakers:
            value += SPEAKER_WEIGHT
        value -= SMALL_TALK_WEIGHT * max(0, SMALL_TALK_WORDS - _content_words(memory.text)) / SMALL_TALK_WORDS
        if self.when and _said_in(memory.said_at, self.when):
            value += DATE_WEIGHT
        return value


_LONG_WORD = re.compile(r"\w{3,}")


def _content_words(text: str) -> int:
    return sum(w not in _STOPWORDS for w in _LONG_WORD.findall(text.casefold()))


def as_said_by(query: str, speaker: str) -> str:
    """The query as `speaker` would say it ("Does Maya have kids?" -> "Maya: Does I have kids?"): the
    speaker's own lines are embedded as "Maya: ...", in the first person."""
    name = re.escape(speaker)
    text = re.sub(rf"\b{name}'s\b", "my", query)
    text = re.sub(rf"\b{name}\b", "I", text)
    return f"{speaker}: {text}"


def _names(query: str) -> list[str]:
    """Words of the query that may be a speaker's name (capitalised, without a possessive 's)."""
    return [w for w in re.findall(r"\b[A-Z][\w-]*", re.sub(r"'s\b", "", query)) if w.casefold() not in _STOPWORDS]


_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")  # fmt: skip
_DATE = re.compile(r"\b(?:(\d{1,2})(?:st|nd|rd|th)?\s+)?(" + "|".join(_MONTHS) + r")(?:\s+(\d{4}))?\b", re.I)


def _dates_named(query: str) -> list[tuple[int | None, int, int | None]]:
    """(day or None, month, year or None) of each date the query names ("in March 2023", "on 4 May")."""
    out = []
    for day, month, year in _DATE.findall(query):
        if month.casefold() == "may" and not (day or year):
            continue  # "may" the verb
        out.append((int(day) if day else None, _MONTHS.index(month.casefold()) + 1, int(year) if year else None))
    for year, month, day in re.findall(r"\b(\d{4})-(\d{2})(?:-(\d{2}))?\b", query):
        out.append((int(day) if day else None, int(month), int(year)))
    return out


def _said_in(said_at: float, dates: list[tuple[int | None, int, int | None]]) -> bool:
    day = datetime.fromtimestamp(said_at, UTC)
    return any(
        m == day.month and (y is None or y == day.year) and (d is None or d == day.day) for d, m, y in dates
    )


def _hops(store: Store, user: User, seeds: list[Memory], query: str, speakers: list[str]) -> dict[int, float]:
    """{memory id: score} of lines that share a rare word the query lacks (a name first) with one of
    the best first hits; each scores HOP_INHERIT of its hit's score (the second hop of a multi-hop)."""
    asked = {w.casefold() for w in re.findall(r"\w+", query)} | {s.casefold() for s in speakers}
    per_seed: list[dict[str, bool]] = []
    for seed in seeds:
        words: dict[str, bool] = {}  # word -> written capitalised inside the line (a name)
        for n, word in enumerate(re.findall(r"\w+", seed.text)):
            low = word.casefold()
            if len(low) > 2 and low not in _STOPWORDS and low not in asked:
                words[low] = words.get(low, False) or (n > 0 and word[0].isupper())
        best = sorted(words, key=lambda w: (not words[w], -len(w)))[:HOP_WORDS]  # names, then long words
        per_seed.append({w: words[w] for w in best})
    every = list(dict.fromkeys(w for words in per_seed for w in words))
    counts = store.term_documents(every, HOP_MAX_DOCS + 1) if every else {}
    out: dict[int, float] = {}
    for seed, words in zip(seeds, per_seed, strict=True):
        rare = sorted((not name, counts[w], w) for w, name in words.items() if 0 < counts.get(w, 0) <= HOP_MAX_DOCS)
        if not rare:
            continue
        match = " OR ".join(f'"{w}"' for _, _, w in rare[:HOP_TERMS])
        for mid, _ in store.fts_search(user, match, HOP_LINES + 1):
            if mid != seed.id:
                out[mid] = max(out.get(mid, 0.0), seed.score * HOP_INHERIT)
    return out


def fts_query(text: str, term_documents: Callable[[list[str], int], dict[str, int]] | None = None) -> str:
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
        counts = term_documents(words, MAX_TERM_DOCS + 1)
        words = [w for w in words if counts.get(w, 0) <= MAX_TERM_DOCS]
    return " OR ".join(f'"{w}"' for w in words)


def _embed_missing(store: Store, user: User) -> None:
    """Embed memories stored without a vector (imported in bulk, or written by a lighter process)."""
    while rows := store.unembedded(user):
        vectors = store.embedder.embed([embedding_text(r["text"], r["kind"], r["speaker"]) for r in rows])
        store.set_embeddings(user, [r["id"] for r in rows], vectors)
