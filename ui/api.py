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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from assistant.engine import MAX_TEXT_CHARS, Engine
from assistant.errors import BadInput, NotFound
from assistant.events import AudioChunk, Citations, Done, Error, TextDelta, ThinkingDelta
from assistant.reasoning import THINK_TOKENS, mode_for_effort
from assistant.turns import Message
from assistant.turns import Request as TurnRequest
from audio.encode import FORMATS as SPEECH_FORMATS
from audio.encode import MEDIA_TYPES, encode_audio, pcm16_bytes
from audio.io import MAX_TURN_AUDIO_S
from ui.bodies import read_body
from ui.documents import make_documents_router
from ui.errors import ApiError, assistant_error_response, error_body, status_for
from ui.transcriptions import MAX_UPLOAD_BYTES, transcribe_upload

if TYPE_CHECKING:
    from memory import Store

__all__ = ["ApiError", "ApiState", "assistant_error_response", "error_body", "make_api_router", "status_for"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # a chat body with a few images and a clip
MAX_TOKENS = 4096
MAX_IMAGES = 16  # images in one chat request (each is decoded, capped at vision.images.MAX_INPUT_PIXELS)
INPUT_AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "webm", "m4a", "mp4", "aac")  # input_audio.format
JSON_TYPES = ("application/json",)  # and any application/*+json
CHAT_AUDIO_FORMATS = ("wav", "pcm16", "mp3", "flac", "opus", "aac")  # streamed audio is always pcm16
ENDPOINTS = {"models": "GET", "chat/completions": "POST", "audio/speech": "POST", "audio/transcriptions": "POST",
             "documents": "GET or POST"}  # and GET or DELETE /v1/documents/{id}


@dataclass
class ApiState:
    """What the routes need: the engine, the model's public name, and the store (for personas)."""

    engine: Engine
    model_name: str
    store: Store | None = None
    transcriber: object | None = None  # audio.isolated.TranscriberProcess; None: audio.transcribe here
    search_url: str | None = None  # Deep Search's SearxNG instance (the web); None: offline sources only


