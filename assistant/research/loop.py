"""Deep Search: a question researched in the sources, answered from what they say, with citations.

A fixed procedure (a small model never gets to skip the research), bounded by rounds and a time
budget, each step streamed as thinking (`ThinkingDelta`):

1. plan: the question itself plus the sub-questions the model proposes (parsed line by line, noise
   dropped), as search queries;
2. search every source for every query; the passages are fused by rank, the best read;
3. evidence: the sentences of the passages read that bear on the question (found by their words)
   and the facts the model extracts with their source number (kept only where that passage holds
   their words);
4. a second round (up to `ROUNDS[depth]`) when a query found nothing: the names the evidence
   mentions and the unanswered sub-questions are searched (two hops: A names the B to read about);
5. numbers to combine: the model writes a program over the facts, run in the wasm sandbox;
6. the answer, from the numbered evidence only, citing [n]; every citation is checked against its
   passage and dropped (the rest renumbered) where the passage does not hold the claim's words; an
   answer left with no citation is replaced by the best evidence, quoted, or by "Not found in the
   sources." when there is none.

The cited sources leave as one `Citations` event before `Done`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from assistant.events import Citation, Citations, Done, Error, Event, TextDelta, ThinkingDelta, Timings
from assistant.reasoning import _collect, _speak, run_program
from assistant.research.answers import expected_kind, gives
from assistant.research.arithmetic import combine, disagreement
from assistant.research.numbers import mentions
from assistant.research.sources import Passage, SourceUnavailable
from assistant.turns import Message, Request

__all__ = ["DEPTHS", "NOT_FOUND", "check_citations", "deep_search", "depth_for_context_size", "holds", "wants_research"]

log = logging.getLogger(__name__)

NOT_FOUND = "Not found in the sources."
DEPTHS = ("low", "medium", "high")
ROUNDS = {"low": 1, "medium": 2, "high": 3}  # search rounds at most
READ = {"low": 3, "medium": 5, "high": 8}  # passages read (put before the model) at most
PER_QUERY = 5  # passages asked of each source for each query
MAX_SUBQUESTIONS = 3
TIME_BUDGET_S = {"low": 45.0, "medium": 90.0, "high": 180.0}  # past it, no more searching: answer
EVIDENCE_SENTENCES = 2  # sentences of a passage kept as evidence
SUPPORT = 0.5  # the share of a claim's content words its cited passage must hold
PLAN_TOKENS, FACT_TOKENS, CODE_TOKENS, ANSWER_TOKENS = 80, 160, 200, 128
PASSAGE_CHARS = 700  # of a passage, the most the model reads (its opening and relevant sentences)

PLAN_PROMPT = (
    "Question: {question}\n\nTo answer it from an encyclopedia, which facts must be looked up? Write up to "
    "3 short search queries, one per line, nothing else."
)
FACTS_PROMPT = (
    "Passages:\n{passages}\n\nQuestion: {question}\n\nCopy the facts from the passages that help answer the "
    "question, one per line, each ending with its passage number in brackets, like: Paris is the capital of "
    "France [2]. Only facts the passages state. Nothing else."
)
CODE_PROMPT = (
    "Facts:\n{facts}\n\nQuestion: {question}\n\nWrite a short Python program that computes the answer from "
    "the numbers in these facts and prints only the result. Reply with just the program in one ```python block."
)
ANSWER_PROMPT = (
    "Evidence (numbered by source):\n{evidence}\n{computed}\nQuestion: {question}\n\nAnswer the question in one "
    "or two short sentences using only the evidence above. Put the source number in brackets after each "
    "claim, like [1]. If two sources disagree, say so and cite both. If the evidence does not answer the "
    f"question, reply exactly: {NOT_FOUND}"
)

_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,][0-9]+)*")
_STOP_TEXT = """a about after all also an and any are as at be been before being between both but by
can could did do does for from had has have he her his how i if in into is it its many more most much of
on one or other our she so some such than that the their them then there these they this those to two up
was we were what when where which while who whom whose why will with would you your ago across"""
_STOP = frozenset(_STOP_TEXT.split())
# a question that combines numbers: "how many metres higher", "by how much", "combined", "years after"
_ARITHMETIC = re.compile(
    r"\b(?:(?:how many|how much|by how)\b.*\b(?:more|less|fewer|higher|lower|longer|shorter|older|younger|"
    r"taller|bigger|larger|smaller|exceed\w*|after|before|between|passed|apart|times)|difference|combined|"
    r"in total|sum of|added together|ratio|average of|years separate)\b", re.IGNORECASE)
_CITE = re.compile(r"\s*\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_NAME = re.compile(r"\b(?:[A-Z][\w'-]+(?:\s+(?:of|the|de|von|van|and|la|le|du)\s+|\s+))*[A-Z][\w'-]+")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


_RESEARCH = re.compile(r"\b(look (?:it|that|this) up|look up|deep search)\b", re.IGNORECASE)


def wants_research(text: str) -> bool:
    """The user asked for it in so many words ("look it up", "look up when ...")."""
    return bool(_RESEARCH.search(text or ""))


def depth_for_context_size(size: str | None) -> str:
    """OpenAI's `search_context_size` (low | medium | high) -> a depth; medium when not given."""
    return size if size in DEPTHS else "medium"


