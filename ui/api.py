"""The OpenAI-compatible HTTP API (`/v1`): thin routes, input -> Request -> engine -> render.

Chat completions take text, image parts (data URLs) and `input_audio` parts, return text and, with
`modalities: ["text", "audio"]`, speech (base64 WAV, or PCM16 chunks when streaming, as OpenAI
does). Transcriptions use `audio.transcribe`; speech asks the core model to say the given text.
Every user error is a 4xx with an OpenAI-style `{"error": {...}}` body; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from assistant.engine import Engine
from assistant.errors import AssistantError, BadInput, Code
from assistant.events import AudioChunk, Done, Error, TextDelta
from assistant.turns import Message
from assistant.turns import Request as TurnRequest

__all__ = ["ApiError", "ApiState", "assistant_error_response", "error_body", "make_api_router", "status_for"]

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # as OpenAI's audio endpoints
MAX_BODY_BYTES = 64 * 1024 * 1024  # a chat body with a few images and a clip
MAX_TOKENS = 4096

_STATUS = {
    Code.BAD_INPUT: 400, Code.CONTEXT_TOO_LONG: 400, Code.NOT_FOUND: 404, Code.MODEL_NOT_FOUND: 404,
    Code.MISSING_DEPENDENCY: 501, Code.BUSY: 429, Code.OUT_OF_MEMORY: 503, Code.MODEL_ERROR: 500,
    Code.CANCELLED: 499, Code.INTERNAL: 500,
}


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body."""

    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_


def status_for(code: str) -> int:
    return _STATUS.get(code, 500)


def error_body(message: str, code: str, type_: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@dataclass
class ApiState:
    """What the routes need: the engine, the model's public name, and who the caller is."""

    engine: Engine
    model_name: str


def make_api_router(state: ApiState, authenticate) -> APIRouter:
    """The /v1 routes. `authenticate` is a FastAPI dependency that returns the user's name."""
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def models(user: str = Depends(authenticate)) -> dict:
        return {"object": "list", "data": [
            {"id": state.model_name, "object": "model", "created": 0, "owned_by": "assistant"}]}

    @router.post("/chat/completions")
    async def chat(request: Request, user: str = Depends(authenticate)):
        body = await _json_body(request)
        req, fmt = _chat_request(body, state)
        if body.get("stream"):
            return StreamingResponse(_sse(state, req, fmt, request), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _complete(state, req, fmt)

    @router.post("/audio/speech")
    async def speech(request: Request, user: str = Depends(authenticate)):
        body = await _json_body(request)
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "`input` must be a non-empty string", "bad_input")
        if len(text) > 4096:
            raise ApiError(400, "`input` is longer than 4096 characters", "bad_input")
        fmt = body.get("response_format", "wav")
        if fmt not in ("wav", "pcm"):
            raise ApiError(400, f"response_format {fmt!r} is not supported: use wav or pcm", "bad_input")
        req = TurnRequest((Message("user", text),), system=(
            "Read the user's message aloud exactly as written. Say nothing else."), speak=True,
            voice=_voice(body.get("voice"), state), max_new_tokens=min(MAX_TOKENS, 2 * len(text) + 16))
        _, pcm, rate, _ = await _collect(state, req)
        if fmt == "pcm":
            return Response(_pcm16(pcm), media_type="audio/pcm", headers={"X-Sample-Rate": str(rate)})
        from audio.io import wav_bytes

        return Response(wav_bytes(pcm, rate), media_type="audio/wav")

    @router.post("/audio/transcriptions")
    async def transcriptions(request: Request, user: str = Depends(authenticate)):
        return await _transcribe(request)

    return router


# ---------------------------------------------------------------------- chat input
async def _json_body(request: Request) -> dict:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES // 2**20} MiB", "too_large")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES // 2**20} MiB", "too_large")
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON: {err}", "invalid_json") from err
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "invalid_json")
    return body


def _voice(voice, state: ApiState) -> str | None:
    if voice is None:
        return None
    if not state.engine.voices:  # a remote engine: its server checks the voice
        return str(voice)
    voices = {v.lower(): v for v in state.engine.voices}
    if not isinstance(voice, str) or voice.lower() not in voices:
        raise ApiError(400, f"unknown voice {voice!r}; this model has: {', '.join(state.engine.voices)}",
                       "unknown_voice")
    return voices[voice.lower()]


