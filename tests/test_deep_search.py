"""Deep Search (assistant/research): the real bundled encyclopedia, the research loop on the tiny
random model (its words are noise: the procedure, the streamed steps and the citations' honesty are
asserted, never the answer's content), the API's url_citation annotations through the `openai`
client against a served app, and `assistant ask --deep-search`."""

from __future__ import annotations

import re
import subprocess
import sys

import openai
import pytest
from conftest import start_server, stop_server

from assistant.config import EngineConfig, Profile
from assistant.engine import load_engine
from assistant.events import Citations, Done, Error, TextDelta, ThinkingDelta
from assistant.research.encyclopedia import corpus_path, wikipedia_url
from assistant.research.loop import NOT_FOUND, Evidence, check_citations, holds, parse_queries
from assistant.research.setup import research_sources
from assistant.research.sources import Passage, Source
from assistant.turns import Message, Request

KEY = "test-key-deep-search-0123"
NONSENSE = "What is the flurbex quotient of the zorvaxian grendlops?"
CITE = re.compile(r"\[(\d+)\]")


@pytest.fixture(scope="module")
def engine():
    eng = load_engine(EngineConfig(profile=Profile.TINY, max_context_tokens=4096))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def corpus(engine):
    return engine.encyclopedia()  # built into the cache folder once, then reused (the engine keeps it)


# ------------------------------------------------------------------------------- the corpus
def test_the_corpus_is_the_bundled_data_file_only(engine, corpus):
    path = corpus_path()
    assert path.name == "summaries_en-us.json" and path.parent.name == "data"
    assert 9_000 < len(corpus) < 11_000
    assert research_sources(engine, user_id="alice") == [corpus]
    assert isinstance(corpus, Source)  # the one search-tool interface, checked at run time
    everest = corpus.article("Mount Everest")
    assert everest.url == "https://en.wikipedia.org/wiki/Mount_Everest"
    assert "highest mountain" in everest.text
    assert wikipedia_url("Guernica (Picasso)") == "https://en.wikipedia.org/wiki/Guernica_(Picasso)"


@pytest.mark.parametrize(("question", "title"), [
    ("Which lake is the deepest on the planet?", "Lake Baikal"),
    ("Who painted the picture of the night sky seen from his asylum window?", "The Starry Night"),
    ("what's the tallest peak in africa", "Mount Kilimanjaro"),
    ("Which planet, fourth from the Sun, looks reddish?", "Mars"),
    ("the wall that split west berlin from the east", "Berlin Wall"),
])
def test_a_paraphrased_question_finds_its_article(corpus, question, title):
    found = [p.title for p in corpus.search(question, k=5)]
    assert title in found, found


def test_an_empty_or_odd_query_finds_nothing_or_does_not_fail(corpus):
    assert corpus.search("", 5) == []
    assert corpus.search('"AND OR NOT ( * ^', 3) is not None  # no FTS syntax gets through


# ------------------------------------------------------------------------------- citations
def _evidence(*texts: str) -> list[Evidence]:
    return [Evidence(i + 1, Passage("encyclopedia", f"t{i}", f"T{i}", f"u{i}", t), [t]) for i, t in enumerate(texts)]


def test_a_citation_to_a_passage_without_the_claim_is_dropped_and_the_rest_renumbered():
    ev = _evidence("K2 is the second-highest mountain on Earth, at 8,611 metres.",
                   "Mount Elbrus rises 5,642 m above sea level in Russia.")
    answer, cited = check_citations("Mount Elbrus rises 5,642 m [1][2]. K2 is 8,611 metres high [1].", ev)
    assert answer == "Mount Elbrus rises 5,642 m [1]. K2 is 8,611 metres high [2]."
    assert [e.passage.title for e in cited] == ["T1", "T0"]
    assert not holds(ev[0].passage.text, "K2 is 8,600 metres high")  # a number it does not hold


def test_a_claim_that_only_repeats_the_question_or_adds_words_its_passage_lacks_loses_its_citation():
    ev = _evidence("Mount Kilimanjaro is the highest mountain in Africa, at 5,895 m above sea level.",
                   "The Atlas Mountains are a mountain range in the Maghreb in North Africa.")
    question = "What is the highest mountain in Africa?"
    answer, cited = check_citations("The highest mountain in Africa is the highest mountain in Africa [1]. "
                                    "The highest mountain in Africa is the Atlas Mountains [1]. "
                                    "It is Mount Kilimanjaro [1] [2]. Mount Kenya is the highest mountain in "
                                    "Africa [1].", ev, question=question)
    assert answer == ("The highest mountain in Africa is the highest mountain in Africa. "
                      "The highest mountain in Africa is the Atlas Mountains. It is Mount Kilimanjaro [1]. "
                      "Mount Kenya is the highest mountain in Africa.")
    assert [e.passage.title for e in cited] == ["T0"]