def words(text: str) -> list[str]:
    """Content words, lower case, numbers without their thousands commas ("8,849" -> "8849")."""
    out = []
    for w in _WORD.findall(text or ""):
        w = w.lower().replace(",", "")
        if w not in _STOP and (len(w) > 1 or w.isdigit()):
            out.append(w)
    return out


def _stem(w: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def holds(passage_text: str, claim: str, exempt: frozenset[str] = frozenset(),
          asked: frozenset[str] | None = None) -> bool:
    """Whether a passage holds a claim: at least SUPPORT of the claim's distinct content words
    (stemmed) are in it, and every number of the claim (but those in `exempt`: computed ones) is.
    With `asked` (the question's stemmed words), the words the claim adds to the question (its
    answer: "Kilimanjaro", "1886") must be there too, half of them at least and one at the least: a
    claim that only repeats the question's words (or a phrase of the passage) holds nothing, and
    every name the claim spells with a capital (after its first word) must be in the passage."""
    have = {_stem(w) for w in words(passage_text)}
    claim_words = list(dict.fromkeys(w for w in words(claim) if w not in exempt))
    if not claim_words:
        return False
    numbers = [w for w in claim_words if w[0].isdigit()]
    if any(n not in have for n in numbers):
        return False
    found = sum(_stem(w) in have for w in claim_words)
    if found < max(1, SUPPORT * len(claim_words)):
        return False
    if asked is None:
        return True
    names = {w.lower() for w in re.findall(r"(?<=[\w,;:)] )[A-Z][a-z]+", claim)} - _STOP  # "... in Africa"
    if any(_stem(w) not in have for w in names):  # a name the claim gives must be its passage's too
        return False
    novel = [_stem(w) for w in claim_words if _stem(w) not in asked]
    if not novel:  # nothing beyond the question: held only when it states a computed number
        return any(w in exempt for w in words(claim))
    return sum(w in have for w in novel) >= max(1, SUPPORT * len(novel))


@dataclass
class Evidence:
    number: int  # [n] in the prompt and the answer
    passage: Passage
    sentences: list[str] = field(default_factory=list)  # what of it bears on the question
    facts: list[str] = field(default_factory=list)  # what the model took from it (checked)


@dataclass
class _State:
    question: str
    queries: list[str]
    depth: str
    t0: float
    passages: dict[tuple[str, str], Passage] = field(default_factory=dict)
    fused: dict[tuple[str, str], float] = field(default_factory=dict)
    searched: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)  # queries that found evidence
    notes: list[str] = field(default_factory=list)  # sources that could not be searched


def parse_queries(reply: str, question: str) -> list[str]:
    """The sub-questions in a model's plan: one a line, numbering and bullets dropped; lines with
    fewer than two content words, over 150 characters, or repeating the question are noise."""
    seen = {" ".join(words(question))}
    out = []
    for line in (reply or "").splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)]|query\s*\d*:|q\d*:)\s*", "", line, flags=re.IGNORECASE).strip(" \"'`")
        key = " ".join(words(line))
        if len(line) > 150 or len(words(line)) < 2 or key in seen:
            continue
        if sum(c.isalpha() for c in line) < 0.6 * len(line):
            continue
        seen.add(key)
        out.append(line)
        if len(out) == MAX_SUBQUESTIONS:
            break
    return out


