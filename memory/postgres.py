"""The PostgreSQL store: memory.store's `Store` on PostgreSQL 16 + pgvector, for several processes.

The store's logic is shared: `PgStore` subclasses `Store` and its connection speaks SQLite's
dialect (`translate`: placeholders, INSERT OR IGNORE, IS ?, NOCASE names, lastrowid), so
memory.store, memory.personas and memory.remember run unchanged. What differs is overridden:
- Every write is a transaction; one that touches a user's memories first takes that user's advisory
  lock, so the `changed` stamps (memory.schema migration 3) stay in commit order across processes.
- Keywords: memories_fts (tsvector + GIN) ranked by BM25 computed as SQLite's FTS5 does it.
- Vectors: users with <= EXACT_MAX embedded memories get the exact in-memory index (as on SQLite),
  larger ones the HNSW index (`HnswIndex`), searched with SET LOCAL hnsw.ef_search.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import numpy as np

from assistant.errors import BadInput
from memory.embed import DIM, Embedder
from memory.pg_schema import migrate
from memory.store import NewMemory, Store, _check_memory_text
from memory.types import User, index_text
from memory.vectors import VectorIndex

__all__ = ["EXACT_MAX", "PgStore", "open_pg_store", "translate"]

EXACT_MAX = 20_000  # users with up to this many embedded memories are searched exactly, in memory
EF_SEARCH = 400  # HNSW candidates per search: recall@10 0.96 against an exact scan at 100k (bench/memory.py)
DF_CAP = 20_001  # term_documents counts postings up to this (recall drops terms above 2000 anyway)
STATS_TTL_S = 30.0  # how long the corpus size and mean length used by BM25 are kept
K1, B = 1.2, 0.75  # FTS5's bm25() defaults
_USER_LOCK = 0x6D656D  # advisory lock class for a user's memory writes ("mem")


def open_pg_store(data_dir: str | Path, url: str, embedder: Embedder | None = None) -> PgStore:
    """Connect to (creating and migrating) the database at `url`; files stay in `data_dir`."""
    try:
        import psycopg
    except ImportError as err:
        raise BadInput("--database postgresql://... needs psycopg: pip install 'psycopg[binary]'") from err
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return PgStore(data_dir, url, embedder)
    except psycopg.Error as err:
        reason = " ".join(str(err).split())  # libpq's messages run over several lines
        raise BadInput(f"cannot open the database {_redacted(url)}: {reason}") from err


def _redacted(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


# the dialect ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> tuple[str, bool]:
    """SQLite SQL as the store writes it -> (PostgreSQL SQL, whether it returns the new row's id)."""
    out = sql.replace("%", "%%")
    out = re.sub(r"\s+INDEXED BY \w+", "", out)
    out = out.replace("+user_id", "user_id").replace(" IS ?", " IS NOT DISTINCT FROM ?")
    ignore = "INSERT OR IGNORE INTO" in out
    out = out.replace("INSERT OR IGNORE INTO", "INSERT INTO")
    if re.search(r"\b(personas|instances)\b", out) and " WHERE " in out:  # their names are NOCASE
        head, where = out.split(" WHERE ", 1)
        where = re.sub(r"\bname = \?", "lower(name) = lower(?)", where)
        out = f"{head} WHERE {where}"
    out = re.sub(r"ORDER BY name\b", "ORDER BY lower(name)", out) if "FROM personas" in out else out
    out = out.replace("?", "%s")
    if ignore:
        out += " ON CONFLICT DO NOTHING"
    returning = out.lstrip().startswith("INSERT INTO") and "memories_fts" not in out
    if returning:
        out += " RETURNING id"
    return out, returning


class _Row(tuple):
    """A result row read by position or by column name, like sqlite3.Row."""

    __slots__ = ()
    _index: ClassVar[dict[str, int]] = {}  # set per column list by _row_class

    def __getitem__(self, key):  # type: ignore[override]
        return tuple.__getitem__(self, self._index[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self._index)


@functools.lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type[_Row]:
    return type("Row", (_Row,), {"__slots__": (), "_index": {n: i for i, n in enumerate(names)}})


def _row_factory(cursor):
    cls = _row_class(tuple(c.name for c in cursor.description or ()))
    return cls


class _Cursor:
    """The part of sqlite3.Cursor the store uses."""

    def __init__(self, cur, returning: bool) -> None:
        self._cur = cur
        self.lastrowid = None
        if returning:
            row = cur.fetchone()
            self.lastrowid = None if row is None else row[0]
        self.rowcount = cur.rowcount

    def fetchone(self):
        return self._cur.fetchone() if self._cur.description and self.lastrowid is None else None

    def fetchall(self) -> list:
        return self._cur.fetchall() if self._cur.description and self.lastrowid is None else []

    def __iter__(self) -> Iterator:
        return iter(self.fetchall())


class _Connection:
    """A psycopg connection (autocommit; the store BEGINs itself) taking the store's SQLite SQL."""

    def __init__(self, conn) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence = ()) -> _Cursor:
        text, returning = translate(sql)
        cur = self.raw.cursor(row_factory=_row_factory, binary=True)
        cur.execute(text, tuple(params))
        return _Cursor(cur, returning)

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        text, _ = translate(sql)
        with self.raw.cursor() as cur:
            cur.executemany(text, rows)

    def close(self) -> None:
        self.raw.close()


def _register_vector(conn) -> None:
    """vector <-> numpy in binary: out as pgvector's wire format, in as native float32 bytes (the
    form memory.vectors reads)."""
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format
    from psycopg.types import TypeInfo

    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        raise BadInput("the pgvector extension is missing from this PostgreSQL server")

    class VectorDumper(Dumper):
        format = Format.BINARY
        oid = info.oid

        def dump(self, obj: np.ndarray) -> bytes:
            v = np.asarray(obj, np.float32).reshape(-1)
            return struct.pack(">HH", len(v), 0) + v.astype(">f4").tobytes()

    class VectorLoader(Loader):
        format = Format.BINARY

        def load(self, data) -> bytes:
            return np.frombuffer(bytes(data), ">f4", offset=4).astype(np.float32).tobytes()

    class VectorTextLoader(Loader):
        def load(self, data) -> bytes:
            return np.array(bytes(data).strip(b"[]").split(b","), np.float32).tobytes()

    conn.adapters.register_dumper(np.ndarray, VectorDumper)
    conn.adapters.register_loader(info.oid, VectorLoader)
    conn.adapters.register_loader(info.oid, VectorTextLoader)


# keywords -----------------------------------------------------------------------------------------


def fts_tokens(text: str) -> list[str]:
    """Tokens as FTS5's unicode61 tokenizer with remove_diacritics makes them: case-folded runs of
    letters and digits, accents removed."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.findall(r"[^\W_]+", text)


def _match_terms(match: str) -> list[str]:
    """The terms of an FTS5 OR query as memory.recall.fts_query writes it ('"a" OR "b"')."""
    terms: list[str] = []
    for phrase in re.findall(r'"([^"]*)"', match) or match.split(" OR "):
        terms += [t for t in fts_tokens(phrase) if t not in terms]
    return terms


def _tsquery(terms: Sequence[str]) -> str:
    return " | ".join("'" + t.replace("'", "''") + "'" for t in terms)


# the store -----------------------------------------------------------------------------------------


class PgStore(Store):
    """`Store` on PostgreSQL. Use `open_pg_store` (or `open_store(..., database=url)`)."""

    exact_max = EXACT_MAX  # users with more embedded memories than this are searched by HNSW

    def __init__(self, data_dir: Path, url: str, embedder: Embedder | None = None) -> None:
        import psycopg

        self.data_dir = data_dir
        self.path = None
        self.url = url
        raw = psycopg.connect(url, autocommit=True)
        migrate(raw)
        _register_vector(raw)
        self._conn = _Connection(raw)
        self._lock = threading.RLock()
        self._vectors: dict[int, tuple[float, VectorIndex]] = {}
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._writer_pool = None  # see Store.writer
        self._writer_lock = threading.Lock()
        self._locked_users: set[int] | None = None  # inside a transaction: users whose lock is held
        self._stats: tuple[float, int, float] = (0.0, 0, 1.0)  # (when, documents, mean tokens)
        self._df: dict[str, tuple[float, int]] = {}  # term -> (when, documents), kept STATS_TTL_S
        self._large: dict[int, float] = {}  # user id -> when last found above EXACT_MAX

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        """BEGIN ... COMMIT, rolled back on any error (or cancellation)."""
        with self._lock:
            if self._locked_users is not None:  # nested (a read helper inside a write): one transaction
                yield self._conn
                return
            self._conn.execute("BEGIN")
            self._locked_users = set()
            try:
                yield self._conn
            except BaseException:
                self._locked_users = None
                self._conn.execute("ROLLBACK")
                raise
            self._locked_users = None
            self._conn.execute("COMMIT")

    def lock_user(self, db: _Connection, user: User) -> None:
        """Inside a transaction: serialise this user's memory writes across processes (held to COMMIT)."""
        if self._locked_users is not None and user.id not in self._locked_users:
            db.execute("SELECT pg_advisory_xact_lock(?, ?)", (_USER_LOCK, user.id))
            self._locked_users.add(user.id)

    # memory writes take the user's lock before they read the version they stamp rows with
    def insert_memory(self, db, user, item, now, message_id):  # type: ignore[override]
        self.lock_user(db, user)
        return super().insert_memory(db, user, item, now, message_id)

    def retire(self, db, user, memory_id, status, message_id, replaced_by=None):  # type: ignore[override]
        self.lock_user(db, user)
        return super().retire(db, user, memory_id, status, message_id, replaced_by)

    def bump(self, db, user) -> None:  # type: ignore[override]
        self.lock_user(db, user)
        super().bump(db, user)

    def edit_memory(self, user, memory_id, text):  # type: ignore[override]
        with self.transaction() as db:
            self.lock_user(db, user)
            return super().edit_memory(user, memory_id, text)

    def set_embeddings(self, user, ids, vectors) -> None:  # type: ignore[override]
        with self.transaction() as db:
            self.lock_user(db, user)
            super().set_embeddings(user, ids, vectors)

    def add_memories(self, user: User, items: Sequence[NewMemory], message_id: int | None = None) -> list[int]:
        """As Store.add_memories, in three pipelined batches (memories, keywords, history) rather
        than three round trips a memory: what makes a bulk insert fast over a socket."""
        for item in items:
            _check_memory_text(item.text)
        if not items:
            with self.transaction() as db:
                self.bump(db, user)
            return []
        with self.transaction() as db:
            ids = self._insert_batch(db, user, items, time.time(), message_id)
            self.bump(db, user)
        return ids

    def import_memories(self, user: User, items: Sequence[NewMemory]) -> int:
        """As Store.import_memories (items whose source id the user has are skipped), batched."""
        for item in items:
            _check_memory_text(item.text)
        wanted = sorted({i.source_id for i in items if i.source_id is not None})
        with self.transaction() as db:
            self.lock_user(db, user)
            sql = "SELECT source_id FROM memories WHERE user_id = ? AND source_id = ANY(?)"
            rows = db.execute(sql, (user.id, wanted))
            known = {r[0] for r in rows}
            fresh = []
            for item in items:
                if item.source_id is not None:
                    if item.source_id in known:
                        continue
                    known.add(item.source_id)
                fresh.append(item)
            if fresh:
                self._insert_batch(db, user, fresh, time.time(), None)
                self.bump(db, user)
        return len(fresh)

    def _insert_batch(self, db: _Connection, user: User, items: Sequence[NewMemory], now: float,
                      message_id: int | None) -> list[int]:  # fmt: skip
        """Inside a transaction: Store.insert_memory for many memories at once."""
        self.lock_user(db, user)
        for instance_id in {i.instance_id for i in items if i.instance_id is not None}:
            owner = db.execute("SELECT user_id FROM instances WHERE id = ?", (instance_id,)).fetchone()
            if owner is None or owner[0] != user.id:
                raise BadInput("that instance belongs to another user")
        said = [now if i.said_at is None else float(i.said_at) for i in items]
        with db.raw.cursor() as cur:
            cur.executemany(
                "INSERT INTO memories (user_id, instance_id, kind, key, text, speaker, said_at, source_id,"
                " embedding, created_at, updated_at, changed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " (SELECT mem_version + 1 FROM users WHERE id = %s)) RETURNING id",
                [(user.id, i.instance_id, i.kind, i.key, i.text, i.speaker, s, i.source_id,
                  None if i.embedding is None else self.vector_param(i.embedding), now, now, user.id)
                 for i, s in zip(items, said, strict=True)],
                returning=True,
            )  # fmt: skip
            ids = []
            while True:
                ids.append(int(cur.fetchone()[0]))
                if not cur.nextset():
                    break
            bodies = [fts_tokens(index_text(i.text, i.speaker, s)) for i, s in zip(items, said, strict=True)]
            cur.executemany(
                "INSERT INTO memories_fts (rowid, body, len) VALUES (%s, to_tsvector('simple', %s), %s)",
                [(m, " ".join(b), len(b)) for m, b in zip(ids, bodies, strict=True)],
            )
            cur.executemany(
                "INSERT INTO memory_history (user_id, memory_id, action, before, after, message_id, created_at)"
                " VALUES (%s, %s, 'add', NULL, %s, %s, %s)",
                [(user.id, m, i.text, message_id, now) for m, i in zip(ids, items, strict=True)],
            )
        return ids

    def forget_user(self, user: User) -> None:
        """Erase everything about a user: rows (every table cascades from users), files."""
        import shutil

        with self.transaction() as db:
            self.lock_user(db, user)
            db.execute("DELETE FROM users WHERE id = ?", (user.id,))
        self._vectors.pop(user.id, None)
        self._large.pop(user.id, None)
        shutil.rmtree(self.user_files_dir(user), ignore_errors=True)

    # dialect hooks ------------------------------------------------------------------------------

    def index_fts(self, db, memory_id: int, body: str) -> None:
        tokens = fts_tokens(body)
        db.execute(
            "INSERT INTO memories_fts (rowid, body, len) VALUES (?, to_tsvector('simple', ?), ?)",
            (memory_id, " ".join(tokens), len(tokens)),
        )

    def vector_param(self, vec: np.ndarray) -> object:
        return np.asarray(vec, np.float32).reshape(DIM)

    # searches -----------------------------------------------------------------------------------

    def term_documents(self, terms: Sequence[str], cap: int = DF_CAP) -> dict[str, int]:
        """How many indexed memories (of all users) hold each term, counted up to DF_CAP (BM25's idf
        needs them) and given up to `cap`."""
        out, now = {}, time.monotonic()
        for term in terms:
            norm = fts_tokens(term)
            if len(norm) != 1:
                continue
            cached = self._df.get(norm[0])
            if cached is None or now - cached[0] > STATS_TTL_S:
                rows = self.read(
                    "SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE body @@ to_tsquery('simple', ?) LIMIT ?) s",
                    (_tsquery(norm), DF_CAP),
                )
                cached = self._df[norm[0]] = (now, int(rows[0][0]))
                if len(self._df) > 100_000:
                    self._df.clear()
            out[term] = min(cached[1], cap)
        return out

    def _corpus(self) -> tuple[int, float]:
        """(indexed memories, their mean token count), refreshed every STATS_TTL_S."""
        when, docs, _ = self._stats
        if time.monotonic() - when > STATS_TTL_S or docs == 0:
            row = self.read("SELECT count(*), COALESCE(avg(len), 1) FROM memories_fts")[0]
            self._stats = (time.monotonic(), int(row[0]), float(row[1]) or 1.0)
        return self._stats[1], self._stats[2]

    def fts_search(self, user: User, match: str, limit: int) -> list[tuple[int, float]]:
        """(memory id, bm25) of the user's active memories matching the terms of an FTS5 OR query,
        best first; BM25 as FTS5's bm25() computes it (k1 1.2, b 0.75, idf floored at 1e-6)."""
        terms = _match_terms(match)
        if not terms:
            return []
        docs, mean = self._corpus()
        counts = self.term_documents(terms)
        idf = [max(1e-6, math.log((max(docs, counts.get(t, 0)) - counts.get(t, 0) + 0.5) / (counts.get(t, 0) + 0.5)))
               for t in terms]  # fmt: skip
        rows = self.read(
            "SELECT f.rowid, SUM(q.idf * cardinality(t.positions) * ?"
            " / (cardinality(t.positions) + ? * (1 - ? + ? * f.len / ?))) AS score"
            " FROM memories_fts AS f JOIN memories AS m ON m.id = f.rowid"
            " CROSS JOIN LATERAL unnest(f.body) AS t"
            " JOIN unnest(?::text[], ?::float8[]) AS q(term, idf) ON q.term = t.lexeme"
            " WHERE f.body @@ to_tsquery('simple', ?) AND m.user_id = ? AND m.status = 'active'"
            " GROUP BY f.rowid ORDER BY score DESC, f.rowid LIMIT ?",
            (K1 + 1, K1, B, B, mean, terms, idf, _tsquery(terms), user.id, limit),
        )
        return [(int(r[0]), float(r[1])) for r in rows]

    def vector_index(self, user: User) -> VectorIndex | HnswIndex:
        """Exact, in memory, for users with up to `exact_max` embedded memories (as memory.store
        does); the HNSW index in the database for larger ones."""
        with self._lock:
            if self._locked_users is not None:  # read-then-write (memory.remember): hold the lock first
                self.lock_user(self._conn, user)
            large = self._large.get(user.id)
            if large is not None and time.monotonic() - large < STATS_TTL_S:
                return HnswIndex(self, user)
            cached = self._vectors.get(user.id)
            if cached is None or len(cached[1]) > self.exact_max:
                rows = self.read(
                    "SELECT count(*) FROM (SELECT 1 FROM memories WHERE user_id = ? AND status = 'active'"
                    " AND embedding IS NOT NULL LIMIT ?) s",
                    (user.id, self.exact_max + 1),
                )
                if rows[0][0] > self.exact_max:
                    self._vectors.pop(user.id, None)
                    self._large[user.id] = time.monotonic()
                    return HnswIndex(self, user)
                self._large.pop(user.id, None)
            return super().vector_index(user)


