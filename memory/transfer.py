"""Moving stored data between stores (SQLite <-> PostgreSQL) as JSON lines, losslessly.

`export_lines` writes one `{"table": T, "row": {...}}` line per row of every table, for one user or
all, parents before children; embeddings travel as base64 float32. `import_lines` reads that back
in one transaction: users are matched by name, instances and personas by (user, name), every other
row gets a new id and the references between rows are mapped to the new ids. Into an empty store
the ids come out the same, so export -> import -> export gives the same lines.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator

import numpy as np

from assistant.errors import BadInput
from memory.store import Store
from memory.types import User, index_text

__all__ = ["TABLES", "export_lines", "import_lines", "is_dump_line"]

# table -> its columns as exported (memories' `changed` is the store's own bookkeeping: left out)
TABLES: dict[str, tuple[str, ...]] = {
    "users": ("id", "name", "created_at"),
    "personas": ("id", "user_id", "name", "voice", "style", "language", "greeting", "created_at", "updated_at"),
    "instances": ("id", "user_id", "persona", "name", "created_at"),
    "messages": ("id", "user_id", "instance_id", "role", "text", "attachments", "timings", "interrupted", "turn_id",
                 "created_at"),
    "memories": ("id", "user_id", "instance_id", "kind", "key", "text", "speaker", "said_at", "source_id",
                 "embedding", "status", "superseded_by", "created_at", "updated_at"),
    "memory_history": ("id", "user_id", "memory_id", "action", "before", "after", "message_id", "created_at"),
}  # fmt: skip


def is_dump_line(line: object) -> bool:
    """Whether a parsed JSON line is one of `export_lines`' (not a conversation line to import)."""
    return isinstance(line, dict) and set(line) == {"table", "row"}


def export_lines(store: Store, user: User | None = None) -> Iterator[str]:
    """Every row of every table (one user's, or everyone's), as JSON lines."""
    for table, columns in TABLES.items():
        where, params = ("", ()) if user is None else (
            (" WHERE id = ?", (user.id,)) if table == "users" else (" WHERE user_id = ?", (user.id,)))  # fmt: skip
        for row in store.read(f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY id", params):
            out = {c: row[i] for i, c in enumerate(columns)}
            if table == "memories" and out["embedding"] is not None:
                out["embedding"] = base64.b64encode(bytes(out["embedding"])).decode()
            yield json.dumps({"table": table, "row": out}, ensure_ascii=False)


def import_lines(store: Store, lines: Iterable[dict]) -> dict[str, int]:
    """Insert exported rows in one transaction; returns how many rows of each table were added."""
    ids: dict[str, dict[int, int]] = {t: {} for t in TABLES}
    added = dict.fromkeys(TABLES, 0)
    supersede: list[tuple[int, int]] = []
    touched: dict[int, User] = {}
    with store.transaction() as db:
        for line in lines:
            table, row = line.get("table"), line.get("row")
            if table not in TABLES or not isinstance(row, dict) or set(row) != set(TABLES[table]):
                raise BadInput(f"not a row of the export format: {json.dumps(line)[:120]}")
            mapped = _mapped(table, row, ids)
            if table == "memories":  # PostgreSQL: the user's write lock before the row is stamped
                store.lock_user(db, User(mapped["user_id"], ""))
            new = _insert(store, db, table, mapped)
            if new is None:
                continue
            ids[table][row["id"]], added[table] = new, added[table] + 1
            if table == "memories":
                user = touched.setdefault(ids["users"][row["user_id"]], User(ids["users"][row["user_id"]], ""))
                if row["superseded_by"] is not None:
                    supersede.append((new, row["superseded_by"]))
                if row["status"] == "active":
                    store.index_fts(db, new, index_text(row["text"], row["speaker"], row["said_at"]))
        for new, old_target in supersede:  # the newer memory came after the one it replaced
            db.execute("UPDATE memories SET superseded_by = ? WHERE id = ?", (ids["memories"].get(old_target), new))
        for user in touched.values():
            store.bump(db, user)
    return added


def _mapped(table: str, row: dict, ids: dict[str, dict[int, int]]) -> dict:
    """The row with its references to other exported rows mapped to their new ids."""
    out = dict(row)
    refs = {"user_id": "users", "instance_id": "instances", "memory_id": "memories", "message_id": "messages"}
    for column, parent in refs.items():
        if column in out and out[column] is not None:
            if out[column] not in ids[parent]:
                raise BadInput(f"{table} row {row['id']} refers to {parent} {out[column]}, which is not in the import")
            out[column] = ids[parent][out[column]]
    return out


def _insert(store: Store, db, table: str, row: dict) -> int | None:
    """Insert one row (without its id); for users, instances and personas an existing one of that
    name is used instead (None for a persona that exists: it is kept as it is)."""
    if table == "users":
        db.execute("INSERT OR IGNORE INTO users (name, created_at) VALUES (?, ?)", (row["name"], row["created_at"]))
        return int(db.execute("SELECT id FROM users WHERE name = ?", (row["name"],)).fetchone()[0])
    if table in ("instances", "personas"):
        found = db.execute(f"SELECT id FROM {table} WHERE user_id = ? AND name = ?", (row["user_id"], row["name"]))
        hit = found.fetchone()
        if hit is not None:
            return int(hit[0]) if table == "instances" else None
    columns = [c for c in TABLES[table] if c != "id"]
    values = [row[c] for c in columns]
    if table == "memories":
        values[columns.index("superseded_by")] = None  # set once the newer memory is in
        blob = row["embedding"]
        vec = None if blob is None else np.frombuffer(base64.b64decode(blob), np.float32)
        values[columns.index("embedding")] = None if vec is None else store.vector_param(vec)
        columns.append("changed")
        values.append(None)
    marks = ", ".join("?" for _ in columns)
    if table == "memories":  # stamped as Store.insert_memory does (memory.schema migration 3)
        marks = marks[: marks.rindex("?")] + "(SELECT mem_version + 1 FROM users WHERE id = ?)"
        values[-1] = row["user_id"]
    cur = db.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)
    return int(cur.lastrowid)