def make_api_router(state: ApiState, authenticate) -> APIRouter:
    """The /v1 routes. `authenticate` is a FastAPI dependency that returns the user's name."""
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def models(user: str = Depends(authenticate)) -> dict:
        return {
            "object": "list",
            "data": [{"id": state.model_name, "object": "model", "created": 0, "owned_by": "assistant"}],
        }

    @router.post("/chat/completions")
    async def chat(request: Request, user: str = Depends(authenticate)):
        body = await _json_body(request)
        req, fmt = await asyncio.to_thread(_chat_request, body, state)  # decodes images and audio
        if body.get("persona") is not None:
            req = await asyncio.to_thread(_as_persona, state, user, body["persona"], req)
        if req.reasoning == "deep_search":  # the caller's sources only (the user comes from the key)
            from assistant.research.setup import research_sources

            found = await asyncio.to_thread(research_sources, state.engine, user_id=user, store=state.store,
                                            search_url=state.search_url)
            req = replace(req, sources=tuple(found))
        if body.get("stream"):
            return StreamingResponse(
                _sse(state, req, fmt, request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _until_disconnect(request, _complete(state, req, fmt))

    @router.post("/audio/speech")
    async def speech(request: Request, user: str = Depends(authenticate)):
        body = await _json_body(request)
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "`input` must be a non-empty string", "bad_input")
        if len(text) > 4096:
            raise ApiError(400, "`input` is longer than 4096 characters", "bad_input")
        fmt = _field(body, "response_format", "wav")
        if fmt not in SPEECH_FORMATS:
            raise ApiError(
                400, f"response_format {fmt!r} is not supported: use one of {', '.join(SPEECH_FORMATS)}", "bad_input"
            )
        req = TurnRequest(
            (Message("user", text),),
            system=("Read the user's message aloud exactly as written. Say nothing else."),
            speak=True,
            voice=_voice(body.get("voice"), state),
            max_new_tokens=min(MAX_TOKENS, 2 * len(text) + 16),
        )
        _, _, pcm, rate, _, _ = await _until_disconnect(request, _collect(state, req))
        data = await asyncio.to_thread(encode_audio, pcm, rate, fmt)
        return Response(data, media_type=MEDIA_TYPES[fmt], headers={"X-Sample-Rate": str(rate)})

    @router.post("/audio/transcriptions")
    async def transcriptions(request: Request, user: str = Depends(authenticate)):
        return await transcribe_upload(request, state.transcriber)

    router.include_router(make_documents_router(state, authenticate))  # before the catch-all below

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown(path: str, request: Request):
        if path in ENDPOINTS:
            raise ApiError(
                405, f"{request.method} is not allowed on /v1/{path}: use {ENDPOINTS[path]}", "method_not_allowed"
            )
        raise ApiError(
            404,
            f"no endpoint /v1/{path}; this server has: " + ", ".join(f"{m} /v1/{p}" for p, m in ENDPOINTS.items()),
            "not_found",
        )

    return router


async def _until_disconnect(request: Request, work):
    """Await `work`; if the client hangs up first, cancel it (which cancels its turn) and give up."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                log.info("client left before the reply was ready; cancelling")
                task.cancel()
                raise ApiError(499, "the client closed the request", "cancelled")
    finally:
        if not task.done():
            task.cancel()


# ---------------------------------------------------------------------- chat input
def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in JSON_TYPES or (kind.startswith("application/") and kind.endswith("+json"))


async def _json_body(request: Request) -> dict:
    # A JSON content type is required: a form or text/plain post is what another site's page can send
    # without a CORS preflight, so accepting them would let any page drive this API.
    if not _is_json(request.headers.get("content-type", "")):
        raise ApiError(415, "the body must be JSON, sent with Content-Type: application/json", "unsupported_media_type")
    raw = await read_body(request, MAX_BODY_BYTES, f"the request body is larger than {MAX_BODY_BYTES // 2**20} MiB")
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON: {err}", "invalid_json") from err
    except RecursionError as err:
        raise ApiError(400, "the body is nested too deeply", "invalid_json") from err
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "invalid_json")
    return body


def _field(body: dict, key: str, default):
    """body[key], with a missing key and an explicit null both meaning the default (as OpenAI does)."""
    value = body.get(key)
    return default if value is None else value


def _number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = _field(body, key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (low < value if low_open else low <= value) or value > high:
        raise ApiError(
            400,
            f"{key} must be a number {'in (' if low_open else 'from '}{low}"
            f"{', ' if low_open else ' to '}{high}{']' if low_open else ''}",
            "bad_input",
        )
    return float(value)


def _voice(voice, state: ApiState) -> str | None:
    if voice is None:
        return None
    if not state.engine.voices:  # a remote engine: its server checks the voice
        return str(voice)
    voices = {v.lower(): v for v in state.engine.voices}
    if not isinstance(voice, str) or voice.lower() not in voices:
        raise ApiError(
            400, f"unknown voice {voice!r}; this model has: {', '.join(state.engine.voices)}", "unknown_voice"
        )
    return voices[voice.lower()]


def _chat_request(body: dict, state: ApiState) -> tuple[TurnRequest, str]:
    model = body.get("model")
    if model is not None and model != state.model_name:
        raise ApiError(404, f"model {model!r} does not exist; this server has {state.model_name!r}", "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` must be a non-empty list", "bad_input")
    modalities = _field(body, "modalities", ["text"])
    if (
        not isinstance(modalities, list)
        or not all(isinstance(m, str) for m in modalities)
        or not set(modalities) <= {"text", "audio"}
    ):
        raise ApiError(400, '`modalities` must be a list of "text" and "audio"', "bad_input")
    speak = "audio" in modalities
    audio_opts = _field(body, "audio", {})
    if not isinstance(audio_opts, dict):
        raise ApiError(400, "`audio` must be an object with voice and format", "bad_input")
    fmt = _field(audio_opts, "format", "wav") if speak else "wav"
    if fmt not in CHAT_AUDIO_FORMATS:
        raise ApiError(
            400, f"audio format {fmt!r} is not supported: use one of {', '.join(CHAT_AUDIO_FORMATS)}", "bad_input"
        )
    n = _field(body, "n", 1)
    if n != 1 or isinstance(n, bool):
        raise ApiError(400, "n must be 1: this server returns one choice", "bad_input")
    system_parts, converted = [], []
    budget = _Budget()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"messages[{i}] needs a role of system, user or assistant", "bad_input")
        text, images, audio = _content(m.get("content"), i, budget)
        if m["role"] in ("system", "developer"):
            system_parts.append(text)
        else:
            converted.append(Message(m["role"], text, images, audio))
    if not converted or converted[-1].role != "user":
        raise ApiError(400, "the last message must be from the user", "bad_input")
    max_tokens = _field(body, "max_completion_tokens", _field(body, "max_tokens", 256))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_TOKENS:
        raise ApiError(400, f"max_tokens must be an integer from 1 to {MAX_TOKENS}", "bad_input")
    temperature = _number(body, "temperature", 0.0, 0, 2)
    top_p = _number(body, "top_p", 1.0, 0, 1, low_open=True)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not -(2**63) <= seed < 2**63):
        raise ApiError(400, "seed must be an integer from -2^63 to 2^63-1", "bad_input")
    try:
        reasoning = mode_for_effort(body.get("reasoning_effort"))
    except BadInput as err:
        raise ApiError(400, err.message, "bad_input") from err
    depth = "medium"
    search = body.get("web_search_options")
    if search is not None:  # OpenAI's search convention: Deep Search (assistant/research/loop.py)
        if not isinstance(search, dict):
            raise ApiError(400, "`web_search_options` must be an object", "bad_input")
        size = search.get("search_context_size", "medium")
        if size not in ("low", "medium", "high"):
            raise ApiError(400, "web_search_options.search_context_size must be low, medium or high", "bad_input")
        reasoning, depth = "deep_search", size
    if sum(len(m.text) for m in converted) + sum(map(len, system_parts)) > MAX_TEXT_CHARS:
        raise ApiError(400, f"the messages hold more than {MAX_TEXT_CHARS} characters of text", "context_too_long")
    req = TurnRequest(
        tuple(converted),
        system="\n".join(system_parts) or None,
        speak=speak,
        voice=_voice(audio_opts.get("voice"), state) if speak else None,
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        reasoning=reasoning,
        search_depth=depth,
    )
    return req, fmt


def _as_persona(state: ApiState, user: str, name, req: TurnRequest) -> TurnRequest:
    """The request as one of the caller's personas: its instructions and voice, and what is remembered
    about the caller that bears on the last message, before the client's own system text. Only the
    caller's personas and memories are ever read (the user comes from the API key, never the body)."""
    from assistant.session import Session

    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "`persona` must be the name of one of your personas", "bad_input")
    if state.store is None:
        raise ApiError(400, "this server keeps no personas", "bad_input")
    try:
        session = Session(state.engine, state.store, user=user, persona_name=name.strip())
    except NotFound as err:
        raise ApiError(404, f"you have no persona called {name.strip()!r}", "persona_not_found") from err
    except BadInput as err:
        raise ApiError(400, err.message, "bad_input") from err
    system = session.system_prompt(req.messages[-1].text or "about me, my name")
    if req.system:
        system += "\n" + req.system
    voice = (req.voice or session.persona.voice) if req.speak else None
    return replace(req, system=system, voice=voice)


