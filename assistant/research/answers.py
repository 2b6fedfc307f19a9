"""What kind of answer a question asks for (a nationality, a year, a number), and whether a text
gives one: a small model's answer that names the painter when the question asks his nationality,
or says "not found" when a passage states the year, is checked against this and replaced by the
evidence sentence that does give it."""

from __future__ import annotations

import re

__all__ = ["expected_kind", "gives"]

# the nationalities the encyclopedia's people have, as its lead sentences write them
_DEMONYMS = """American Argentine Australian Austrian Belgian Brazilian British Canadian Chilean Chinese Colombian
Cuban Czech Danish Dutch Egyptian English Ethiopian Finnish Flemish French German Greek Hungarian Indian Iranian
Irish Israeli Italian Japanese Kenyan Korean Mexican Mongolian Nigerian Norwegian Pakistani Persian Peruvian Polish
Portuguese Roman Romanian Russian Scottish Serbian Soviet Spanish Swedish Swiss Turkish Ukrainian Venezuelan
Welsh"""
_DEMONYM = re.compile(r"\b(?:" + "|".join(_DEMONYMS.split()) + r")\b")
_YEAR = re.compile(r"\b(?:1\d{3}|20\d{2}|AD \d{1,4})\b")
_NUMBER = re.compile(r"\d")
_KINDS = (
    ("nationality", re.compile(r"\bnationality\b|\bwhich country was \w+ from\b", re.IGNORECASE)),
    ("year", re.compile(r"\b(?:in|from|since|by) (?:what|which) year\b|^\s*(?:what|which) year\b|^\s*when\b",
                        re.IGNORECASE)),
    ("number", re.compile(r"\bhow (?:many|much|long|high|tall|far|old|deep|big|large)\b|\bwhat is the population\b",
                          re.IGNORECASE)),
)


def expected_kind(question: str) -> str | None:
    """"nationality", "year" or "number" when the question asks for one; None otherwise."""
    return next((kind for kind, pattern in _KINDS if pattern.search(question)), None)


def gives(text: str, kind: str | None) -> bool:
    """Whether `text` gives an answer of `kind` (any text does for None)."""
    if kind is None:
        return True
    pattern = {"nationality": _DEMONYM, "year": _YEAR, "number": _NUMBER}[kind]
    return bool(pattern.search(text))
