"""The bad-input matrix: every kind of wrong request a client (or a hostile page) can send gets its
own 4xx status with OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, and
the server is still up afterwards. One tiny server for the module; each case is one request."""

from __future__ import annotations

import base64
import functools
import io
import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import start_server, stop_server

KEY = "bad-input-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}
HI = [{"role": "user", "content": "hi"}]


def _ffmpeg(*args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-loglevel", "error", *args], check=True, capture_output=True).stdout


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wav(seconds: float, rate: int = 16_000) -> bytes:
    from audio.io import wav_bytes

    return wav_bytes(np.zeros(int(seconds * rate), np.float32), rate)


def _png(size: tuple[int, int], mode: str = "RGB") -> str:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return "data:image/png;base64," + _b64(buf.getvalue())


@functools.cache
def _silence_10h() -> bytes:
    """10 h of silence as FLAC written to a pipe: 7 MB, no duration in its header (found while decoding)."""
    return _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "36000", "-c:a", "flac", "-f", "flac",
                   "pipe:1")


def _audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": _b64(data), "format": fmt}}


def _chat(**body) -> dict:
    return {"json": {"messages": HI, "max_tokens": 2, **body}}


def _user(*parts) -> dict:
    return _chat(messages=[{"role": "user", "content": list(parts)}])


def _raw(content: bytes, content_type: str | None = "application/json") -> dict:
    headers = {"Content-Type": content_type} if content_type else {}
    return {"content": content, "headers": headers}


def _chunked(n_mib: int, head: bytes = b'{"messages": [{"role": "user", "content": "', tail: bytes = b'"}]}'):
    def body():  # no Content-Length: the limit holds while the body arrives
        yield head
        for _ in range(n_mib):
            yield b"x" * 2**20
        yield tail
    return body


CHAT, SPEECH, TRANSCRIBE = "/v1/chat/completions", "/v1/audio/speech", "/v1/audio/transcriptions"

