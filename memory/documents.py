"""The user's own documents and their passages, in the memory database (SQLite or PostgreSQL).

Every read and write names the user, so one user's documents are never seen through another's
calls: an id of another user's document reads as missing. One document is written in one
transaction with all its passages, so an ingest cut off mid-folder keeps every file it finished.

Search is hybrid, as memory recall is: exact cosine over the user's passage vectors (a matrix kept
per user and rebuilt when the user's passages change) plus a keyword bonus (FTS5 BM25 on SQLite,
ts_rank on PostgreSQL), scaled to the query's best keyword hit so that the two dialects rank alike.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from assistant.errors import NotFound
from memory.embed import DIM
from memory.recall import _STOPWORDS  # the same words memory recall leaves out of keyword queries
from memory.types import User

__all__ = ["Document", "DocumentHit", "Documents", "NewDocument"]

CANDIDATES = 50  # passages taken from each ranker before fusing
KEYWORD_WEIGHT = 0.25  # the most a keyword match adds to a cosine (the query's best keyword hit gets it all)
_COLUMNS = "id, user_id, path, title, kind, size, mtime, sha256, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A document to store: its passages' vectors are unit float32 (len(passages), DIM)."""

    path: str
    title: str
    kind: str  # txt, md, html or pdf
    size: int
    mtime: float
    sha256: str
    text: str
    passages: tuple[str, ...]
    vectors: np.ndarray


@dataclass(frozen=True, slots=True)
class Document:
    id: int
    user_id: int
    path: str
    title: str
    kind: str
    size: int
    mtime: float
    sha256: str
    created_at: float
    updated_at: float
    passages: int = 0

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "path": self.path, "kind": self.kind, "bytes": self.size,
                "passages": self.passages, "added": int(self.created_at),
                "url": f"/v1/documents/{self.id}"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DocumentHit:
    """One passage found by `Documents.search`, with its document's id and title."""

    passage_id: int
    document_id: int
    title: str
    text: str
    score: float


