"""The OpenAI-compatible API, driven by the real `openai` client against `assistant serve --profile tiny`.

The tiny model's words are noise: these tests assert formats, lengths, rates and status codes.
"""

from __future__ import annotations

import base64
import io
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from conftest import start_server, stop_server
from PIL import Image

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def served():
    proc, url = start_server("--profile", "tiny", "--api-key", f"{KEY}=alice")  # anonymous loopback: off by default
    yield proc, url
    stop_server(proc)


@pytest.fixture(scope="module")
def server(served):
    return served[1]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def wav_info(data: bytes) -> tuple[int, int]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), w.getnframes()


def data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def jfk_wav(speech_dir) -> bytes:
    from audio.io import load_audio, wav_bytes

    return wav_bytes(load_audio(speech_dir / "openai_whisper" / "jfk.flac"), 16_000)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny-qwen2_5_omni"]


def test_text_chat(client):
    r = client.chat.completions.create(model="tiny-qwen2_5_omni", max_tokens=6,
                                       messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content and r.usage.completion_tokens == 6
    assert r.choices[0].finish_reason == "length"


def test_image_audio_and_text_in_speech_out(client, jfk_wav):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    r = client.chat.completions.create(
        model="tiny-qwen2_5_omni", max_tokens=6, modalities=["text", "audio"],
        audio={"voice": "Ethan", "format": "wav"},
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [
                      {"type": "text", "text": "what is in the picture and what did he say?"},
                      {"type": "image_url", "image_url": {"url": data_url(img)}},
                      {"type": "input_audio", "input_audio": {"data": base64.b64encode(jfk_wav).decode(),
                                                              "format": "wav"}}]}])
    audio = r.choices[0].message.audio
    assert audio.transcript
    rate, frames = wav_info(base64.b64decode(audio.data))
    assert rate == 24_000 and frames > 2400
    assert r.usage.prompt_tokens > 100  # the clip and the image became tokens


def test_streaming_text_and_audio(client):
    deltas = list(client.chat.completions.create(
        model="tiny-qwen2_5_omni", max_tokens=8, stream=True, messages=[{"role": "user", "content": "hi"}]))
    texts = [c.choices[0].delta.content for c in deltas if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 3
    assert deltas[-1].choices[0].finish_reason in ("stop", "length")
    # Seeded: the tiny talker samples where its speech ends, and now and then ends it at once (0.08 s seen).
    stream = client.chat.completions.create(
        model="tiny-qwen2_5_omni", max_tokens=8, stream=True, modalities=["text", "audio"],
        audio={"voice": "Chelsie", "format": "pcm16"}, messages=[{"role": "user", "content": "hi"}], seed=0)
    pcm = b""
    for c in stream:
        audio = getattr(c.choices[0].delta, "audio", None) if c.choices else None
        data = getattr(audio, "data", None) if audio else None
        if data:
            pcm += base64.b64decode(data)
    assert len(pcm) > 2 * 2400  # > 0.1 s of 24 kHz PCM16, in several chunks


def test_reasoning_effort_returns_the_thinking_apart_from_the_answer(client):
    """reasoning_effort "medium" thinks visibly: reasoning_content (vLLM's field) beside content,
    which holds only the answer; usage counts the reasoning tokens; "high" is Big Brain."""
    ask = dict(model="tiny-qwen2_5_omni", max_tokens=16, messages=[{"role": "user", "content": "what is 2 + 3?"}])
    plain = client.chat.completions.create(**ask)
    assert getattr(plain.choices[0].message, "reasoning_content", None) is None
    r = client.chat.completions.create(**ask, reasoning_effort="medium")
    msg = r.choices[0].message
    thinking = msg.model_extra["reasoning_content"]
    assert thinking and msg.content and "<think>" not in msg.content and thinking not in msg.content
    assert 0 < r.usage.completion_tokens_details.reasoning_tokens <= r.usage.completion_tokens
    big = client.chat.completions.create(**ask, reasoning_effort="high")
    assert "Attempt 1" in big.choices[0].message.model_extra["reasoning_content"]
    assert big.choices[0].message.content


def test_streamed_reasoning_comes_before_the_answer(client):
    chunks = list(client.chat.completions.create(
        model="tiny-qwen2_5_omni", max_tokens=16, stream=True, reasoning_effort="medium",
        messages=[{"role": "user", "content": "what is 2 + 3?"}]))
    order = []
    for c in chunks:
        if not c.choices:
            continue
        delta = c.choices[0].delta
        if (delta.model_extra or {}).get("reasoning_content"):
            order.append("thinking")
        if delta.content:
            order.append("answer")
    assert "thinking" in order and "answer" in order
    assert order.index("answer") > max(i for i, k in enumerate(order) if k == "thinking")
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens > 0


def test_an_unknown_reasoning_effort_is_a_400_naming_the_values(server):
    r = httpx.post(f"{server}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json={"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "maximum"})
    assert r.status_code == 400
    assert "medium" in r.json()["error"]["message"] and "high" in r.json()["error"]["message"]


