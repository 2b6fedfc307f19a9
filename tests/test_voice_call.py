"""The hands-free voice call in the browser (/call): headless Debian Chromium with a fake
microphone playing recorded speech, over the realtime WebSocket of a served tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
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
    yield from _browser(speech_dir / "leopard" / "test.wav", tmp_path)


def _browser(source: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    tmp_path.mkdir(parents=True, exist_ok=True)
    wav = tmp_path / "speech.wav"
    shutil.copy(source, wav)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required"])
        ctx = b.new_context(permissions=["microphone"])
        yield ctx.new_page()
        b.close()


@pytest.mark.parametrize("noisy_room", [False, True], ids=["webrtcvad", "silero"])
def test_a_spoken_turn_is_heard_answered_and_played(server, browser, noisy_room):
    page = browser
    page.set_default_timeout(120_000)
    page.goto(server + "/call")
    page.fill("#key", KEY)
    if noisy_room:
        page.check("#silero")  # the server's turn detection uses Silero VAD
    page.click("#start")
    # the server decides the turn is over, answers, and the page plays the answer to its end
    page.wait_for_function("window.assistantCall.log.some(e => e.kind === 'playback.done')")
    log = page.evaluate("window.assistantCall.log")
    kinds = [e["kind"] for e in log]
    assert "error" not in kinds, log
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


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("call-data-long")
    proc, url = start_server("--profile", "tiny", "--architecture", "qwen3_omni", "--data-dir", str(data),
                             "--max-new-tokens", "24", "--allow-anonymous-loopback")  # ~15 s replies
    yield url
    stop_server(proc)


def test_talking_over_the_reply_cuts_it_and_starts_a_turn(long_server, speech_dir, tmp_path):
    from audio.io import load_audio, write_wav

    first = load_audio(speech_dir / "leopard" / "test.wav")
    second = load_audio(speech_dir / "leopard" / "test_fr.wav")
    mic = tmp_path / "two.wav"  # a question, 3.5 s of silence (the reply starts), then talking over it
    write_wav(mic, np.concatenate([first, np.zeros(56_000, np.float32), second]), 16_000)
    for attempt in range(3):
        if _talk_over_the_reply(long_server, mic, tmp_path / f"b{attempt}"):
            return
    pytest.fail("three replies of under 4 s: nothing long enough to talk over")


def _talk_over_the_reply(url: str, mic: Path, folder: Path) -> bool:
    """One call; False when the reply ended before the second utterance began (the tiny talker
    now and then ends its speech after a second or two), so there was nothing to talk over."""
    for page in _browser(mic, folder):
        page.set_default_timeout(120_000)
        page.goto(url + "/call")
        page.click("#start")
        page.wait_for_function("window.assistantCall.log.filter(e => e.kind === 'speech.stopped').length >= 2")
        log = page.evaluate("window.assistantCall.log")
        kinds = [e["kind"] for e in log]
        first_done = next((e for e in log if e["kind"] == "response.done"), None)
        if "response.cancelled" not in kinds and first_done is not None and first_done["audio_s"] < 4.0:
            return False
        assert "response.cancelled" in kinds and "playback.cut" in kinds
        cut = next(e for e in log if e["kind"] == "playback.cut")
        assert cut["played_s"] > 0.5  # it had been speaking
        page.wait_for_function("window.assistantCall.log.some(e => e.kind === 'turn.saved' && e.interrupted)")
        saved = next(e for e in page.evaluate("window.assistantCall.log") if e["kind"] == "turn.saved")
        assert saved["interrupted"] and saved["played_s"] == pytest.approx(cut["played_s"], abs=0.01)
        assert kinds.count("response.started") == 2  # the new utterance got its own reply
    return True
