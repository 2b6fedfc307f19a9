"""The hands-free voice call in the browser (/call): headless Debian Chromium with a fake
microphone playing recorded speech, over the realtime WebSocket of a served tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import start_server, stop_server

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
KEY = "call-test-key-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("call-data")
    proc, url = start_server("--profile", "tiny", "--architecture", "qwen3_omni", "--data-dir", str(data),
                             "--max-new-tokens", "2", "--api-key", f"{KEY}=ann")
    yield url
    stop_server(proc)


@pytest.fixture
def browser(speech_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    wav = tmp_path / "speech.wav"
    shutil.copy(speech_dir / "leopard" / "test.wav", wav)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required"])
        ctx = b.new_context(permissions=["microphone"])
        yield ctx.new_page()
        b.close()


def log_kinds(page) -> list[str]:
    return page.evaluate("window.assistantCall.log.map(e => e.kind)")


def test_a_spoken_turn_is_heard_answered_and_played(server, browser):
    page = browser
    page.set_default_timeout(120_000)
    page.goto(server + "/call")
    page.fill("#key", KEY)
    page.click("#start")
    # the server decides the turn is over, answers, and the page plays the answer to its end
    page.wait_for_function("window.assistantCall.log.some(e => e.kind === 'playback.done')")
    log = page.evaluate("window.assistantCall.log")
    kinds = [e["kind"] for e in log]
    for kind in ("session.created", "speech.started", "speech.stopped", "response.started", "playback.started",
                 "response.done"):
        assert kind in kinds, kind
    stopped = next(e for e in log if e["kind"] == "speech.stopped")
    assert 3.5 < stopped["end_s"] - stopped["start_s"] < 6.0  # the clip holds 4.8 s of speech
    done = next(e for e in log if e["kind"] == "response.done")
    played = next(e for e in log if e["kind"] == "playback.done")
    assert played["played_s"] == pytest.approx(done["audio_s"], abs=0.1)
    assert page.evaluate("window.assistantCall.bytesIn") >= int(done["audio_s"] * 24_000 * 2 * 0.95)
    states = [e["state"] for e in log if e["kind"] == "state"]
    assert {"hearing", "thinking", "speaking"} <= set(states)
    page.wait_for_function("window.assistantCall.log.some(e => e.kind === 'turn.saved')")
    assert page.inner_text("#state") == "listening"


def test_a_wrong_key_is_a_clear_error(server, browser):
    page = browser
    page.goto(server + "/call")
    page.fill("#key", "not-the-key")
    page.click("#start")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "API key" in page.inner_text("#error")
