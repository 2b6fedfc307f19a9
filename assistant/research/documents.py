"""The user's own documents as a Deep Search source: ingest files and folders, search their passages.

    for result in add_paths(store, user, ["notes/", "paper.pdf"]):   # lazy: one file per step
        print(result.line())
    DocumentSource(store, user).search("when was the bridge finished?")

Ingest is resumable: each file is committed on its own, and a file the user already has from the
same path with the same size and modification time (or, when those changed, the same SHA-256) is
skipped without being read again, so a 10,000-file folder cut off halfway finishes when the same
command runs again. A bad file (corrupt, too large, of another type, unreadable) gives one line
and the rest go on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AssistantError, BadInput
from assistant.research.readers import MAX_FILE_BYTES, chunk, extract, kind_of
from assistant.research.sources import Passage
from memory.documents import Documents, NewDocument
from memory.types import User

__all__ = ["DocumentSource", "FileResult", "add_bytes", "add_paths", "documents_of", "find_files"]

MAX_PASSAGES = 20_000  # passages kept of one document
UPLOAD_PREFIX = "upload/"  # the path of a document that came as an upload, before its file name


@dataclass(frozen=True, slots=True)
class FileResult:
    """What became of one file: added (its document id), skipped (already there), or failed (why)."""

    path: str
    status: str  # "added", "updated", "skipped" or "failed"
    document_id: int | None = None
    passages: int = 0
    error: str = ""

    def line(self) -> str:
        """One line for people: `added 12 (3 passages): notes/a.md`, `failed: x.pdf: a corrupt PDF (...)`."""
        if self.status == "failed":
            return f"failed: {self.path}: {self.error}"
        if self.status == "skipped":
            return f"skipped (already added as {self.document_id}): {self.path}"
        return f"{self.status} {self.document_id} ({self.passages} passages): {self.path}"


def documents_of(store) -> Documents:
    """The store's documents table (one `Documents` per store, made on first use)."""
    docs = getattr(store, "_documents", None)
    if docs is None:
        docs = store._documents = Documents(store)
    return docs


def find_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[FileResult], int]:
    """(the files to read, in order; a failed result for each path that is missing or unreadable;
    how many files of other types were passed over inside folders). A named file of another type
    is read, and fails with a clear line."""
    files, failed, other = [], [], 0
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for root, dirs, names in os.walk(path, onerror=None):
                dirs.sort()
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    if kind_of(name) is None:
                        other += 1
                    else:
                        files.append(Path(root) / name)
        elif path.exists():
            files.append(path)
        else:
            failed.append(FileResult(str(raw), "failed", error="no such file or folder"))
    return files, failed, other


def add_paths(store, user: User, paths: Iterable[str | Path]) -> Iterator[FileResult]:
    """Add files and folders (recursively) to the user's documents, one result per file as it is done."""
    files, failed, _ = find_files(paths)
    yield from failed
    for path in files:
        yield add_file(store, user, path)


def add_file(store, user: User, path: Path) -> FileResult:
    """Add one file (skipped if the user has it unchanged from the same path); never raises a user error."""
    shown = str(path)
    try:
        key = str(path.resolve())
        st = path.stat()
        if not path.is_file():
            raise BadInput("not a regular file")
        if kind_of(path.name) is None:
            extract(b"", path.name)  # says which types are read
        if st.st_size > MAX_FILE_BYTES:
            raise BadInput(f"too large ({st.st_size / 2**20:.0f} MiB > {MAX_FILE_BYTES // 2**20} MiB)")
        docs = documents_of(store)
        known = docs.by_path(user, key)
        if known is not None and known.size == st.st_size and known.mtime == st.st_mtime:
            return FileResult(shown, "skipped", known.id)
        data = path.read_bytes()
    except OSError as err:
        return FileResult(shown, "failed", error=f"cannot read it: {err.strerror or err}")
    except AssistantError as err:
        return FileResult(shown, "failed", error=err.message)
    return _add(store, user, key, shown, data, st.st_mtime)


def add_bytes(store, user: User, name: str, data: bytes, mtime: float = 0.0) -> FileResult:
    """Add an uploaded file called `name` (its suffix says its type); a second upload of the same
    name replaces the first, or is skipped when it is the same."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base:
        return FileResult(name, "failed", error="the upload has no file name")
    return _add(store, user, UPLOAD_PREFIX + base, base, data, mtime)


def _add(store, user: User, key: str, shown: str, data: bytes, mtime: float) -> FileResult:
    docs = documents_of(store)
    digest = hashlib.sha256(data).hexdigest()
    try:
        known = docs.by_path(user, key)
        if known is not None and known.sha256 == digest:
            if known.mtime != mtime:
                docs.touch(user, known.id, mtime)
            return FileResult(shown, "skipped", known.id)
        doc = extract(data, shown)
        passages = tuple(chunk(doc.text)[:MAX_PASSAGES])
        vectors = store.embedder.embed(list(passages))
        doc_id = docs.put(user, NewDocument(key, doc.title, doc.kind, len(data), mtime, digest, doc.text,
                                            passages, vectors))  # fmt: skip
    except AssistantError as err:
        return FileResult(shown, "failed", error=err.message)
    return FileResult(shown, "added" if known is None else "updated", doc_id, len(passages))


class DocumentSource:
    """The Source (assistant.research.sources) over one user's documents: hybrid search of their passages."""

    name = "documents"

    def __init__(self, store, user: User | int) -> None:
        self.store = store
        self.user = user if isinstance(user, User) else User(int(user), "")
        self._docs = documents_of(store)

    def search(self, query: str, k: int = 5) -> list[Passage]:
        """The user's k passages most relevant to `query`, best first; [] for an empty query or corpus."""
        query = (query or "").strip()
        if not query or k < 1:
            return []
        vec = self.store.embedder.embed_one(query)
        return [
            Passage(source=self.name, doc_id=str(hit.document_id), title=hit.title,
                    url=f"/v1/documents/{hit.document_id}", text=hit.text, score=hit.score)
            for hit in self._docs.search(self.user, vec, query, k)
        ]  # fmt: skip
