"""Text out of a document's bytes (txt, md, html, pdf), and the text cut into passages.

Nothing in a document is ever run: HTML is parsed as markup with scripts, styles and other
non-text elements dropped; a PDF's text is read by pypdf (pure Python, no JavaScript). Every
limit is a size cap checked before the work it bounds, and every failure is a `BadInput` with a
one-line reason.
"""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass
from html.parser import HTMLParser

from assistant.errors import BadInput, MissingDependency

__all__ = ["KINDS", "MAX_FILE_BYTES", "Extracted", "chunk", "extract", "kind_of"]

MAX_FILE_BYTES = 64 * 1024 * 1024  # a file larger than this is refused before it is read
MAX_TEXT_BYTES = 16 * 1024 * 1024  # txt, md and html: larger ones are refused
MAX_TEXT_CHARS = 4_000_000  # extracted text kept of one document (about 2,000 pages)
MAX_PDF_PAGES = 2000
PDF_TIME_S = 60.0  # reading one PDF's text stops with an error past this
TARGET_CHARS = 600  # a long paragraph is cut into windows of sentences about this long
MAX_PASSAGE_CHARS = 1000  # a paragraph up to this long is one passage
MIN_PASSAGE_CHARS = 80  # a shorter paragraph (a heading) is joined to the next one
KINDS = {".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html",
         ".xhtml": "html", ".pdf": "pdf"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Extracted:
    kind: str  # txt, md, html or pdf
    title: str  # the HTML or PDF title, else the file name
    text: str


def kind_of(name: str) -> str | None:
    """txt, md, html or pdf by the file name's suffix; None for any other."""
    dot = name.rfind(".")
    return KINDS.get(name[dot:].lower()) if dot >= 0 else None


def extract(data: bytes, name: str) -> Extracted:
    """The text of a document called `name` (its suffix says its kind). BadInput if it cannot be read."""
    kind = kind_of(name)
    if kind is None:
        raise BadInput(f"not a document type this reads: {_suffix(name)} (it reads txt, md, html and pdf)")
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"too large ({len(data) / 2**20:.0f} MiB > {MAX_FILE_BYTES // 2**20} MiB)")
    if kind != "pdf" and len(data) > MAX_TEXT_BYTES:
        raise BadInput(f"too large for a text file ({len(data) / 2**20:.0f} MiB > {MAX_TEXT_BYTES // 2**20} MiB)")
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if kind == "pdf":
        title, text = _pdf(data)
    elif kind == "html":
        title, text = _html(_decode(data))
    else:
        title, text = "", _decode(data)
    text = _tidy(text)[:MAX_TEXT_CHARS]
    if not text:
        raise BadInput("no text in it" + (" (a scanned PDF needs OCR first)" if kind == "pdf" else ""))
    return Extracted(kind, " ".join(title.split())[:300] or base, text)


def _suffix(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return f"{base[dot:]} files" if dot > 0 else "a file without a suffix"


def _decode(data: bytes) -> str:
    """UTF-8 (a BOM allowed), else Windows-1252; binary data (NUL bytes) is refused."""
    if b"\x00" in data[:65536]:
        raise BadInput("not a text file (it holds binary data)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _tidy(text: str) -> str:
    """Line ends made \\n, spaces within lines collapsed, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# html ------------------------------------------------------------------------------------------

_DROP = {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed", "canvas",
         "select", "button", "head"}  # fmt: skip
_BLOCK = {"p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "h1", "h2", "h3", "h4",
          "h5", "h6", "li", "ul", "ol", "table", "tr", "blockquote", "pre", "br", "hr", "dd", "dt", "figcaption",
          "form", "body", "html"}  # fmt: skip


class _Text(HTMLParser):
    """The visible text of a page; <title> kept apart; nothing inside script-like elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0  # depth inside dropped elements
        self._in_title = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _DROP:
            self._skip += 1
        elif tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _DROP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data.replace("\n", " "))


def _html(markup: str) -> tuple[str, str]:
    parser = _Text()
    try:
        parser.feed(markup)
        parser.close()
    except Exception as err:  # html.parser is lenient; anything it still trips on is a bad file
        raise BadInput(f"not readable HTML: {err}") from err
    return "".join(parser.title), "".join(parser.parts)


# pdf -------------------------------------------------------------------------------------------


def _pdf(data: bytes) -> tuple[str, str]:
    try:
        import pypdf
    except ImportError as err:
        raise MissingDependency("reading PDFs needs pypdf: pip install pypdf") from err
    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise BadInput("not a PDF (no %PDF- header)")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its notes on broken files: the one-line error says it
    deadline = time.monotonic() + PDF_TIME_S
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise BadInput("the PDF is encrypted with a password")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise BadInput(f"too many pages ({len(reader.pages)} > {MAX_PDF_PAGES})")
        pages, total = [], 0
        for page in reader.pages:
            if time.monotonic() > deadline:
                raise BadInput(f"reading the PDF took longer than {PDF_TIME_S:.0f} s")
            text = page.extract_text() or ""
            pages.append(text)
            total += len(text)
            if total > MAX_TEXT_CHARS:
                break
        title = ""
        meta = reader.metadata
        if meta is not None and isinstance(meta.title, str):
            title = meta.title
    except BadInput:
        raise
    except Exception as err:  # pypdf raises many types (PdfReadError, ValueError, KeyError...) on broken files
        raise BadInput(f"a corrupt PDF ({type(err).__name__}: {' '.join(str(err).split())[:120]})") from err
    return title, "\n\n".join(pages)


# passages ---------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(\s+)(?=[\"'(\[]*[A-Z0-9À-ÖØ-Þ])")


def chunk(text: str) -> list[str]:
    """Passages of a paragraph each; a paragraph longer than MAX_PASSAGE_CHARS becomes windows of a
    few sentences (about TARGET_CHARS) that overlap by one sentence; a heading or other short
    paragraph is joined to the one after it."""
    out: list[str] = []
    carry = ""
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        para = f"{carry} {para}".strip() if carry else para
        carry = ""
        if len(para) < MIN_PASSAGE_CHARS:
            carry = para
            continue
        out += [para] if len(para) <= MAX_PASSAGE_CHARS else _windows(para)
    if carry:
        if out and len(out[-1]) + len(carry) <= MAX_PASSAGE_CHARS:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out


def _windows(para: str) -> list[str]:
    sentences: list[str] = []
    for s in _sentences(para):
        while len(s) > MAX_PASSAGE_CHARS:  # one endless "sentence": cut at a space
            cut = s.rfind(" ", 0, TARGET_CHARS)
            cut = cut if cut > 0 else TARGET_CHARS
            sentences.append(s[:cut])
            s = s[cut:].lstrip()
        if s:
            sentences.append(s)
    out, start = [], 0
    while start < len(sentences):
        end, size = start, 0
        while end < len(sentences) and (end == start or size + len(sentences[end]) <= TARGET_CHARS):
            size += len(sentences[end]) + 1
            end += 1
        out.append(" ".join(sentences[start:end]))
        if end >= len(sentences):
            break
        start = end - 1 if end - 1 > start else end  # the last sentence begins the next window
    return out


def _sentences(para: str) -> list[str]:
    """A paragraph (single-spaced) cut after each sentence's end; joined by spaces they give it back."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(para):
        out.append(para[start : m.start(1)])
        start = m.end(1)
    return [*out, para[start:]]
