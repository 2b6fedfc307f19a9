"""Request bodies read with a size limit that holds whether or not the client sent a Content-Length."""

from __future__ import annotations

from fastapi import Request

from ui.errors import ApiError

__all__ = ["read_body", "replayed"]


async def read_body(request: Request, limit: int, too_large: str) -> bytes:
    """The whole body, refused with a 413 (message `too_large`) as soon as it passes `limit` bytes:
    by its Content-Length before reading, and while it arrives without one (chunked), so nothing past
    the limit is ever held."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError as err:
        raise ApiError(400, "the Content-Length header is not a number", "bad_input") from err
    if declared > limit:
        raise ApiError(413, too_large, "too_large")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, too_large, "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def replayed(request: Request, body: bytes) -> Request:
    """A request like `request` whose body is `body` (read already, and counted)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)
