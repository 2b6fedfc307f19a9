"""Two users on one server: neither can read or change the other's personas, memories or conversations,
through the web UI (Gradio's login: user name + API key, real Debian chromium) or through the API
(the real `openai` client). The server is `assistant serve --profile tiny` with three keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from conftest import start_server, stop_server

CHROMIUM = "/usr/bin/chromium"
KEYS = {"alice": "alice-key-0001", "bob": "bob-key-00002", "carol": "carol-key-003"}
SECRET = "Alice's locker code is 4711."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("users-data")
    keys = [arg for user, key in KEYS.items() for arg in ("--api-key", f"{key}={user}")]
    proc, url = start_server("--profile", "tiny", "--data-dir", str(data), "--max-new-tokens", "8", *keys)
    yield url, data
    stop_server(proc)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def login(browser, url: str, user: str):
    """A fresh browser context (its own cookies) logged in through the page's login form."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(90_000)
    page.goto(url + "/")
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(KEYS[user])
    page.get_by_role("button", name="Login").click()
    page.locator("#chatbot").wait_for()
    return page


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_text(page, selector: str, text: str, present: bool = True) -> None:
    page.wait_for_function(
        "([s, t, p]) => document.querySelector(s).innerText.includes(t) === p", arg=[selector, text, present]
    )


def persona_options(page) -> list[str]:
    page.get_by_role("tab", name="Chat").click()
    page.locator("#persona input").click()
    options = page.locator("#persona").get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return [o.strip() for o in options]


def chat(page, text: str, conversation: str | None = None) -> None:
    page.get_by_role("tab", name="Chat").click()
    if conversation:
        field = page.locator("#instance-1 input")
        field.fill(conversation)
        field.press("Enter")
    page.locator("#chat-input textarea").fill(text)
    page.locator("#chat-input textarea").press("Enter")
    page.wait_for_function("(window.assistantSpeech?.log || []).some(e => e.event === 'reply-done')")


def memory_action(page, memory_id: int, button: str, outcome: str) -> str:
    """Type a memory id, press a button of the Memory tab, return the status line once it says `outcome`."""
    page.get_by_role("tab", name="Memory").click()
    page.locator("#memory-id input").fill(str(memory_id))
    page.locator(button).click()
    wait_text(page, "#memory-status", outcome)
    return text_of(page, "#memory-status")


def test_neither_user_sees_the_others_data_in_the_web_ui(server, browser):
    from memory import open_store

    url, data = server
    alice = login(browser, url, "alice")
    alice.get_by_role("tab", name="Personas").click()
    alice.locator("#persona-name input").fill("Nightowl")
    alice.locator("#persona-style textarea").fill("Talks only about owls.")
    alice.locator("#persona-create").click()
    wait_text(alice, "#personas", "Nightowl")
    alice.get_by_role("tab", name="Memory").click()
    alice.locator("#memory-text textarea").fill(SECRET)
    alice.locator("#memory-add").click()
    wait_text(alice, "#memories", "4711")
    secret_id = int(alice.locator("#memory-id input").input_value())
    chat(alice, "The plan for Friday is XYZZY.", conversation="Plans")
    wait_text(alice, "#chatbot", "XYZZY")

    bob = login(browser, url, "bob")
    assert "Nightowl" not in persona_options(bob)
    bob.get_by_role("tab", name="Personas").click()
    wait_text(bob, "#personas", "Grok")
    assert "Nightowl" not in text_of(bob, "#personas")
    bob.get_by_role("tab", name="Memory").click()
    bob.locator("#memory-query input").fill("locker code")
    bob.locator("#memory-query input").press("Enter")
    bob.locator("#memory-all input").check()
    assert "4711" not in text_of(bob, "#memories")
    # Alice's memory by its id: reading, editing and deleting it all read as "no such memory".
    status = memory_action(bob, secret_id, "#memory-history-go", "Could not show the history")
    assert f"you have no memory {secret_id}" in status
    assert "4711" not in text_of(bob, "#memory-history")
    bob.locator("#memory-text textarea").fill("Bob was here.")
    status = memory_action(bob, secret_id, "#memory-save", "Could not save")
    assert f"you have no active memory {secret_id}" in status
    status = memory_action(bob, secret_id, "#memory-delete", "Could not delete")
    assert f"you have no active memory {secret_id}" in status
    # Her conversation: not listed, and the same name opens Bob's own, empty one.
    bob.get_by_role("tab", name="Chat").click()
    bob.locator("#instance-1 input").click()
    assert "Plans" not in [o.strip() for o in bob.locator("#instance-1").get_by_role("option").all_inner_texts()]
    bob.keyboard.press("Escape")
    chat(bob, "hello", conversation="Plans")
    assert "XYZZY" not in text_of(bob, "#chatbot")
    bob.get_by_role("tab", name="Personas").click()
    bob.locator("#persona-name input").fill("Bobsona")
    bob.locator("#persona-create").click()
    wait_text(bob, "#personas", "Bobsona")

    alice.reload()
    alice.locator("#chatbot").wait_for()
    assert "Bobsona" not in persona_options(alice)
    assert "Nightowl" in persona_options(alice)
    alice.get_by_role("tab", name="Memory").click()
    wait_text(alice, "#memories", "4711")  # intact after Bob's attempts
    chat(alice, "Still there?", conversation="Plans")
    wait_text(alice, "#chatbot", "XYZZY")  # her history, not Bob's "hello"
    assert "hello" not in text_of(alice, "#chatbot")

    store = open_store(data)
    try:
        mine = {m.id: m for m in store.memories(store.user("alice"))}
        assert mine[secret_id].text == SECRET and mine[secret_id].status == "active"
        assert [h["action"] for h in store.history_of_memories(store.user("alice"), secret_id)] == ["add"]
        assert not store.memories(store.user("bob"), include_inactive=True)
    finally:
        store.close()