def test_two_encyclopedia_articles_that_give_one_height_two_values_are_both_cited(corpus):
    from assistant.research.arithmetic import disagreement

    everest, k2 = corpus.article("Mount Everest"), corpus.article("K2")  # 8,848.86 m, and "Everest at 8,849 metres"
    ev = [Evidence(1, everest, [everest.text]), Evidence(2, k2, [k2.text])]
    note, cited = disagreement("Mount Everest is 8,848.86 m high [1].", [ev[0]], ev)
    assert note == ("The sources disagree on Mount Everest. Mount Everest: 8,848.86\xa0m [1]. "
                    "K2: Mount Everest at 8,849 metres [2].")
    assert cited == ev
    for sentence in re.split(r"(?<=\.)\s+", note):  # each value is its own passage's words
        for n in CITE.findall(sentence):
            assert holds(cited[int(n) - 1].passage.text, CITE.sub("", sentence))
    elbrus = [Evidence(1, corpus.article("Mount Elbrus"), []), Evidence(2, k2, [])]  # no other value for it
    assert disagreement("It rises 5,642\xa0m [1].", elbrus[:1], elbrus) == ("", elbrus[:1])


def test_the_plan_is_parsed_robustly():
    reply = "1. height of Mount Everest\n- K2 elevation\n)(*&^%$#@!\nK2\n" + "x" * 200
    assert parse_queries(reply, "How much higher is Everest than K2?") == ["height of Mount Everest", "K2 elevation"]


# ------------------------------------------------------------------------------- the loop
async def _run(engine, question: str, corpus, depth: str = "medium") -> list:
    req = Request((Message("user", question),), speak=False, reasoning="deep_search", sources=(corpus,),
                  search_depth=depth)
    return [ev async for ev in engine.stream(req)]


def _assert_honest(events: list, corpus) -> tuple[str, tuple]:
    assert isinstance(events[-1], Done), events[-1]
    answer = "".join(e.text for e in events if isinstance(e, TextDelta))
    (cites,) = [e.citations for e in events if isinstance(e, Citations)]
    assert sorted(int(n) for n in set(CITE.findall(answer))) == [c.number for c in cites]
    for c in cites:
        article = corpus.article(c.title)
        assert c.url == article.url and c.url.startswith("https://en.wikipedia.org/wiki/")
        assert c.quote and c.quote in article.text  # the quote is the passage's own words
    for sentence in re.split(r"(?<=[.!?\]])\s+", answer):
        claim = CITE.sub("", sentence)
        for n in CITE.findall(sentence):
            assert holds(corpus.article(cites[int(n) - 1].title).text, claim), (claim, n)
    return answer, cites


def test_the_loop_researches_streams_its_steps_and_cites_only_what_passages_hold(engine, corpus):
    import asyncio

    events = asyncio.run(_run(engine, "Which lake is the deepest in the world?", corpus))
    assert not any(isinstance(e, Error) for e in events), events
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert "planning the queries" in thinking
    assert "Search (round 1): Which lake is the deepest in the world?" in thinking
    assert "Read [1]" in thinking and "Facts taken from the passages" in thinking
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(not isinstance(e, ThinkingDelta) for e in events[first_text:])  # the steps come first
    answer, cites = _assert_honest(events, corpus)
    assert cites, answer  # noise from the model: the evidence is quoted instead, cited
    assert "Lake Baikal" in [c.title for c in cites]


def test_numbers_to_combine_run_code_in_the_sandbox(engine, corpus):
    import asyncio

    events = asyncio.run(_run(engine, "How many metres higher is Mount Kilimanjaro than Mount Elbrus?", corpus,
                              depth="low"))
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert "Code run in the sandbox" in thinking and "print(round(abs(a - b), 2))" in thinking
    answer, cites = _assert_honest(events, corpus)
    # the numbers come from the passages by code, not from the (random) model: the answer is right
    assert answer.startswith("253 m") and [c.title for c in cites] == ["Mount Kilimanjaro", "Mount Elbrus"]


