"""Speech for the web page while it is being made: per-turn PCM16 streams the page's player fetches.

A Gradio handler cannot stream audio to the browser without holding its event open until playback
ends, so the handlers hand each reply's audio chunks to a `SpeechRelay` and give the page a URL
with an unguessable one-time token; the page's WebAudio player (ui/static/web.js) fetches
`GET /ui/speech/{token}` and plays the chunks as they arrive. The token is made for one turn of
one page and can be read once, and only by the user who made it: with logins on, another user (or
nobody logged in) who has the URL gets the same 404 as for a token that never existed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from audio.encode import pcm16_bytes
from ui.errors import error_body

__all__ = ["SpeechRelay", "make_speech_router"]

log = logging.getLogger(__name__)

UNREAD_TTL_S = 120.0  # a stream nobody fetched (the page was closed) is dropped after this
MAX_STREAMS = 512  # open streams kept at most; the oldest are dropped beyond it


@dataclass
class _Stream:
    sample_rate: int
    owner: str  # the user whose page asked for it; only they may read it
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)  # bytes, then None at the end
    created_s: float = field(default_factory=time.monotonic)
    taken: bool = False


class SpeechRelay:
    """Token -> one reply's audio on its way to one page. Used from the server's event loop only."""

    def __init__(self, prefix: str = "/ui/speech") -> None:
        self.prefix = prefix
        self._streams: dict[str, _Stream] = {}

    def open(self, sample_rate: int, owner: str) -> str:
        """A new stream that only `owner` may read; returns its token."""
        self._drop_stale()
        token = secrets.token_urlsafe(18)
        self._streams[token] = _Stream(sample_rate, owner)
        return token

    def spec(self, token: str, pane: str) -> str:
        """What the page's player is given (a hidden textbox value): which pane, the URL, the rate."""
        s = self._streams[token]
        return json.dumps({"pane": pane, "url": f"{self.prefix}/{token}", "rate": s.sample_rate, "token": token})

    def put(self, token: str, pcm: np.ndarray, sample_rate: int) -> None:
        """Queue float32 mono samples (resampled to the stream's rate if they differ)."""
        s = self._streams.get(token)
        if s is None:
            return  # dropped: nobody is listening any more
        if sample_rate != s.sample_rate:
            from audio.io import resample

            pcm = resample(np.asarray(pcm, np.float32), sample_rate, s.sample_rate)
        s.queue.put_nowait(pcm16_bytes(pcm))

    def close(self, token: str) -> None:
        """No more audio for this stream (the reply is done, failed or was cancelled)."""
        s = self._streams.get(token)
        if s is not None:
            s.queue.put_nowait(None)
            if s.taken:
                self._streams.pop(token, None)

    def take(self, token: str, reader: str | None) -> _Stream | None:
        """The stream for its one reader, or None (unknown, expired, already read, or `reader` is not
        its owner: then it stays unread, for its owner)."""
        s = self._streams.get(token)
        if s is None or s.taken:
            return None
        if reader != s.owner:
            log.warning("speech stream refused: made for another user than %r", reader)
            return None
        s.taken = True
        return s

    async def read(self, token: str, s: _Stream) -> AsyncIterator[bytes]:
        try:
            while (chunk := await s.queue.get()) is not None:
                yield chunk
        finally:
            self._streams.pop(token, None)

    def _drop_stale(self) -> None:
        now = time.monotonic()
        for token, s in list(self._streams.items()):
            if not s.taken and now - s.created_s > UNREAD_TTL_S:
                del self._streams[token]
        while len(self._streams) >= MAX_STREAMS:
            del self._streams[next(iter(self._streams))]


def make_speech_router(relay: SpeechRelay, reader: Callable[[Request], str | None]) -> APIRouter:
    """`GET {relay.prefix}/{token}`: the stream as raw PCM16 little-endian mono (rate in X-Sample-Rate).
    `reader(request)` names the user asking (None: nobody logged in); only a stream's owner gets it."""
    router = APIRouter()

    @router.get(relay.prefix + "/{token}", include_in_schema=False)
    async def speech(token: str, request: Request):
        s = relay.take(token, reader(request))
        if s is None:
            return JSONResponse(
                error_body("no such speech stream (it was read already or has expired)", "not_found"), status_code=404
            )
        return StreamingResponse(
            relay.read(token, s),
            media_type=f"audio/L16;rate={s.sample_rate};channels=1",
            headers={"X-Sample-Rate": str(s.sample_rate), "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
