"""The SQLite store: users, instances, messages, memories with history. Every write is a transaction.

One `Store` wraps one connection guarded by a lock, so a session may call it from worker threads.
Several processes may open the same file: WAL lets readers run beside the one writer, and writes
take the write lock up front (BEGIN IMMEDIATE), so a read-then-write never loses an update.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.errors import BadInput, NotFound
from memory.embed import DIM, Embedder
from memory.schema import connect, migrate
from memory.types import MAX_MEMORY_CHARS, Instance, Memory, StoredMessage, User, index_text, iso
from memory.vectors import VectorIndex

__all__ = ["NewMemory", "Store", "VectorIndex", "open_store"]

DB_NAME = "assistant.sqlite3"
MAX_NAME_CHARS = 64
_MEMORY_COLUMNS = (
    "id, user_id, instance_id, kind, key, text, speaker, said_at, source_id, status, created_at, updated_at"
)


def open_store(data_dir: str | Path, embedder: Embedder | None = None, database: str | None = None) -> Store:
    """Open (creating and migrating) the database in `data_dir`, or the PostgreSQL database at the
    URL `database` (postgresql://...; users' files still live in `data_dir`).

    `embedder` is shared with whoever else holds it (one per process is enough); without one the
    store loads its own on first use."""
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise BadInput(f"the data dir {data_dir} is a file, not a folder")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create the data dir {data_dir}: {err.strerror or err}") from err
    if database:
        from memory.postgres import open_pg_store

        return open_pg_store(data_dir, database, embedder)
    try:
        return Store(data_dir, embedder)
    except sqlite3.Error as err:
        raise BadInput(f"cannot open the database in {data_dir}: {err}") from err


def check_name(name: str, what: str = "name") -> str:
    """A user, persona or instance name: 1-64 printable characters, stored exactly as given."""
    name = (name or "").strip()
    if not name:
        raise BadInput(f"{what} is empty")
    if len(name) > MAX_NAME_CHARS:
        raise BadInput(f"{what} is too long ({len(name)} characters > {MAX_NAME_CHARS})")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise BadInput(f"{what} contains control characters")
    return name


@dataclass(frozen=True, slots=True)
class NewMemory:
    """A memory to insert; `embedding` is a unit float32 vector (DIM,) or None (embedded later)."""

    text: str
    kind: str = "fact"
    key: str | None = None
    speaker: str | None = None
    said_at: float | None = None
    source_id: str | None = None
    instance_id: int | None = None
    embedding: np.ndarray | None = None


class Store:
    """The assistant's database. Use `open_store(data_dir)`; close it, or use it as a context manager."""

    def __init__(self, data_dir: Path, embedder: Embedder | None = None) -> None:
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self._conn = connect(str(self.path))
        self._lock = threading.RLock()
        self._vectors: dict[int, tuple[float, VectorIndex]] = {}  # user id -> (user's created_at, index)
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._writer_pool: ThreadPoolExecutor | None = None
        self._writer_lock = threading.Lock()
        migrate(self._conn)

    @property
    def embedder(self) -> Embedder:
        """The sentence embedder recall and the write path use (loaded on first use if none was given)."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = Embedder()
            return self._embedder

    def writer(self) -> ThreadPoolExecutor:
        """The one thread that writes this store's exchanges, for every session on it: writes run in
        the order they were queued, and one that waits for a lock (another process writing) holds
        this thread only, never the event loop's default executor (recall, uploads and encoding run
        there: eight sessions' writes waiting for one lock once held every one of its threads)."""
        with self._writer_lock:  # not self._lock: a write holds that, and the event loop calls this
            if self._writer_pool is None:
                self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
            return self._writer_pool

    def close(self) -> None:
        with self._writer_lock:
            pool, self._writer_pool = self._writer_pool, None
        if pool is not None:
            pool.shutdown(wait=True)  # the writes queued land before the connection closes
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (or cancellation)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def read(self, sql: str, params: Sequence = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # users ------------------------------------------------------------------------------------

    def user(self, name: str, create: bool = True) -> User:
        """The user called `name`; created when missing unless `create` is False (then NotFound)."""
        name = check_name(name, "user name")
        rows = self.read("SELECT id, name FROM users WHERE name = ?", (name,))
        if rows:
            return User(rows[0]["id"], rows[0]["name"])
        if not create:
            raise NotFound(f"no user called {name!r}")
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO users (name, created_at) VALUES (?, ?)", (name, time.time()))
            row = db.execute("SELECT id, name FROM users WHERE name = ?", (name,)).fetchone()
        return User(row["id"], row["name"])

    def users(self) -> list[User]:
        return [User(r["id"], r["name"]) for r in self.read("SELECT id, name FROM users ORDER BY name")]

    def user_files_dir(self, user: User) -> Path:
        """Where a user's audio and images are kept; erased with the user."""
        return self.data_dir / "files" / str(user.id)

    def forget_user(self, user: User) -> None:
        """Erase everything about a user: rows, index entries, embeddings and files."""
        with self.transaction() as db:
            db.execute(
                "DELETE FROM memories_fts WHERE rowid IN (SELECT id FROM memories WHERE user_id = ?)", (user.id,)
            )
            db.execute("DELETE FROM users WHERE id = ?", (user.id,))  # cascades to every table
            db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')")  # drop old index segments
            db.execute("INSERT INTO passages_fts (passages_fts) VALUES ('optimize')")  # (the documents' too)
        self._vectors.pop(user.id, None)
        shutil.rmtree(self.user_files_dir(user), ignore_errors=True)
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no copy left in the WAL file

    # instances --------------------------------------------------------------------------------

    def open_instance(self, user: User, persona: str, name: str | None = None) -> Instance:
        """The user's instance called `name` (default: the persona's name), created when missing."""
        persona = check_name(persona, "persona name")
        name = check_name(name or persona, "instance name")
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO instances (user_id, persona, name, created_at) VALUES (?, ?, ?, ?)",
                (user.id, persona, name, time.time()),
            )
            row = db.execute("SELECT * FROM instances WHERE user_id = ? AND name = ?", (user.id, name)).fetchone()
        return Instance(row["id"], row["user_id"], row["persona"], row["name"])

    def instances(self, user: User) -> list[Instance]:
        rows = self.read("SELECT * FROM instances WHERE user_id = ? ORDER BY id", (user.id,))
        return [Instance(r["id"], r["user_id"], r["persona"], r["name"]) for r in rows]

    # messages ---------------------------------------------------------------------------------

    def append_message(
        self,
        instance: Instance,
        role: str,
        text: str,
        *,
        attachments: Sequence[str] = (),
        timings: dict | None = None,
        interrupted: bool = False,
        turn_id: str | None = None,
    ) -> int:
        """Store one message of an instance's conversation; returns its id."""
        if role not in ("system", "user", "assistant"):
            raise BadInput(f"unknown role {role!r}")
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO messages (user_id, instance_id, role, text, attachments, timings, interrupted,"
                " turn_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    instance.user_id,
                    instance.id,
                    role,
                    text,
                    json.dumps([str(a) for a in attachments]),
                    json.dumps(timings or {}),
                    int(interrupted),
                    turn_id,
                    time.time(),
                ),
            )
        return int(cur.lastrowid)

    def set_message_text(self, instance: Instance, message_id: int, text: str) -> None:
        """Fill in the text of a stored message of this instance (a spoken turn's transcript, made
        after it was stored)."""
        with self.transaction() as db:
            db.execute("UPDATE messages SET text = ? WHERE id = ? AND instance_id = ? AND user_id = ?",
                       (text, message_id, instance.id, instance.user_id))  # fmt: skip

    def history(self, instance: Instance, token_budget: int | None = None, limit: int = 200) -> list[StoredMessage]:
        """The instance's latest messages, oldest first, as many as fit in `token_budget`."""
        rows = self.read(
            "SELECT * FROM messages WHERE instance_id = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
            (instance.id, instance.user_id, limit),
        )
        out, used = [], 0
        for r in rows:
            used += count_tokens(r["text"])
            if token_budget is not None and used > token_budget:
                break
            out.append(_message(r))
        return out[::-1]

    # memories ---------------------------------------------------------------------------------

    def add_memories(self, user: User, items: Sequence[NewMemory], message_id: int | None = None) -> list[int]:
        """Insert memories in one transaction (each with an 'add' history row); returns their ids."""
        for item in items:
            _check_memory_text(item.text)
        now = time.time()
        ids = []
        with self.transaction() as db:
            for item in items:
                ids.append(self.insert_memory(db, user, item, now, message_id))
            self.bump(db, user)
        return ids

    def import_memories(self, user: User, items: Sequence[NewMemory]) -> int:
        """Insert, in one transaction, those of `items` whose `source_id` the user does not have yet
        (items without one are always inserted); returns how many were. An import cut off between
        two such calls is finished, without duplicates, by running it again."""
        for item in items:
            _check_memory_text(item.text)
        now = time.time()
        added = 0
        wanted = sorted({i.source_id for i in items if i.source_id is not None})
        with self.transaction() as db:
            marks = ",".join("?" * len(wanted))  # a chunk of lines: well under SQLite's 32766 parameters
            sql = f"SELECT source_id FROM memories WHERE user_id = ? AND source_id IN ({marks})"
            known = {r[0] for r in db.execute(sql, (user.id, *wanted))} if wanted else set()
            for item in items:
                if item.source_id is not None:
                    if item.source_id in known:
                        continue
                    known.add(item.source_id)
                self.insert_memory(db, user, item, now, None)
                added += 1
            if added:
                self.bump(db, user)
        return added

    def add_memory(self, user: User, text: str, **fields: object) -> int:
        """Insert one memory; fields as in `NewMemory`."""
        return self.add_memories(user, [NewMemory(text, **fields)])[0]  # type: ignore[arg-type]

    def insert_memory(
        self, db: sqlite3.Connection, user: User, item: NewMemory, now: float, message_id: int | None
    ) -> int:
        """Inside a transaction: insert one memory with its index entry and an 'add' history row.
        Every memory row is inserted here (it stamps `changed`; see migration 3)."""
        _check_memory_text(item.text)
        said_at = now if item.said_at is None else float(item.said_at)
        if item.instance_id is not None:
            owner = db.execute("SELECT user_id FROM instances WHERE id = ?", (item.instance_id,)).fetchone()
            if owner is None or owner[0] != user.id:
                raise BadInput("that instance belongs to another user")
        blob = None if item.embedding is None else self.vector_param(item.embedding)
        cur = db.execute(
            "INSERT INTO memories (user_id, instance_id, kind, key, text, speaker, said_at, source_id, embedding,"
            " created_at, updated_at, changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " (SELECT mem_version + 1 FROM users WHERE id = ?))",  # see migration 3
            (user.id, item.instance_id, item.kind, item.key, item.text, item.speaker, said_at, item.source_id, blob,
             now, now, user.id),
        )  # fmt: skip
        mid = int(cur.lastrowid)
        self.index_fts(db, mid, index_text(item.text, item.speaker, said_at))
        db.execute(
            "INSERT INTO memory_history (user_id, memory_id, action, before, after, message_id, created_at)"
            " VALUES (?, ?, 'add', NULL, ?, ?, ?)",
            (user.id, mid, item.text, message_id, now),
        )
        return mid

    def retire(
        self, db: sqlite3.Connection, user: User, memory_id: int, status: str, message_id: int | None,
        replaced_by: int | None = None,
    ) -> bool:  # fmt: skip
        """Inside a transaction: mark an active memory superseded or deleted, with history. False if not active."""
        row = db.execute(
            "SELECT text FROM memories WHERE id = ? AND user_id = ? AND status = 'active'", (memory_id, user.id)
        ).fetchone()
        if row is None:
            return False
        now = time.time()
        after = None
        if replaced_by is not None:
            after = db.execute("SELECT text FROM memories WHERE id = ?", (replaced_by,)).fetchone()[0]
        db.execute(
            "UPDATE memories SET status = ?, superseded_by = ?, updated_at = ?,"
            " embedding = CASE WHEN ? = 'deleted' THEN NULL ELSE embedding END WHERE id = ?",
            (status, replaced_by, now, status, memory_id),
        )
        self.unindex_fts(db, memory_id)
        db.execute(
            "INSERT INTO memory_history (user_id, memory_id, action, before, after, message_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user.id, memory_id, "supersede" if status == "superseded" else "delete", row[0], after, message_id, now),
        )
        self.bump(db, user)
        return True

    def delete_memories(self, user: User, memory_ids: Sequence[int], message_id: int | None = None) -> list[int]:
        """Forget memories of this user (kept only in history); returns the ids that were active."""
        with self.transaction() as db:
            return [m for m in memory_ids if self.retire(db, user, int(m), "deleted", message_id)]

    def edit_memory(self, user: User, memory_id: int, text: str) -> Memory:
        """Change the text of one of the user's active memories in place (an 'update' history row keeps
        the old text); it is embedded again on the next recall. NotFound if the user has no such memory."""
        _check_memory_text(text)
        now = time.time()
        with self.transaction() as db:
            row = db.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE id = ? AND user_id = ? AND status = 'active'",
                (int(memory_id), user.id),
            ).fetchone()
            if row is None:
                raise NotFound(f"you have no memory {memory_id}")
            if text != row["text"]:
                db.execute(
                    "UPDATE memories SET text = ?, embedding = NULL, updated_at = ? WHERE id = ?",
                    (text, now, row["id"]),
                )
                self.unindex_fts(db, row["id"])
                self.index_fts(db, row["id"], index_text(text, row["speaker"], row["said_at"]))
                db.execute(
                    "INSERT INTO memory_history (user_id, memory_id, action, before, after, message_id, created_at)"
                    " VALUES (?, ?, 'update', ?, ?, NULL, ?)",
                    (user.id, row["id"], row["text"], text, now),
                )
                self.bump(db, user)
        return self.get_memories(user, [row["id"]])[row["id"]]

    def memories(self, user: User, instance: Instance | None = None, include_inactive: bool = False) -> list[Memory]:
        """The user's memories, oldest first: user-wide ones plus, given an instance, its private ones."""
        sql = f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE user_id = ?"
        params: list = [user.id]
        if instance is not None:
            _check_owner(user, instance)
            sql += " AND (instance_id IS NULL OR instance_id = ?)"
            params.append(instance.id)
        if not include_inactive:
            sql += " AND status = 'active'"
        return [_memory(r) for r in self.read(sql + " ORDER BY id", params)]

    def get_memories(self, user: User, ids: Sequence[int]) -> dict[int, Memory]:
        """Memories by id, only this user's."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.read(
            f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE +user_id = ? AND id IN ({marks})", [user.id, *ids]
        )
        return {r["id"]: _memory(r) for r in rows}

    def history_of_memories(self, user: User, memory_id: int | None = None) -> list[dict]:
        """The user's memory history (add, supersede, update, delete), oldest first; one memory's with an id."""
        if memory_id is None:
            rows = self.read("SELECT * FROM memory_history WHERE user_id = ? ORDER BY id", (user.id,))
        else:
            rows = self.read(
                "SELECT * FROM memory_history WHERE user_id = ? AND memory_id = ? ORDER BY id",
                (user.id, int(memory_id)),
            )
        return [
            {"memory_id": r["memory_id"], "action": r["action"], "before": r["before"], "after": r["after"],
             "message_id": r["message_id"], "at": iso(r["created_at"])}
            for r in rows
        ]  # fmt: skip

    def fts_search(self, user: User, match: str, limit: int) -> list[tuple[int, float]]:
        """(memory id, bm25) of the user's active memories matching an FTS5 query, best first."""
        return [
            (r[0], -r[1])
            for r in self.read(
                "SELECT m.id, f.rank FROM memories_fts AS f JOIN memories AS m ON m.id = f.rowid"
                " WHERE memories_fts MATCH ? AND m.user_id = ? ORDER BY f.rank LIMIT ?",
                (match, user.id, limit),
            )
        ]

    def speakers_among(self, user: User, names: Sequence[str]) -> list[str]:
        """Those of `names` that speak in the user's active memories (case as stored), in the order given."""
        found = []
        for name in dict.fromkeys(names):  # each stops at its first active row
            if self.read(
                "SELECT 1 FROM memories INDEXED BY memories_by_speaker"
                " WHERE user_id = ? AND speaker = ? AND status = 'active' LIMIT 1",
                (user.id, name),
            ):
                found.append(name)
        return found

    def term_documents(self, terms: Sequence[str], cap: int = 20_001) -> dict[str, int]:
        """How many indexed memories (of all users) hold each term, counted up to `cap` (terms held
        by none are left out)."""
        out = {}
        with self._lock:  # a capped keyword match stops after `cap` postings: ~0.05 ms a term at 100k
            for term in dict.fromkeys(terms):  # (fts5vocab took 0.4-5 ms a term, even for a missing one)
                row = self._conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?)",
                    ('"' + term.replace('"', '""') + '"', cap),
                ).fetchone()
                if row[0]:
                    out[term] = row[0]
        return out

    def unembedded(self, user: User, limit: int = 512) -> list[sqlite3.Row]:
        return self.read(
            "SELECT id, text, kind, speaker FROM memories INDEXED BY memories_unembedded"
            " WHERE user_id = ? AND status = 'active'"
            " AND embedding IS NULL LIMIT ?",
            (user.id, limit),
        )

    def set_embeddings(self, user: User, ids: Sequence[int], vectors: np.ndarray) -> None:
        with self.transaction() as db:
            db.executemany(
                "UPDATE memories SET embedding = ? WHERE id = ? AND user_id = ?",
                [(self.vector_param(v), int(i), user.id) for i, v in zip(ids, vectors, strict=True)],
            )
            self.bump(db, user)

    def vector_index(self, user: User) -> VectorIndex:
        """The user's embedded active memories as an in-memory index, kept up to date by reading only
        the rows changed since it was last used (by this process or any other; see migration 3)."""
        with self._lock:
            row = self._conn.execute("SELECT mem_version, created_at FROM users WHERE id = ?", (user.id,)).fetchone()
            if row is None:  # erased (perhaps by another process)
                self._vectors.pop(user.id, None)
                return VectorIndex(-1)
            version, born = row
            cached = self._vectors.get(user.id)
            if cached is not None and cached[0] == born and cached[1].version <= version:
                index = cached[1]
                if index.version < version:
                    index.apply(self._conn.execute(
                        "SELECT id, status, COALESCE(instance_id, 0), embedding FROM memories"
                        " WHERE user_id = ? AND changed > ?",
                        (user.id, index.version),
                    ))  # fmt: skip
                    index.version = version
                return index
            index = VectorIndex(version, self._conn.execute(
                "SELECT id, COALESCE(instance_id, 0), embedding FROM memories"
                " WHERE user_id = ? AND status = 'active' AND embedding IS NOT NULL",
                (user.id,),
            ))  # fmt: skip
            self._vectors[user.id] = (born, index)
            return index

    def active_by_key(self, db: sqlite3.Connection, user: User, key: str, instance_id: int | None) -> list[sqlite3.Row]:
        return db.execute(
            "SELECT id, text FROM memories WHERE user_id = ? AND key = ? AND status = 'active' AND instance_id IS ?",
            (user.id, key, instance_id),
        ).fetchall()

    # dialect hooks (memory.postgres overrides these) -------------------------------------------

    def index_fts(self, db: sqlite3.Connection, memory_id: int, body: str) -> None:
        """Inside a transaction: add a memory's text (as `index_text` makes it) to the keyword index."""
        db.execute("INSERT INTO memories_fts (rowid, body) VALUES (?, ?)", (memory_id, body))

    def unindex_fts(self, db: sqlite3.Connection, memory_id: int) -> None:
        """Inside a transaction: take a memory out of the keyword index."""
        db.execute("DELETE FROM memories_fts WHERE rowid = ?", (memory_id,))

    def vector_param(self, vec: np.ndarray) -> object:
        """A unit float32 (DIM,) vector as the embedding column takes it."""
        return np.asarray(vec, np.float32).reshape(DIM).tobytes()

    def lock_user(self, db: sqlite3.Connection, user: User) -> None:
        """Inside a transaction: serialise this user's memory writes (SQLite: BEGIN IMMEDIATE already has)."""

    def bump(self, db: sqlite3.Connection, user: User) -> None:
        """Inside a transaction: mark the user's memories changed (drops cached vector indexes)."""
        db.execute("UPDATE users SET mem_version = mem_version + 1 WHERE id = ?", (user.id,))

    # export -----------------------------------------------------------------------------------

    def export_user(self, user: User) -> dict:
        """Everything stored about a user, as JSON-ready data (embeddings left out)."""
        from memory.documents import Documents
        from memory.personas import list_personas

        messages = self.read("SELECT * FROM messages WHERE user_id = ? ORDER BY id", (user.id,))
        return {
            "user": {"id": user.id, "name": user.name},
            "personas": [p.to_json() for p in list_personas(self, user) if not p.builtin],
            "instances": [{"id": i.id, "persona": i.persona, "name": i.name} for i in self.instances(user)],
            "messages": [_message_json(_message(r)) for r in messages],
            "memories": [m.to_json() for m in self.memories(user, include_inactive=True)],
            "memory_history": self.history_of_memories(user),
            "documents": [d.to_json() for d in Documents(self).documents(user)],  # their text: GET /v1/documents/{id}
            "files": sorted(
                str(p.relative_to(self.data_dir)) for p in self.user_files_dir(user).rglob("*") if p.is_file()
            ),
        }


