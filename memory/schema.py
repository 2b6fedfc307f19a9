"""The SQLite schema and its versioned migrations (PRAGMA user_version holds the version)."""

from __future__ import annotations

import sqlite3
import time

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "connect", "migrate"]

# Each entry moves the schema from version i to i + 1; never edit a shipped one, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        mem_version INTEGER NOT NULL DEFAULT 0   -- bumped by every memory write; invalidates caches
    );
    CREATE TABLE personas (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL COLLATE NOCASE,
        voice TEXT,
        style TEXT NOT NULL DEFAULT '',
        language TEXT NOT NULL DEFAULT 'en',
        greeting TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (user_id, name)
    );
    CREATE TABLE instances (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        persona TEXT NOT NULL COLLATE NOCASE,
        name TEXT NOT NULL COLLATE NOCASE,
        created_at REAL NOT NULL,
        UNIQUE (user_id, name)
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        text TEXT NOT NULL,
        attachments TEXT NOT NULL DEFAULT '[]',   -- JSON list of paths under the data dir
        timings TEXT NOT NULL DEFAULT '{}',       -- JSON object, seconds
        interrupted INTEGER NOT NULL DEFAULT 0,
        turn_id TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_by_instance ON messages (instance_id, id);
    CREATE TABLE memories (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        instance_id INTEGER REFERENCES instances(id) ON DELETE CASCADE,  -- NULL: user-wide
        kind TEXT NOT NULL,
        key TEXT,                 -- a slot such as 'user.name': a new value supersedes the old
        text TEXT NOT NULL,
        speaker TEXT,
        said_at REAL NOT NULL,    -- when it was said (unix seconds)
        source_id TEXT,
        embedding BLOB,           -- float32[384], L2-normalised; NULL until embedded
        status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'superseded', 'deleted')),
        superseded_by INTEGER REFERENCES memories(id) ON DELETE SET NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX memories_by_user ON memories (user_id, status, id);
    CREATE INDEX memories_by_key ON memories (user_id, key) WHERE key IS NOT NULL AND status = 'active';
    CREATE VIRTUAL TABLE memories_fts USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');
    CREATE TABLE memory_history (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        memory_id INTEGER REFERENCES memories(id) ON DELETE CASCADE,
        action TEXT NOT NULL CHECK (action IN ('add', 'supersede', 'delete', 'update')),
        before TEXT,
        after TEXT,
        message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX history_by_user ON memory_history (user_id, id);
    """,
    # 2: per-term document counts (recall skips terms too common to rank anything); find unembedded rows fast
    """
    CREATE VIRTUAL TABLE memories_fts_vocab USING fts5vocab(memories_fts, 'row');
    CREATE INDEX memories_unembedded ON memories (user_id) WHERE embedding IS NULL AND status = 'active';
    """,
    # 3: every memory row carries the version the user's memories get at the end of the transaction
    # that last inserted it or changed its status, instance or embedding (writes bump mem_version
    # after their rows), so a cached vector index reads only the rows changed since it was built.
    # Store.insert_memory sets it on insert (an AFTER INSERT trigger cost 35% of the insert rate).
    """
    ALTER TABLE memories ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX memories_changed ON memories (user_id, changed);
    CREATE TRIGGER memories_stamp_update AFTER UPDATE OF status, instance_id, embedding ON memories BEGIN
        UPDATE memories SET changed = (SELECT mem_version + 1 FROM users WHERE id = NEW.user_id) WHERE id = NEW.id;
    END;
    """,
    # 4: the speakers a query names are looked up among the user's memories (recall favours their lines)
    """
    CREATE INDEX memories_by_speaker ON memories (user_id, speaker) WHERE speaker IS NOT NULL;
    """,
    # 5: the user's own documents for Deep Search (assistant/research/documents.py): each file once
    # per user and path, with the size, mtime and hash that let a rerun skip it; its text cut into
    # passages, each embedded (float32[384], as memories) and in passages_fts. The triggers keep the
    # keyword index in step with the rows, also when a document or a user is deleted (cascades fire them).
    """
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        path TEXT NOT NULL,       -- where it was added from: an absolute path, or upload/NAME
        title TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('txt', 'md', 'html', 'pdf')),
        size INTEGER NOT NULL,    -- bytes of the file
        mtime REAL NOT NULL,      -- the file's modification time (unix seconds)
        sha256 TEXT NOT NULL,
        text TEXT NOT NULL,       -- the extracted text, as /v1/documents/{id} serves it
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (user_id, path)
    );
    CREATE TABLE passages (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,     -- its place in the document, from 0
        text TEXT NOT NULL,
        embedding BLOB            -- float32[384], L2-normalised
    );
    CREATE INDEX passages_by_document ON passages (document_id, seq);
    CREATE INDEX passages_by_user ON passages (user_id, id);
    CREATE VIRTUAL TABLE passages_fts USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');
    CREATE TRIGGER passages_index AFTER INSERT ON passages BEGIN
        INSERT INTO passages_fts (rowid, body) VALUES (NEW.id, NEW.text);
    END;
    CREATE TRIGGER passages_unindex AFTER DELETE ON passages BEGIN
        DELETE FROM passages_fts WHERE rowid = OLD.id;
    END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str, timeout_s: float = 30.0) -> sqlite3.Connection:
    """A connection with WAL, foreign keys and a busy timeout; autocommit (we BEGIN ourselves)."""
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    _use_wal(conn, timeout_s)
    # FULL, not NORMAL: with WAL, NORMAL never corrupts the file but a power cut can lose the last
    # commits (they are synced only at checkpoints), more than "at most the turn in flight". FULL syncs
    # the WAL at each commit: 1.2-1.4 ms a commit against 0.02 ms here, a few commits a turn, after it.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA secure_delete = ON")  # deleted rows are zeroed on disk, not left in free pages
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    return conn


def _use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch a new database to WAL. The switch needs the database alone and does not wait for it:
    two processes or threads opening a new database at once got "database is locked" (a test with
    four threads, 2 times in 30). So it is tried again until the mode is WAL (the other may have
    switched it) or the busy timeout is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION, one transaction per step; returns the version."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                conn.execute("COMMIT")
                return version
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line.split("--", 1)[0] + "\n"  # the migrations hold no "--" inside strings
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]
