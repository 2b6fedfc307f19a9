"""The web UI in headless Debian Chromium (Playwright, no `playwright install`), as a person uses it.

Waits on the app's own signals (rendered elements), never on sleeps. Screenshots of every tab go
to $UI_SCREENSHOTS when set (for a person to look at).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import start_server, stop_server
from playwright.sync_api import Error as PlaywrightError

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
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
            ],
        )
        ctx = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True, permissions=["microphone"]
        )
        pg = ctx.new_page()
        pg.set_default_timeout(90_000)
        pg.goto(server[0] + "/")
        pg.get_by_role("tab", name="Chat").wait_for()
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    """Replies of up to 4096 tokens (several seconds with the tiny model): long enough to leave mid-reply."""
    proc, url = start_server(
        "--profile", "tiny", "--data-dir", str(tmp_path_factory.mktemp("long-data")), "--max-new-tokens", "4096"
    )
    yield url
    stop_server(proc)


def shot(page, name: str) -> None:
    folder = os.environ.get("UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def wait_text(page, selector: str, text: str, present: bool = True, timeout_ms: float | None = None) -> None:
    page.wait_for_function(
        "([s, t, p]) => document.querySelector(s).innerText.includes(t) === p", arg=[selector, text, present],
        timeout=timeout_ms,
    )


def speech_log(page) -> list[dict]:
    """What the page's speech player did (ui/static/web.js): requested, first-audio, stream-end, reply-done."""
    return page.evaluate("window.assistantSpeech.log")


def press_enter_until(box, answered):
    """Press Enter in `box` until `answered()` (which waits, raising Playwright's timeout) returns;
    Enter is ignored while the box's last event is still finishing. At most three presses."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):
        box.press("Enter")
        try:
            return answered()
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def idle(page, pane: str = "") -> None:
    """Wait until the pane's last message has been answered to the end: Gradio's status of the chat
    box is hidden again (it shows while the chat event runs). A reply still running from an earlier
    step would otherwise add its bubbles, or its end, to the next step's counts."""
    page.wait_for_function(
        "(s) => { const w = document.querySelector(s); return !w || w.classList.contains('hide'); }",
        arg=f"#chat-input{pane} .wrap",
    )


def replies_done(page, pane: str = "") -> int:
    """How many of the pane's chat events have ended (the page marks each one's end)."""
    name = pane.lstrip("-") or "1"
    return len([e for e in speech_log(page) if e["event"] == "reply-done" and e["pane"] == name])


def wait_replies_done(page, more_than: int, pane: str = "") -> None:
    name = pane.lstrip("-") or "1"
    page.wait_for_function(
        f"window.assistantSpeech.log.filter(e => e.event === 'reply-done' && e.pane === '{name}').length > {more_than}"
    )
    idle(page, pane)


def send(page, text: str, pane: str = "") -> None:
    """Type into a pane's box, press Enter, and wait until the page has the whole reply."""
    idle(page, pane)
    done = replies_done(page, pane)
    box = page.locator(f"#chat-input{pane} textarea")
    box.fill(text)
    taken = f"document.querySelector('#chat-input{pane} textarea').value === ''"  # the box takes the message
    press_enter_until(box, lambda: page.wait_for_function(taken, timeout=10_000))
    wait_replies_done(page, done, pane)


def test_chat_streams_a_reply_with_speech(page):
    send(page, "hello there")
    bot = page.locator("#chatbot")
    bot.get_by_text("hello there").wait_for()
    page.locator("#chat-audio audio[src]").wait_for(state="attached")  # the whole reply, to play again
    replies = bot.locator(".message")  # user + assistant bubbles
    assert replies.count() >= 2
    assert replies.last.inner_text().strip()
    shot(page, "chat")