def relevant_sentences(passage: Passage, question_words: set[str], n: int = EVIDENCE_SENTENCES) -> list[str]:
    """The passage's sentences that share the most content words with the question (two at most,
    each sharing at least one; the first sentence of an article counts once more: it says what the
    article is about)."""
    sentences = [s.strip() for s in _SENTENCE.split(passage.text) if s.strip()]
    title_words = set(words(passage.title))
    scored = []
    for i, s in enumerate(sentences):
        shared = len({_stem(w) for w in words(s)} & {_stem(w) for w in question_words})
        if shared:
            scored.append((shared + (0.5 if i == 0 else 0) + 0.5 * bool(title_words & question_words), -i, s))
    scored.sort(reverse=True)
    keep = {s for _, _, s in scored[:n]}
    return [s for s in sentences if s in keep]  # in the passage's order


def bears_on(passage: Passage, query: str) -> bool:
    """Whether a passage is evidence for a query at all: it holds two of the query's content words,
    or half of them (a one-word query: that word)."""
    q = {_stem(w) for w in words(query)}
    if not q:
        return False
    have = {_stem(w) for w in words(passage.title + " " + passage.text)}
    shared = len(q & have)
    return shared >= min(2, len(q)) or (len(q) <= 3 and shared >= max(1, 0.5 * len(q)))


async def _search(state: _State, sources, query: str) -> AsyncIterator[str]:
    """Search every source for `query`; the passages join the state's fused ranking. Yields steps."""
    state.searched.add(query.lower())
    for source in sources:
        try:
            found = await asyncio.to_thread(source.search, query, PER_QUERY)
        except SourceUnavailable as err:
            note = f"{source.name}: {err}"
            if note not in state.notes:
                state.notes.append(note)
            yield f"  {source.name} could not be searched: {err}\n"
            continue
        except Exception as err:  # a source's fault never ends the research
            log.exception("searching %s failed", getattr(source, "name", source))
            yield f"  {getattr(source, 'name', 'a source')} failed: {err}\n"
            continue
        hits = [p for p in found if bears_on(p, query)]
        if hits:
            state.answered.add(query.lower())
        for rank, p in enumerate(found):
            key = (p.source, p.doc_id)
            state.passages.setdefault(key, p)
            bonus = 1.0 if p in hits else 0.2
            state.fused[key] = state.fused.get(key, 0.0) + bonus / (1 + rank)
        titles = ", ".join(p.title for p in found[:PER_QUERY]) or "nothing"
        yield f"  {source.name}: {titles}\n"


def _read(state: _State) -> list[Evidence]:
    """The best passages so far, numbered, with the sentences that bear on the question."""
    question_words = set(words(" ".join([state.question, *state.queries])))

    def rank(key: tuple[str, str]) -> float:  # an article the question names comes first
        return state.fused[key] + (1.0 if mentions(state.question, state.passages[key].title) >= 0 else 0.0)

    ranked = sorted(state.fused, key=rank, reverse=True)[: READ[state.depth]]
    out = []
    for key in ranked:
        p = state.passages[key]
        if not bears_on(p, state.question) and not any(bears_on(p, q) for q in state.queries[1:]):
            continue
        sentences = relevant_sentences(p, question_words)
        if sentences:
            out.append(Evidence(len(out) + 1, p, sentences))
    return out


def parse_facts(reply: str, evidence: list[Evidence]) -> int:
    """The model's facts, each added to the evidence it names where that passage holds it; returns
    how many were kept."""
    by_number = {e.number: e for e in evidence}
    kept = 0
    for line in (reply or "").splitlines():
        cited = _CITE.findall(line)
        if not cited:
            continue
        fact = _CITE.sub("", line).strip(" -*•\t")
        fact = re.sub(r"^\d+[.)]\s*", "", fact)
        for group in cited:
            for n in (int(x) for x in group.split(",")):
                e = by_number.get(n)
                if e is not None and fact and fact not in e.facts and holds(e.passage.text, fact):
                    e.facts.append(fact)
                    kept += 1
    return kept