def test_a_speech_stream_is_heard_only_by_the_user_who_asked(server, browser):
    """Alice's reply speech URL, in Bob's hands (or a browser not logged in), is a 404 and stays unread;
    Alice then gets its audio, once."""
    url, _ = server
    alice, bob = login(browser, url, "alice"), login(browser, url, "bob")
    held = []  # Alice's page does not fetch its stream: the URL is kept for the test

    def hold(route) -> None:
        held.append(route.request.url)
        route.abort()

    alice.route("**/ui/speech/**", hold)
    chat(alice, "Say something, please.")
    assert len(held) == 1, held
    for who in (bob.context.request, None):
        r = who.get(held[0]) if who else httpx.get(held[0])
        status, body = (r.status, r.json()) if who else (r.status_code, r.json())
        assert status == 404 and body["error"]["code"] == "not_found" and "speech stream" in body["error"]["message"]
    r = alice.context.request.get(held[0])
    assert r.status == 200 and int(r.headers["x-sample-rate"]) > 0
    audio = r.body()
    assert len(audio) >= 2 and len(audio) % 2 == 0  # PCM16 samples of the reply
    assert alice.context.request.get(held[0]).status == 404  # one-time
    alice.context.close()
    bob.context.close()


def test_serving_beyond_loopback_without_a_key_is_refused():
    """Beyond loopback everyone must log in: with no key to log in with, serve refuses to start."""
    done = subprocess.run(
        [sys.executable, "-m", "assistant", "serve", "--profile", "tiny", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "assistant: error: serving beyond loopback needs at least one --api-key"


def client(url: str, user: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[user], max_retries=0, timeout=120)


def ask(url: str, who: str, persona: str, **extra) -> openai.types.chat.ChatCompletion:
    return client(url, who).chat.completions.create(
        model="tiny-qwen2_5_omni",
        max_tokens=2,
        messages=[{"role": "user", "content": "What is my locker code?"}],
        extra_body={"persona": persona, **extra},
    )


def test_neither_user_reaches_the_others_data_through_the_api(server):
    from memory import Persona, create_persona, open_store

    url, data = server
    store = open_store(data)
    try:
        alice = store.user("alice")
        if not any(m.text == SECRET for m in store.memories(alice)):  # when run alone
            store.add_memory(alice, SECRET)
        create_persona(store, alice, Persona(name="Owlish", style="Talks only about owls."))
    finally:
        store.close()
    assert ask(url, "alice", "Owlish").choices[0].message.content
    for who, body in (("bob", {}), ("bob", {"user": "alice"}), ("carol", {})):
        with pytest.raises(openai.NotFoundError) as err:
            ask(url, who, "Owlish", **body)
        assert err.value.body["code"] == "persona_not_found"
    # Her memories go into her prompt only: Bob's prompt is as long as a user's who has none.
    tokens = {who: ask(url, who, "Grok").usage.prompt_tokens for who in ("alice", "bob", "carol")}
    assert tokens["bob"] == tokens["carol"] < tokens["alice"]
    r = httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEYS['bob']}"},
        json={"messages": [{"role": "user", "content": "hi"}], "persona": 5},
    )
    assert r.status_code == 400 and r.json()["error"]["message"]
    # A speech stream is reachable only by its one-time token.
    r = httpx.get(f"{url}/ui/speech/not-a-token")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