def test_transcriptions_in_every_format(client, speech_dir):
    import srt
    import webvtt

    path = speech_dir / "openai_whisper" / "jfk.flac"
    with open(path, "rb") as f:
        j = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert "country" in j.text.lower()
    with open(path, "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert "country" in text.lower()
    with open(path, "rb") as f:
        subs = list(srt.parse(client.audio.transcriptions.create(model="whisper-1", file=f,
                                                                 response_format="srt")))
    assert subs and subs[-1].end.total_seconds() <= 11.1
    with open(path, "rb") as f:
        vtt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    captions = webvtt.from_buffer(io.StringIO(vtt))
    assert len(captions) >= 1
    with open(path, "rb") as f:
        v = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                               timestamp_granularities=["word", "segment"])
    assert v.duration == pytest.approx(11.0, abs=0.2)
    assert v.words and all(0 <= w.start <= w.end <= 11.1 for w in v.words)
    assert v.segments and v.segments[0].start >= 0


def test_transcription_runs_in_a_child_of_the_server(served, client, jfk_wav):
    """Files are transcribed beside the model, not in its process (CTranslate2 there slows torch)."""
    proc, _ = served
    text = client.audio.transcriptions.create(model="whisper-1", file=("jfk.wav", jfk_wav), response_format="text")
    assert "ask not what your country" in text.lower()
    children = [c for task in Path(f"/proc/{proc.pid}/task").iterdir() for c in (task / "children").read_text().split()]
    commands = [Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode() for c in children]
    assert any("audio.isolated" in c for c in commands), commands


def test_speech(client):
    r = client.audio.speech.create(model="tiny-qwen2_5_omni", voice="Ethan", input="Hi.",
                                   response_format="wav")
    rate, frames = wav_info(r.content)
    assert rate == 24_000 and frames > 0


def test_speech_as_mp3(client):  # every format's encoder: tests/test_audio_encode.py
    from audio.io import load_audio

    r = client.audio.speech.create(model="tiny-qwen2_5_omni", voice="Chelsie", input="Hi.", response_format="mp3")
    assert r.response.headers["content-type"] == "audio/mpeg"
    assert len(load_audio(r.content)) > 1600  # > 0.1 s once decoded at 16 kHz


def test_chat_audio_out_as_mp3(client):
    from audio.io import load_audio

    r = client.chat.completions.create(model="tiny-qwen2_5_omni", max_tokens=6, modalities=["text", "audio"],
                                       audio={"voice": "Ethan", "format": "mp3"},
                                       messages=[{"role": "user", "content": "hello"}],
                                       seed=0)  # the tiny talker samples where its speech ends (0.08 s once)
    assert len(load_audio(base64.b64decode(r.choices[0].message.audio.data))) > 1600


