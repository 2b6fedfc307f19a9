"""Nothing leaves the machine: `serve` (with its web page loaded and a chat answered), `talk`, `ask`
and `transcribe` on the offline profile run under a Python audit hook (tests/audit/sitecustomize.py,
inherited by every child process) that refuses and records any connection or name lookup whose
target is not loopback. The record must stay empty."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import start_server, stop_server

AUDIT = Path(__file__).parent / "audit"
OFFLINE = ["--profile", "offline"]


@pytest.fixture
def audited(tmp_path, monkeypatch):
    """The audit record; every process started from here (and its children) is audited."""
    record = tmp_path / "violations.jsonl"
    monkeypatch.setenv("ASSISTANT_AUDIT_OUT", str(record))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(AUDIT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    return record


def violations(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(out), "Hello there. What is the weather like today?"], check=True)
    return out


def test_the_audit_sees_an_outside_lookup(audited):
    """The hook works: a lookup of an outside name is caught (and refused) in a child process."""
    subprocess.run([sys.executable, "-c", "import socket\ntry: socket.getaddrinfo('example.com', 443)\n"
                    "except OSError: pass"], check=True)
    assert [v["event"] for v in violations(audited)] == ["socket.getaddrinfo"]


def test_serve_and_its_web_page_call_nobody(audited):
    proc, url = start_server(*OFFLINE, "--threads", "1", "--allow-anonymous-loopback", timeout_s=300)
    try:
        for path in ("/", "/config", "/call", "/theme.css"):
            page = httpx.get(url + path, timeout=60)
            assert page.status_code == 200, path
            # nothing the browser would fetch from elsewhere: scripts, stylesheets, fonts
            outside = r"https?://(?!127\.0\.0\.1|localhost)"
            assert not re.search(rf"<(script|link|img)[^>]*(src|href)=[\"']{outside}", page.text), path
            assert not re.search(rf"(@import|url\()\s*[\"']?{outside}", page.text), path
        r = httpx.post(f"{url}/v1/chat/completions", timeout=300,
                       json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert r.status_code == 200, r.text
    finally:
        stop_server(proc)
    assert violations(audited) == []


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_ask_and_transcribe_call_nobody(audited, speech_wav, tmp_path):
    r = _run("ask", *OFFLINE, "--max-new-tokens", "2", "hi")
    assert r.returncode == 0, r.stderr
    r = _run("transcribe", str(speech_wav), "--output-dir", str(tmp_path / "out"), "--format", "txt")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "hello.txt").read_text().strip()
    assert violations(audited) == []


def test_talk_calls_nobody(audited, speech_wav):
    from audio.io import load_audio
    from tests.pulse import PulseAudio
    from tests.test_talk import Talk

    pulse = PulseAudio()
    try:
        t = Talk(pulse, Path(os.environ["ASSISTANT_DATA_DIR"]), *OFFLINE, "--max-new-tokens", "2")
        pulse_pcm = np.concatenate([load_audio(speech_wav), np.zeros(16_000, np.float32)])
        pulse.feeder.play(pulse_pcm)
        t.wait("turn", timeout=60)
        t.wait("reply.done", timeout=180)
        assert t.stop() == 0
    finally:
        pulse.close()
    assert violations(audited) == []
