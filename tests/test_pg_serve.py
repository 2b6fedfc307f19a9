"""Two `assistant serve --profile tiny` processes on one PostgreSQL database (scale-out behind a load
balancer): a fact corrected through one is recalled through the other within a second, and writers
on both at once lose nothing. Corrections are typed turns on the realtime socket (turn.saved says
their writes are committed); recall and writes read back through the web UI's Memory tab (Gradio's
API, logged in as the user)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import start_server, stop_server

KEY = "alice-key-0001"
WRITERS, WRITES = 8, 5  # per server


@pytest.fixture(scope="module")
def servers(local_pg, tmp_path_factory):
    url = local_pg.create_database("two_servers")
    started: list = [None, None]

    def start(i: int) -> None:
        data = tmp_path_factory.mktemp(f"serve{i}")
        started[i] = start_server("--profile", "tiny", "--data-dir", str(data), "--database", url,
                                  "--max-new-tokens", "8", "--api-key", f"{KEY}=alice", timeout_s=400)  # fmt: skip

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(started), "a server did not start"
    yield [u for _, u in started], url
    for proc, _ in started:
        stop_server(proc)


def say(base: str, *texts: str) -> None:
    """Typed turns on the realtime socket, each waited for until its memory writes are committed."""
    from websockets.sync.client import connect

    ws_url = base.replace("http://", "ws://") + "/v1/realtime"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}, open_timeout=60) as ws:
        while json.loads(ws.recv(timeout=60))["type"] != "session.created":
            pass
        for text in texts:
            ws.send(json.dumps({"type": "text", "text": text}))
            while True:
                msg = ws.recv(timeout=300)
                if isinstance(msg, str):
                    event = json.loads(msg)
                    assert event["type"] != "error", event
                    if event["type"] == "turn.saved":
                        break


def memory_tab(base: str):
    from gradio_client import Client

    return Client(base + "/", auth=("alice", KEY), verbose=False)


def searched(client, query: str) -> list[str]:
    """The Memory tab's search (recall) on that server: the texts, best first."""
    table = client.predict(query, False, api_name="/rows")
    return [row[1] for row in table["data"]]


def test_a_correction_through_one_server_is_recalled_through_the_other_within_a_second(servers):
    (a, b), _ = servers
    say(a, "my name is Egor")
    tab_b = memory_tab(b)
    assert searched(tab_b, "what is my name?")[0] == "The user's name is Egor."  # b's index is now cached
    say(a, "no, my name is Igor")
    corrected = time.monotonic()
    while (top := searched(tab_b, "what is my name?"))[0] != "The user's name is Igor.":
        assert time.monotonic() - corrected < 1.0, top
    assert time.monotonic() - corrected < 1.0
    assert all("Egor" not in t for t in top)


def test_eight_writers_on_each_server_lose_nothing(servers):
    (a, b), _ = servers
    errors: list[BaseException] = []

    def writer(base: str, n: int) -> None:
        try:
            tab = memory_tab(base)
            for i in range(WRITES):
                tab.predict(f"Note {n}.{i} from {base[-5:]}.", "", False, api_name="/on_add")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(base, n)) for base in (a, b) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    table = memory_tab(a).predict("", True, api_name="/rows")
    notes = {row[1] for row in table["data"] if row[1].startswith("Note ")}
    wrote = {f"Note {n}.{i} from {base[-5:]}." for base in (a, b) for n in range(WRITERS) for i in range(WRITES)}
    assert notes == wrote
