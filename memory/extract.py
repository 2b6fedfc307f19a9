"""Turning an exchange into facts: the prompt for the core model, a defensive parser of its
answer, and a rule-based extractor for explicit statements that works whatever the model says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from memory.rules import rule_facts
from memory.types import MAX_FACT_CHARS, Exchange, Fact, Memory

__all__ = ["build_extraction_prompt", "grounded", "parse_facts", "rule_facts"]

MAX_FACTS = 20  # per exchange; the rest are dropped with a reason
KINDS = frozenset({"fact", "preference", "event", "note"})
_KEY = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

PROMPT = """You maintain the long-term memory of an assistant. From the exchange below, list the durable facts \
the USER stated about themselves in their own message (name, family, work, places, tastes, plans, \
corrections). Only what the user's message itself says: never the assistant's words, never the known \
facts again, never an example. Skip small talk, questions and anything already known unless it changed.

Answer with JSON only, exactly this shape:
{{"facts": [{{"text": "<one sentence>", "key": "<slot or null>", "kind": "fact", "scope": "user", \
"action": "add", "replaces": null}}]}}
- text: one short sentence in the third person ("The user ..."), using the user's own words.
- key: a slot such as user.name, user.city, user.job when the fact has one value at a time, else null.
- kind: fact, preference, event or note. scope: user (shared) or instance (only this conversation).
- action: add, or delete when the user asks to forget something (text: what to forget).
- replaces: the text of a known fact this one corrects, else null.
If the user's message states nothing about them, answer {{"facts": []}}.

Known facts:
{known}

Exchange:
{speaker}: {user_text}
Assistant: {assistant_text}
"""
# No concrete fact in the example above: the 0.5B copied "The user's name is Igor." from it for users
# who never said a name.


def build_extraction_prompt(exchange: Exchange, known: Sequence[Memory] = ()) -> str:
    """The prompt for the core model; `known` are related memories so it can spot corrections."""
    known_text = "\n".join(f"- {m.text}" for m in known) or "(none)"
    return PROMPT.format(
        known=known_text,
        speaker=exchange.speaker or "User",
        user_text=exchange.user_text.strip(),
        assistant_text=exchange.assistant_text.strip(),
    )


def parse_facts(output: str) -> tuple[list[Fact], list[tuple[str, str]]]:
    """Facts from the model's answer, and (text, reason) for what was rejected. Never raises."""
    data, reason = _find_json(output if isinstance(output, str) else "")
    if data is None:
        return [], ([(_preview(output), reason)] if reason else [])
    items = data.get("facts", data.get("memories")) if isinstance(data, dict) else data
    if isinstance(data, dict) and items is None and ("text" in data or "fact" in data):
        items = [data]
    if not isinstance(items, list):
        return [], [(_preview(output), "no list of facts in the answer")]
    facts: list[Fact] = []
    rejected: list[tuple[str, str]] = []
    for item in items:
        fact, why = _fact(item)
        if fact is None:
            rejected.append((_preview(item), why))
        elif len(facts) >= MAX_FACTS:
            rejected.append((_preview(fact.text), f"more than {MAX_FACTS} facts in one exchange"))
        else:
            facts.append(fact)
    return facts, rejected


def _find_json(text: str) -> tuple[object | None, str]:
    stripped = re.sub(r"```(?:json)?", "", text).strip()
    if not stripped:
        return None, ""
    try:
        return json.loads(stripped), ""
    except (ValueError, RecursionError):
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", stripped):
        try:
            data, _end = decoder.raw_decode(stripped, match.start())
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict | list):
            return data, ""
    return None, "the answer holds no JSON"


def _fact(item: object) -> tuple[Fact | None, str]:
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict):
        return None, "a fact must be an object or a string"
    text = item.get("text", item.get("fact"))
    if not isinstance(text, str):
        return None, "a fact has no text"
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) < 3:
        return None, "a fact's text is empty or too short"
    if len(text) > MAX_FACT_CHARS:
        return None, f"a fact is too long ({len(text)} characters > {MAX_FACT_CHARS})"
    action = str(item.get("action") or "add").casefold()
    action = {"forget": "delete", "remove": "delete", "update": "add", "correct": "add"}.get(action, action)
    if action not in ("add", "delete"):
        return None, f"unknown action {action!r}"
    key = item.get("key")
    key = key.strip().casefold() if isinstance(key, str) and _KEY.match(key.strip().casefold()) else None
    kind = item.get("kind")
    kind = kind.casefold() if isinstance(kind, str) and kind.casefold() in KINDS else "fact"
    scope = "instance" if item.get("scope") == "instance" else "user"
    replaces = item.get("replaces")
    replaces = " ".join(replaces.split())[:MAX_FACT_CHARS] if isinstance(replaces, str) and replaces.strip() else None
    return Fact(text=text, kind=kind, key=key, scope=scope, action=action, replaces=replaces), ""


def _preview(item: object) -> str:
    text = item if isinstance(item, str) else repr(item)
    return text[:80]




# Grounding: a fact from the model must be in the user's own words --------------------------------

# Words a fact adds around what the user said: its frame ("The user's ... is ..."), linking verbs,
# pronouns. Every other word of the fact must occur in the user's message.
_FRAME_TEXT = (
    "user user's users the a an is are was were be been being has have had does do did of in on at to for "
    "from with and or but as by that this these those who which whom whose their they them theirs he she his "
    "her hers its it name named called lives live living works work working likes like loves love prefers "
    "prefer enjoys enjoy hates hate dislikes dislike wants want s also currently now still very really "
    "not no person someone new"
)
_FRAME = frozenset(_FRAME_TEXT.split())
_FORGETTING = re.compile(r"\b(?:forget|delete|remove|erase|drop|stop remembering)\b", re.I)


def _stem(word: str) -> str:
    return word[:5]


def grounded(fact: Fact, user_text: str) -> str | None:
    """Why `fact` is not in the user's own words (None: it is). Every content word of the fact
    (names, places, numbers, things) must occur in `user_text` (matched by its first five letters,
    so "allergy" grounds "allergic"); a deletion needs the user to have asked to forget."""
    said = [w for w in re.findall(r"\w+", user_text.casefold().replace("'s", " "))]
    if fact.action == "delete":
        return None if _FORGETTING.search(user_text) else "a deletion the user did not ask for"
    stems = {_stem(w) for w in said}
    words = re.findall(r"\w+", fact.text.casefold().replace("'s", " "))
    content = [w for w in words if w not in _FRAME and (len(w) > 2 or w.isdigit())]
    if not content:
        return "a fact with nothing the user said"
    missing = [w for w in content if (w not in said if w.isdigit() else _stem(w) not in stems)]
    return f"not in the user's words: {', '.join(missing[:4])}" if missing else None