def _chat_request(body: dict, state: ApiState) -> tuple[TurnRequest, str]:
    model = body.get("model")
    if model is not None and model != state.model_name:
        raise ApiError(404, f"model {model!r} does not exist; this server has {state.model_name!r}",
                       "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` must be a non-empty list", "bad_input")
    modalities = body.get("modalities") or ["text"]
    if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}:
        raise ApiError(400, "`modalities` may contain only \"text\" and \"audio\"", "bad_input")
    speak = "audio" in modalities
    audio_opts = body.get("audio") or {}
    if speak and not isinstance(audio_opts, dict):
        raise ApiError(400, "`audio` must be an object with voice and format", "bad_input")
    fmt = audio_opts.get("format", "wav") if speak else "wav"
    if fmt not in ("wav", "pcm16"):
        raise ApiError(400, f"audio format {fmt!r} is not supported: use wav or pcm16", "bad_input")
    system_parts, converted = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"messages[{i}] needs a role of system, user or assistant", "bad_input")
        text, images, audio = _content(m.get("content"), i)
        if m["role"] in ("system", "developer"):
            system_parts.append(text)
        else:
            converted.append(Message(m["role"], text, images, audio))
    if not converted or converted[-1].role != "user":
        raise ApiError(400, "the last message must be from the user", "bad_input")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 256))
    temperature = body.get("temperature", 0.0)
    top_p = body.get("top_p", 1.0)
    seed = body.get("seed")
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise ApiError(400, f"max_tokens must be an integer from 1 to {MAX_TOKENS}", "bad_input")
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise ApiError(400, "temperature must be a number from 0 to 2", "bad_input")
    if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        raise ApiError(400, "top_p must be a number in (0, 1]", "bad_input")
    if seed is not None and not isinstance(seed, int):
        raise ApiError(400, "seed must be an integer", "bad_input")
    req = TurnRequest(tuple(converted), system="\n".join(system_parts) or None, speak=speak,
                      voice=_voice(audio_opts.get("voice"), state) if speak else None,
                      max_new_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p), seed=seed)
    return req, fmt


def _content(content, i: int) -> tuple[str, tuple, np.ndarray | None]:
    if isinstance(content, str):
        return content, (), None
    if content is None:
        return "", (), None
    if not isinstance(content, list):
        raise ApiError(400, f"messages[{i}].content must be a string or a list of parts", "bad_input")
    texts, images, audios = [], [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages[{i}].content[{j}]"
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
            images.append(_image(url, where))
        elif kind == "input_audio":
            audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
            audios.append(_audio(audio.get("data", ""), where))
        else:
            raise ApiError(400, f"{where}: unsupported part type {kind!r} (text, image_url, input_audio)",
                           "bad_input")
    if len(audios) > 1:
        raise ApiError(400, f"messages[{i}] has more than one audio part", "bad_input")
    return "\n".join(texts), tuple(images), audios[0] if audios else None


def _b64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError) as err:
        raise ApiError(400, f"{where}: the data is not valid base64", "bad_input") from err


def _image(url: str, where: str):
    from vision.images import load_image

    if not url.startswith("data:"):
        raise ApiError(400, f"{where}: only data: URLs are accepted for images (this server fetches nothing)",
                       "bad_input")
    _, _, data = url.partition(",")
    try:
        return load_image(_b64(data, where))
    except BadInput as err:
        raise ApiError(400, f"{where}: {err.message}", "bad_input") from err


def _audio(data: str, where: str) -> np.ndarray:
    from audio.io import load_audio

    raw = _b64(data, where)
    if len(raw) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"{where}: the audio is larger than 25 MiB", "too_large")
    try:
        pcm = load_audio(raw)
    except BadInput as err:
        raise ApiError(400, f"{where}: {err.message}", "bad_input") from err
    if len(pcm) < 1600:
        raise ApiError(400, f"{where}: the audio is shorter than 0.1 s", "bad_input")
    return pcm


# ---------------------------------------------------------------------- chat output
def _pcm16(pcm: np.ndarray) -> bytes:
    return (np.clip(np.nan_to_num(pcm), -1, 1) * 32767).astype("<i2").tobytes()


async def _collect(state: ApiState, req: TurnRequest) -> tuple[str, np.ndarray, int, Done]:
    parts, chunks, rate = [], [], state.engine.sample_rate
    async with aclosing(state.engine.stream(req)) as events:
        async for ev in events:
            if isinstance(ev, TextDelta):
                parts.append(ev.text)
            elif isinstance(ev, AudioChunk):
                chunks.append(ev.pcm)
                rate = ev.sample_rate
            elif isinstance(ev, Error):
                raise ApiError(status_for(ev.code), ev.message, ev.code,
                               "server_error" if status_for(ev.code) >= 500 else "invalid_request_error")
            elif isinstance(ev, Done):
                pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
                return "".join(parts), pcm, rate, ev
    raise ApiError(503, "the turn was cancelled", "cancelled", "server_error")