class HnswIndex:
    """A large user's vectors, searched in the database (the VectorIndex interface recall uses)."""

    CANDIDATES = 100  # rows `cosines` returns: what a duplicate or correction check looks at

    def __init__(self, store: PgStore, user: User, ef_search: int = EF_SEARCH) -> None:
        self.store, self.user, self.ef_search = store, user, ef_search
        self.version = -1

    def __len__(self) -> int:
        rows = self.store.read(
            "SELECT count(*) FROM memories WHERE user_id = ? AND status = 'active' AND embedding IS NOT NULL",
            (self.user.id,),
        )
        return int(rows[0][0])

    def _search(self, vec: np.ndarray, n: int, instance_id: int | None) -> list:
        scope = ""
        params: list = [vec, self.user.id]
        if instance_id == 0:
            scope = " AND instance_id IS NULL"
        elif instance_id is not None:
            scope = " AND (instance_id IS NULL OR instance_id = ?)"
            params.append(instance_id)
        sql = ("SELECT id, -(embedding <#> ?) FROM memories WHERE user_id = ? AND status = 'active'"
               f" AND embedding IS NOT NULL{scope} ORDER BY embedding <#> ? LIMIT ?")  # fmt: skip
        with self.store.transaction() as db:
            db.execute(f"SET LOCAL hnsw.ef_search = {max(int(self.ef_search), n)}")
            rows = db.execute(sql, (*params, vec, n)).fetchall()
            if len(rows) < n:
                # HNSW filters after it searches (pgvector 0.6): ef_search candidates of all users,
                # then this user's and this scope's. Fewer than n left: scan this user's rows exactly.
                exact = sql.replace("ORDER BY embedding <#> ?", "ORDER BY (embedding <#> ?) + 0")
                rows = db.execute(exact, (*params, vec, n)).fetchall()
            return rows

    def top(self, vec: np.ndarray, n: int, instance_id: int | None = None) -> dict[int, float]:
        return {int(r[0]): float(r[1]) for r in self._search(vec, n, instance_id)}

    def cosines(self, vec: np.ndarray, instance_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        rows = self._search(vec, self.CANDIDATES, instance_id)
        return np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float32)

    def cosines_of(self, memory_ids: list[int], vec: np.ndarray) -> list[float | None]:
        """The cosines of these memories to `vec` in one query (None: not active or not embedded)."""
        if not memory_ids:
            return []
        rows = self.store.read(
            "SELECT id, -(embedding <#> ?) FROM memories WHERE id = ANY(?) AND user_id = ? AND status = 'active'"
            " AND embedding IS NOT NULL",
            (vec, [int(m) for m in memory_ids], self.user.id),
        )
        found = {int(r[0]): float(r[1]) for r in rows}
        return [found.get(int(m)) for m in memory_ids]

    def cosine(self, memory_id: int, vec: np.ndarray) -> float | None:
        return self.cosines_of([memory_id], vec)[0]
