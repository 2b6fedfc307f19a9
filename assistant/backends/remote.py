"""The remote backend: any OpenAI-compatible server as the core model (vLLM-Omni, SGLang-Omni, or
another `assistant serve`), so one front server can use a bigger engine elsewhere.

Each turn is one streamed chat completion read by a small thread, which only queues what arrives;
`step` moves the queued text and PCM16 audio into the stream's events. Closing a stream closes its
HTTP response, which cancels the turn upstream.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from assistant.backends.base import Stream
from assistant.errors import BadInput, Code, ModelError, ModelNotFound
from assistant.turns import Message, Request

__all__ = ["RemoteBackend", "load_remote_backend"]

log = logging.getLogger(__name__)

PCM_RATE = 24_000  # OpenAI's streamed pcm16 audio rate
_END = object()


@dataclass(eq=False)
class RemoteStream(Stream):
    inbox: queue.Queue = field(default_factory=queue.Queue, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    batch_size: int = 1

    def close(self) -> None:
        self.stop.set()


class RemoteBackend:
    name = "remote"
    sample_rate = PCM_RATE

    def __init__(self, base_url: str, api_key: str | None, model: str, voices: tuple[str, ...] = ()) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.voices = voices
        self.default_voice = voices[0] if voices else ""
        self.last_batch_size = 0

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    # ------------------------------------------------------------------ request
    def _payload(self, request: Request) -> dict:
        from audio.io import wav_bytes

        system = request.system_prompt()
        messages = [{"role": "system", "content": system}] if system else []
        for m in request.messages:
            messages.append({"role": m.role, "content": _parts(m, wav_bytes)})
        body = {"model": self.model, "messages": messages, "stream": True,
                "max_tokens": request.max_new_tokens, "temperature": request.temperature,
                "top_p": request.top_p}
        if request.seed is not None:
            body["seed"] = request.seed
        if request.speak:
            body["modalities"] = ["text", "audio"]
            body["audio"] = {"format": "pcm16", **({"voice": request.voice} if request.voice else {})}
        return body

    def start(self, request: Request) -> RemoteStream:
        stream = RemoteStream(request=request)
        thread = threading.Thread(target=self._read, args=(stream, self._payload(request)), daemon=True,
                                  name=f"remote-{request.turn_id}")
        thread.start()
        return stream

    def _read(self, stream: RemoteStream, body: dict) -> None:
        """Runs in its own thread: POST, then queue each server-sent event's text and audio."""
        import httpx

        put = stream.inbox.put
        try:
            with httpx.Client(timeout=httpx.Timeout(600, connect=10)) as client, client.stream(
                "POST", f"{self.base_url}/chat/completions", json=body, headers=self._headers()
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    put(("error", _error_of(resp)))
                    return
                for line in resp.iter_lines():
                    if stream.stop.is_set():
                        return  # leaving the with-block closes the response: upstream cancels
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        break
                    put(("event", json.loads(data)))
        except (httpx.HTTPError, json.JSONDecodeError, OSError) as err:
            put(("error", (Code.MODEL_ERROR, f"the remote engine at {self.base_url} failed: {err}")))
        finally:
            put(_END)

    # ------------------------------------------------------------------ step
    def step(self, streams: list[Stream]) -> None:
        waiting = [s for s in streams if isinstance(s, RemoteStream) and not s.done]
        self.last_batch_size = len(waiting)
        for s in waiting:
            self._drain(s, block=s is waiting[0])

    def _drain(self, s: RemoteStream, block: bool) -> None:
        while True:
            try:  # wait a little on one stream so an idle engine does not spin
                item = s.inbox.get(timeout=0.02) if block else s.inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            if item is _END:
                s.emit_text("", final=True)
                s.done = True
                return
            kind, data = item
            if kind == "error":
                s.error = data
                s.done = True
                return
            for choice in data.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    s.emit_text(delta["content"])
                audio = delta.get("audio") or {}
                if audio.get("transcript"):
                    s.emit_text(audio["transcript"])
                if audio.get("data"):
                    pcm16 = np.frombuffer(base64.b64decode(audio["data"]), dtype="<i2")
                    s.emit_audio(pcm16.astype(np.float32) / 32768.0, PCM_RATE)
            usage = data.get("usage") or {}
            s.prompt_tokens = usage.get("prompt_tokens", s.prompt_tokens)
            s.completion_tokens = usage.get("completion_tokens", s.completion_tokens)


def _parts(m: Message, wav_bytes) -> str | list:
    if not m.images and m.audio is None:
        return m.text
    parts: list[dict] = []
    if m.text:
        parts.append({"type": "text", "text": m.text})
    for img in m.images:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        parts.append({"type": "image_url", "image_url": {"url": url}})
    if m.audio is not None:
        data = base64.b64encode(wav_bytes(m.audio, 16_000)).decode()
        parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
    return parts


def _error_of(resp) -> tuple[str, str]:
    fallback = Code.BAD_INPUT if resp.status_code < 500 else Code.MODEL_ERROR  # the caller's fault, or not
    try:
        err = resp.json()["error"]
        code = err.get("code")
        return (code if code in set(Code) else fallback), f"remote engine: {err.get('message')}"
    except (ValueError, KeyError, TypeError):
        return fallback, f"the remote engine answered HTTP {resp.status_code}"


def load_remote_backend(url: str, api_key: str | None = None) -> RemoteBackend:
    """Connect to an OpenAI-compatible server (`http://host:port/v1`); checks that it answers."""
    import httpx

    if not url.startswith(("http://", "https://")):
        raise BadInput(f"the remote engine must be an http(s) URL ending in /v1, not {url!r}")
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(f"{base}/models", headers=headers, timeout=10)
    except httpx.HTTPError as err:
        raise ModelNotFound(f"cannot reach the remote engine at {base}: {err}") from err
    if resp.status_code == 401:
        raise ModelError(f"the remote engine at {base} refused the API key (set ASSISTANT_REMOTE_API_KEY)")
    try:
        model = resp.json()["data"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise ModelNotFound(f"{base}/models lists no model") from err
    log.info("remote engine %s serves %s", base, model)
    return RemoteBackend(base, api_key, model)