class Documents:
    """The documents table of one store (memory.store.Store or memory.postgres.PgStore)."""

    def __init__(self, store) -> None:
        self.store = store
        self.postgres = getattr(store, "url", None) is not None
        self._lock = threading.Lock()
        self._matrices: dict[int, tuple[tuple, np.ndarray, np.ndarray]] = {}  # user id -> (key, ids, vectors)

    # writes -----------------------------------------------------------------------------------

    def put(self, user: User, doc: NewDocument) -> int:
        """Store a document (replacing the user's one from the same path, keeping its id) with its
        passages, in one transaction; returns its id."""
        now = time.time()
        with self.store.transaction() as db:
            row = db.execute("SELECT id FROM documents WHERE user_id = ? AND path = ?", (user.id, doc.path)).fetchone()
            if row is None:
                cur = db.execute(
                    "INSERT INTO documents (user_id, path, title, kind, size, mtime, sha256, text, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (user.id, doc.path, doc.title, doc.kind, doc.size, doc.mtime, doc.sha256, doc.text, now, now),
                )
                doc_id = int(cur.lastrowid)
            else:
                doc_id = int(row[0])
                db.execute("DELETE FROM passages WHERE document_id = ?", (doc_id,))
                db.execute(
                    "UPDATE documents SET title = ?, kind = ?, size = ?, mtime = ?, sha256 = ?, text = ?,"
                    " updated_at = ? WHERE id = ?",
                    (doc.title, doc.kind, doc.size, doc.mtime, doc.sha256, doc.text, now, doc_id),
                )
            db.executemany(
                "INSERT INTO passages (document_id, user_id, seq, text, embedding) VALUES (?, ?, ?, ?, ?)",
                [(doc_id, user.id, seq, text, self.store.vector_param(vec))
                 for seq, (text, vec) in enumerate(zip(doc.passages, doc.vectors, strict=True))],
            )  # fmt: skip
        return doc_id

    def touch(self, user: User, doc_id: int, mtime: float) -> None:
        """Record a new modification time for a document whose content did not change."""
        with self.store.transaction() as db:
            db.execute("UPDATE documents SET mtime = ? WHERE id = ? AND user_id = ?", (mtime, doc_id, user.id))

    def remove(self, user: User, doc_ids: Sequence[int]) -> list[int]:
        """Delete the user's documents with these ids (passages and index entries go with them);
        returns the ids that were the user's."""
        gone = []
        with self.store.transaction() as db:
            for doc_id in doc_ids:
                cur = db.execute("DELETE FROM documents WHERE id = ? AND user_id = ?", (int(doc_id), user.id))
                if cur.rowcount:
                    gone.append(int(doc_id))
        return gone

    # reads ------------------------------------------------------------------------------------

    def by_path(self, user: User, path: str) -> Document | None:
        rows = self.store.read(f"SELECT {_COLUMNS} FROM documents WHERE user_id = ? AND path = ?", (user.id, path))
        return _document(rows[0]) if rows else None

    def documents(self, user: User) -> list[Document]:
        """The user's documents, oldest first, with their passage counts."""
        rows = self.store.read(
            f"SELECT {', '.join('d.' + c for c in _COLUMNS.split(', '))}, count(p.id) AS n FROM documents AS d"
            " LEFT JOIN passages AS p ON p.document_id = d.id WHERE d.user_id = ?"
            f" GROUP BY {', '.join('d.' + c for c in _COLUMNS.split(', '))} ORDER BY d.id",
            (user.id,),
        )
        return [_document(r, r["n"]) for r in rows]

    def get(self, user: User, doc_id: int) -> tuple[Document, str]:
        """(the document, its text); NotFound unless it is this user's."""
        rows = self.store.read(
            f"SELECT {_COLUMNS}, text FROM documents WHERE id = ? AND user_id = ?", (int(doc_id), user.id)
        )
        if not rows:
            raise NotFound(f"you have no document {doc_id}")
        return _document(rows[0]), rows[0]["text"]

    def passages(self, user: User, doc_id: int) -> list[str]:
        """The passages of one of the user's documents, in order."""
        rows = self.store.read(
            "SELECT text FROM passages WHERE document_id = ? AND user_id = ? ORDER BY seq", (int(doc_id), user.id)
        )
        return [r[0] for r in rows]

    # search -----------------------------------------------------------------------------------

    def search(self, user: User, query_vec: np.ndarray, query: str, k: int) -> list[DocumentHit]:
        """The user's `k` passages best for the query (its unit vector and its words), best first."""
        ids, matrix = self._matrix(user)
        cos = matrix @ np.asarray(query_vec, np.float32) if len(ids) else np.zeros(0, np.float32)
        take = min(CANDIDATES, len(ids))
        best = np.argpartition(-cos, take - 1)[:take] if take else np.zeros(0, np.int64)
        scores = {int(ids[i]): float(cos[i]) for i in best}
        keyword = self._keyword(user, query, CANDIDATES)
        top = max(keyword.values(), default=0.0)
        row_of = {int(pid): i for i, pid in enumerate(ids)} if keyword else {}
        for pid, hit in keyword.items():
            base = scores.get(pid)
            if base is None:
                base = float(cos[row_of[pid]]) if pid in row_of else 0.0
            scores[pid] = base + (KEYWORD_WEIGHT * hit / top if top > 0 else 0.0)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        rows = self.store.read(
            "SELECT p.id, p.document_id, d.title, p.text FROM passages AS p JOIN documents AS d ON d.id = p.document_id"
            f" WHERE p.user_id = ? AND p.id IN ({marks})",
            (user.id, *[pid for pid, _ in ranked]),
        )
        found = {int(r[0]): r for r in rows}
        return [DocumentHit(pid, int(found[pid][1]), found[pid][2], found[pid][3], score)
                for pid, score in ranked if pid in found]  # fmt: skip

    def _matrix(self, user: User) -> tuple[np.ndarray, np.ndarray]:
        """(passage ids, unit vectors) of the user's passages, re-read only when they changed."""
        key = tuple(self.store.read(
            "SELECT count(*), COALESCE(max(id), 0), COALESCE(sum(id), 0) FROM passages WHERE user_id = ?",
            (user.id,),
        )[0])  # fmt: skip
        with self._lock:
            cached = self._matrices.get(user.id)
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
        rows = self.store.read(
            "SELECT id, embedding FROM passages WHERE user_id = ? AND embedding IS NOT NULL ORDER BY id", (user.id,)
        )
        ids = np.array([r[0] for r in rows], np.int64)
        matrix = np.frombuffer(b"".join(bytes(r[1]) for r in rows), np.float32).reshape(len(rows), DIM)
        with self._lock:
            self._matrices[user.id] = (key, ids, matrix)
        return ids, matrix

    def _keyword(self, user: User, query: str, limit: int) -> dict[int, float]:
        """{passage id: keyword score, higher is better} for the query's content words (any of them)."""
        words = []
        for word in re.findall(r"\w+", query.casefold()):
            # unlike memory recall, a single digit counts: "room 1", "chapter 3"
            if (len(word) > 1 or word.isdigit() or not word.isascii()) and word not in _STOPWORDS and word not in words:
                words.append(word)
        if not words:
            return {}
        if self.postgres:
            rows = self.store.read(
                "SELECT id, ts_rank(body, q) FROM passages, to_tsquery('simple', ?) AS q"
                " WHERE user_id = ? AND body @@ q ORDER BY 2 DESC, id LIMIT ?",
                (" | ".join("'" + w.replace("'", "''") + "'" for w in words[:24]), user.id, limit),
            )
            return {int(r[0]): float(r[1]) for r in rows}
        rows = self.store.read(
            "SELECT p.id, f.rank FROM passages_fts AS f JOIN passages AS p ON p.id = f.rowid"
            " WHERE passages_fts MATCH ? AND p.user_id = ? ORDER BY f.rank LIMIT ?",
            (" OR ".join(f'"{w}"' for w in words[:24]), user.id, limit),
        )
        return {int(r[0]): -float(r[1]) for r in rows}


def _document(r, passages: int = 0) -> Document:
    return Document(id=int(r["id"]), user_id=int(r["user_id"]), path=r["path"], title=r["title"], kind=r["kind"],
                    size=int(r["size"]), mtime=float(r["mtime"]), sha256=r["sha256"], created_at=r["created_at"],
                    updated_at=r["updated_at"], passages=int(passages))  # fmt: skip