def needs_numbers(question: str, evidence: list[Evidence]) -> bool:
    """The question combines numbers ("how many years apart", "combined") and the evidence has some."""
    return bool(_ARITHMETIC.search(question)) and sum(
        bool(_NUMBER.search(" ".join(e.sentences + e.facts))) for e in evidence) >= 1


def _evidence_text(evidence: list[Evidence]) -> str:
    lines = []
    for e in evidence:
        said = e.facts + [s for s in e.sentences if s not in e.facts]
        lines.append(f"[{e.number}] {e.passage.title}: " + " ".join(said))
    return "\n".join(lines)


def follow_ups(state: _State, evidence: list[Evidence]) -> list[str]:
    """The next round's queries: the sub-questions nothing answered, and the names the evidence
    mentions that the question does not (article A names the B to read about)."""
    out = [q for q in state.queries[1:] if q.lower() not in state.answered]
    question = state.question.lower()
    titles = {e.passage.title.lower() for e in evidence}
    for e in evidence[:3]:
        for sentence in e.sentences:
            for name in _NAME.findall(sentence):
                low = name.lower()
                if low in question or low in titles or low in _STOP or len(name) < 4:
                    continue
                if sentence.startswith(name) and " " not in name:
                    continue  # "The", "It" and the like at a sentence's start
                out.append(name)
    return [q for q in dict.fromkeys(out) if q.lower() not in state.searched][:3]


def check_citations(answer: str, evidence: list[Evidence], computed: str = "",
                    question: str | None = None) -> tuple[str, list[Evidence]]:
    """Drop every [n] whose passage does not hold its sentence's words (numbers computed in the
    sandbox are exempt; with the `question`, the words the sentence adds to it must be there too),
    renumber the rest 1, 2, ... in order of first use; returns the answer and the evidence it
    cites, in that order."""
    by_number = {e.number: e for e in evidence}
    exempt = frozenset(words(computed))
    asked = None if question is None else frozenset(_stem(w) for w in words(question))
    new_numbers: dict[int, int] = {}
    cited: list[Evidence] = []
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+|(?<=\])\s+(?=[A-Z])", answer.strip()):
        claim = _CITE.sub("", sentence)

        def renumber(m: re.Match, claim: str = claim) -> str:
            keep = []
            for n in (int(x) for x in m.group(1).split(",")):
                e = by_number.get(n)
                if e is None or not holds(e.passage.text, claim, exempt, asked):
                    continue
                if n not in new_numbers:
                    new_numbers[n] = len(new_numbers) + 1
                    cited.append(e)
                if new_numbers[n] not in keep:
                    keep.append(new_numbers[n])
            return "".join(f" [{k}]" for k in keep) if keep else ""

        out.append(_CITE.sub(renumber, sentence))
    return " ".join(s for s in out if s.strip()).strip(), cited


def attribute(answer: str, evidence: list[Evidence], question: str, computed: str = "") -> str:
    """The answer with each sentence citing the passages that hold it (at most two), for a small
    model that answered without usable [n]: a passage must hold the sentence's words and the words
    it adds to the question (the answer itself: "Kilimanjaro"). check_citations runs after it."""
    exempt = frozenset(words(computed))
    asked = {_stem(w) for w in words(question)}
    out = []
    for sentence in _SENTENCE.split(_CITE.sub("", answer).strip()):
        novel = [_stem(w) for w in words(sentence) if _stem(w) not in asked and w not in exempt]
        holders = [e for e in evidence if holds(e.passage.text, sentence, exempt)
                   and all(w in {_stem(x) for x in words(e.passage.text)} for w in novel[:3])]
        body = sentence.rstrip()
        end = body[-1] if body and body[-1] in ".!?" else ""
        out.append(body[: len(body) - len(end)] + "".join(f" [{e.number}]" for e in holders[:2]) + end)
    return " ".join(out)


def _quote(e: Evidence, claim: str) -> str:
    """The words of the passage to show for a citation: its sentences that hold the claim best."""
    sentences = e.facts + e.sentences
    best = max(sentences, key=lambda s: len(set(words(s)) & set(words(claim))), default=e.passage.text[:300])
    return best if best in e.passage.text else next((s for s in e.sentences if s in e.passage.text), best)