@dataclass
class _Budget:
    """What one request may still decode: images, and seconds of audio over all its messages."""

    images: int = MAX_IMAGES
    audio_s: float = MAX_TURN_AUDIO_S

    def image(self, where: str) -> None:
        self.images -= 1
        if self.images < 0:
            raise ApiError(400, f"{where}: a request may hold at most {MAX_IMAGES} images", "too_many_images")


def _content(content, i: int, budget: _Budget) -> tuple[str, tuple, np.ndarray | None]:
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
            texts.append(_string(part, "text", where))
        elif kind == "image_url":
            image = part.get("image_url")
            if isinstance(image, dict):
                url = _string(image, "url", f"{where}.image_url")
            else:  # some clients send the URL itself
                url = _string(part, "image_url", where)
            budget.image(where)
            images.append(_image(url, where))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict):
                raise ApiError(400, f"{where}.input_audio must be an object with data and format", "bad_input")
            fmt = audio.get("format")
            if fmt is not None and (not isinstance(fmt, str) or fmt.lower() not in INPUT_AUDIO_FORMATS):
                raise ApiError(
                    400, f"{where}.input_audio.format must be one of {', '.join(INPUT_AUDIO_FORMATS)}", "bad_input"
                )
            audios.append(_audio(_string(audio, "data", f"{where}.input_audio"), where, budget))
        else:
            raise ApiError(400, f"{where}: unsupported part type {kind!r} (text, image_url, input_audio)", "bad_input")
    if len(audios) > 1:
        raise ApiError(400, f"messages[{i}] has more than one audio part", "bad_input")
    return "\n".join(texts), tuple(images), audios[0] if audios else None


