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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from assistant.errors import AssistantError, BadInput
from assistant.research.readers import MAX_FILE_BYTES, chunk, extract, kind_of
from assistant.research.sources import Passage
from memory.documents import Documents, NewDocument
from memory.embed import DIM
from memory.types import User

__all__ = [
    "DocumentSource", "FileResult", "add_bytes", "add_file", "add_files", "add_paths", "documents_of", "find_files",
]

MAX_PASSAGES = 20_000  # passages kept of one document
BATCH_FILES = 32  # files whose passages are embedded together
BATCH_PASSAGES = 256  # or fewer files, once their passages reach this many
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
        counted = f"{self.passages} passage{'' if self.passages == 1 else 's'}"
        return f"{self.status} {self.document_id} ({counted}): {self.path}"


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
    yield from add_files(store, user, files)


def add_files(store, user: User, files: Sequence[Path]) -> Iterator[FileResult]:
    """Add these files, one result each (not quite in order: a skipped or failed file is reported at
    once). The passages of up to BATCH_FILES files are embedded in one batch (small files one at a
    time spent most of their time in the embedder's per-call overhead), then each file is committed
    on its own."""
    pending: list[_Ready] = []
    for n, path in enumerate(files, 1):
        ready = _prepare_file(store, user, path)
        if isinstance(ready, FileResult):
            yield ready
        else:
            pending.append(ready)
        if pending and (n == len(files) or len(pending) >= BATCH_FILES
                        or sum(len(r.document.passages) for r in pending) >= BATCH_PASSAGES):  # fmt: skip
            yield from _commit(store, user, pending)
            pending = []


def add_file(store, user: User, path: Path) -> FileResult:
    """Add one file (skipped if the user has it unchanged from the same path); never raises a user error."""
    return next(iter(add_files(store, user, [path])))


def add_bytes(store, user: User, name: str, data: bytes, mtime: float = 0.0) -> FileResult:
    """Add an uploaded file called `name` (its suffix says its type); a second upload of the same
    name replaces the first, or is skipped when it is the same."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base:
        return FileResult(name, "failed", error="the upload has no file name")
    ready = _prepare(store, user, UPLOAD_PREFIX + base, base, data, mtime)
    return ready if isinstance(ready, FileResult) else next(_commit(store, user, [ready]))


@dataclass(frozen=True, slots=True)
class _Ready:
    """A file read and cut into passages, to embed and store."""

    shown: str
    document: NewDocument  # its vectors still empty
    replaces: bool  # the user had another version from this path


def _prepare_file(store, user: User, path: Path) -> FileResult | _Ready:
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
        known = documents_of(store).by_path(user, key)
        if known is not None and known.size == st.st_size and known.mtime == st.st_mtime:
            return FileResult(shown, "skipped", known.id)
        data = path.read_bytes()
    except OSError as err:
        return FileResult(shown, "failed", error=f"cannot read it: {err.strerror or err}")
    except AssistantError as err:
        return FileResult(shown, "failed", error=err.message)
    return _prepare(store, user, key, shown, data, st.st_mtime)


def _prepare(store, user: User, key: str, shown: str, data: bytes, mtime: float) -> FileResult | _Ready:
    docs = documents_of(store)
    digest = hashlib.sha256(data).hexdigest()
    try:
        known = docs.by_path(user, key)
        if known is not None and known.sha256 == digest:
            if known.mtime != mtime:
                docs.touch(user, known.id, mtime)
            return FileResult(shown, "skipped", known.id)
        doc = extract(data, shown)
    except AssistantError as err:
        return FileResult(shown, "failed", error=err.message)
    passages = tuple(chunk(doc.text)[:MAX_PASSAGES])
    new = NewDocument(key, doc.title, doc.kind, len(data), mtime, digest, doc.text, passages, np.zeros((0, DIM)))
    return _Ready(shown, new, known is not None)


def _commit(store, user: User, ready: list[_Ready]) -> Iterator[FileResult]:
    """Embed the passages of these files in one batch, then store each file in its own transaction."""
    try:
        vectors = store.embedder.embed([p for r in ready for p in r.document.passages])
    except AssistantError as err:
        for r in ready:
            yield FileResult(r.shown, "failed", error=err.message)
        return
    start = 0
    for r in ready:
        n = len(r.document.passages)
        doc = replace(r.document, vectors=vectors[start : start + n])
        start += n
        try:
            doc_id = documents_of(store).put(user, doc)
        except AssistantError as err:
            yield FileResult(r.shown, "failed", error=err.message)
            continue
        yield FileResult(r.shown, "updated" if r.replaces else "added", doc_id, n)


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
