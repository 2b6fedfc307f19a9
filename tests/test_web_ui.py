"""The web UI in headless Debian Chromium (Playwright, no `playwright install`), as a person uses it.

Waits on the app's own signals (rendered elements), never on sleeps. Screenshots of every tab go
to $UI_SCREENSHOTS when set (for a person to look at).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import start_server, stop_server

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("ui-data")
    proc, url = start_server("--profile", "tiny", "--data-dir", str(data), "--max-new-tokens", "12")
    yield url, data
    stop_server(proc)


@pytest.fixture(scope="module")
def page(server, speech_dir, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    wav = tmp_path_factory.mktemp("mic") / "speech.wav"
    shutil.copy(speech_dir / "leopard" / "test.wav", wav)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop"])
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                                  permissions=["microphone"])
        pg = ctx.new_page()
        pg.set_default_timeout(90_000)
        pg.goto(server[0] + "/")
        pg.get_by_role("tab", name="Chat").wait_for()
        yield pg
        browser.close()


def shot(page, name: str) -> None:
    folder = os.environ.get("UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_chat_streams_a_reply_with_speech(page):
    box = page.locator("#chat-input textarea")
    box.fill("hello there")
    box.press("Enter")
    bot = page.locator("#chatbot")
    bot.get_by_text("hello there").wait_for()
    page.locator("#chat-audio audio[src]").wait_for(state="attached")
    replies = bot.locator(".message")  # user + assistant bubbles
    assert replies.count() >= 2
    assert replies.last.inner_text().strip()
    shot(page, "chat")


def test_upload_an_image_and_get_an_answer(page, tmp_path):
    from PIL import Image

    img = tmp_path / "red.png"
    Image.new("RGB", (200, 120), (220, 20, 20)).save(img)
    page.locator("#chat-input input[type=file]").set_input_files(str(img))
    page.locator("#chat-input textarea").fill("what colour is this?")
    page.locator("#chat-input textarea").press("Enter")
    try:
        page.locator("#chatbot").get_by_text("what colour is this?").wait_for()
    finally:
        shot(page, "chat-image")
    page.locator("#chatbot .message").nth(3).wait_for()
    assert page.locator("#chatbot .message").count() >= 4


def test_transcribe_and_download_srt(page, speech_dir, tmp_path):
    import srt

    page.get_by_role("tab", name="Transcribe").click()
    page.locator("#transcribe-file input[type=file]").set_input_files(str(speech_dir / "openai_whisper/jfk.flac"))
    page.locator("#transcribe-go").click()
    page.wait_for_function("document.querySelector('#transcript textarea').value.length > 20")
    assert "country" in page.locator("#transcript textarea").input_value().lower()
    link = page.locator("#transcript-file a").first
    link.wait_for()
    with page.expect_download() as dl:
        link.click()
    path = tmp_path / "jfk.srt"
    dl.value.save_as(path)
    subs = list(srt.parse(path.read_text()))
    assert subs and "country" in " ".join(s.content for s in subs).lower()
    shot(page, "transcribe")


def test_create_and_switch_persona(page):
    page.get_by_role("tab", name="Personas").click()
    page.locator("#persona-name textarea, #persona-name input").first.fill("Coach")
    page.locator("#persona-style textarea, #persona-style input").first.fill("energetic and short")
    page.locator("#persona-create").click()
    page.wait_for_function("document.querySelector('#personas').innerText.includes('Coach')")
    shot(page, "personas")
    page.locator("#persona input").click()
    page.get_by_role("option", name="Coach").click()
    assert page.locator("#persona input").input_value() == "Coach"


def test_delete_a_memory(page, server):
    from memory import open_store

    store = open_store(server[1])
    mid = store.add_memory(store.user("local"), "The user's name is Igor.")
    store.close()
    page.get_by_role("tab", name="Memory").click()
    page.locator("#memory-query textarea, #memory-query input").first.fill("name")
    page.locator("#memory-query textarea, #memory-query input").first.press("Enter")
    page.wait_for_function("document.querySelector('#memories').innerText.includes('Igor')")
    page.locator("#memory-id input").fill(str(mid))
    page.locator("#memory-delete").click()
    page.wait_for_function("!document.querySelector('#memories').innerText.includes('Igor')")
    shot(page, "memory")
    store = open_store(server[1])
    assert all(m.id != mid for m in store.memories(store.user("local")))
    store.close()


def test_voice_tab_records_from_the_fake_microphone(page):
    page.get_by_role("tab", name="Voice").click()
    shot(page, "voice")
    record = page.locator("#mic button", has_text="Record")
    record.first.click()
    page.wait_for_timeout(2500)  # let the fake microphone play part of the file
    page.locator("#mic button", has_text="Stop").first.click()
    page.locator("#voice-chat").get_by_text("(spoken)").wait_for()
    page.locator("#voice-audio audio[src]").wait_for(state="attached")
