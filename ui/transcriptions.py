"""`POST /v1/audio/transcriptions`: a multipart upload -> `audio.transcribe` (in a thread) -> OpenAI's formats."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import PlainTextResponse
from starlette.datastructures import UploadFile

from assistant.errors import AssistantError
from ui.bodies import read_body, replayed
from ui.errors import ApiError, status_for

__all__ = ["MAX_UPLOAD_BYTES", "RESPONSE_FORMATS", "transcribe_upload"]

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # as OpenAI's audio endpoints
FORM_OVERHEAD_BYTES = 1024 * 1024  # the multipart form's other fields and boundaries

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


async def transcribe_upload(request: Request, transcriber=None):
    """Transcribe the form's `file`; answer in its `response_format`. `transcriber`: an
    audio.isolated.TranscriberProcess (None: in this process)."""
    body = await read_body(request, MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES, "the upload is larger than 25 MiB")
    try:
        form = await replayed(request, body).form(max_part_size=MAX_UPLOAD_BYTES + 1)
    except Exception as err:  # starlette raises several types for malformed multipart bodies
        raise ApiError(400, f"expected a multipart/form-data body with a `file`: {err}", "bad_input") from err
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "the form needs a `file` field with the audio", "bad_input")
    data = await upload.read()
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, "the upload is larger than 25 MiB", "too_large")
    fmt = _text_field(form, "response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", "bad_input")
    grains = form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities")
    if not all(isinstance(g, str) for g in grains) or set(grains) - {"word", "segment"}:
        raise ApiError(400, "timestamp_granularities may be word and/or segment", "bad_input")
    language = _text_field(form, "language")
    diarize = _diarization(form)
    from audio import transcribe
    from audio.formats import render

    try:
        run = transcriber.transcribe if transcriber is not None else transcribe
        t = await asyncio.to_thread(run, data, language=language, word_timestamps="word" in grains, diarize=diarize)
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
        out["segments"] = [
            {
                "id": i,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "avg_logprob": s.avg_logprob,
                "no_speech_prob": s.no_speech_prob,
            }
            | ({"speaker": s.speaker} if diarize else {})
            for i, s in enumerate(t.segments)
        ]
    if "word" in grains:
        out["words"] = [
            {"word": w.text, "start": w.start, "end": w.end} | ({"speaker": w.speaker} if diarize else {})
            for s in t.segments
            for w in s.words
        ]
    return out


def _diarization(form):
    """`diarize=true` (and optionally `speakers=N`, `min_speakers`, `max_speakers`): who spoke when."""
    flag = (_text_field(form, "diarize") or "false").lower()
    if flag not in ("true", "false", "1", "0"):
        raise ApiError(400, "diarize must be true or false", "bad_input")
    if flag in ("false", "0"):
        return None
    from audio.diarize import MAX_SPEAKERS, Diarization

    counts = {}
    for key in ("speakers", "min_speakers", "max_speakers"):
        value = _text_field(form, key)
        if value is not None:
            try:
                counts[key] = int(value)
            except ValueError:
                raise ApiError(400, f"{key} must be a whole number", "bad_input") from None
    try:
        return Diarization(
            speakers=counts.get("speakers"),
            min_speakers=counts.get("min_speakers", 1),
            max_speakers=counts.get("max_speakers", MAX_SPEAKERS),
        )
    except AssistantError as err:
        raise ApiError(400, err.message, str(err.code)) from err


def _text_field(form, key: str) -> str | None:
    value = form.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"the form field `{key}` must be text, not a file", "bad_input")
    return value or None
