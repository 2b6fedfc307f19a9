"""Screenshots of every tab of the web UI, as a new user sees them after using each once.

    python bench/ui_screenshots.py [--out DIR] [--url URL --user NAME --key KEY]

Without --url it serves the tiny profile in a subprocess (fresh data folder, one login). Uses the
Debian chromium through Playwright. The PNGs are for a person to look at; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import start_server, stop_server  # noqa: E402 - one way to run a server

SPEECH = REPO.parent / "shared" / "data" / "speech"
CHROMIUM = "/usr/bin/chromium"


def add_and_open(page, button: str, table: str, text: str, shows: str, signal: str) -> None:
    """Press an add button, wait for the new row in the table, pick it, wait until `shows` says `signal`."""
    page.locator(button).click()
    page.wait_for_function("([t, x]) => document.querySelector(t).innerText.includes(x)", arg=[table, text])
    page.locator(f"{table} [role=gridcell]", has_text=text).first.click()
    page.wait_for_function("([s, x]) => document.querySelector(s).innerText.includes(x)", arg=[shows, signal])


def take(url: str, user: str, key: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)

        def shot(name: str) -> None:
            # Gradio dims a component while an event that updates it is still running: wait for none
            page.wait_for_function("!document.querySelector('.pending')")
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)

        page.goto(url + "/")
        page.get_by_label("username").wait_for()
        shot("0-login")
        page.get_by_label("username").fill(user)
        page.get_by_label("password").fill(key)
        page.get_by_role("button", name="Login").click()
        page.locator("#chat-input textarea").wait_for()
        page.wait_for_function("document.querySelector('#instance-1 input').value.length > 0")  # the page's load ran
        shot("1-chat-empty")
        page.locator("#chat-input textarea").fill("Hello! What can you do?")
        page.locator("#chat-input textarea").press("Enter")
        page.wait_for_function("(window.assistantSpeech?.log || []).some(e => e.event === 'reply-done')")
        shot("2-chat-reply")
        page.locator("#open-second").click()
        page.locator("#chat-input-2 textarea").fill("And you, second one?")
        page.locator("#chat-input-2 textarea").press("Enter")
        page.wait_for_function("window.assistantSpeech.log.some(e => e.event === 'reply-done' && e.pane === '2')")
        shot("3-chat-side-by-side")
        page.get_by_role("tab", name="Voice").click()
        shot("4-voice")
        page.get_by_role("tab", name="Transcribe").click()
        page.locator("#transcribe-file input[type=file]").set_input_files(str(SPEECH / "openai_whisper" / "jfk.flac"))
        page.locator("#transcribe-go").click()
        page.wait_for_function("document.querySelector('#transcript textarea').value.length > 20")
        page.wait_for_function("document.querySelector('#transcribe-player #duration')?.innerText !== '0:00'")
        shot("5-transcribe")
        page.get_by_role("tab", name="Personas").click()
        page.locator("#persona-name input").fill("Coach")
        page.locator("#persona-style textarea").fill("Energetic, short sentences, always ends with a challenge.")
        add_and_open(page, "#persona-create", "#personas", "Coach", "#persona-status", "Editing")
        shot("6-personas")
        page.get_by_role("tab", name="Memory").click()
        page.locator("#memory-text textarea").fill("The user's name is Igor.")
        add_and_open(page, "#memory-add", "#memories", "Igor", "#memory-history", "add")
        shot("7-memory")
        browser.close()
    return shots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "assistant-screenshots"))
    ap.add_argument("--url", help="a running server (default: start one with the tiny profile)")
    ap.add_argument("--user", default="ada")
    ap.add_argument("--key", default="screenshot-key-1")
    args = ap.parse_args()
    proc = None
    url = args.url
    with tempfile.TemporaryDirectory() as data:
        if not url:
            proc, url = start_server("--profile", "tiny", "--data-dir", data, "--max-new-tokens", "24",
                                     "--api-key", f"{args.key}={args.user}")
        try:
            for path in take(url, args.user, args.key, Path(args.out)):
                print(path)
        finally:
            if proc:
                stop_server(proc)


if __name__ == "__main__":
    main()
