"""The web as a Deep Search source: a SearxNG instance's JSON API, then the top pages read as text.

`WebSource(search_url).search(query, k)` asks SearxNG (GET {search_url}/search?q=...&format=json),
fetches the first `max_pages` result pages in parallel, turns each into plain text (HTML parsed,
never run: scripts, styles, navigation and forms dropped), splits the text into passages and ranks
them against the query with BM25. A page that cannot be read (down, too slow, a redirect loop, not
http(s), not text/html or text/plain) gives way to its SearxNG snippet.

Every fetch is capped: bytes per page, seconds per page and per search, redirects per page. A
SearxNG that is down, slow, or answers something other than its JSON raises `SourceUnavailable`
with a one-line reason. Nothing is fetched unless a search URL is configured: the offline profile
never builds a WebSource.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import httpx

from assistant.local_only import redact
from assistant.research.sources import Passage, SourceUnavailable

if TYPE_CHECKING:
    from memory.embed import Embedder

__all__ = ["Page", "WebSource", "bm25", "html_to_text", "split_passages"]

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = (*HTML_TYPES, "text/plain")
MAX_SEARCH_BYTES = 2_000_000  # a SearxNG answer larger than this is not a result list
PASSAGE_CHARS = 600  # a passage is a paragraph, or a few sentences of a long one, up to this
MIN_PASSAGE_CHARS = 120  # shorter blocks (headings, captions, list items) are joined to the next ones
RERANK = 32  # with an embedder, the passages best by BM25 that are embedded and ranked again
MIN_COSINE = 0.3  # with an embedder, a passage without the query's words is kept from this cosine up
USER_AGENT = "assistant-deep-search/1 (+https://github.com/; reads pages as text, runs no scripts)"


@dataclass(frozen=True, slots=True)
class Page:
    """One page read as text: `url` is where it ended up after redirects."""

    url: str
    title: str
    blocks: tuple[str, ...]  # paragraphs, headings, list items, in reading order
    truncated: bool  # cut at the byte cap or the time cap


@dataclass(frozen=True, slots=True)
class _Result:
    url: str
    title: str
    snippet: str


@dataclass(frozen=True, slots=True)
class _Fetched:
    """The body of one GET, read up to a byte cap and a deadline."""

    url: str  # after redirects
    content_type: str
    charset: str | None
    body: bytes
    truncated: bool


class WebSource:
    """Search the web through SearxNG and read the top pages (see the module's docstring)."""

    name = "web"

    def __init__(
        self,
        search_url: str,
        *,
        timeout_s: float = 5.0,  # SearxNG must answer within this
        max_pages: int = 4,  # result pages fetched and read per search
        max_page_bytes: int = 1_000_000,  # a page is cut here (bytes of HTML)
        page_timeout_s: float = 5.0,  # a page is cut after this long, however it streams
        budget_s: float = 15.0,  # the whole search (SearxNG and every page) ends within this
        max_redirects: int = 3,  # per page
        workers: int = 4,  # pages fetched at once
        private_pages: bool = False,  # read result pages on loopback, private or link-local addresses
        embedder: Embedder | None = None,  # memory.embed.Embedder: rank passages by meaning as well as words
    ) -> None:
        parts = urlsplit(search_url or "")
        if parts.scheme not in SCHEMES or not parts.netloc:
            raise ValueError(f"the web search URL must be http(s)://host[:port][/path], not {search_url!r}")
        for label, value in (("timeout_s", timeout_s), ("page_timeout_s", page_timeout_s), ("budget_s", budget_s)):
            if not value > 0:
                raise ValueError(f"{label} must be positive, not {value!r}")
        if max_pages < 0 or max_page_bytes < 1 or max_redirects < 0 or workers < 1:
            raise ValueError("max_pages, max_redirects must be >= 0 and max_page_bytes, workers >= 1")
        base = search_url.rstrip("/")
        self.search_url = base
        self.endpoint = base if base.endswith("/search") else base + "/search"
        self.timeout_s = timeout_s
        self.max_pages = max_pages
        self.max_page_bytes = max_page_bytes
        self.page_timeout_s = page_timeout_s
        self.budget_s = budget_s
        self.max_redirects = max_redirects
        self.workers = workers
        self.embedder = embedder
        self.private_pages = private_pages

    # -- the Source interface -------------------------------------------------------------------

    def search(self, query: str, k: int = 5) -> list[Passage]:
        """The k passages of the top result pages most relevant to `query`, best first."""
        query = query.strip()
        if not query or k < 1:
            return []
        deadline = time.monotonic() + self.budget_s
        with self._client() as client:
            results = self._ask_searxng(client, query, deadline)
            pages = self._read_pages(client, results[: self.max_pages], deadline)
        candidates: list[tuple[str, str, str]] = []  # (title, url, passage text)
        for rank, result in enumerate(results):
            page = pages.get(rank)
            if page is not None and page.blocks:
                title = page.title or result.title or page.url
                candidates += [(title, page.url, text) for text in split_passages(page.blocks)]
            elif result.snippet:
                candidates.append((result.title or result.url, result.url, result.snippet))
        scores = self._rank([text for _, _, text in candidates], query)
        best = sorted((i for i in range(len(candidates)) if scores[i] > 0), key=lambda i: -scores[i])[:k]
        log.debug("web search %r: %d results, %d pages read, %d passages", query, len(results), len(pages), len(best))
        return [Passage(source=self.name, doc_id=url, title=title, url=url, text=text, score=scores[i])
                for i in best for title, url, text in [candidates[i]]]

    def _rank(self, texts: list[str], query: str) -> list[float]:
        """Each text's relevance to `query` (0: not relevant): BM25 alone, or, with an embedder, the
        cosine of the RERANK best by BM25 plus half their BM25 relative to the best one."""
        scores = bm25(texts, query)
        if self.embedder is None or not texts:
            return scores
        top = sorted(range(len(texts)), key=lambda i: -scores[i])[:RERANK]
        vectors = self.embedder.embed([texts[i] for i in top])
        cosines = vectors @ self.embedder.embed_one(query)
        best = max(scores) or 1.0
        ranked = [0.0] * len(texts)
        for i, cosine in zip(top, cosines.tolist(), strict=True):
            if scores[i] > 0 or cosine >= MIN_COSINE:
                ranked[i] = max(1e-6, cosine + 0.5 * scores[i] / best)
        return ranked

    # -- SearxNG ---------------------------------------------------------------------------------

    def _ask_searxng(self, client: httpx.Client, query: str, deadline: float) -> list[_Result]:
        where = redact(self.search_url)
        until = min(deadline, time.monotonic() + self.timeout_s)
        try:
            got = self._get(client, self.endpoint, params={"q": query, "format": "json"},
                            deadline=until, max_bytes=MAX_SEARCH_BYTES, max_redirects=self.max_redirects)
        except (httpx.TimeoutException, _Timeout) as err:
            raise SourceUnavailable(f"the web search at {where} did not answer in {self.timeout_s:g} s") from err
        except _HttpStatus as err:
            hint = " (is json in search.formats of its settings.yml?)" if err.status == 403 else ""
            raise SourceUnavailable(f"the web search at {where} answered HTTP {err.status}{hint}") from err
        except (httpx.HTTPError, httpx.InvalidURL, OSError, _Refused) as err:
            raise SourceUnavailable(f"the web search at {where} cannot be reached: {_one_line(err)}") from err
        if got.truncated and len(got.body) >= MAX_SEARCH_BYTES:
            raise SourceUnavailable(f"the web search at {where} sent more than {MAX_SEARCH_BYTES} bytes")
        if got.truncated:
            raise SourceUnavailable(f"the web search at {where} did not answer in {self.timeout_s:g} s")
        try:
            answer = json.loads(got.body.decode(got.charset or "utf-8", errors="replace"))
        except ValueError as err:
            raise SourceUnavailable(f"the web search at {where} did not answer JSON (is format=json enabled "
                                    f"in its settings.yml?): {_one_line(err)}") from err
        if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
            raise SourceUnavailable(f"the web search at {where} answered JSON without a list of results")
        results, seen = [], set()
        for item in answer["results"]:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                continue
            url = item["url"].strip()
            if urlsplit(url).scheme not in SCHEMES or url in seen:
                continue
            seen.add(url)
            results.append(_Result(url, _text(item.get("title")), _text(item.get("content"))))
        return results

    # -- pages -----------------------------------------------------------------------------------

    def _read_pages(self, client: httpx.Client, results: list[_Result], deadline: float) -> dict[int, Page]:
        """The pages that could be read, by their rank; the rest are left out (and logged)."""
        if not results:
            return {}
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(results)), thread_name_prefix="web-page")
        try:
            futures = {pool.submit(self._read_page, client, r.url, deadline): rank for rank, r in enumerate(results)}
            done, late = wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 0.5)
            for future in late:
                log.info("web page %s: not read within the search's %g s", results[futures[future]].url, self.budget_s)
            return {futures[f]: page for f in done if (page := f.result()) is not None}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def read_page(self, url: str) -> Page | None:
        """The page at `url` as text, or None when it cannot be read (the reason is logged)."""
        with self._client() as client:
            return self._read_page(client, url, time.monotonic() + self.page_timeout_s)

    def _read_page(self, client: httpx.Client, url: str, deadline: float) -> Page | None:
        until = min(deadline, time.monotonic() + self.page_timeout_s)
        try:
            got = self._get(client, url, deadline=until, max_bytes=self.max_page_bytes,
                            max_redirects=self.max_redirects, types=TEXT_TYPES, public_only=not self.private_pages)
        except Exception as err:  # any page may fail in any way; the search goes on without it
            log.info("web page %s: not read: %s", url, _one_line(err))
            return None
        if got.truncated:
            log.info("web page %s: cut at %d bytes", got.url, len(got.body))
        if got.content_type in HTML_TYPES:
            charset = got.charset or _meta_charset(got.body) or "utf-8"
            title, blocks = html_to_text(_decode(got.body, charset))
        else:
            text = _decode(got.body, got.charset or "utf-8")
            title, blocks = "", [b for b in (_squash(p) for p in re.split(r"\n\s*\n", text)) if b]
        return Page(url=got.url, title=title, blocks=tuple(blocks), truncated=got.truncated)

    # -- HTTP ------------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                            limits=httpx.Limits(max_connections=self.workers + 1))

    def _get(self, client: httpx.Client, url: str, *, deadline: float, max_bytes: int, max_redirects: int,
             params: dict | None = None, types: tuple[str, ...] | None = None, public_only: bool = False) -> _Fetched:
        """GET `url`, following at most `max_redirects` redirects (each one http(s) again), reading at
        most `max_bytes` of the body and stopping at `deadline` (time.monotonic()) however slowly
        the server sends; with `public_only`, no hop may go to a loopback, private or link-local
        address (a result or its redirect pointing into the local network). Raises _Timeout,
        _HttpStatus, _Refused or httpx's errors."""
        for _hop in range(max_redirects + 1):
            if urlsplit(url).scheme not in SCHEMES:
                raise _Refused(f"not http(s): {url[:200]}")
            if public_only and (address := _private_address(url)):
                raise _Refused(f"{url[:200]} is on a local address ({address})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout(f"no answer in time from {url[:200]}")
            request = client.build_request("GET", url, params=params, timeout=httpx.Timeout(left))
            response = client.send(request, stream=True)
            try:
                if response.is_redirect:
                    url = urljoin(str(response.url), response.headers["location"])
                    params = None
                    continue
                if response.status_code != 200:
                    raise _HttpStatus(response.status_code)
                kind, charset = _content_type(response.headers.get("content-type", ""))
                if types is not None and kind not in types:
                    raise _Refused(f"content type {kind or 'none'} is not read")
                body, truncated = bytearray(), False
                with _Watchdog(response, deadline) as watchdog:
                    try:
                        for chunk in response.iter_bytes():
                            body += chunk
                            if len(body) >= max_bytes:
                                del body[max_bytes:]
                                truncated = True
                                break
                            if time.monotonic() >= deadline:
                                truncated = True
                                break
                    except httpx.HTTPError:
                        if not watchdog.fired.is_set():
                            raise
                        truncated = True
                truncated = truncated or watchdog.fired.is_set()  # cut: the body "ended" at the deadline
                return _Fetched(str(response.url), kind, charset, bytes(body), truncated)
            finally:
                response.close()
        raise _Refused(f"more than {max_redirects} redirects")


class _Watchdog:
    """Cut a response's connection at `deadline`: a read that stalls ends then, not a read timeout later."""

    def __init__(self, response: httpx.Response, deadline: float) -> None:
        self.response = response
        self.fired = threading.Event()
        self.timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._cut)
        self.timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()

    def _cut(self) -> None:
        self.fired.set()
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Timeout(Exception):
    pass