def _string(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ApiError(400, f"{where}.{key} must be a string", "bad_input")
    return value


def _b64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError) as err:
        raise ApiError(400, f"{where}: the data is not valid base64", "bad_input") from err


def _image(url: str, where: str):
    from vision.images import load_image

    if not url.startswith("data:"):
        raise ApiError(
            400, f"{where}: only data: URLs are accepted for images (this server fetches nothing)", "bad_input"
        )
    _, _, data = url.partition(",")
    try:
        return load_image(_b64(data, where))
    except BadInput as err:
        raise ApiError(400, f"{where}: {err.message}", "bad_input") from err


def _audio(data: str, where: str, budget: _Budget) -> np.ndarray:
    from audio.io import SAMPLE_RATE, AudioTooLong, load_audio

    raw = _b64(data, where)
    if len(raw) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"{where}: the audio is larger than 25 MiB", "too_large")
    try:
        pcm = load_audio(raw, max_duration_s=budget.audio_s)  # decoding stops at the cap
    except AudioTooLong as err:
        raise ApiError(
            400,
            f"{where}: the audio is too long: one request may hold at most {MAX_TURN_AUDIO_S:g} s of audio in all",
            "audio_too_long",
        ) from err
    except BadInput as err:
        raise ApiError(400, f"{where}: {err.message}", "bad_input") from err
    if len(pcm) < 1600:
        raise ApiError(400, f"{where}: the audio is shorter than 0.1 s", "bad_input")
    budget.audio_s -= len(pcm) / SAMPLE_RATE
    return pcm


# ---------------------------------------------------------------------- chat output
async def _collect(state: ApiState, req: TurnRequest) -> tuple[str, str, np.ndarray, int, Done, tuple]:
    parts, thoughts, chunks, rate = [], [], [], state.engine.sample_rate
    cited: tuple = ()
    async with aclosing(state.engine.stream(req)) as events:
        async for ev in events:
            if isinstance(ev, Citations):
                cited = ev.citations
            elif isinstance(ev, TextDelta):
                parts.append(ev.text)
            elif isinstance(ev, ThinkingDelta):
                thoughts.append(ev.text)
            elif isinstance(ev, AudioChunk):
                chunks.append(ev.pcm)
                rate = ev.sample_rate
            elif isinstance(ev, Error):
                raise ApiError(
                    status_for(ev.code),
                    ev.message,
                    ev.code,
                    "server_error" if status_for(ev.code) >= 500 else "invalid_request_error",
                )
            elif isinstance(ev, Done):
                pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
                return "".join(parts), "".join(thoughts), pcm, rate, ev, cited
    raise ApiError(503, "the turn was cancelled", "cancelled", "server_error")