def _excerpt(e: Evidence) -> str:
    """What the model reads of a passage: its opening and the sentences that bear on the question,
    at most PASSAGE_CHARS (prefill is most of a small model's time on a CPU)."""
    if len(e.passage.text) <= PASSAGE_CHARS:
        return e.passage.text
    opening = _SENTENCE.split(e.passage.text, 1)[0]
    parts = [opening, *(s for s in e.sentences if s != opening)]
    return " ".join(parts)[:PASSAGE_CHARS]


def _fallback(evidence: list[Evidence], question: str) -> tuple[str, list[Evidence]]:
    """No usable answer from the model: the evidence sentence that bears on the question most
    (its words, and an article the question names first) among those that give the kind of answer
    it asks for (a year, a nationality) where one does, quoted with its citation."""
    if not evidence:
        return NOT_FOUND, []
    asked = {_stem(w) for w in words(question)}
    kind = expected_kind(question)
    if not any(gives(s, kind) for e in evidence for s in e.sentences):
        kind = None

    def score(pair: tuple[int, Evidence, str]) -> tuple:
        i, e, sentence = pair
        shared = len({_stem(w) for w in words(sentence)} & asked)
        return (gives(sentence, kind), shared + 0.5 * (mentions(question, e.passage.title) >= 0), -i)

    _, best, sentence = max(((i, e, s) for i, e in enumerate(evidence) for s in e.sentences), key=score)
    return f"According to {best.passage.title}: \"{sentence}\" [1]", [best]


async def deep_search(engine, request: Request) -> AsyncIterator[Event]:
    """Research `request`'s last message in `request.sources` and answer with citations (see the
    module docstring)."""
    tid = request.turn_id
    t0 = time.perf_counter()
    question = request.messages[-1].text.strip()
    sources = list(request.sources)
    if not question:
        yield Error(tid, "bad_input", "Deep Search needs a question in text")
        return
    if not sources:
        yield Error(tid, "bad_input", "Deep Search has no source to search")
        return
    depth = request.search_depth
    budget = TIME_BUDGET_S[depth]
    tokens = [0, 0]  # prompt, completion

    async def ask(prompt: str, max_tokens: int) -> str:
        sub = Request((Message("user", prompt),), speak=False, max_new_tokens=max_tokens, temperature=0.0)
        text, _, done, error = await _collect(engine, sub)
        if done is not None:
            tokens[0] += done.prompt_tokens
            tokens[1] += done.completion_tokens
        if error:
            raise _ModelFailed(error)
        log.debug("Deep Search model call:\n%s\n--- replied:\n%s", prompt, text)
        return text

    try:
        yield ThinkingDelta(tid, f"Deep Search ({depth}): planning the queries.\n")
        subs = parse_queries(await ask(PLAN_PROMPT.format(question=question), PLAN_TOKENS), question)
        state = _State(question, [question, *subs], depth, t0)
        queries = list(state.queries)
        evidence: list[Evidence] = []
        for round_no in range(1, ROUNDS[depth] + 1):
            for q in queries:
                yield ThinkingDelta(tid, f"Search (round {round_no}): {q}\n")
                async for step in _search(state, sources, q):
                    yield ThinkingDelta(tid, step)
            evidence = _read(state)
            if round_no == ROUNDS[depth] or time.perf_counter() - t0 > budget / 2:
                break
            queries = follow_ups(state, evidence)
            if not queries:
                break
            state.queries += [q for q in queries if q not in state.queries]  # what they find is evidence too
            yield ThinkingDelta(tid, "Not all of it is found yet, or the passages name more to read: "
                                     "another round.\n")
        for e in evidence:
            yield ThinkingDelta(tid, f"Read [{e.number}] {e.passage.title} ({e.passage.url}): "
                                     f"{' '.join(e.sentences)[:300]}\n")
        if not evidence:
            yield ThinkingDelta(tid, "No passage bears on the question.\n")
            async for ev in _finish(engine, request, NOT_FOUND, [], state, t0, tokens):
                yield ev
            return
        combined = None
        if needs_numbers(question, evidence):
            combined = await asyncio.to_thread(combine, question, evidence, engine.sandbox())
        if combined is not None:
            yield ThinkingDelta(tid, f"Code run in the sandbox (on the numbers read from the passages):\n"
                                     f"{combined.code}# printed: {combined.printed}\n")
            answer, cited = check_citations(combined.answer, evidence, combined.printed, question)
        else:
            answer, cited = None, []
            async for step in _answer_by_model(engine, ask, state, evidence):
                if isinstance(step, tuple):
                    answer, cited = step
                else:
                    yield ThinkingDelta(tid, step)
        if cited:
            note, cited = disagreement(answer, cited, evidence)
            if note:
                yield ThinkingDelta(tid, "Two sources give different values: both are cited.\n")
                answer = f"{answer} {note}"
        async for ev in _finish(engine, request, answer, cited, state, t0, tokens):
            yield ev
    except _ModelFailed as err:
        yield Error(tid, "model_error", f"Deep Search: the model failed ({err})")