def test_years_are_read_from_each_article_the_question_names(corpus):
    from assistant.research.numbers import named, pick, question_unit

    corpus_ = corpus
    q = "How many years after George Washington's presidency ended did Abraham Lincoln's begin?"
    (wa, about_w), (li, about_l) = named(q, ["Abraham Lincoln", "George Washington", "Isaac Newton"])
    assert (wa, li) == ("George Washington", "Abraham Lincoln") and question_unit(q) == "year"
    assert pick(q, corpus_.article(wa).text, wa, about_w, "year").value == 1797  # "from 1789 to 1797": ended
    assert pick(q, corpus_.article(li).text, li, about_l, "year").value == 1861  # "from 1861 until 1865": began


def test_a_question_the_sources_do_not_answer_is_not_found(engine, corpus):
    import asyncio

    events = asyncio.run(_run(engine, NONSENSE, corpus, depth="low"))
    answer, cites = _assert_honest(events, corpus)
    assert answer == NOT_FOUND and cites == ()


def test_no_source_or_no_text_is_a_clear_error(engine):
    import asyncio

    req = Request((Message("user", "anything"),), speak=False, reasoning="deep_search")
    events = asyncio.run(_collect(engine.stream(req)))
    assert isinstance(events[-1], Error) and "no source" in events[-1].message


async def _collect(stream) -> list:
    return [ev async for ev in stream]


# ------------------------------------------------------------------------------- API and CLI
@pytest.fixture(scope="module")
def client(corpus):
    proc, url = start_server("--profile", "tiny", "--api-key", f"{KEY}=alice")
    yield openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300)
    stop_server(proc)


def test_the_api_answers_with_url_citation_annotations(client):
    question = "Which lake is the deepest in the world?"
    r = client.chat.completions.create(model="tiny-qwen2_5_omni", max_tokens=32, web_search_options={},
                                       messages=[{"role": "user", "content": question}])
    msg = r.choices[0].message
    assert msg.annotations, msg
    for a in msg.annotations:
        assert a.type == "url_citation"
        c = a.url_citation
        assert re.fullmatch(r"\[\d+\]", msg.content[c.start_index : c.end_index])
        assert c.url.startswith("https://en.wikipedia.org/wiki/") and c.title
    assert "Search (round 1)" in msg.model_extra["reasoning_content"]


def test_the_api_streams_steps_as_reasoning_content_and_the_answer_as_content(client):
    stream = client.chat.completions.create(
        model="tiny-qwen2_5_omni", stream=True, web_search_options={"search_context_size": "low"},
        messages=[{"role": "user", "content": NONSENSE}])
    reasoning, content = "", ""
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        content += delta.content or ""
    assert "Deep Search (low)" in reasoning
    assert content == NOT_FOUND


def test_the_api_refuses_a_bad_search_context_size(client):
    with pytest.raises(openai.BadRequestError, match="search_context_size"):
        client.chat.completions.create(model="tiny-qwen2_5_omni", web_search_options={"search_context_size": "huge"},
                                       messages=[{"role": "user", "content": "hi"}])


def test_ask_deep_search_prints_the_answer_and_its_sources(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "assistant", "--data-dir", str(tmp_path), "ask", "--profile", "tiny",
                           "--max-new-tokens", "16", "--deep-search", "--search-depth", "low",
                           "Which lake is the deepest in the world?"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Sources:" in proc.stdout and "[1] " in proc.stdout and "https://en.wikipedia.org/wiki/" in proc.stdout
    assert "CC BY-SA" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "assistant", "ask", "--profile", "tiny", "--search-url",
                          "http://127.0.0.1:9", "hello"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--search-url goes with --deep-search" in bad.stderr


def test_the_chat_tab_shows_the_steps_in_the_thinking_box_and_the_sources_as_links(engine, tmp_path):
    """ui/web_chat.py's reply(), as the Chat tab runs it with the Deep Search choice."""
    import asyncio

    from assistant.session import Session
    from assistant.turns import Turn
    from memory import open_store
    from ui.web_chat import REASONING, reply

    async def run(s) -> list:
        return [out async for out in reply(s, Turn("Which lake is the deepest in the world?"), False, [],
                                           reasoning=REASONING["Deep Search"])]

    store = open_store(tmp_path)
    try:
        history = asyncio.run(run(Session(engine, store, user="alice")))[-1][0]
    finally:
        store.close()
    (thought,) = [m for m in history if m.get("metadata")]
    assert "Search (round 1)" in thought["content"] and thought["metadata"]["status"] == "done"
    shown = history[-1]["content"]
    assert "**Sources**" in shown and "](https://en.wikipedia.org/wiki/Lake_Baikal)" in shown
    assert "CC BY-SA" in shown
