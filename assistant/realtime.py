"""The realtime voice protocol: one WebSocket per conversation, at `/v1/realtime` of `assistant serve`.

Connect to `ws(s)://HOST:PORT/v1/realtime?persona=NAME&voice=VOICE&instance=NAME`, with
`Authorization: Bearer KEY` (or `?api_key=KEY` where a client cannot set headers, as in a
browser). The server answers with `session.created`, then the conversation runs both ways.

Up (client -> server)
  binary frames   microphone audio: PCM16 little-endian, mono, 16 kHz, any length per frame.
  {"type": "session.update", "turn_detection": "server" | "manual", "playback_reports": bool,
   "speak": bool, "vad": {"silence_s", "prepare_s", "detector" ("webrtc" | "silero"), "aggressiveness",
   "silero_threshold", "min_speech_s", "threshold_db", "echo_threshold_db" (null: headphones)}}
        prepare_s: from this much silence on the server prepares the reply, held back until the
        end of the turn (silence_s) is confirmed; if the user goes on it is dropped unseen.
  {"type": "input.start"}        manual turns (push-to-talk): start collecting an utterance
  {"type": "input.commit"}       end the utterance now (manual turns, or to skip the wait)
  {"type": "response.cancel"}    stop the reply
  {"type": "text", "text": S}    a typed turn
  {"type": "session.close"}      end the conversation: the server stops the reply, saves what was
                                 heard (`turn.saved`), sends `session.closed` and closes the socket
  {"type": "playback.started", "id": ID}                 the reply's first sample is audible
  {"type": "playback.done", "id": ID, "played_s": F, "interrupted": bool}
        the reply finished playing, or was flushed after `response.cancelled`. A client that
        sends these says so with "playback_reports": true; the server then knows when the
        assistant is audible (for echo) and how much of a cut reply was heard. Without them
        it assumes replies play in real time.

Down (server -> client)
  binary frames   the current reply's speech: PCM16 little-endian, mono, `output_rate` Hz.
                  They belong to the reply of the last `response.started`; after
                  `response.cancelled` no more frames of that reply come.
  {"type": "session.created", "input_rate": 16000, "output_rate": R, "user", "persona", "voice"}
  {"type": "state", "state": "listening" | "hearing" | "thinking" | "speaking"}
  {"type": "speech.started", "at_s": F}   speech may have begun: pause playback now
  {"type": "speech.ignored", "at_s": F}   it was a blip: resume playback
  {"type": "speech.stopped", "start_s": F, "end_s": F, "forced": bool}   end of the user's turn
  {"type": "response.started", "id": ID}
  {"type": "transcript", "id": ID, "text": S}   what the user said, where the backend transcribes
  {"type": "text.delta", "id": ID, "text": S}
  {"type": "response.done", "id": ID, "text": S, "audio_s": F, "timings": {...}}
  {"type": "response.cancelled", "id": ID}     stop and flush playback of ID now
  {"type": "turn.saved", "id": ID, "interrupted": bool, "text": S, "played_s": F}
  {"type": "session.closed"}    after `session.close`: everything is saved; the socket closes next
  {"type": "error", "code": C, "message": S}   a bad message, a failed reply; the socket stays open
Positions (`at_s`, `start_s`, `end_s`) are seconds of microphone audio received on this socket.

`RealtimeClient` is the client side used by `assistant talk --server`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from assistant.errors import BadInput, ModelNotFound

__all__ = ["INPUT_RATE", "RealtimeClient", "pcm16_to_float", "realtime_url"]

log = logging.getLogger(__name__)

INPUT_RATE = 16_000


def realtime_url(server: str, **params: str | None) -> str:
    """`http://host:port` (or ws://...) -> the realtime endpoint's ws:// URL with `params`."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise BadInput(f"not a server URL: {server!r} (try http://127.0.0.1:7860)")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/realtime"):
        path = path.removesuffix("/v1") + "/v1/realtime"
    query = urlencode({k: v for k, v in params.items() if v})
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def pcm16_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0


class RealtimeClient:
    """A connection to `/v1/realtime`: send microphone audio and control messages; events and
    reply audio go to `on_event(dict)` and `on_audio(reply_id, pcm_float32, rate)`."""

    def __init__(self, url: str, api_key: str | None, on_event: Callable[[dict], None],
                 on_audio: Callable[[str, np.ndarray, int], None]) -> None:
        self.url, self.api_key = url, api_key
        self._on_event, self._on_audio = on_event, on_audio
        self._ws = None
        self._reader: asyncio.Task | None = None
        self.output_rate = 24_000
        self._current: str | None = None
        self.closed = asyncio.Event()

    async def connect(self, update: dict) -> dict:
        """Open the socket, send `session.update`; returns the server's `session.created`."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            self._ws = await connect(self.url, additional_headers=headers, max_size=2**24, open_timeout=15)
        except InvalidStatus as err:
            raise BadInput(f"the server refused the realtime connection: HTTP {err.response.status_code}") from err
        except (OSError, WebSocketException, TimeoutError) as err:
            raise ModelNotFound(f"cannot reach the server at {self.url}: {err}") from err
        first = json.loads(await self._ws.recv())
        if first.get("type") == "error":
            raise BadInput(f"the server refused the conversation: {first.get('message')}")
        self.output_rate = int(first.get("output_rate", self.output_rate))
        await self.send(update | {"type": "session.update"})
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return first

    async def send(self, message: dict) -> None:
        await self._ws.send(json.dumps(message))

    async def send_audio(self, pcm16: bytes) -> None:
        await self._ws.send(pcm16)

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for msg in self._ws:
                if isinstance(msg, bytes):
                    if self._current is not None:
                        self._on_audio(self._current, pcm16_to_float(msg), self.output_rate)
                    continue
                try:
                    event = json.loads(msg)
                except ValueError:
                    log.warning("the server sent a message that is not JSON")
                    continue
                kind = event.get("type")
                if kind == "response.started":
                    self._current = event.get("id")
                elif kind == "response.cancelled" and event.get("id") == self._current:
                    self._current = None
                self._on_event(event)
        except ConnectionClosed as err:
            log.info("realtime connection closed: %s", err)
        finally:
            self.closed.set()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