def count_tokens(text: str) -> int:
    """A cheap token estimate used to fit budgets (Qwen2.5's tokenizer, measured: about 4 ASCII
    characters a token, 2.5 Cyrillic or Arabic ones, and one Chinese or Japanese character;
    counting every script like English let a Chinese history 2.7 times too long through)."""
    if text.isascii():
        return len(text) // 4 + 1
    wide = sum(1 for ch in text if ch >= "\u2e80")  # CJK and beyond
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars // 4 + int((len(text) - ascii_chars - wide) / 2.5) + wide + 1


def _check_memory_text(text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise BadInput("a memory's text is empty")
    if len(text) > MAX_MEMORY_CHARS:
        raise BadInput(f"a memory is too long ({len(text)} characters > {MAX_MEMORY_CHARS})")
    if "\x00" in text:
        raise BadInput("a memory contains a NUL character")


def _check_owner(user: User, instance: Instance) -> None:
    if instance.user_id != user.id:
        raise BadInput("that instance belongs to another user")


def _memory(r: sqlite3.Row) -> Memory:
    return Memory(
        id=r["id"], user_id=r["user_id"], instance_id=r["instance_id"], kind=r["kind"], text=r["text"], key=r["key"],
        speaker=r["speaker"], said_at=r["said_at"], source_id=r["source_id"], status=r["status"],
        created_at=r["created_at"], updated_at=r["updated_at"],
    )  # fmt: skip


def _message(r: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=r["id"], instance_id=r["instance_id"], role=r["role"], text=r["text"],
        attachments=tuple(json.loads(r["attachments"])), timings=json.loads(r["timings"]),
        interrupted=bool(r["interrupted"]), turn_id=r["turn_id"], created_at=r["created_at"],
    )  # fmt: skip


def _message_json(m: StoredMessage) -> dict:
    return {
        "id": m.id, "instance_id": m.instance_id, "role": m.role, "text": m.text, "attachments": list(m.attachments),
        "timings": m.timings, "interrupted": m.interrupted, "turn_id": m.turn_id, "at": iso(m.created_at),
    }  # fmt: skip