def _usage(done: Done) -> dict:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": done.reasoning_tokens},
    }


def annotations(content: str, citations) -> list[dict]:
    """OpenAI's `url_citation` annotations: one for each [n] in the content (its span in the string)."""
    import re

    by_number = {c.number: c for c in citations}
    out = []
    for m in re.finditer(r"\[(\d{1,2})\]", content or ""):
        c = by_number.get(int(m.group(1)))
        if c is not None:
            out.append({"type": "url_citation", "url_citation": {
                "url": c.url, "title": c.title, "start_index": m.start(), "end_index": m.end()}})
    return out


def _finish(done: Done, req: TurnRequest) -> str:
    if req.reasoning in ("big_brain", "deep_search"):  # its tokens are several attempts' (each with its own limit)
        return "stop"
    answer_tokens = done.completion_tokens - done.reasoning_tokens
    limit = req.max_new_tokens if req.reasoning == "none" else max(req.max_new_tokens, THINK_TOKENS)
    return "length" if done.completion_tokens >= limit or answer_tokens >= req.max_new_tokens else "stop"


async def _complete(state: ApiState, req: TurnRequest, fmt: str) -> dict:
    text, thinking, pcm, rate, done, cited = await _collect(state, req)
    message: dict = {"role": "assistant", "content": text}
    if req.reasoning != "none":
        message["reasoning_content"] = thinking
    if req.reasoning == "deep_search":
        message["annotations"] = annotations(text, cited)
    if req.speak:
        data = await asyncio.to_thread(encode_audio, pcm, rate, "pcm" if fmt == "pcm16" else fmt)
        message["content"] = None
        message["audio"] = {
            "id": f"audio_{req.turn_id}",
            "data": base64.b64encode(data).decode(),
            "expires_at": int(time.time()) + 3600,
            "transcript": text,
        }
    return {
        "id": f"chatcmpl-{req.turn_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.model_name,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(done, req)}],
        "usage": _usage(done),
    }


async def _sse(state: ApiState, req: TurnRequest, fmt: str, http: Request) -> AsyncIterator[str]:
    """Server-sent events; closing this generator (client gone) cancels the turn."""
    base = {
        "id": f"chatcmpl-{req.turn_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": state.model_name,
    }

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return f"data: {json.dumps({**base, 'choices': [choice], **extra})}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    content = ""  # the answer so far: annotations index into it
    async with aclosing(state.engine.stream(req)) as events:
        async for ev in events:
            if await http.is_disconnected():
                log.info("client left; cancelling turn %s", req.turn_id)
                return
            if isinstance(ev, ThinkingDelta):  # vLLM's and DeepSeek's field: before the answer's content
                yield chunk({"reasoning_content": ev.text})
            elif isinstance(ev, Citations):
                yield chunk({"annotations": annotations(content, ev.citations)})
            elif isinstance(ev, TextDelta):
                content += ev.text
                if req.speak:
                    yield chunk({"audio": {"id": f"audio_{req.turn_id}", "transcript": ev.text}})
                else:
                    yield chunk({"content": ev.text})
            elif isinstance(ev, AudioChunk):
                yield chunk(
                    {"audio": {"id": f"audio_{req.turn_id}", "data": base64.b64encode(pcm16_bytes(ev.pcm)).decode()}}
                )
            elif isinstance(ev, Error):
                yield f"data: {json.dumps(error_body(ev.message, ev.code, 'server_error'))}\n\n"
                return
            elif isinstance(ev, Done):
                yield chunk({}, _finish(ev, req), usage=_usage(ev))
                yield "data: [DONE]\n\n"
                return