# (id, method, path, request kwargs or a function returning them, status, error code or None)
CASES = [
    # --- chat: the body
    ("not-json", "POST", CHAT, lambda: _raw(b"{not json"), 400, "invalid_json"),
    ("json-array", "POST", CHAT, lambda: _raw(b"[1, 2]"), 400, "invalid_json"),
    ("json-string", "POST", CHAT, lambda: _raw(b'"hi"'), 400, "invalid_json"),
    ("empty-body", "POST", CHAT, lambda: _raw(b""), 400, "invalid_json"),
    ("nested-100k-deep", "POST", CHAT, lambda: _raw(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400,
     "invalid_json"),
    ("not-utf8", "POST", CHAT, lambda: _raw(b'{"messages": "\xff\xfe"}'), 400, "invalid_json"),
    ("text-plain", "POST", CHAT, lambda: _raw(json.dumps({"messages": HI}).encode(), "text/plain"), 415,
     "unsupported_media_type"),
    ("form-urlencoded", "POST", CHAT, lambda: _raw(b"messages=hi", "application/x-www-form-urlencoded"), 415,
     "unsupported_media_type"),
    ("multipart-to-chat", "POST", CHAT, lambda: {"files": {"f": ("a", b"x")}}, 415, "unsupported_media_type"),
    ("no-content-type", "POST", CHAT, lambda: _raw(json.dumps({"messages": HI}).encode(), None), 415,
     "unsupported_media_type"),
    ("chunked-70-mib", "POST", CHAT, lambda: {"content": _chunked(70)(), "headers": {"Content-Type":
     "application/json"}}, 413, "too_large"),
    # --- chat: fields
    ("no-messages", "POST", CHAT, lambda: {"json": {"max_tokens": 2}}, 400, "bad_input"),
    ("empty-messages", "POST", CHAT, lambda: _chat(messages=[]), 400, "bad_input"),
    ("messages-string", "POST", CHAT, lambda: _chat(messages="hi"), 400, "bad_input"),
    ("message-not-object", "POST", CHAT, lambda: _chat(messages=["hi"]), 400, "bad_input"),
    ("role-tool", "POST", CHAT, lambda: _chat(messages=[{"role": "tool", "content": "hi"}]), 400, "bad_input"),
    ("role-missing", "POST", CHAT, lambda: _chat(messages=[{"content": "hi"}]), 400, "bad_input"),
    ("last-not-user", "POST", CHAT, lambda: _chat(messages=[*HI, {"role": "assistant", "content": "x"}]), 400,
     "bad_input"),
    ("only-system", "POST", CHAT, lambda: _chat(messages=[{"role": "system", "content": "x"}]), 400, "bad_input"),
    ("content-number", "POST", CHAT, lambda: _chat(messages=[{"role": "user", "content": 5}]), 400, "bad_input"),
    ("unknown-model", "POST", CHAT, lambda: _chat(model="gpt-9"), 404, "model_not_found"),
    ("n-2", "POST", CHAT, lambda: _chat(n=2), 400, "bad_input"),
    ("max-tokens-true", "POST", CHAT, lambda: _chat(max_tokens=True), 400, "bad_input"),
    ("max-tokens-0", "POST", CHAT, lambda: _chat(max_tokens=0), 400, "bad_input"),
    ("max-tokens-huge", "POST", CHAT, lambda: _chat(max_tokens=10**9), 400, "bad_input"),
    ("max-tokens-float", "POST", CHAT, lambda: _chat(max_tokens=2.5), 400, "bad_input"),
    ("temperature-3", "POST", CHAT, lambda: _chat(temperature=3), 400, "bad_input"),
    ("temperature-string", "POST", CHAT, lambda: _chat(temperature="hot"), 400, "bad_input"),
    ("temperature-nan", "POST", CHAT, lambda: _raw(b'{"messages": [{"role": "user", "content": "hi"}], '
                                                   b'"temperature": NaN}'), 400, "bad_input"),
    ("top-p-0", "POST", CHAT, lambda: _chat(top_p=0), 400, "bad_input"),
    ("top-p-infinity", "POST", CHAT, lambda: _raw(b'{"messages": [{"role": "user", "content": "hi"}], '
                                                  b'"top_p": Infinity}'), 400, "bad_input"),
    ("seed-2-63", "POST", CHAT, lambda: _chat(seed=2**63), 400, "bad_input"),
    ("seed-below-int64", "POST", CHAT, lambda: _chat(seed=-(2**63) - 1), 400, "bad_input"),
    ("seed-huge", "POST", CHAT, lambda: _chat(seed=10**400), 400, "bad_input"),
    ("seed-string", "POST", CHAT, lambda: _chat(seed="1"), 400, "bad_input"),
    ("modalities-string", "POST", CHAT, lambda: _chat(modalities="audio"), 400, "bad_input"),
    ("modalities-video", "POST", CHAT, lambda: _chat(modalities=["video"]), 400, "bad_input"),
    ("audio-options-list", "POST", CHAT, lambda: _chat(modalities=["text", "audio"], audio=[]), 400, "bad_input"),
    ("audio-out-format-exe", "POST", CHAT, lambda: _chat(modalities=["text", "audio"], audio={"format": "exe"}),
     400, "bad_input"),
    ("unknown-voice", "POST", CHAT, lambda: _chat(modalities=["text", "audio"], audio={"voice": "Nobody"}), 400,
     "unknown_voice"),
    ("context-too-long", "POST", CHAT, lambda: _chat(messages=[{"role": "user", "content": "word " * 9000}]), 400,
     None),
    ("text-over-256k-chars", "POST", CHAT, lambda: _chat(messages=[{"role": "user", "content": "x" * 300_000}]), 400,
     "context_too_long"),
    ("persona-unknown", "POST", CHAT, lambda: _chat(persona="Nobody"), 404, "persona_not_found"),
    ("persona-empty", "POST", CHAT, lambda: _chat(persona=" "), 400, "bad_input"),
    ("persona-number", "POST", CHAT, lambda: _chat(persona=3), 400, "bad_input"),
    # --- chat: parts
    ("part-unknown-type", "POST", CHAT, lambda: _user({"type": "video_url", "video_url": "x"}), 400, "bad_input"),
    ("part-not-object", "POST", CHAT, lambda: _user("hi"), 400, "bad_input"),
    ("text-part-object", "POST", CHAT, lambda: _user({"type": "text", "text": {"a": 1}}), 400, "bad_input"),
    ("image-url-null", "POST", CHAT, lambda: _user({"type": "image_url", "image_url": {"url": None}}), 400,
     "bad_input"),
    ("image-http-url", "POST", CHAT, lambda: _user({"type": "image_url", "image_url": {"url": "http://x/a.png"}}),
     400, "bad_input"),
    ("image-not-base64", "POST", CHAT, lambda: _user({"type": "image_url", "image_url": {"url": "data:image/png;"
     "base64,%%%"}}), 400, "bad_input"),
    ("image-not-an-image", "POST", CHAT, lambda: _user({"type": "image_url", "image_url": {"url": "data:image/png;"
     "base64," + _b64(b"hello")}}), 400, "bad_input"),
    ("image-over-64-megapixels", "POST", CHAT, lambda: _user({"type": "image_url", "image_url": {"url": _png(
        (9000, 9000), "1")}}), 400, "bad_input"),
    ("images-17", "POST", CHAT, lambda: _user(*[{"type": "image_url", "image_url": {"url": _png((8, 8))}}] * 17),
     400, "too_many_images"),
    ("audio-not-object", "POST", CHAT, lambda: _user({"type": "input_audio", "input_audio": "x"}), 400, "bad_input"),
    ("audio-data-number", "POST", CHAT, lambda: _user({"type": "input_audio", "input_audio": {"data": 5}}), 400,
     "bad_input"),
    ("audio-not-base64", "POST", CHAT, lambda: _user({"type": "input_audio", "input_audio": {"data": "***"}}), 400,
     "bad_input"),
    ("audio-not-audio", "POST", CHAT, lambda: _user(_audio_part(b"not audio at all" * 10)), 400, "bad_input"),
    ("audio-format-exe", "POST", CHAT, lambda: _user(_audio_part(_wav(1), "exe")), 400, "bad_input"),
    ("audio-too-short", "POST", CHAT, lambda: _user(_audio_part(_wav(0.05))), 400, "bad_input"),
    ("audio-two-parts", "POST", CHAT, lambda: _user(_audio_part(_wav(1)), _audio_part(_wav(1))), 400, "bad_input"),
    ("audio-6-min", "POST", CHAT, lambda: _user(_audio_part(_wav(360))), 400, "audio_too_long"),
    ("audio-10-h-flac-no-header", "POST", CHAT, lambda: _user(_audio_part(_silence_10h(), "flac")), 400,
     "audio_too_long"),
    ("audio-3-min-x-2-messages", "POST", CHAT, lambda: _chat(messages=[
        {"role": "user", "content": [_audio_part(_wav(180))]}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [_audio_part(_wav(180))]}]), 400, "audio_too_long"),
    # --- who may call
    ("no-key", "GET", "/v1/models", lambda: {"headers": {"Authorization": ""}}, 401, "invalid_api_key"),
    ("wrong-key", "GET", "/v1/models", lambda: {"headers": {"Authorization": "Bearer wrong-key-000"}}, 401,
     "invalid_api_key"),
    ("other-origin-post", "POST", CHAT, lambda: {"json": {"messages": HI}, "headers": {"Origin": "https://evil.example"}},
     403, "origin_not_allowed"),
    ("other-origin-get", "GET", "/v1/models", lambda: {"headers": {"Origin": "https://evil.example"}}, 403,
     "origin_not_allowed"),
    ("other-origin-preflight", "OPTIONS", CHAT, lambda: {"headers": {"Origin": "https://evil.example",
     "Access-Control-Request-Method": "POST"}}, 403, "origin_not_allowed"),
    ("null-origin", "POST", CHAT, lambda: {"json": {"messages": HI}, "headers": {"Origin": "null"}}, 403,
     "origin_not_allowed"),
    ("unknown-route", "GET", "/v1/embeddings", dict, 404, "not_found"),
    ("wrong-method", "GET", CHAT, dict, 405, "method_not_allowed"),
    # --- speech
    ("speech-no-input", "POST", SPEECH, lambda: {"json": {"voice": "Ethan"}}, 400, "bad_input"),
    ("speech-input-number", "POST", SPEECH, lambda: {"json": {"input": 5}}, 400, "bad_input"),
    ("speech-input-too-long", "POST", SPEECH, lambda: {"json": {"input": "a" * 5000}}, 400, "bad_input"),
    ("speech-format-docx", "POST", SPEECH, lambda: {"json": {"input": "hi", "response_format": "docx"}}, 400,
     "bad_input"),
    ("speech-unknown-voice", "POST", SPEECH, lambda: {"json": {"input": "hi", "voice": "alloy"}}, 400,
     "unknown_voice"),
    ("speech-text-plain", "POST", SPEECH, lambda: _raw(b'{"input": "hi"}', "text/plain"), 415,
     "unsupported_media_type"),
    # --- transcriptions
    ("transcribe-empty-file", "POST", TRANSCRIBE, lambda: {"files": {"file": ("a.wav", b"")}}, 400, None),
    ("transcribe-not-audio", "POST", TRANSCRIBE, lambda: {"files": {"file": ("n.mp3", b"text, not audio\n" * 20)}},
     400, None),
    ("transcribe-no-file", "POST", TRANSCRIBE, lambda: {"data": {"model": "whisper-1"}, "files": {"x": ("a", b"1")}},
     400, "bad_input"),
    ("transcribe-file-as-text", "POST", TRANSCRIBE, lambda: {"data": {"file": "abc"}, "files": {"x": ("a", b"1")}},
     400, "bad_input"),
    ("transcribe-json-body", "POST", TRANSCRIBE, lambda: {"json": {"file": "abc"}}, 400, "bad_input"),
    ("transcribe-format-docx", "POST", TRANSCRIBE, lambda: {"files": {"file": ("a.wav", _wav(1))},
     "data": {"response_format": "docx"}}, 400, "bad_input"),
    ("transcribe-granularity-bad", "POST", TRANSCRIBE, lambda: {"files": {"file": ("a.wav", _wav(1))},
     "data": {"timestamp_granularities[]": "letter"}}, 400, "bad_input"),
    ("transcribe-26-mib", "POST", TRANSCRIBE, lambda: {"files": {"file": ("big.wav", b"\0" * (26 * 2**20))}}, 413,
     "too_large"),
    ("transcribe-chunked-40-mib", "POST", TRANSCRIBE, lambda: {"content": _chunked(
        40, b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n", b"\r\n--b--\r\n")(),
        "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 413, "too_large"),
    ("transcribe-5-h", "POST", TRANSCRIBE, lambda: {"files": {"file": ("long.flac", _ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "18000", "-c:a", "flac", "-f", "flac", "-"))}}, 400,
     None),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    proc, url = start_server("--profile", "tiny", "--api-key", f"{KEY}=alice", "--max-new-tokens", "2",
                             "--data-dir", str(tmp_path_factory.mktemp("bad-input-data")))
    yield proc, url
    stop_server(proc)


@pytest.fixture(scope="module")
def server(served):
    return served[1]


def test_the_matrix_covers_at_least_60_kinds():
    assert len({c[0] for c in CASES}) == len(CASES) >= 60


@pytest.mark.parametrize(("method", "path", "make", "status", "code"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx_and_the_server_stays_up(server, method, path, make, status, code):
    kwargs = make()
    headers = {**(JSON if "json" in kwargs else AUTH), **kwargs.pop("headers", {})}
    headers = {k: v for k, v in headers.items() if v}
    r = httpx.request(method, server + path, headers=headers, timeout=120, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    message = body["error"]["message"]
    assert isinstance(message, str) and message and "\n" not in message
    assert "/tmp" not in message and "Traceback" not in message  # no server paths, no stack
    if code is not None:
        assert body["error"]["code"] == code
    assert httpx.get(server + "/v1/models", headers=AUTH, timeout=30).status_code == 200


def test_the_audio_cap_is_named(server):
    r = httpx.post(server + CHAT, headers=JSON, timeout=120, **_user(_audio_part(_silence_10h(), "flac")))
    assert r.status_code == 400 and "300 s" in r.json()["error"]["message"]


@pytest.mark.parametrize(("path", "head", "tail", "content_type"), [
    (TRANSCRIBE, b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n", b"\r\n--b--\r\n",
     "multipart/form-data; boundary=b"),
    (CHAT, b'{"messages": [{"role": "user", "content": "', b'"}]}', "application/json"),
], ids=["transcriptions", "chat"])
def test_a_chunked_upload_is_cut_off_at_the_limit(served, path, head, tail, content_type):
    """400 MiB sent without a Content-Length: the server answers 413 once the limit (25 MiB of
    audio, 64 MiB of chat) has arrived, holds no more than that, and closes the connection, so the
    client gets to send little more than the limit (before, a transcription upload was spooled
    whole to disk, then read into memory, and only then refused)."""
    proc, server = served
    sent = 0

    def body():
        nonlocal sent
        yield head
        for _ in range(400):
            sent += 2**20
            yield b"x" * 2**20
        yield tail

    before = _rss_kib(proc.pid, "VmRSS")
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # the peak RSS (VmHWM) starts again from now
    r = httpx.post(server + path, content=body(), timeout=120, headers={**AUTH, "Content-Type": content_type})
    grew_mib = (_rss_kib(proc.pid, "VmHWM") - before) / 1024
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert sent < 100 * 2**20, f"the server read {sent / 2**20:.0f} MiB of a body it refused"
    assert grew_mib < 200, f"the server's peak RSS grew by {grew_mib:.0f} MiB for a refused body"
    assert httpx.get(server + "/v1/models", headers=AUTH, timeout=30).status_code == 200


def _rss_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak) of a process, in KiB."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])
