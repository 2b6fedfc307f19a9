"""`/v1/documents`: the caller's own documents for Deep Search: upload, list, read, remove.

The user is the one the API key names, never a field of the request, so a key reaches only its
user's documents: another user's id answers 404, as a missing one does. `GET /v1/documents/{id}`
is the link a Deep Search citation of an uploaded or added document points at.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from starlette.datastructures import UploadFile

from ui.bodies import read_body, replayed
from ui.errors import ApiError

__all__ = ["MAX_DOCUMENT_UPLOAD_BYTES", "make_documents_router"]

MAX_DOCUMENT_UPLOAD_BYTES = 64 * 1024 * 1024  # one upload, all its files (assistant.research.readers caps each)
FORM_OVERHEAD_BYTES = 1024 * 1024


def make_documents_router(state, authenticate) -> APIRouter:
    """The routes, to include in the /v1 router (before its catch-all). `state.store` holds the documents."""
    router = APIRouter()

    def store():
        if state.store is None:
            raise ApiError(400, "this server keeps no documents", "bad_input")
        return state.store

    @router.get("/documents")
    async def listing(user: str = Depends(authenticate)) -> dict:
        from assistant.research.documents import documents_of

        s = store()
        docs = await asyncio.to_thread(lambda: documents_of(s).documents(s.user(user)))
        return {"object": "list", "data": [d.to_json() for d in docs]}

    @router.post("/documents")
    async def upload(request: Request, user: str = Depends(authenticate)) -> dict:
        from assistant.research.documents import add_bytes

        s = store()
        files = await _files(request)
        results = []
        for name, data in files:  # one at a time: each is embedded on the CPU and committed on its own
            results.append(await asyncio.to_thread(add_bytes, s, s.user(user), name, data))
        if all(r.status == "failed" for r in results):
            raise ApiError(400, "; ".join(r.line() for r in results), "bad_input")
        return {"object": "list", "data": [
            {"name": r.path, "status": r.status, "id": r.document_id, "passages": r.passages, "error": r.error or None,
             "url": None if r.document_id is None else f"/v1/documents/{r.document_id}"}
            for r in results]}  # fmt: skip

    @router.get("/documents/{doc_id}")
    async def read(doc_id: str, request: Request, user: str = Depends(authenticate)):
        from assistant.research.documents import documents_of

        s = store()
        doc, text = await asyncio.to_thread(lambda: documents_of(s).get(s.user(user), _doc_id(doc_id)))
        if request.query_params.get("format") == "json":
            return {**doc.to_json(), "text": text}
        return PlainTextResponse(text, media_type="text/plain; charset=utf-8")

    @router.delete("/documents/{doc_id}")
    async def remove(doc_id: str, user: str = Depends(authenticate)) -> dict:
        from assistant.research.documents import documents_of

        s = store()
        number = _doc_id(doc_id)
        gone = await asyncio.to_thread(lambda: documents_of(s).remove(s.user(user), [number]))
        if not gone:
            raise ApiError(404, f"you have no document {number}", "not_found")
        return {"id": number, "object": "document", "deleted": True}

    return router


def _doc_id(raw: str) -> int:
    try:
        number = int(raw)
    except ValueError:
        raise ApiError(404, f"you have no document {raw!r}", "not_found") from None
    if not 0 < number < 2**63:
        raise ApiError(404, f"you have no document {raw!r}", "not_found")
    return number


async def _files(request: Request) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each `file` part of a multipart form."""
    limit = MAX_DOCUMENT_UPLOAD_BYTES + FORM_OVERHEAD_BYTES
    body = await read_body(request, limit, f"the upload is larger than {MAX_DOCUMENT_UPLOAD_BYTES // 2**20} MiB")
    try:
        form = await replayed(request, body).form(max_part_size=MAX_DOCUMENT_UPLOAD_BYTES + 1)
    except Exception as err:  # starlette raises several types for malformed multipart bodies
        raise ApiError(400, f"expected a multipart/form-data body with a `file`: {err}", "bad_input") from err
    uploads = [u for u in form.getlist("file") if isinstance(u, UploadFile)]
    if not uploads:
        raise ApiError(400, "the form needs a `file` field with the document (txt, md, html or pdf)", "bad_input")
    return [(u.filename or "", await u.read()) for u in uploads]
