"""The user's own documents as a Deep Search source, on real parts: real txt, md, html and PDF files
made here, a corrupt PDF, a folder indexed after an interruption, the real MiniLM embedder, both
stores (SQLite and PostgreSQL), the `assistant docs` command and a served app's /v1/documents."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import start_server, stop_server

from assistant.errors import BadInput
from assistant.research.documents import DocumentSource, add_bytes, add_paths, documents_of
from assistant.research.readers import MAX_FILE_BYTES, chunk, extract
from assistant.research.sources import Source
from memory import Embedder, open_store

REPO = Path(__file__).resolve().parents[1]

ARTICLES = {
    "bridge.txt": "The Golden Gate Bridge opened to traffic in May 1937. Its main span of 1,280 metres was the "
                  "longest of any suspension bridge in the world until 1964.\n\nThe bridge is painted in a colour "
                  "called International Orange, chosen because it stands out in the fog.",
    "cats.md": "# Cats\n\nDomestic cats sleep between twelve and sixteen hours a day, mostly in short naps, and "
               "are most active at dawn and dusk.\n\n## Food\n\nCats are obligate carnivores: they need taurine, "
               "which is found in meat.",
    "volcano.html": "<html><head><title>Mount Etna</title><script>document.write('SCRIPT RAN')</script>"
                    "<style>p { color: red }</style></head><body><nav>Home | About</nav><h1>Mount Etna</h1>"
                    "<p>Mount Etna on Sicily is the highest active volcano in Europe, about 3,357 metres tall, and "
                    "it erupts several times a year.</p><script>alert('evil')</script><noscript>enable js</noscript>"
                    "<p>Its fertile volcanic soils support vineyards and orchards on the lower slopes.</p>"
                    "</body></html>",
}  # fmt: skip
PDF_TEXT = [
    "The Voyager 1 probe was launched by NASA on 5 September 1977.",
    "In August 2012 it became the first spacecraft to cross the heliopause into interstellar space.",
]


def pdf_bytes(lines: list[str], title: str | None = None, pages: int = 1) -> bytes:
    """A small valid PDF (Helvetica text, one content stream a page), its cross-reference table computed."""
    esc = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    stream = ("BT /F1 11 Tf 72 720 Td 14 TL " + " ".join(f"({ln}) Tj T*" for ln in esc) + " ET").encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", None, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Title (" + (title or "").encode() + b") /Producer (tests) >>"]  # fmt: skip
    kids = []
    for _ in range(pages):
        page_no, content_no = len(objs) + 1, len(objs) + 2
        kids.append(f"{page_no} 0 R")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_no} 0 R"
                    " /Resources << /Font << /F1 3 0 R >> >> >>".encode())  # fmt: skip
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {pages} >>".encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    info = b" /Info 4 0 R" if title else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, info, xref)
    return bytes(out)


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture
def store(tmp_path, embedder, database):
    with open_store(tmp_path / "data", embedder, database=database) as s:
        yield s


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    (folder / "sub" / "deeper").mkdir(parents=True)
    for name, text in ARTICLES.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "sub" / "voyager.pdf").write_bytes(pdf_bytes(PDF_TEXT, title="Voyager 1"))
    (folder / "sub" / "deeper" / "broken.pdf").write_bytes(pdf_bytes(PDF_TEXT)[:300])  # cut off mid-file
    (folder / "sub" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a document")
    return folder


# reading ------------------------------------------------------------------------------------------


def test_each_type_gives_its_text_and_title_and_no_script_is_kept():
    pdf = extract(pdf_bytes(PDF_TEXT, title="Voyager 1", pages=2), "v.pdf")
    assert pdf.kind == "pdf" and pdf.title == "Voyager 1"
    assert pdf.text.count("heliopause into interstellar space") == 2  # both pages
    untitled = extract(pdf_bytes(PDF_TEXT), "dir/probe.pdf")
    assert untitled.title == "probe.pdf"
    page = extract(ARTICLES["volcano.html"].encode(), "volcano.html")
    assert page.title == "Mount Etna" and "highest active volcano in Europe" in page.text
    assert not re.search(r"SCRIPT RAN|alert|evil|color|enable js", page.text)
    assert "\n\n" in page.text  # paragraphs stay apart
    md = extract(ARTICLES["cats.md"].encode(), "cats.md")
    assert md.kind == "md" and md.title == "cats.md" and "obligate carnivores" in md.text
    assert extract("naïve café\r\n".encode("cp1252"), "old.txt").text == "naïve café"  # not UTF-8: Windows-1252


@pytest.mark.parametrize(("data", "name", "reason"), [
    (pdf_bytes(PDF_TEXT)[:300], "cut.pdf", "corrupt PDF"),
    (b"%PDF-1.4\n" + os.urandom(2000), "noise.pdf", "corrupt PDF"),
    (b"<html>not really</html>", "fake.pdf", "not a PDF"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "image.txt", "binary data"),
    (b"hello", "photo.jpg", ".jpg files"),
    (b"   \n\n  ", "empty.md", "no text"),
])  # fmt: skip
def test_a_bad_file_is_one_clear_line(data, name, reason):
    with pytest.raises(BadInput) as err:
        extract(data, name)
    assert reason in err.value.message and "\n" not in err.value.message


def test_passages_are_paragraphs_or_overlapping_windows_of_the_text():
    sentences = [f"Fact number {i} is that the river rises by {i} metres in spring." for i in range(60)]
    text = "Rivers\n\n" + " ".join(sentences) + "\n\nA short closing line that is long enough to stand alone here."
    passages = chunk(text)
    flat = " ".join(text.split())
    assert all(p in flat for p in passages)  # every passage is the document's own text
    assert passages[0].startswith("Rivers Fact number 0")  # a heading is joined to its paragraph
    assert all(len(p) <= 1000 for p in passages) and len(passages) >= 4
    for a, b in itertools.pairwise(passages[1:-1]):  # windows share a sentence
        assert a.rsplit(". ", 1)[-1].rstrip(".") in b


# the store ----------------------------------------------------------------------------------------


def test_a_folder_is_indexed_recursively_and_a_rerun_after_an_interruption_finishes_it(tmp_path, store):
    folder = tmp_path / "many"
    for i in range(150):
        sub = folder / f"part{i % 3}" / f"box{i % 5}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"note{i:03}.txt").write_text(f"Note {i}: the locker code for room {i} is {1000 + i}.\n")
    (folder / "part0" / "bad.pdf").write_bytes(b"%PDF-1.7\n" + b"\x00" * 50)
    user = store.user("alice")
    first = []
    for result in add_paths(store, user, [folder]):
        first.append(result)
        if len(first) == 60:
            break  # cut off, as Ctrl+C or a crash would
    assert {r.status for r in first} <= {"added", "failed"}
    assert len(documents_of(store).documents(user)) == sum(r.status == "added" for r in first)
    second = list(add_paths(store, user, [folder]))
    statuses = [r.status for r in second]
    assert statuses.count("skipped") == sum(r.status == "added" for r in first)
    assert statuses.count("failed") == 1 and statuses.count("added") + statuses.count("skipped") == 150
    failed = next(r for r in second if r.status == "failed")
    assert failed.path.endswith("bad.pdf") and "corrupt PDF" in failed.line()
    docs = documents_of(store).documents(user)
    assert len(docs) == 150 and len({d.path for d in docs}) == 150
    # a changed file is indexed again under its id; a touched but unchanged one is skipped
    changed = folder / "part1" / "box1" / "note001.txt"
    changed.write_text("Note 1: the locker code for room 1 was changed to 4242.\n")
    os.utime(folder / "part2" / "box2" / "note002.txt", (1, 1))
    again = {Path(r.path).name: r for r in add_paths(store, user, [folder])}
    assert again["note001.txt"].status == "updated" and again["note002.txt"].status == "skipped"
    assert sum(r.status == "skipped" for r in again.values()) == 149
    hit = DocumentSource(store, user).search("what is the locker code of room 1 now?", k=1)[0]
    assert "4242" in hit.text and hit.doc_id == str(again["note001.txt"].document_id)


def test_search_finds_the_passage_for_a_paraphrased_question(store, corpus):
    user = store.user("alice")
    results = {Path(r.path).name: r for r in add_paths(store, user, [corpus])}
    assert results["broken.pdf"].status == "failed" and "photo.jpg" not in results
    source: Source = DocumentSource(store, user)  # the one interface of every Deep Search source
    assert source.name == "documents"
    asks = {
        "How many hours per day do house cats spend asleep?": ("cats.md", "twelve and sixteen hours"),
        "Which spacecraft was first to leave the solar bubble for the space between stars?":
            ("Voyager 1", "heliopause"),
        "What is the tallest erupting mountain on the European continent?": ("Mount Etna", "highest active volcano"),
        "Why was that orange paint picked for the San Francisco crossing?": ("bridge.txt", "stands out in the fog"),
        "which nutrient from meat do felines require": ("cats.md", "taurine"),
    }  # fmt: skip
    for query, (title, words) in asks.items():
        top = source.search(query, k=3)
        assert top[0].title == title and words in top[0].text, (query, top)
        assert top[0].url == f"/v1/documents/{top[0].doc_id}" and top[0].source == "documents"
        assert top[0].score >= top[-1].score
        _, text = documents_of(store).get(user, int(top[0].doc_id))
        assert " ".join(top[0].text.split()) in " ".join(text.split())  # the cited document holds the passage
    assert source.search("   ") == [] and DocumentSource(store, store.user("empty")).search("cats") == []


def test_one_user_never_sees_another_users_documents(store, corpus):
    alice, bob = store.user("alice"), store.user("bob")
    list(add_paths(store, alice, [corpus]))
    mine = add_bytes(store, bob, "diary.txt", b"Bob's diary: on Tuesday I fed the cats and painted the fence.")
    docs = documents_of(store)
    assert [d.title for d in docs.documents(bob)] == ["diary.txt"]
    for query in ("cats sleeping hours", "volcano in Sicily", "Golden Gate Bridge", "Voyager"):
        assert {p.doc_id for p in DocumentSource(store, bob).search(query, k=10)} == {str(mine.document_id)}
        assert str(mine.document_id) not in {p.doc_id for p in DocumentSource(store, alice).search(query, k=10)}
    alices = docs.documents(alice)[0].id
    with pytest.raises(Exception, match="no document"):
        docs.get(bob, alices)
    assert docs.remove(bob, [alices]) == [] and docs.get(alice, alices)[0].id == alices
    assert DocumentSource(store, bob.id).search("cats")[0].title == "diary.txt"  # a user id works as well
    store.forget_user(alice)  # erasing a user erases their documents, passages and index entries
    assert store.read("SELECT count(*) FROM passages")[0][0] == len(docs.passages(bob, mine.document_id))
    if database_is_sqlite(store):
        assert store.read("SELECT count(*) FROM passages_fts")[0][0] == 1


def database_is_sqlite(store) -> bool:
    return getattr(store, "url", None) is None


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(store, tmp_path):
    huge = tmp_path / "huge.pdf"
    with huge.open("wb") as f:  # sparse: nothing is written but the size
        f.truncate(MAX_FILE_BYTES + 1)
    (result,) = add_paths(store, store.user("alice"), [huge])
    assert result.status == "failed" and "too large" in result.error


# the command and the server -------------------------------------------------------------------------


def assistant(*args: str, data_dir: Path, database: str | None) -> subprocess.CompletedProcess:
    db = ["--database", database] if database else []
    return subprocess.run([sys.executable, "-m", "assistant", "--data-dir", str(data_dir), *db, *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip


def test_docs_command_adds_lists_and_removes(tmp_path, corpus, database):
    data = tmp_path / "cli"
    out = assistant("docs", "add", str(corpus), str(tmp_path / "missing"), "--user", "carol", data_dir=data,
                    database=database)  # fmt: skip
    assert out.returncode == 2, out.stderr  # two bad paths: reported, the rest added
    assert "4 added, 2 failed, 1 of other types left out" in out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("assistant: failed:")]
    assert len(errors) == 2 and any("broken.pdf: a corrupt PDF" in e for e in errors), out.stderr
    assert "Traceback" not in out.stderr
    again = assistant("docs", "add", str(corpus / "cats.md"), "--user", "carol", data_dir=data, database=database)
    assert again.returncode == 0 and "1 skipped" in again.stdout
    listed = assistant("docs", "list", "--user", "carol", data_dir=data, database=database)
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert sorted(r[3] for r in rows) == ["Mount Etna", "Voyager 1", "bridge.txt", "cats.md"]
    gone = assistant("docs", "remove", rows[0][0], "--user", "carol", data_dir=data, database=database)
    assert gone.returncode == 0 and "removed 1 document" in gone.stdout
    other = assistant("docs", "remove", rows[1][0], "--user", "dave", data_dir=data, database=database)
    assert other.returncode == 2 and other.stderr.startswith("assistant: error:")  # dave has no such document
    left = assistant("docs", "list", "--json", "--user", "carol", data_dir=data, database=database)
    assert len(__import__("json").loads(left.stdout)) == 3


def test_docs_add_stopped_by_ctrl_c_resumes_where_it_stopped(tmp_path):
    import signal
    import sqlite3
    import time

    folder, data = tmp_path / "folder", tmp_path / "cli"
    for i in range(200):
        (folder / f"d{i // 50}").mkdir(parents=True, exist_ok=True)
        (folder / f"d{i // 50}" / f"page{i:03}.md").write_text(f"# Page {i}\n\nPage {i} lists {i * 7} apples.\n")
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "--data-dir", str(data), "docs", "add", str(folder),
                             "--user", "erin"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, done = time.monotonic() + 120, 0
    while done < 10 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(f"file:{data / 'assistant.sqlite3'}?mode=ro", uri=True, timeout=5) as db:
                done = db.execute("SELECT count(*) FROM documents").fetchone()[0]
        except sqlite3.Error:
            pass  # not made yet
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("it finished before it could be interrupted")
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    rerun = assistant("docs", "add", str(folder), "--user", "erin", data_dir=data, database=None)
    assert rerun.returncode == 0, rerun.stderr
    added, skipped = (int(re.search(rf"(\d+) {w}", rerun.stdout).group(1)) for w in ("added", "skipped"))
    assert skipped >= 10 and added + skipped == 200, rerun.stdout
    listed = assistant("docs", "list", "--user", "erin", data_dir=data, database=None).stdout.splitlines()
    assert len(listed) == 200 and len({line.split("\t")[4] for line in listed}) == 200


@pytest.fixture
def served(tmp_path, database):
    args = ["--profile", "tiny", "--data-dir", str(tmp_path / "served"), "--api-key", "alice-key-0001=alice",
            "--api-key", "bob-key-00002=bob"]
    if database:
        args += ["--database", database]
    proc, url = start_server(*args, timeout_s=300)
    yield url
    stop_server(proc)


def test_the_api_and_the_web_ui_upload_list_serve_and_keep_each_users_documents_apart(served, corpus):
    """One server per store (each takes ~20 s to start): the API, then the Documents tab."""
    api_uploads_lists_serves_and_keeps_each_users_documents_apart(served, corpus)
    documents_tab_shows_and_removes_only_the_signed_in_users_documents(served, corpus)


def api_uploads_lists_serves_and_keeps_each_users_documents_apart(served: str, corpus: Path) -> None:
    alice = httpx.Client(base_url=served + "/v1", headers={"Authorization": "Bearer alice-key-0001"}, timeout=120)
    bob = httpx.Client(base_url=served + "/v1", headers={"Authorization": "Bearer bob-key-00002"}, timeout=120)
    files = [("file", ("voyager.pdf", (corpus / "sub" / "voyager.pdf").read_bytes(), "application/pdf")),
             ("file", ("volcano.html", ARTICLES["volcano.html"].encode(), "text/html")),
             ("file", ("broken.pdf", (corpus / "sub" / "deeper" / "broken.pdf").read_bytes(), "application/pdf"))]
    r = alice.post("/documents", files=files)
    assert r.status_code == 200, r.text
    by_name = {d["name"]: d for d in r.json()["data"]}
    assert by_name["voyager.pdf"]["status"] == "added" and by_name["broken.pdf"]["status"] == "failed"
    assert "corrupt PDF" in by_name["broken.pdf"]["error"]
    doc = by_name["voyager.pdf"]
    text = alice.get(doc["url"].removeprefix("/v1"))
    assert text.status_code == 200 and "heliopause" in text.text
    assert text.headers["content-type"].startswith("text/plain")
    assert alice.get(f"/documents/{doc['id']}", params={"format": "json"}).json()["title"] == "Voyager 1"
    assert [d["title"] for d in alice.get("/documents").json()["data"]] == ["Voyager 1", "Mount Etna"]
    assert bob.get(f"/documents/{doc['id']}").status_code == 404  # another user's key: as if missing
    assert bob.delete(f"/documents/{doc['id']}").status_code == 404
    assert bob.get("/documents").json()["data"] == []
    assert alice.get("/documents/999999").status_code == 404 and alice.get("/documents/x").status_code == 404
    bad = alice.post("/documents", files=[("file", ("run.sh", b"rm -rf /", "text/x-sh"))])
    assert bad.status_code == 400 and ".sh files" in bad.json()["error"]["message"]
    assert httpx.get(served + "/v1/documents").status_code == 401
    assert alice.delete(f"/documents/{doc['id']}").json()["deleted"] is True
    assert alice.get(f"/documents/{doc['id']}").status_code == 404
    assert httpx.get(served + "/health").json()["status"] == "ok"  # still serving


def documents_tab_shows_and_removes_only_the_signed_in_users_documents(served: str, corpus: Path) -> None:
    from gradio_client import Client, handle_file

    alice = Client(served + "/", auth=("alice", "alice-key-0001"), verbose=False)
    bob = Client(served + "/", auth=("bob", "bob-key-00002"), verbose=False)
    try:
        table, _, status = alice.predict([handle_file(str(corpus / "cats.md")),
                                          handle_file(str(corpus / "bridge.txt"))], api_name="/on_upload")  # fmt: skip
        assert status.count("added") == 2, status
        assert sorted(row[1] for row in table["data"]) == ["Mount Etna", "bridge.txt", "cats.md"]  # + the API's
        doc_id = table["data"][0][0]
        _, _, refused = bob.predict(doc_id, api_name="/on_remove")
        assert "you have no document" in refused
        assert bob.predict(api_name="/document_rows")["data"] == []  # bob's table
        table, _, done = alice.predict(doc_id, api_name="/on_remove")
        assert f"Removed document {doc_id}" in done and len(table["data"]) == 2
    finally:
        alice.close()
        bob.close()
