"""The web source on real parts: a real HTTP server in this process serves a small static site and
a /search endpoint in SearxNG's JSON shape, and WebSource reads them over real sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from assistant.research.sources import Passage, SourceUnavailable
from assistant.research.web import WebSource, html_to_text, split_passages

WATER = """<!doctype html>
<html><head><meta charset="utf-8"><title>Water - Physical properties</title>
<style>.secret-style-rule { color: red } body { font-family: STYLESHEETTEXT }</style>
<script>var SCRIPTTEXT = "boiling point of water is 451 degrees"; document.write("SCRIPTWROTE");</script>
</head><body onload="alert('ONLOADTEXT')">
<nav><a href="/">Home</a> <a href="/about">NAVIGATIONTEXT about us</a></nav>
<header>HEADERTEXT site banner</header>
<main>
<h1>Water</h1>
<p>Water is an inorganic compound with the chemical formula H2O. It is a transparent, tasteless,
odourless and nearly colourless chemical substance.</p>
<p>At sea level, pure water boils at 100 degrees Celsius (212 degrees Fahrenheit); the boiling
point falls as the air pressure falls, so water boils at a lower temperature on a mountain.</p>
<noscript>NOSCRIPTTEXT enable javascript</noscript>
<script type="text/javascript">
  // a second script in the body, with markup-looking text inside: </p><p>
  console.log("SCRIPTTEXT2 the boiling point of water");
</script>
<p>Water freezes at 0 degrees Celsius and is densest at about 4 degrees Celsius.</p>
</main>
<footer>FOOTERTEXT copyright</footer>
</body></html>"""

IRON = """<html><head><title>Iron</title></head><body>
<p>Iron is a chemical element with the symbol Fe and atomic number 26. It is a metal of the
first transition series and the most common element on Earth by mass.</p>
<p>Iron melts at 1538 degrees Celsius, far above the temperature at which water boils.</p>
</body></html>"""

PLAIN = "Mount Everest\n\nThe summit of Mount Everest is 8849 metres above sea level.\n\nIt lies in the Himalaya."
BINARY = b"\x00\x01BINARYTEXT zebra quantum boiling point of water\x00" * 20


class Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: dict[str, int]  # set on the class made per server

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # http.server's name
        parts = urlsplit(self.path)
        path, params = parts.path, parse_qs(parts.query)
        self.hits[path] = self.hits.get(path, 0) + 1
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if path == "/good/search":
            assert params.get("format") == ["json"], params
            results = [
                {"url": f"{base}/iron.html", "title": "Iron", "content": "Iron is a metal.", "engine": "wikipedia"},
                {"url": f"{base}/water.html", "title": "Water (searx title)", "content": "Water is H2O.",
                 "engine": "wikipedia"},
                {"url": f"{base}/everest.txt", "title": "Everest", "content": "A mountain.", "engine": "ddg"},
                {"url": f"{base}/loop/1", "title": "Loop", "content": "The loop page snippet: LOOPSNIPPET "
                 "of the boiling point of water.", "engine": "ddg"},
                {"url": f"{base}/data.bin", "title": "Data", "content": "a binary file", "engine": "ddg"},
                {"url": "ftp://127.0.0.1/file.txt", "title": "FTP", "content": "FTPTEXT boiling water", "engine": "x"},
                {"url": "javascript:alert(1)", "title": "JS", "content": "JSURLTEXT boiling water", "engine": "x"},
                {"not a url": True},
            ]
            answer = {"query": params["q"][0], "number_of_results": len(results), "results": results,
                      "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": []}
            self.send(200, json.dumps(answer).encode(), "application/json")
        elif path == "/endless/search":
            results = [{"url": f"{base}/forever", "title": "Forever", "content": "FOREVERSNIPPET water"},
                       {"url": f"{base}/drip", "title": "Drip", "content": "DRIPSNIPPET water"},
                       {"url": f"{base}/water.html", "title": "Water", "content": "Water is H2O."}]
            self.send(200, json.dumps({"query": "", "results": results}).encode(), "application/json")
        elif path == "/broken/search":
            self.send(200, b'{"query": "water", "results": [{"url": ', "application/json")
        elif path == "/html/search":
            self.send(200, b"<html><body>format json is not enabled</body></html>", "text/html")
        elif path == "/forbidden/search":  # what SearxNG answers when json is not in its search.formats
            self.send(403, b"<html>Forbidden</html>", "text/html")
        elif path == "/down/search":
            self.send(502, b"bad gateway", "text/plain")
        elif path == "/water.html":
            self.send(200, WATER.encode(), "text/html; charset=utf-8")
        elif path == "/iron.html":
            self.send(200, IRON.encode(), "text/html")
        elif path == "/everest.txt":
            self.send(200, PLAIN.encode(), "text/plain; charset=utf-8")
        elif path == "/data.bin":
            self.send(200, BINARY, "application/octet-stream")
        elif path.startswith("/loop/"):
            n = int(path.rsplit("/", 1)[1])
            self.send(302, b"", "text/html", Location=f"/loop/{2 if n == 1 else 1}")
        elif path == "/forever":  # as fast as the socket takes it, never ending
            self.stream_forever(b"<p>" + b"water and more water " * 50 + b"</p>\n", pause_s=0.0)
        elif path == "/drip":  # a few bytes now and then, never ending
            self.stream_forever(b"<p>drip</p>", pause_s=0.05)
        else:
            self.send(404, b"not found", "text/plain")

    def stream_forever(self, chunk: bytes, pause_s: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            while True:
                self.wfile.write(chunk)
                if pause_s:
                    self.wfile.flush()
                    time.sleep(pause_s)
        except OSError:  # the reader hung up: what a cap does
            pass


@pytest.fixture(scope="module")
def site():
    handler = type("SiteHandler", (Site,), {"hits": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_port():
    """A port that takes connections (the kernel's backlog) but never answers a byte."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def local(search_url: str, **options) -> WebSource:
    """A WebSource that reads pages on this machine (the test's site is on 127.0.0.1)."""
    return WebSource(search_url, private_pages=True, **options)


def all_text(passages: list[Passage]) -> str:
    return "\n".join(p.text + " " + p.title for p in passages)


def test_the_right_passage_comes_back(site):
    base, _ = site
    web = local(base + "/good", timeout_s=5)
    passages = web.search("what is the boiling point of water at sea level", k=5)
    assert passages, "no passages"
    top = passages[0]
    assert top.source == "web" and top.url == base + "/water.html" and top.doc_id == top.url
    assert "100 degrees Celsius" in top.text and "inorganic" not in top.text  # the paragraph, not the page
    assert top.title == "Water - Physical properties"  # the page's own title
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)
    assert all(p.score > 0 for p in passages)