class _ModelFailed(Exception):
    pass


async def _answer_by_model(engine, ask, state: _State, evidence: list[Evidence]) -> AsyncIterator[str | tuple]:
    """The model's facts, program (numbers it combines) and answer, its citations checked; yields the
    steps to show, then (answer, cited)."""
    question = state.question
    passages = "\n".join(f"[{e.number}] {e.passage.title}: {_excerpt(e)}" for e in evidence)
    kept = parse_facts(await ask(FACTS_PROMPT.format(passages=passages, question=question), FACT_TOKENS), evidence)
    yield f"Facts taken from the passages: {kept} (each checked against its passage).\n"
    computed = ""
    if needs_numbers(question, evidence) and time.perf_counter() - state.t0 < TIME_BUDGET_S[state.depth]:
        reply = await ask(CODE_PROMPT.format(facts=_evidence_text(evidence), question=question), CODE_TOKENS)
        result, detail, error = await asyncio.to_thread(run_program, engine.sandbox(), reply)
        yield f"Code run in the sandbox:\n{detail}\n" + (f"({error})\n" if error else "")
        computed = "" if error else result
    note = f"Computed from the evidence: {computed}\n" if computed else ""
    reply = await ask(ANSWER_PROMPT.format(evidence=_evidence_text(evidence), computed=note, question=question),
                      ANSWER_TOKENS)
    answer, cited = check_citations(reply, evidence, computed, question)
    if not cited and reply.strip() and NOT_FOUND.lower().rstrip(".") not in reply.lower():
        attributed = attribute(reply, evidence, question, computed)  # no [n] it could keep: cite what holds it
        held = " ".join(s for s in _SENTENCE.split(attributed) if _CITE.search(s))  # sentences nothing holds go
        answer, cited = check_citations(held, evidence, computed, question)
        if cited:
            yield "The answer's citations were set from the passages that hold it.\n"
    kind = expected_kind(question)
    if cited and not gives(_CITE.sub("", answer), kind):
        yield f"The answer gives no {kind}, which the question asks for.\n"
        cited = []
    if not cited:  # "not found", nothing the passages hold, or no answer of the kind asked, while a passage bears on it
        yield "The model's answer cited nothing the sources hold; the evidence that bears on it most is quoted.\n"
        answer, cited = _fallback(evidence, question)
        if computed:
            answer = f"{computed} (computed from the sources). {answer}"
    yield answer, cited


async def _finish(engine, request: Request, answer: str, cited: list[Evidence], state: _State, t0: float,
                  tokens: list[int]) -> AsyncIterator[Event]:
    tid = request.turn_id
    if state.notes:
        answer = f"{answer}\n(Not searched: {'; '.join(state.notes)}.)"
    yield TextDelta(tid, answer)
    first_text = time.perf_counter() - t0
    claim = _CITE.sub("", answer)
    yield Citations(tid, tuple(Citation(i + 1, e.passage.source, e.passage.title, e.passage.url, _quote(e, claim))
                               for i, e in enumerate(cited)))
    first_audio, audio_s = None, 0.0
    if request.speak:
        spoken = _CITE.sub("", answer)
        if cited:
            spoken += " Sources: " + ", ".join(e.passage.title for e in cited) + "."
        async for chunk in _speak(engine, request, spoken):
            first_audio = first_audio or time.perf_counter() - t0
            audio_s += chunk.duration_s
            yield chunk
    timings = Timings(queued_s=0.0, first_text_s=first_text, first_audio_s=first_audio,
                      total_s=time.perf_counter() - t0, audio_s=audio_s)
    yield Done(tid, answer, timings, tokens[0], tokens[1], reasoning_tokens=tokens[1])