def test_spoken_reply_starts_playing_before_the_reply_is_finished(page):
    """The speech of a reply is played as it is made: its first sound is due well before the reply is
    done. (The tiny talker samples where its speech ends and now and then says almost nothing; such a
    reply arrives in one piece at the end, so the first reply with over a second of speech is judged.)"""
    field = page.locator("#instance-1 input")  # a fresh conversation: no history
    field.fill("Speech")
    field.press("Enter")
    for attempt in range(5):
        before = len(speech_log(page))
        send(page, f"Tell me a long story about the sea, part {attempt + 1}.")
        page.wait_for_function(f"window.assistantSpeech.log.slice({before}).some(e => e.event === 'stream-end')")
        log = speech_log(page)[before:]
        end = next(e for e in log if e["event"] == "stream-end")
        if end["samples"] > 24_000:
            break
    else:
        pytest.fail(f"five replies had under a second of speech each: {log}")
    first = next(e for e in log if e["event"] == "first-audio")
    done = next(e for e in log if e["event"] == "reply-done")
    assert first["running"]  # the page's audio clock runs: the sound is really scheduled
    assert first["plays_at"] < done["t"] - 300, log  # heard while the reply was still being made
    assert end["t"] > first["t"]  # and the rest of it came afterwards, on the same stream


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
    idle(page)  # answered to the end


def into_box(page, how: str, files: list[tuple[str, bytes, str]]) -> None:
    """Paste or drop files (name, bytes, type) into the chat box, as a browser's clipboard or a drag does."""
    import base64

    page.evaluate(
        """([how, files]) => {
          const dt = new DataTransfer();
          for (const [name, b64, type] of files) {
            dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, { type }));
          }
          const box = document.querySelector("#chat-input textarea");
          const init = { bubbles: true, cancelable: true, composed: true };
          box.dispatchEvent(how === "paste" ? new ClipboardEvent("paste", { ...init, clipboardData: dt })
                                            : new DragEvent("drop", { ...init, dataTransfer: dt }));
        }""",
        [how, [[name, base64.b64encode(data).decode(), kind] for name, data, kind in files]],
    )


