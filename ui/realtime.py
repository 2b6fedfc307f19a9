"""`/v1/realtime`: the realtime voice WebSocket (protocol: assistant/realtime.py).

One socket is one conversation: a Session of the caller's user and the chosen persona and
instance, driven by a `VoiceConversation` (server-side end of turn, barge-in). A bad message gets
an `error` event and the socket stays open; a bad persona or key gets one and the socket closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, Response

from assistant.errors import AssistantError
from assistant.realtime import INPUT_RATE
from assistant.session import Session
from assistant.voice import VoiceConversation
from audio.encode import pcm16_bytes
from audio.endpoint import EndpointConfig
from audio.io import resample
from ui.origins import OriginPolicy

__all__ = ["make_realtime_router"]

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = INPUT_RATE * 2 * 10  # 10 s of audio in one frame is more than any client sends
STATIC = Path(__file__).parent / "static"
VAD_FIELDS = {"silence_s": float, "prepare_s": float, "aggressiveness": int, "min_speech_s": float,
              "threshold_db": float, "echo_threshold_db": float, "detector": str, "silero_threshold": float}


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def make_realtime_router(get_engine: Callable, store, identify: Callable[[WebSocket], str | None],
                         max_new_tokens: int = 256, origins: OriginPolicy | None = None) -> APIRouter:
    """`identify(ws)` returns the caller's user name, or None to refuse the connection. `origins`:
    which web pages may open the socket (default: the server's own)."""
    origins = origins or OriginPolicy()
    router = APIRouter()

    @router.get("/call", include_in_schema=False)
    async def call_page() -> HTMLResponse:
        """The hands-free voice call in the browser (the same socket as `assistant talk --server`)."""
        return HTMLResponse((STATIC / "call.html").read_text(encoding="utf-8"))

    @router.get("/call.js", include_in_schema=False)
    async def call_script() -> Response:
        return Response((STATIC / "call.js").read_text(encoding="utf-8"), media_type="text/javascript")

    @router.websocket("/v1/realtime")
    async def realtime(ws: WebSocket) -> None:
        await ws.accept()
        q = ws.query_params
        try:
            origin = ws.headers.get("origin")
            if not origins.allows(origin, ws.headers.get("host")):
                raise _Refused("origin_not_allowed",
                               f"pages of {origin} may not open this socket (serve --allow-origin)")
            user = identify(ws)
            if user is None:
                raise _Refused("invalid_api_key", "missing or invalid API key: send Authorization: Bearer <key>")
            engine = get_engine()
            voice = _known_voice(q.get("voice") or None, engine.voices)
            session = await asyncio.to_thread(  # its SQLite reads and writes, off the event loop
                Session, engine, store, user=user, persona_name=q.get("persona") or None,
                instance_name=q.get("instance") or None, max_new_tokens=max_new_tokens)
        except (_Refused, AssistantError) as err:
            code = err.code if isinstance(err, _Refused) else str(err.code)
            await ws.send_text(json.dumps({"type": "error", "code": code, "message": str(err)}))
            await ws.close(code=1008)
            return
        await _converse(ws, session, engine.sample_rate, voice)

    return router


def _known_voice(voice: str | None, voices) -> str | None:
    """The voice as the model names it; an unknown one is refused at connect, not at every turn."""
    if voice is None or not voices:  # none asked, or a remote engine (its server checks)
        return voice
    match = {v.lower(): v for v in voices}.get(voice.lower())
    if match is None:
        raise _Refused("unknown_voice", f"unknown voice {voice!r}; this model has: {', '.join(voices)}")
    return match


async def _converse(ws: WebSocket, session: Session, rate: int, voice: str | None) -> None:
    outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()

    def send_audio(reply_id: str, pcm: np.ndarray, sample_rate: int) -> None:
        if sample_rate != rate:
            pcm = resample(pcm, sample_rate, rate)
        outbox.put_nowait(pcm16_bytes(pcm))

    conv = VoiceConversation(session, send=lambda ev: outbox.put_nowait(json.dumps(ev)), send_audio=send_audio,
                             voice=voice, player_reports=False)

    async def sender() -> None:
        while (item := await outbox.get()) is not None:
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            else:
                await ws.send_text(item)

    writer = asyncio.get_running_loop().create_task(sender())
    outbox.put_nowait(json.dumps({"type": "session.created", "input_rate": INPUT_RATE, "output_rate": rate,
                                  "user": session.user, "persona": session.persona.name,
                                  "voice": voice or session.persona.voice}))
    closing = False  # the client sent session.close: confirm once everything is saved
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            if msg.get("bytes") is not None:
                data = msg["bytes"]
                if len(data) > MAX_FRAME_BYTES or len(data) % 2:
                    conv.error("audio frames are PCM16 mono 16 kHz, at most 10 s each")
                    continue
                conv.feed(np.frombuffer(data, dtype="<i2").astype(np.int16))
            elif msg.get("text") is not None and _control(conv, msg["text"]) is CLOSE:
                closing = True
                break
    except WebSocketDisconnect:
        pass
    except Exception:  # a bug: log it, close this conversation, keep serving
        log.exception("realtime conversation failed")
    finally:
        await conv.close()
        if closing:  # the client waits for its turn.saved events: let the sender deliver them
            outbox.put_nowait(json.dumps({"type": "session.closed"}))
            outbox.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(writer), 10)
                await ws.close()
            except Exception:  # the client went away meanwhile
                log.info("the client left before the end of the conversation was confirmed")
        outbox.put_nowait(None)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