def test_no_key_is_401(server):
    r = httpx.get(f"{server}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong-key-xxxxxxx", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400),
    (b'{"messages": []}', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}', 404),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": '
     b'"data:image/png;base64,aGVsbG8="}}]}]}', 400),
    (b'{"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": '
     b'"bm90IGF1ZGlv", "format": "wav"}}]}]}', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"], '
     b'"audio": {"voice": "Nobody"}}', 400),
    (b'{"messages": [{"role": "user", "content": "' + b"word " * 9000 + b'"}]}', 400),
    (b'[1, 2]', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": true}', 400),
    (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]}', 400),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": null}}]}]}', 400),
    (b'{"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": 5}}]}]}', 400),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]}',
     400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "modalities": "audio"}', 400),
    (b'{"messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"], '
     b'"audio": {"voice": "Ethan", "format": "ogg-vorbis"}}', 400),
    (b'{"messages": [{"role": "tool", "content": "hi"}]}', 400),
])
def test_bad_requests_are_4xx_json_and_server_survives(server, body, status):
    r = httpx.post(f"{server}/v1/chat/completions", content=body, timeout=120,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]
    assert httpx.get(f"{server}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_null_fields_mean_the_defaults(server):
    r = httpx.post(f"{server}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                   json={"messages": [{"role": "user", "content": "hi"}], "temperature": None, "top_p": None,
                         "modalities": None, "audio": None, "n": None, "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


def test_unknown_routes_methods_and_huge_chunked_bodies_are_json_errors(server):
    h = {"Authorization": f"Bearer {KEY}"}
    r = httpx.get(f"{server}/v1/embeddings", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(f"{server}/v1/chat/completions", headers=h)
    assert r.status_code == 405 and "POST" in r.json()["error"]["message"]

    def body():  # no Content-Length: the limit is counted as the body arrives
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(70):
            yield b"x" * 2**20
        yield b'"}]}'

    r = httpx.post(f"{server}/v1/chat/completions", content=body(), timeout=60,
                   headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    r = httpx.post(f"{server}/v1/audio/speech", headers=h, json={"input": "hi", "voice": "alloy"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_voice"
    r = httpx.post(f"{server}/v1/audio/transcriptions", headers=h, files={"file": ("a.wav", b"")},
                   data={"response_format": "docx"})
    assert r.status_code == 400


def test_oversized_and_wrong_uploads(server):
    h = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{server}/v1/audio/transcriptions", headers=h, timeout=60,
                   files={"file": ("big.wav", b"\0" * (26 * 1024 * 1024))}, data={"model": "whisper-1"})
    assert r.status_code == 413
    r = httpx.post(f"{server}/v1/audio/transcriptions", headers=h, timeout=60,
                   files={"file": ("notes.mp3", b"this is text, not audio\n" * 20)}, data={"model": "whisper-1"})
    assert r.status_code == 400 and "audio" in r.json()["error"]["message"]


def wait_for_cancel(server: str, before: dict, timeout_s: float = 10) -> dict:
    """Poll /health until the engine has counted one more cancelled turn (a 4096-token turn takes ~8 s)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        now = httpx.get(f"{server}/health").json()
        if now["turns_cancelled"] > before["turns_cancelled"]:
            return now
        time.sleep(0.1)
    pytest.fail(f"the abandoned turn was not cancelled: {before} -> {now}")


def test_client_leaving_mid_stream_cancels_and_server_keeps_serving(server, client):
    h = {"Authorization": f"Bearer {KEY}"}
    before = httpx.get(f"{server}/health").json()
    with httpx.stream("POST", f"{server}/v1/chat/completions", headers=h, timeout=60,
                      json={"messages": [{"role": "user", "content": "a long story"}], "max_tokens": 4096,
                            "stream": True}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 3:
                break  # hang up
    after = wait_for_cancel(server, before)
    assert after["turns_done"] == before["turns_done"]  # cancelled, not finished
    r = client.chat.completions.create(model="tiny-qwen2_5_omni", max_tokens=3,
                                       messages=[{"role": "user", "content": "still there?"}])
    assert r.choices[0].message.content


def test_client_leaving_before_a_whole_reply_cancels_it(server, client):
    before = httpx.get(f"{server}/health").json()
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=1.0,
                   json={"messages": [{"role": "user", "content": "a long story"}], "max_tokens": 4096})
    after = wait_for_cancel(server, before)
    assert after["turns_done"] == before["turns_done"]
    assert client.models.list().data
