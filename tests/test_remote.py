"""The remote backend: one `assistant serve` uses another as its core model (as it would use
vLLM-Omni or SGLang-Omni), through the same OpenAI-compatible API."""

from __future__ import annotations

import base64
import io
import wave

import httpx
import openai
import pytest
from conftest import start_server, stop_server


@pytest.fixture(scope="module")
def front():
    back, back_url = start_server("--profile", "tiny", "--allow-anonymous-loopback")
    front, front_url = start_server("--profile", "remote", "--model", f"{back_url}/v1",
                                    "--api-key", "front-key-123=ana")
    yield openai.OpenAI(base_url=f"{front_url}/v1", api_key="front-key-123", max_retries=0, timeout=120), back_url
    for p in (front, back):
        stop_server(p)


def test_text_goes_through_the_remote_engine(front):
    client, back_url = front
    before = httpx.get(f"{back_url}/health").json()["turns_done"]
    r = client.chat.completions.create(model="remote", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content
    assert r.usage.completion_tokens == 5
    assert httpx.get(f"{back_url}/health").json()["turns_done"] == before + 1  # the back engine did the work


def test_speech_and_streaming_through_the_remote_engine(front):
    client, _ = front
    r = client.chat.completions.create(model="remote", max_tokens=6, modalities=["text", "audio"],
                                       audio={"voice": "Ethan", "format": "wav"},
                                       messages=[{"role": "user", "content": "say something"}])
    with wave.open(io.BytesIO(base64.b64decode(r.choices[0].message.audio.data))) as w:
        assert w.getframerate() == 24_000 and w.getnframes() > 2400
    chunks = list(client.chat.completions.create(model="remote", max_tokens=6, stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3


def test_remote_errors_come_back_as_4xx(front):
    client, _ = front
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="remote", max_tokens=5, modalities=["text", "audio"],
                                       audio={"voice": "Nobody", "format": "wav"},
                                       messages=[{"role": "user", "content": "hi"}])
    assert "Nobody" in str(err.value)
    r = client.chat.completions.create(model="remote", max_tokens=3, messages=[{"role": "user", "content": "ok"}])
    assert r.choices[0].message.content