class _Refused(Exception):
    pass


class _HttpStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


# -- HTML to text ------------------------------------------------------------------------------

SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed",
                     "canvas", "nav", "header", "footer", "aside", "button", "select", "textarea",
                     "dialog", "menu"})
BLOCKS = frozenset({"p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2",
                    "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "tr", "td", "th", "br", "hr",
                    "figure", "figcaption", "caption", "address", "details", "summary"})
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                  "source", "track", "wbr"})


class _TextParser(HTMLParser):
    """Collect a page's title and its readable blocks; skipped elements' content is dropped whole."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.blocks: list[str] = []
        self._line: list[str] = []
        self._skip: list[str] = []  # the open skipped elements, innermost last
        self._in_title = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title" and not self._skip:
            self._in_title = True
        elif tag in SKIPPED and tag not in VOID:
            self._skip.append(tag)
        elif tag in BLOCKS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag in BLOCKS and not self._skip:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif self._skip and tag in SKIPPED:
            # close up to the matching element (pages leave elements open)
            if tag in self._skip:
                while self._skip and self._skip.pop() != tag:
                    pass
        elif tag in BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self._line.append(data)

    def _flush(self) -> None:
        if not self._skip and (text := _squash("".join(self._line))):
            self.blocks.append(text)
        self._line = []

    def close(self) -> None:
        super().close()
        self._skip.clear()
        self._flush()


def html_to_text(html: str) -> tuple[str, list[str]]:
    """(title, blocks) of an HTML page: the text a reader sees, never what a script would write."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    return _squash("".join(parser.title)), parser.blocks