def test_scripts_styles_and_navigation_never_become_text(site):
    base, _ = site
    web = local(base + "/good")
    text = all_text(web.search("boiling point of water", k=50))
    for marker in ("SCRIPTTEXT", "SCRIPTWROTE", "STYLESHEETTEXT", "secret-style-rule", "ONLOADTEXT", "NAVIGATIONTEXT",
                   "HEADERTEXT", "FOOTERTEXT", "NOSCRIPTTEXT", "451 degrees", "console.log"):
        assert marker not in text, marker
    title, blocks = html_to_text(WATER)
    assert title == "Water - Physical properties"
    assert blocks[0] == "Water" and any("freezes at 0 degrees" in b for b in blocks)
    assert not any("SCRIPT" in b for b in blocks)


def test_only_http_pages_of_text_types_are_read(site):
    base, _ = site
    web = local(base + "/good")
    passages = web.search("boiling point of water zebra quantum", k=50)
    text = all_text(passages)
    assert "BINARYTEXT" not in text  # application/octet-stream: skipped (its snippet has no query words)
    assert "FTPTEXT" not in text and "JSURLTEXT" not in text  # not http(s): never even a snippet
    assert web.read_page(base + "/data.bin") is None
    everest = web.read_page(base + "/everest.txt")  # text/plain is read
    assert everest is not None and "8849 metres" in " ".join(everest.blocks)
    assert web.search("how high is the summit of Mount Everest", k=1)[0].url == base + "/everest.txt"


def test_a_redirect_loop_is_stopped_and_the_snippet_stands_in(site):
    base, hits = site
    web = local(base + "/good", max_redirects=3)
    hits.pop("/loop/1", None), hits.pop("/loop/2", None)
    started = time.monotonic()
    assert web.read_page(base + "/loop/1") is None
    assert time.monotonic() - started < 2
    assert hits.get("/loop/1", 0) + hits.get("/loop/2", 0) == 4  # the first request and 3 redirects
    passages = web.search("loop page snippet boiling water", k=50)
    loop = [p for p in passages if p.url == base + "/loop/1"]
    assert len(loop) == 1 and "LOOPSNIPPET" in loop[0].text and loop[0].title == "Loop"