CLOSE = object()  # _control's answer to session.close: end the conversation, then confirm


def _control(conv: VoiceConversation, text: str) -> object | None:
    """One JSON control message from the client; CLOSE for session.close."""

    bad = conv.error
    try:
        msg = json.loads(text)
    except ValueError:
        return bad("control messages are JSON objects")
    if not isinstance(msg, dict):
        return bad("control messages are JSON objects")
    kind = msg.get("type")
    try:
        if kind == "session.update":
            _update(conv, msg)
        elif kind == "input.start":
            conv.begin()
        elif kind == "input.commit":
            conv.commit()
        elif kind == "input.clear":
            conv.endpointer.reset()
        elif kind == "response.cancel":
            conv.cancel()
        elif kind == "session.close":
            return CLOSE
        elif kind == "text":
            if not isinstance(msg.get("text"), str) or not msg["text"].strip():
                return bad("a text turn needs a non-empty 'text'")
            conv.text(msg["text"])
        elif kind == "playback.started":
            conv.playback_started(str(msg.get("id")))
        elif kind == "playback.done":
            played = msg.get("played_s", 0.0)
            if not isinstance(played, int | float) or played < 0:
                return bad("played_s must be a number of seconds")
            conv.playback_done(str(msg.get("id")), float(played), interrupted=bool(msg.get("interrupted")))
        else:
            return bad(f"unknown message type {kind!r}")
    except (ValueError, TypeError, AssistantError) as err:
        return bad(str(err))
    return None


def _update(conv: VoiceConversation, msg: dict) -> None:
    mode = msg.get("turn_detection")
    if mode is not None:
        if mode not in ("server", "manual"):
            raise ValueError("turn_detection is 'server' or 'manual'")
        conv.turn_detection = mode
    if "playback_reports" in msg:
        conv.player_reports = bool(msg["playback_reports"])
    if "speak" in msg:
        conv.speak = bool(msg["speak"])
    vad = msg.get("vad")
    if vad is not None:
        if not isinstance(vad, dict):
            raise ValueError("vad is an object")
        fields = {}
        for key, value in vad.items():
            if key not in VAD_FIELDS:
                raise ValueError(f"unknown vad setting {key!r}")
            if value is None and key == "echo_threshold_db":
                fields[key] = None
            elif VAD_FIELDS[key] is str:
                if not isinstance(value, str):
                    raise ValueError(f"vad.{key} must be a string")
                fields[key] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                fields[key] = VAD_FIELDS[key](value)
            else:
                raise ValueError(f"vad.{key} must be a number")
        current = conv.endpointer.config
        config = EndpointConfig(**{**current.__dict__, **fields})
        conv.set_endpoint(config)