def png_bytes(size: tuple[int, int], colour, mode: str = "RGB") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (its pixels are a 1x1 picture's): refused on its size alone."""
    import struct
    import zlib

    data = bytearray(png_bytes((1, 1), 0, mode="L"))
    ihdr = 12  # signature (8) + chunk length (4)
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def toast(page, text: str, timeout_ms: float = 90_000) -> str:
    """The message of the page's toast that says `text` (Gradio's warnings and errors)."""
    found = page.locator(".toast-message-text", has_text=text).first
    found.wait_for(timeout=timeout_ms)
    return found.inner_text()


def close_toasts(page) -> None:
    """Close every toast shown. One by one from the first: a toast that closes by itself meanwhile
    shifts the others (clicking a listed one then waited 90 s for a button no longer there)."""
    for _ in range(50):
        buttons = page.locator(".toast-close")
        if not buttons.count():
            return
        try:
            buttons.first.click(timeout=2_000)
        except PlaywrightError:
            pass  # it closed itself first


def test_paste_one_image_and_drop_another_into_one_message(page):
    page.get_by_role("tab", name="Chat").click()
    into_box(page, "paste", [("pasted.png", png_bytes((160, 90), (20, 200, 20)), "image/png")])
    into_box(page, "drop", [("dropped.png", png_bytes((90, 160), (20, 20, 200)), "image/png")])
    page.wait_for_function(
        "document.querySelectorAll('#chat-input img').length === 2"
        " && !document.querySelector('#chat-input [aria-label=Uploading]')"
    )  # both uploaded
    send(page, "compare these two pictures")
    wait_text(page, "#chatbot", "compare these two pictures")
    # both pictures are in the conversation (by their names: earlier tests left pictures there too)
    page.wait_for_function(
        "document.querySelector('#chatbot img[src*=\"pasted\"]')"
        " && document.querySelector('#chatbot img[src*=\"dropped\"]')"
    )
    assert page.locator("#chat-input img").count() == 0  # the box is empty for the next message


def test_wrong_and_too_large_images_are_one_line_warnings(page, tmp_path):
    """A text file dropped in is refused by the box; a file that only looks like an image, and a
    20000x20000 picture, are refused by the server with one line; the question stays in the box."""
    page.get_by_role("tab", name="Chat").click()
    idle(page)
    close_toasts(page)
    into_box(page, "drop", [("notes.txt", b"shopping list\n", "text/plain")])
    assert "rejected" in toast(page, "rejected")
    assert page.locator("#chat-input img, #chat-input .thumbnail-item").count() == 0
    fake, huge = tmp_path / "holiday.png", tmp_path / "scan.png"
    fake.write_bytes(b"this is not a picture\n" * 50)
    huge.write_bytes(huge_png(20_000, 20_000))
    box = page.locator("#chat-input textarea")
    for path, says in ((fake, "cannot read holiday.png: not a supported image file"), (huge, "scan.png is too large")):
        close_toasts(page)
        idle(page)
        replies = page.locator("#chatbot .message").count()
        page.locator("#chat-input input[type=file]").set_input_files(str(path))
        box.fill("what is in this picture?")
        message = press_enter_until(box, lambda says=says: toast(page, says, timeout_ms=15_000))
        assert "/tmp" not in message and "\n" not in message.strip(), message  # one line, no server paths
        assert box.input_value() == "what is in this picture?"  # kept, to fix and send again
        assert page.locator("#chatbot .message").count() == replies  # nothing was sent
        page.locator("#chat-input button[aria-label='Remove file']").first.click()
    send(page, "and without a picture?")  # the chat goes on


def upload(page, path) -> None:
    """Put a file into the Transcribe tab's upload box (clearing the one there)."""
    page.get_by_role("tab", name="Transcribe").click()
    clear = page.locator("#transcribe-file button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator("#transcribe-file input[type=file]").set_input_files(str(path))


def test_transcribe_and_download_srt(page, speech_dir, tmp_path):
    import srt

    upload(page, speech_dir / "openai_whisper/jfk.flac")
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
    # The recording plays with its subtitles.
    page.locator("#transcribe-player button[aria-label=Play]").click()
    page.wait_for_function(
        "document.querySelector('#transcribe-player [data-testid=subtitle-display]').innerText.trim().length > 0"
    )
    shown = page.locator("#transcribe-player [data-testid=subtitle-display]").inner_text().lower()
    assert any(word in shown for word in ("americans", "country", "fellow"))
    shot(page, "transcribe")


def test_transcribe_options_per_channel_vtt_and_every_file(page, speech_dir, tmp_path):
    import webvtt

    upload(page, speech_dir / "faster_whisper" / "stereo_diarization.wav")
    page.locator("#transcribe-channels input").check()
    page.locator("#transcribe-words input").check()
    pick(page, "#transcribe-format", "all")
    page.locator("#transcribe-go").click()
    page.wait_for_function("document.querySelector('#transcript textarea').value.includes('[left]')")
    text = page.locator("#transcript textarea").input_value()
    assert "[left]" in text and "[right]" in text  # one speaker per channel
    page.wait_for_function("document.querySelectorAll('#transcript-file td.filename').length >= 5")
    names = sorted(e.get_attribute("aria-label") for e in page.locator("#transcript-file td.filename").all())
    assert names == [f"stereo_diarization.{ext}" for ext in ("json", "srt", "tsv", "txt", "vtt")], names
    row = page.locator("#transcript-file tr", has=page.locator("td[aria-label$='.vtt']"))
    with page.expect_download() as dl:
        row.locator("a").click()
    path = tmp_path / "stereo.vtt"
    dl.value.save_as(path)
    captions = webvtt.read(str(path))
    assert {c.voice for c in captions} == {"left", "right"}


def test_transcribe_shows_progress_on_a_long_recording(page, speech_dir, tmp_path):
    """Four minutes of speech (five different clips, five times): the page says how far it has got."""
    from audio.io import load_audio, wav_bytes

    names = (
        "openai_whisper/jfk.flac",
        "leopard/test.wav",
        "leopard/diarization_test.wav",
        "faster_whisper/stereo_diarization.wav",
        "faster_whisper/hotwords.mp3",
    )
    gap = np.zeros(8000, np.float32)
    clips = np.concatenate([part for n in names for part in (load_audio(speech_dir / n), gap)])
    long = tmp_path / "four-minutes.wav"
    long.write_bytes(wav_bytes(np.tile(clips, 5), 16_000))
    upload(page, long)
    page.locator("#transcribe-channels input").uncheck()
    page.locator("#transcribe-go").click()
    page.wait_for_function("document.querySelector('#transcript').innerText.includes('s of audio')")
    seen = page.locator("#transcript").inner_text()
    shot(page, "transcribe-progress")
    assert "/240.9 s of audio" in seen or "/241 s of audio" in seen, seen  # done / total
    wait_text(page, "#transcribe-status", "241 s of audio")  # done: "N segments, 241 s of audio, ..."


def pick(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.locator(dropdown).get_by_role("option", name=option, exact=True).click()


def test_transcribe_speakers_switch_colours_and_names(page, tmp_path):
    """Two people in one mono recording: the speakers switch labels them, each in a colour of their
    own, and the names given before downloading are in the files."""
    import srt

    from audio.io import load_audio, wav_bytes

    clips = Path(__file__).parent / "data" / "diarize"
    jfk, other = load_audio(clips / "jfk.flac"), load_audio(clips / "librispeech_left.flac")
    gap = np.zeros(6400, np.float32)
    meeting = tmp_path / "meeting.wav"
    meeting.write_bytes(wav_bytes(np.concatenate([jfk[:44800], gap, other, gap, jfk[80000:]]), 16_000))
    upload(page, meeting)
    page.locator("#transcribe-channels input").uncheck()
    page.locator("#transcribe-speakers input").check()
    pick(page, "#transcribe-format", "srt")
    page.locator("#transcribe-go").click()
    # transcription and diarization on the real models: ~10 s on a quiet machine, minutes on a busy one
    wait_text(page, "#transcribe-status", "2 speakers", timeout_ms=300_000)
    text = page.locator("#transcript textarea").input_value()
    assert "[SPEAKER_00]" in text and "[SPEAKER_01]" in text
    lines = page.locator("#transcript-speakers .speaker-line")
    colours = {lines.nth(i).evaluate("e => [e.dataset.speaker, getComputedStyle(e).color]") [1]
               for i in range(lines.count())}
    assert len(colours) == 2, colours
    assert "SPEAKER_01 = SPEAKER_01" in page.locator("#transcribe-names textarea").input_value()
    page.locator("#transcribe-names textarea").fill("SPEAKER_00 = President\nSPEAKER_01 = Reader")
    page.locator("#transcribe-rename").click()
    page.wait_for_function("document.querySelector('#transcript textarea').value.includes('[Reader]')")
    shot(page, "transcribe-speakers")
    link = page.locator("#transcript-file a").first
    with page.expect_download() as dl:
        link.click()
    path = tmp_path / "named.srt"
    dl.value.save_as(path)
    heads = {s.content.split("]")[0] + "]" for s in srt.parse(path.read_text())}
    assert heads == {"[President]", "[Reader]"}, heads


def test_create_and_switch_persona(page):
    page.get_by_role("tab", name="Personas").click()
    page.locator("#persona-name input").fill("Coach")
    page.locator("#persona-style textarea").fill("energetic and short")
    page.locator("#persona-create").click()
    wait_text(page, "#personas", "Coach")
    page.get_by_role("tab", name="Chat").click()
    pick(page, "#persona", "Coach")
    assert page.locator("#persona input").input_value() == "Coach"
    page.wait_for_function("document.querySelector('#instance-1 input').value === 'Coach'")  # its own conversation


def test_edit_a_persona_and_hear_a_sample_of_its_voice(page):
    page.get_by_role("tab", name="Personas").click()
    page.locator("#personas [role=gridcell]", has_text="Coach").first.click()
    wait_text(page, "#persona-status", "Editing Coach")
    page.locator("#persona-style textarea").fill("calm and slow")
    pick(page, "#persona-voice", "Ethan")
    page.locator("#persona-save").click()
    wait_text(page, "#personas", "calm and slow")
    row = page.locator("#personas [role=row]", has_text="Coach").inner_text()
    assert "Ethan" in row and "energetic" not in row
    before = len(speech_log(page))
    page.locator("#persona-preview").click()
    wait_text(page, "#persona-status", "Played a")
    page.wait_for_function(
        f"window.assistantSpeech.log.slice({before}).some(e => e.pane === 'preview' && e.event === 'stream-end')"
    )
    end = next(e for e in speech_log(page)[before:] if e["pane"] == "preview" and e["event"] == "stream-end")
    assert end["samples"] > 0 and "Ethan" in page.locator("#persona-status").inner_text()
    shot(page, "personas")
    page.locator("#persona-name input").fill("Coach")  # a name that is taken: one line, nothing changes
    page.locator("#persona-create").click()
    wait_text(page, "#persona-status", "already exists")


def test_two_conversations_side_by_side_both_at_once(page):
    page.get_by_role("tab", name="Chat").click()
    page.locator("#open-second").click()
    page.locator("#chat-input-2 textarea").wait_for()
    pick(page, "#persona-2", "Coach")
    page.wait_for_function("document.querySelector('#instance-2 input').value === 'Coach'")
    pick(page, "#persona", "Grok")
    page.wait_for_function("document.querySelector('#instance-1 input').value === 'Grok'")
    idle(page)
    idle(page, "-2")
    done = replies_done(page), replies_done(page, "-2")
    page.locator("#chat-input textarea").fill("first pane question")
    page.locator("#chat-input-2 textarea").fill("second pane question")
    page.locator("#chat-input textarea").press("Enter")
    page.locator("#chat-input-2 textarea").press("Enter")  # while the first is still answering
    wait_replies_done(page, done[0])
    wait_replies_done(page, done[1], "-2")
    one, two = page.locator("#chatbot").inner_text(), page.locator("#chatbot-2").inner_text()
    assert "first pane question" in one and "second pane question" not in one
    assert "second pane question" in two and "first pane question" not in two
    assert page.locator("#chatbot-2 .message").count() >= 2
    shot(page, "chat-side-by-side")
    page.locator("#open-second").click()  # close it again
    page.locator("#chat-input-2").wait_for(state="detached")


def test_clearing_the_chat_starts_a_new_conversation_and_keeps_the_old(page):
    page.get_by_role("tab", name="Chat").click()
    pick(page, "#persona", "Grok")
    page.wait_for_function("document.querySelector('#instance-1 input').value === 'Grok'")
    send(page, "remember this conversation")
    page.locator("#chatbot button[aria-label=Clear]").click()
    page.wait_for_function("document.querySelector('#instance-1 input').value.startsWith('Grok 20')")
    send(page, "a new start")
    assert "remember this conversation" not in page.locator("#chatbot").inner_text()
    pick(page, "#instance-1", "Grok")  # the old one is still there
    wait_text(page, "#chatbot", "remember this conversation")


def test_think_streams_the_reasoning_into_a_box_above_the_answer(page):
    """Chat's Think switch: the reasoning shows in a collapsible box ("Thought for N s" once the
    answer begins), the answer in its own bubble after it; Answer turns it off again."""
    page.get_by_role("tab", name="Chat").click()
    field = page.locator("#instance-1 input")  # a fresh conversation
    field.fill("Thinking")
    field.press("Enter")
    page.locator("#speak-1 input").uncheck()  # the text is what is judged here
    page.locator("#reasoning-1 label", has_text="Think").click()
    try:
        send(page, "A pen costs 3 dollars. How much are 4 pens?")
        wait_text(page, "#chatbot", "Thought for")
        messages = page.locator("#chatbot .message")
        assert messages.count() >= 3  # the question, the reasoning's box, the answer
        assert messages.last.inner_text().strip()
        assert "Thought for" not in messages.last.inner_text()  # the answer is a bubble of its own
        shot(page, "chat-thinking")
    finally:
        page.locator("#reasoning-1 label", has_text="Answer").click()
        page.locator("#speak-1 input").check()


def remembered(page, data_dir, text: str, query: str) -> int:
    """Store a memory for the page's user (as a chat would), then search for it in the Memory tab."""
    from memory import open_store

    store = open_store(data_dir)
    mid = store.add_memory(store.user("local"), text)
    store.close()
    page.get_by_role("tab", name="Memory").click()
    page.locator("#memory-query input").fill(query)
    page.locator("#memory-query input").press("Enter")
    return mid


def test_delete_a_memory(page, server):
    from memory import open_store

    mid = remembered(page, server[1], "The user's name is Igor.", "name")
    wait_text(page, "#memories", "Igor")
    page.locator("#memory-id input").fill(str(mid))
    page.locator("#memory-delete").click()
    wait_text(page, "#memories", "Igor", present=False)
    store = open_store(server[1])
    assert all(m.id != mid for m in store.memories(store.user("local")))
    store.close()


def test_edit_a_memory_and_see_its_history(page, server):
    from memory import open_store

    mid = remembered(page, server[1], "The user likes tea.", "tea")
    page.locator("#memories [role=gridcell]", has_text="likes tea").first.click()
    page.wait_for_function("document.querySelector('#memory-text textarea').value.includes('likes tea')")
    wait_text(page, "#memory-history", "add")
    page.locator("#memory-text textarea").fill("The user likes green tea.")
    page.locator("#memory-save").click()
    wait_text(page, "#memories", "green tea")
    wait_text(page, "#memory-history", "update")
    shot(page, "memory")
    page.locator("#memory-delete").click()
    wait_text(page, "#memory-history", "delete")
    wait_text(page, "#memories", "green tea", present=False)
    page.locator("#memory-all input").check()  # deleted ones are listed on request, with their status
    wait_text(page, "#memories", "green tea")
    assert "deleted" in page.locator("#memories [role=row]", has_text="green tea").inner_text()
    store = open_store(server[1])
    history = store.history_of_memories(store.user("local"), mid)
    store.close()
    assert [h["action"] for h in history] == ["add", "update", "delete"]
    assert history[1]["before"] == "The user likes tea." and history[1]["after"] == "The user likes green tea."


def test_voice_tab_records_from_the_fake_microphone(page):
    page.get_by_role("tab", name="Voice").click()
    shot(page, "voice")
    record = page.locator("#mic button", has_text="Record")
    record.first.click()
    page.wait_for_timeout(2500)  # let the fake microphone play part of the file
    page.locator("#mic button", has_text="Stop").first.click()
    page.locator("#voice-chat").get_by_text("(spoken)").wait_for()
    page.locator("#voice-audio audio[src]").wait_for(state="attached")


def test_closing_the_page_mid_reply_cancels_the_reply(page, long_server):
    """A tab closed while its reply is being written frees the engine: the turn is cancelled, not finished."""
    import httpx

    ctx = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
    tab = ctx.new_page()
    tab.set_default_timeout(90_000)
    tab.goto(long_server + "/")
    before = httpx.get(f"{long_server}/health").json()
    tab.locator("#chat-input textarea").fill("tell me a very long story")
    tab.locator("#chat-input textarea").press("Enter")
    tab.wait_for_function(
        "(() => { const m = document.querySelectorAll('#chatbot .message');"
        " return m.length >= 2 && m[m.length - 1].innerText.trim().length > 0; })()"
    )
    ctx.close()  # mid-reply
    deadline = time.time() + 30
    while (now := httpx.get(f"{long_server}/health").json())["turns_cancelled"] == before["turns_cancelled"]:
        assert time.time() < deadline, f"the reply of the closed page was not cancelled: {before} -> {now}"
        time.sleep(0.2)
    assert now["turns_done"] == before["turns_done"]  # cancelled, not finished
