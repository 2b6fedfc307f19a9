"""Numbers in Deep Search's evidence, read by code: which quantity of which article a question
combines, the program the sandbox runs on them, and where two sources disagree.

A small model took one height for a difference and copied the wrong year; here the numbers are
found in the passages by code (`quantities`), each article the question names gets the one whose
unit fits and that stands nearest the question's words about it (`pick`), and the sandbox computes
(`program`). `disagreements` finds two passages that give different values for one fact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Quantity", "disagreements", "format_number", "mentions", "named", "operation", "pick", "program",
           "quantities", "question_unit"]

# a number, with what may stand before it (AD, in) and the unit after it
_QUANTITY = re.compile(
    r"(?P<pre>\b(?:AD|in|from|between|since|until|to|and|of)\s+)?(?P<num>(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?"
    r"|(?<![\w.,])\d+(?:\.\d+)?)(?P<unit>\s*(?:metres|meters|metre|meter|m|kilometres|kilometers|km|feet|ft|mi|"
    r"miles|million|billion|years|%)\b)?", re.IGNORECASE)
_UNITS = {"metres": "m", "meters": "m", "metre": "m", "meter": "m", "m": "m", "kilometres": "km",
          "kilometers": "km", "km": "km", "feet": "ft", "ft": "ft", "mi": "mi", "miles": "mi", "million": "million",
          "billion": "billion", "years": "years", "%": "%"}
_WORD = re.compile(r"[A-Za-z]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
# what a question's words say about the end of a span ("from 1789 to 1797": ended -> 1797)
_END_TEXT = "ended end ends ending completed complete finished until last left died death closed"
_START_TEXT = "began begin begins start started starting commenced construction building founded"
_END_WORDS, _START_WORDS = frozenset(_END_TEXT.split()), frozenset(_START_TEXT.split())
_STOP_TEXT = """a an the of in on at to is was were be been by for and or did does do how many much what
which when who years year after before between than more less higher lower longer shorter first s its his her
their that this from with as metres meters kilometres kilometers million passed separate combined exceed exceeds
height total"""
_STOP = frozenset(_STOP_TEXT.split())


@dataclass(frozen=True, slots=True)
class Quantity:
    value: float
    unit: str  # "m", "km", "year", "million", ... or "" (a bare number)
    text: str  # as written: "5,895 m", "AD 80"
    sentence: str  # the sentence it stands in
    offset: int  # where in the sentence (characters)


def question_unit(question: str) -> str:
    """The unit the question asks in: "m", "km", "year", "million" ... ("" when it names none); the
    word after "how many" first ("how many years after ... height last measured": years)."""
    q = question.lower()
    patterns = ((r"\bkilomet|\bkm\b", "km"), (r"\bmetres?\b|\bmeters?\b|\bhigher\b|\btaller\b|\bheight\b", "m"),
                (r"\byears?\b", "year"), (r"\bmillion\b|\bpopulation\b", "million"), (r"\bfeet\b", "ft"),
                (r"\bmiles\b", "mi"))
    asked = re.search(r"\bhow (?:many|much)\s+(\w+)", q)
    for text in ([asked.group(1)] if asked else []) + [q]:
        for pattern, unit in patterns:
            if re.search(pattern, text):
                return unit
    return ""


def operation(question: str) -> str:
    """How the question combines two numbers: "sum", "ratio" or "difference"."""
    q = question.lower()
    if re.search(r"\b(?:combined|in total|sum of|added together|together)\b", q):
        return "sum"
    if re.search(r"\bhow many times\b|\bratio\b", q):
        return "ratio"
    return "difference"


def quantities(text: str) -> list[Quantity]:
    """Every number in `text` with its unit; a year is a bare 4-digit number from 1000 to 2099, or
    one written after AD, "in", "from", "between" ... (not followed by another unit)."""
    out = []
    for sentence in _SENTENCE.split(text):
        for m in _QUANTITY.finditer(sentence):
            raw, pre, unit_text = m.group("num"), (m.group("pre") or "").strip().lower(), m.group("unit")
            value = float(raw.replace(",", ""))
            unit = _UNITS[unit_text.strip().lower()] if unit_text else ""
            if not unit and raw.isdigit() and (1000 <= value <= 2099 or pre == "ad" or (pre and value <= 2099)):
                unit = "year"
            start = m.start("num") if pre != "ad" else m.start()
            out.append(Quantity(value, unit, sentence[start : m.end()].strip(), sentence, m.start("num")))
    return out


def _name_words(title: str) -> list[str]:
    return _WORD.findall(re.sub(r"\s*\(.*?\)", "", title).lower())


def mentions(question: str, title: str) -> int:
    """Where `question` names the article `title` (its name without a parenthesis, or a person's
    surname / a place's last word of 4+ letters, capitalised as a name is): the character offset,
    or -1."""
    q = question.lower()
    name = re.sub(r"\s*\(.*?\)", "", title).strip().lower()
    m = re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", q)
    if m:
        return m.start()
    last = _WORD.findall(re.sub(r"\s*\(.*?\)", "", title))[-1:] if len(_name_words(title)) > 1 else []
    if last and len(last[0]) >= 4 and last[0][0].isupper():  # "Newton's", not "lake" for Great Slave Lake
        m = re.search(r"\b" + re.escape(last[0]) + r"\b", question)
        if m:
            return m.start()
    return -1


def _close(a: str, b: str) -> bool:
    return a == b or (min(len(a), len(b)) >= 3 and (a.startswith(b) or b.startswith(a)))


def _score(q: Quantity, about: list[str]) -> float:
    """How well a quantity fits the question's words about its article: its sentence holds more of
    them, it stands nearer them (a tie goes to the passage's first: a lead states the main figure
    first)."""
    tokens = [(m.start(), m.group(0).lower()) for m in _WORD.finditer(q.sentence)]
    hits = [pos for pos, w in tokens if any(_close(w, a) for a in about)]
    score = 2.0 * len({w for _, w in tokens if any(_close(w, a) for a in about)})
    if hits:
        score += 1.0 / (1 + min(abs(q.offset - p) for p in hits) / 20)
    return score


def pick(question: str, passage_text: str, title: str, about: str, unit: str) -> Quantity | None:
    """The quantity of unit `unit` in the passage that the question's words `about` its article
    point to; in a span ("from 1789 to 1797") the end where the words speak of an end."""
    about_words = [w for w in _WORD.findall(about.lower()) if w not in _STOP and w not in _name_words(title)]
    in_name = set(re.findall(r"\d+", title))  # "2001: A Space Odyssey" is not a year of it
    found = [q for q in quantities(passage_text) if q.unit == unit and q.text.split()[-1] not in in_name]
    if not found:
        return None
    best = max(found, key=lambda q: (_score(q, about_words), -passage_text.find(q.sentence), -q.offset))
    if unit == "year":
        span = [q for q in found if q.sentence == best.sentence]
        i = span.index(best)
        after = best.sentence[best.offset:][:40].lower()
        if any(_close(w, e) for w in about_words for e in _END_WORDS) and i + 1 < len(span) \
                and re.match(r"\d+\s+(?:to|until|and|-|–)\s+", after):
            return span[i + 1]
        before = re.escape(span[i - 1].text.split()[-1]) if i > 0 else ""
        if before and any(_close(w, s) for w in about_words for s in _START_WORDS) and \
                re.search(r"(?:from|between)\s+(?:AD\s+)?" + before + r"\s+(?:to|until|and)", best.sentence):
            return span[i - 1]
    return best


def named(question: str, titles: list[str]) -> list[tuple[str, str]]:
    """The articles (of `titles`) the question names, in its order, each with the question's words
    about it: those from its name to the next name (the first also gets the words before it):
    "How many years after [the Statue of Liberty] was dedicated was [the Eiffel Tower] completed"."""
    found = sorted((at, t) for t in titles if (at := mentions(question, t)) >= 0)
    out, seen = [], set()
    for i, (at, title) in enumerate(found):
        name = re.sub(r"\s*\(.*?\)", "", title).strip().lower()
        if name in seen or any(name in s or s in name for s in seen):
            continue
        seen.add(name)
        nxt = next((a for a, _ in found[i + 1 :] if a > at), len(question))
        about = question[at:nxt] if out else question[:nxt]
        out.append((title, about))
    return out


def format_number(x: float) -> str:
    """A number as a person writes it: 253, 2,159.85, 11.96."""
    x = round(x, 2)
    return f"{int(x):,}" if x == int(x) else f"{x:,.2f}".rstrip("0").rstrip(".")


def program(a: float, b: float, op: str) -> str:
    """The sandbox program that combines the two numbers (what a user sees run)."""
    body = {"sum": "a + b", "ratio": "a / b", "difference": "abs(a - b)"}[op]
    return f"a = {a!r}\nb = {b!r}\nprint(round({body}, 2))\n"


def disagreements(passages: list[tuple[int, str, str]], name: str, unit: str,
                  value: float) -> list[tuple[int, Quantity]]:
    """Other passages (number, title, text) that give `name`'s quantity of `unit` another value
    than `value`: the first quantity of that unit standing just after the name ("... Mount Everest
    at 8,849 metres"). Rounding counts as a difference too: the answer shows both values."""
    key = name.lower()
    out = []
    for number, title, text in passages:
        if re.sub(r"\s*\(.*?\)", "", title).strip().lower() == key:
            continue
        for q in quantities(text):
            if q.unit != unit or key not in q.sentence.lower():
                continue
            at = q.sentence.lower().find(key)
            if not (0 <= q.offset - at <= len(key) + 25):  # "... Mount Everest at 8,849 metres"
                continue
            if abs(q.value - value) > 1e-9:
                out.append((number, q))
            break
    return out