def _usage(done: Done) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def _finish(done: Done, req: TurnRequest) -> str:
    return "length" if done.completion_tokens >= req.max_new_tokens else "stop"


async def _complete(state: ApiState, req: TurnRequest, fmt: str) -> dict:
    text, pcm, rate, done = await _collect(state, req)
    message: dict = {"role": "assistant", "content": text}
    if req.speak:
        from audio.io import wav_bytes

        data = wav_bytes(pcm, rate) if fmt == "wav" else _pcm16(pcm)
        message["content"] = None
        message["audio"] = {"id": f"audio_{req.turn_id}", "data": base64.b64encode(data).decode(),
                            "expires_at": int(time.time()) + 3600, "transcript": text}
    return {"id": f"chatcmpl-{req.turn_id}", "object": "chat.completion", "created": int(time.time()),
            "model": state.model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(done, req)}],
            "usage": _usage(done)}


async def _sse(state: ApiState, req: TurnRequest, fmt: str, http: Request) -> AsyncIterator[str]:
    """Server-sent events; closing this generator (client gone) cancels the turn."""
    base = {"id": f"chatcmpl-{req.turn_id}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": state.model_name}

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return f"data: {json.dumps({**base, 'choices': [choice], **extra})}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    async with aclosing(state.engine.stream(req)) as events:
        async for ev in events:
            if await http.is_disconnected():
                log.info("client left; cancelling turn %s", req.turn_id)
                return
            if isinstance(ev, TextDelta):
                if req.speak:
                    yield chunk({"audio": {"id": f"audio_{req.turn_id}", "transcript": ev.text}})
                else:
                    yield chunk({"content": ev.text})
            elif isinstance(ev, AudioChunk):
                yield chunk({"audio": {"id": f"audio_{req.turn_id}",
                                       "data": base64.b64encode(_pcm16(ev.pcm)).decode()}})
            elif isinstance(ev, Error):
                yield f"data: {json.dumps(error_body(ev.message, ev.code, 'server_error'))}\n\n"
                return
            elif isinstance(ev, Done):
                yield chunk({}, _finish(ev, req), usage=_usage(ev))
                yield "data: [DONE]\n\n"
                return


# ---------------------------------------------------------------------- transcription
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


async def _transcribe(request: Request):
    from starlette.datastructures import UploadFile

    size = int(request.headers.get("content-length") or 0)
    if size > MAX_UPLOAD_BYTES + 1024 * 1024:
        raise ApiError(413, "the upload is larger than 25 MiB", "too_large")
    try:
        form = await request.form(max_part_size=MAX_UPLOAD_BYTES + 1)
    except Exception as err:  # starlette raises several types for malformed multipart bodies
        raise ApiError(400, f"expected a multipart/form-data body with a `file`: {err}", "bad_input") from err
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "the form needs a `file` field with the audio", "bad_input")
    data = await upload.read()
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, "the upload is larger than 25 MiB", "too_large")
    fmt = str(form.get("response_format") or "json")
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", "bad_input")
    grains = form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities")
    if set(grains) - {"word", "segment"}:
        raise ApiError(400, "timestamp_granularities may be word and/or segment", "bad_input")
    language = form.get("language") or None
    from audio import transcribe
    from audio.formats import render

    try:
        t = await asyncio.to_thread(transcribe, data, language=language, word_timestamps="word" in grains)
    except AssistantError as err:
        raise ApiError(status_for(err.code), err.message, str(err.code)) from err
    if fmt == "text":
        return PlainTextResponse(t.text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(render(t, fmt), media_type="text/plain")
    if fmt == "json":
        return {"text": t.text}
    out = {"task": "transcribe", "language": t.language, "duration": t.duration_s, "text": t.text}
    if "segment" in grains or not grains:
        out["segments"] = [{"id": i, "start": s.start, "end": s.end, "text": s.text,
                            "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob}
                           for i, s in enumerate(t.segments)]
    if "word" in grains:
        out["words"] = [{"word": w.text, "start": w.start, "end": w.end} for s in t.segments for w in s.words]
    return out


def assistant_error_response(err: AssistantError) -> JSONResponse:
    status = status_for(err.code)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse(error_body(err.message, str(err.code), kind), status_code=status)