def test_a_page_that_never_ends_is_cut_at_the_byte_cap(site):
    base, _ = site
    web = local(base + "/endless", max_page_bytes=20_000, page_timeout_s=3)
    started = time.monotonic()
    page = web.read_page(base + "/forever")
    assert time.monotonic() - started < 3
    assert page is not None and page.truncated
    assert 15_000 < sum(len(b) for b in page.blocks) <= 20_000


def test_a_page_that_drips_forever_is_cut_at_the_time_cap(site):
    base, _ = site
    web = local(base + "/endless", max_page_bytes=10_000_000, page_timeout_s=1)
    started = time.monotonic()
    page = web.read_page(base + "/drip")
    took = time.monotonic() - started
    assert 0.9 < took < 2, took
    assert page is not None and page.truncated and page.blocks[0] == "drip"


def test_a_search_over_endless_pages_ends_within_its_caps(site):
    base, _ = site
    web = local(base + "/endless", max_page_bytes=50_000, page_timeout_s=1, budget_s=3)
    started = time.monotonic()
    passages = web.search("boiling point of water", k=3)
    assert time.monotonic() - started < 2.5
    assert passages[0].url == base + "/water.html"  # read in parallel with the endless ones


def test_a_search_that_never_answers_is_unavailable_within_the_timeout(silent_port):
    web = WebSource(f"http://127.0.0.1:{silent_port}", timeout_s=1)
    started = time.monotonic()
    expected = rf"^the web search at http://127.0.0.1:{silent_port} did not answer in 1 s$"
    with pytest.raises(SourceUnavailable, match=expected):
        web.search("water")
    assert time.monotonic() - started < 2


def test_a_search_that_is_down_or_not_json_is_a_clear_error(site):
    base, _ = site
    with pytest.raises(SourceUnavailable, match=r"did not answer JSON .*format=json"):
        local(base + "/broken").search("water")
    with pytest.raises(SourceUnavailable, match=r"did not answer JSON"):
        local(base + "/html").search("water")
    with pytest.raises(SourceUnavailable, match=r"answered HTTP 403 \(is json in search.formats"):
        local(base + "/forbidden").search("water")
    with pytest.raises(SourceUnavailable, match=r"answered HTTP 502$"):
        local(base + "/down").search("water")
    port = _closed_port()
    with pytest.raises(SourceUnavailable, match=rf"the web search at http://127.0.0.1:{port} cannot be reached"):
        WebSource(f"http://127.0.0.1:{port}").search("water")
    for message in _messages(base):
        assert "\n" not in message


def test_pages_on_local_addresses_are_not_read_by_default(site):
    """A result (or a redirect) pointing into the local network is never fetched: its snippet stands in."""
    base, hits = site
    hits.pop("/water.html", None)
    passages = WebSource(base + "/good").search("what is water", k=50)  # SearxNG itself may be local
    assert hits.get("/water.html") is None
    water = [p for p in passages if p.url == base + "/water.html"]
    assert [p.text for p in water] == ["Water is H2O."]
    assert WebSource(base + "/good").read_page(base + "/water.html") is None


def test_the_embedder_finds_a_paraphrase_without_the_words(site):
    """With memory's MiniLM embedder, a question sharing no word with the page still finds it."""
    from memory.embed import Embedder

    base, _ = site
    question = "how tall is the highest peak on the planet"
    assert local(base + "/good").search(question) == []  # no word in common
    passages = local(base + "/good", embedder=Embedder()).search(question, k=2)
    assert passages and passages[0].url == base + "/everest.txt" and "8849 metres" in passages[0].text


def test_no_search_url_no_source():
    for url in ("", "file:///etc/passwd", "127.0.0.1:8888", "ftp://host/"):
        with pytest.raises(ValueError):
            WebSource(url)
    assert WebSource("http://127.0.0.1:1/").endpoint == "http://127.0.0.1:1/search"
    assert WebSource("http://127.0.0.1:1/search").endpoint == "http://127.0.0.1:1/search"


def test_long_blocks_become_passages_of_bounded_size():
    block = " ".join(f"Sentence number {i} says something about water." for i in range(100))
    passages = split_passages(["Short.", "Also short.", block])
    assert passages[0].startswith("Short. Also short.")
    assert all(len(p) <= 600 for p in passages)
    assert "".join(passages).replace(" ", "") == ("Short.Also short." + block).replace(" ", "")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _messages(base: str) -> list[str]:
    out = []
    for path in ("/broken", "/html", "/forbidden", "/down"):
        try:
            local(base + path).search("water")
        except SourceUnavailable as err:
            out.append(str(err))
    return out
