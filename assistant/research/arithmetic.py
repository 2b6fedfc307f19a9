"""Deep Search's numbers, from the evidence to the answer: two quantities combined in the sandbox,
and the disagreements between sources, each side cited.

The model never copies a number here: `combine` reads each article's quantity out of its passage
(assistant/research/numbers.py), the sandbox computes, and the answer is written by code, each
quantity cited to the passage that states it. `disagreement` finds another passage that gives one
of the answer's quantities another value, so that the answer says so and cites both.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.research import numbers

if TYPE_CHECKING:
    from assistant.research.loop import Evidence

__all__ = ["Combined", "combine", "disagreement"]

log = logging.getLogger(__name__)

_VERB = {"sum": "together", "ratio": "as a ratio", "difference": "the difference"}


@dataclass
class Combined:
    answer: str  # with [n] citations numbered as the evidence is
    cited: list[Evidence]  # in the order of the answer's [n]
    code: str  # the program the sandbox ran
    printed: str  # what it printed (the result)


def _name(title: str) -> str:
    return re.sub(r"\s*\(.*?\)", "", title).strip()


def combine(question: str, evidence: list[Evidence], sandbox) -> Combined | None:
    """Two quantities the question names, one from each article's passage, combined in `sandbox`;
    None when the question names fewer than two articles of the evidence or a passage lacks the
    quantity (the caller falls back to the model's program)."""
    unit = numbers.question_unit(question)
    by_title = {e.passage.title: e for e in evidence}
    parts = numbers.named(question, list(by_title))
    if not unit or len(parts) < 2:
        return None
    picked: list[tuple[Evidence, numbers.Quantity]] = []
    for title, about in parts[:2]:
        q = numbers.pick(question, by_title[title].passage.text, title, about, unit)
        if q is None:
            log.debug("no %s quantity for %s in its passage", unit, title)
            return None
        picked.append((by_title[title], q))
    (ea, qa), (eb, qb) = picked
    op = numbers.operation(question)
    code = numbers.program(qa.value, qb.value, op)
    result = sandbox.run(code)
    printed = result.stdout.strip().splitlines()[-1:] if result.ok else []
    if not printed:
        log.warning("the sandbox did not compute %r: %s", code, result.message)
        return None
    value = numbers.format_number(float(printed[0]))
    shown_unit = {"year": "years", "million": "million"}.get(unit, unit)
    sign = {"sum": "+", "ratio": "/", "difference": "−"}[op]
    answer = (f"{value} {shown_unit} ({_VERB[op]}: {qa.text} {sign} {qb.text}, computed from the sources). "
              f"{_name(ea.passage.title)}: {qa.text} [{ea.number}]. "
              f"{_name(eb.passage.title)}: {qb.text} [{eb.number}].")
    return Combined(answer, [ea, eb], code, printed[0])


def disagreement(answer: str, cited: list[Evidence], evidence: list[Evidence]) -> tuple[str, list[Evidence]]:
    """Where another passage gives a quantity of the answer another value (K2's "Mount Everest at
    8,849 metres" against Mount Everest's 8,848.86 m): the sentences that say so, each value cited,
    and `cited` with the other passage added (the answer's [n] are positions in `cited`, and so are
    the new ones); ("", cited) when the sources agree."""
    others = [(e.number, e.passage.title, e.passage.text) for e in evidence]
    said = " ".join(answer.split())  # a passage's "8,848.86\xa0m" is the answer's "8,848.86 m"
    for e in cited:
        name = _name(e.passage.title)
        for q in numbers.quantities(e.passage.text):
            if not q.unit or q.unit == "year" or " ".join(q.text.split()) not in said:
                continue
            found = numbers.disagreements(others, name, q.unit, q.value)
            if not found:
                continue
            number, other = found[0]
            source = next(x for x in evidence if x.number == number)
            out = cited if source in cited else [*cited, source]
            text = (f"The sources disagree on {name}. {name}: {q.text} [{cited.index(e) + 1}]. "
                    f"{_name(source.passage.title)}: {name} at {other.text} [{out.index(source) + 1}].")
            return text, out
    return "", cited