# -- passages and ranking ----------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_passages(blocks: tuple[str, ...] | list[str], size: int = PASSAGE_CHARS) -> list[str]:
    """Blocks as passages of at most `size` characters: a paragraph is a passage, short blocks go with
    the next ones, a long block is cut between sentences (or, for a run-on sentence, between words)."""
    pieces: list[str] = []
    for block in blocks:
        if len(block) <= size:
            pieces.append(block)
            continue
        sentences: list[str] = []
        for sentence in _SENTENCE.split(block):
            while len(sentence) > size:
                cut = sentence.rfind(" ", 0, size)
                cut = cut if cut > size // 2 else size
                sentences.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            sentences.append(sentence)
        pieces += _pack(sentences, size, size)
    return _pack(pieces, MIN_PASSAGE_CHARS, size)


def _pack(pieces: list[str], enough: int, size: int) -> list[str]:
    """`pieces` joined in order: the next piece joins the current one while that is shorter than
    `enough` and the two fit in `size`."""
    passages: list[str] = []
    current = ""
    for piece in filter(None, pieces):
        if current and (len(current) >= enough or len(current) + 1 + len(piece) > size):
            passages.append(current)
            current = piece
        else:
            current = f"{current} {piece}".strip()
    if current:
        passages.append(current)
    return passages


STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "has", "have", "how",
    "in", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "what", "when",
    "where", "which", "who", "why", "will", "with",
})


_SUFFIX = re.compile(r"(?<=\w{3})(?:ing|ed|es|s)$")


def words(text: str) -> list[str]:
    """The words of `text` that carry meaning, lower-cased, with a crude stem ("boils", "boiling": "boil")."""
    return [_SUFFIX.sub("", w) for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS]


def bm25(texts: list[str], query: str, k1: float = 1.2, b: float = 0.75) -> list[float]:
    """Okapi BM25 of each text for `query`, with the texts themselves as the corpus."""
    docs = [Counter(words(t)) for t in texts]
    terms = set(words(query))
    if not docs or not terms:
        return [0.0] * len(texts)
    lengths = [sum(d.values()) for d in docs]
    mean = sum(lengths) / len(docs) or 1.0
    df = {t: sum(1 for d in docs if t in d) for t in terms}
    idf = {t: math.log(1 + (len(docs) - n + 0.5) / (n + 0.5)) for t, n in df.items()}
    return [
        sum(idf[t] * d[t] * (k1 + 1) / (d[t] + k1 * (1 - b + b * n / mean)) for t in terms if t in d)
        for d, n in zip(docs, lengths, strict=True)
    ]


# -- small helpers -----------------------------------------------------------------------------


def _private_address(url: str) -> str | None:
    """The first address of `url`'s host that is not a public one (loopback, private, link-local,
    reserved), or None when all are public. A host that does not resolve is left to the fetch."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, None)]
        except (OSError, UnicodeError):
            return None
    for address in addresses:
        if not address.is_global:
            return str(address)
    return None


def _content_type(header: str) -> tuple[str, str | None]:
    kind, _, rest = header.partition(";")
    match = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", rest, re.IGNORECASE)
    return kind.strip().lower(), match.group(1) if match else None


def _meta_charset(body: bytes) -> str | None:
    match = re.search(rb"<meta[^>]+charset\s*=\s*[\"']?([\w.:-]+)", body[:4096], re.IGNORECASE)
    return match.group(1).decode("ascii") if match else None


def _decode(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _squash(text: str) -> str:
    return " ".join(text.split())


def _text(value) -> str:
    return _squash(value) if isinstance(value, str) else ""


def _one_line(err: BaseException) -> str:
    return _squash(str(err))[:200] or type(err).__name__
