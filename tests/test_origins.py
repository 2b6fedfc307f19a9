"""Which pages and programs may use a plain `assistant serve` (no keys, on loopback): its own web
pages (the /call voice page works without a key, as Chat and Voice do) and programs on this machine;
pages of other origins only when named with --allow-origin (CORS on /v1 for them); others refused,
on the realtime socket as on /v1. Bad realtime settings are refused at once, with a clear error."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import start_server, stop_server

ALLOWED = "http://app.example:3000"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("origins")


@pytest.fixture(scope="module")
def server(data_dir):
    proc, url = start_server("--profile", "tiny", "--architecture", "qwen3_omni", "--max-new-tokens", "2",
                             "--allow-origin", ALLOWED, "--data-dir", str(data_dir))
    yield url
    stop_server(proc)


def _open(url: str, query: str = "", origin: str | None = None) -> tuple[dict, object]:
    ws = connect(url.replace("http", "ws") + "/v1/realtime" + query,
                 additional_headers={"Origin": origin} if origin else None, open_timeout=30)
    return _next(ws), ws


def _next(ws) -> dict:
    """The next event that is not a `state` change."""
    while (ev := json.loads(ws.recv(timeout=30)))["type"] == "state":
        pass
    return ev


@pytest.mark.parametrize("origin", [None, "same", ALLOWED], ids=["program", "own-page", "allowed-page"])
def test_the_socket_opens_without_a_key_for_this_machine(server, origin):
    first, ws = _open(server, origin=server if origin == "same" else origin)
    with ws:
        assert first["type"] == "session.created" and first["user"] == "local"


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1"])
def test_pages_of_other_origins_cannot_open_the_socket(server, origin):
    first, ws = _open(server, origin=origin)
    with ws:
        assert first["type"] == "error" and first["code"] == "origin_not_allowed"
        with pytest.raises(Exception):  # noqa: B017 - closed by the server (1008)
            ws.recv(timeout=10)


def test_an_unknown_voice_is_refused_at_connect(server):
    first, ws = _open(server, "?voice=Nobody")
    with ws:
        assert first["type"] == "error" and first["code"] == "unknown_voice"


def test_a_nan_vad_setting_is_refused_and_the_socket_stays_open(server):
    _, ws = _open(server)
    with ws:
        ws.send('{"type": "session.update", "vad": {"threshold_db": NaN}}')
        reply = _next(ws)
        assert reply["type"] == "error" and "finite" in reply["message"]
        ws.send('{"type": "session.update", "vad": {"threshold_db": -40}}')
        ws.send('{"type": "bogus"}')
        reply = _next(ws)
        assert reply["type"] == "error" and "bogus" in reply["message"]  # the update was taken silently


def test_cors_answers_only_the_allowed_origin(server):
    pre = httpx.options(server + "/v1/chat/completions", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ALLOWED
    r = httpx.get(server + "/v1/models", headers={"Origin": ALLOWED})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ALLOWED  # no key: still 401
    r = httpx.get(server + "/v1/models", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_the_call_page_starts_without_a_key(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        page = b.new_context(permissions=["microphone"]).new_page()
        page.set_default_timeout(60_000)
        page.goto(server + "/call")
        page.click("#start")
        page.wait_for_function("window.assistantCall.log.some(e => e.kind === 'started')")
        page.wait_for_timeout(1000)
        kinds = [e["kind"] for e in page.evaluate("window.assistantCall.log")]
        assert "session.created" in kinds and "error" not in kinds and "closed" not in kinds
        assert page.inner_text("#error") == ""
        b.close()


def _until(ws, kind: str) -> dict:
    while (ev := _next(ws))["type"] != kind:
        pass
    return ev


def test_replies_cut_while_heard_are_all_saved_when_the_socket_closes(server, data_dir):
    """Two replies cut by new turns while playing, the player never reporting how much was heard,
    then the socket closes: both are kept in the history as interrupted (the second no longer
    overwrites the first, and closing no longer drops them)."""
    _, ws = _open(server, "?instance=cuts")
    with ws:
        ws.send(json.dumps({"type": "session.update", "playback_reports": True}))
        ws.send(json.dumps({"type": "text", "text": "tell me a story"}))
        for text in ("no, another one", "stop"):
            rid = _until(ws, "response.started")["id"]
            ws.send(json.dumps({"type": "playback.started", "id": rid}))
            ws.send(json.dumps({"type": "text", "text": text}))  # talks over it
            assert _until(ws, "response.cancelled")["id"] == rid
    deadline = time.time() + 30
    while time.time() < deadline:
        with sqlite3.connect(data_dir / "assistant.sqlite3") as db:
            cut = db.execute("SELECT count(*) FROM messages m JOIN instances i ON m.instance_id = i.id "
                             "WHERE i.name = 'cuts' AND m.role = 'assistant' AND m.interrupted = 1").fetchone()[0]
        if cut >= 2:
            break
        time.sleep(0.2)
    assert cut >= 2


def test_web_ui_uploads_past_the_limit_are_refused(server):
    big = b"\0" * (51 * 2**20)  # the web UI's limit is 50 MiB
    r = httpx.post(server + "/gradio_api/upload", files={"files": ("big.wav", big)}, timeout=120)
    assert r.status_code == 413, r.text[:200]
    small = httpx.post(server + "/gradio_api/upload", files={"files": ("a.wav", b"RIFF")}, timeout=60)
    assert small.status_code == 200
    assert httpx.get(server + "/health").json()["status"] == "ok"
