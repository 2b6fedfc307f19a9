"""Turning an exchange into facts: the prompt for the core model, a defensive parser of its
answer, and a rule-based extractor for explicit statements that works whatever the model says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from memory.types import MAX_FACT_CHARS, Exchange, Fact, Memory

__all__ = ["build_extraction_prompt", "parse_facts", "rule_facts"]

MAX_FACTS = 20  # per exchange; the rest are dropped with a reason
KINDS = frozenset({"fact", "preference", "event", "note"})
_KEY = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

PROMPT = """You maintain the long-term memory of an assistant. From the exchange below, list the durable facts \
about the user worth remembering in later conversations (name, family, work, places, tastes, plans, \
corrections). Skip small talk and anything already known unless it changed.

Answer with JSON only, exactly this shape:
{{"facts": [{{"text": "The user's name is Igor.", "key": "user.name", "kind": "fact", "scope": "user", \
"action": "add", "replaces": null}}]}}
- text: one short sentence in the third person ("The user ...").
- key: a slot such as user.name, user.city, user.job when the fact has one value at a time, else null.
- kind: fact, preference, event or note. scope: user (shared) or instance (only this conversation).
- action: add, or delete when the user asks to forget something (text: what to forget).
- replaces: the text of a known fact this one corrects, else null.
If there is nothing to remember, answer {{"facts": []}}.

Known facts:
{known}

Exchange:
{speaker}: {user_text}
Assistant: {assistant_text}
"""


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


# Rule-based extraction of explicit statements -------------------------------------------------

_NAME = r"([^\W\d_][\w'\-]*(?:\s+[^\W\d_][\w'\-]*)?)"
_END = r"\s*(?:[.!?,;]|$)"
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"\b(?:my name is|my name's|call me|i am called|i'm called)\s+{_NAME}{_END}", re.I), "name"),
    (re.compile(r"\bi (?:live|am living|now live) in\s+([^.!?;,]{2,60})", re.I), "city"),
    (re.compile(r"\bi work as (?:an? )?([^.!?;,]{2,60})", re.I), "job"),
)
_FORGET = re.compile(
    r"(?:^|[.!?,]\s*|\bplease |\b(?:can|could|would) you )(?:please )?forget (?:that |about )?([^.!?]{2,})", re.I
)
_REMEMBER = re.compile(r"\b(?:remember|(?:do not|don't|never) forget)[,:]?\s+(?:that )?([^.!?]{2,})", re.I)


def rule_facts(user_text: str) -> list[Fact]:
    """Facts from explicit statements: "my name is X" (a correction supersedes), "I live in X",
    "I work as X", "remember that X" and "forget that X"."""
    text = " ".join(_CONTROL.sub(" ", user_text or "").split())
    if not text:
        return []
    facts = []
    for m in _REMEMBER.finditer(text):
        facts.append(Fact(text=_third_person(m.group(1).strip())[:MAX_FACT_CHARS], kind="note"))
    if (
        not facts
        and (m := _FORGET.search(text))
        and not re.search(r"\b(don't|do not|never)\s+$", text[: m.start()], re.I)
    ):
        return [Fact(text=_third_person(m.group(1).strip())[:MAX_FACT_CHARS], kind="note", action="delete")]
    for pattern, slot in _RULES:
        for m in pattern.finditer(text):
            value = m.group(1).strip()
            if slot == "name" and value.split()[0].casefold() in ("not", "a", "the", "that", "this"):
                continue
            facts.append(Fact(text=_slot_text(slot, value), key=f"user.{slot}"))
    return facts


def _slot_text(slot: str, value: str) -> str:
    return {
        "name": f"The user's name is {value}.",
        "city": f"The user lives in {value}.",
        "job": f"The user works as {value}.",
    }[slot]


# First person -> third person. A verb right after "I" (adverbs such as "really" in between) takes
# the third person: "I am" -> "the user is", "I love my dog" -> "the user loves the user's dog".
_PRONOUNS = {"my": "the user's", "me": "the user", "mine": "the user's", "myself": "the user"}
_CONTRACTIONS = {  # "I'm" and the like: subject and verb in one word
    "i'm": "the user is", "i've": "the user has", "i'd": "the user would", "i'll": "the user will",
}  # fmt: skip
_IRREGULAR = {
    "am": "is", "have": "has", "do": "does", "don't": "doesn't", "haven't": "hasn't", "go": "goes",
    "are": "is", "aren't": "isn't", "'m": "is", "were": "was", "weren't": "wasn't",
}  # fmt: skip
# Present-tense verbs that are safe to conjugate (an unknown word, maybe a past tense like
# "bought", is left alone rather than turned into "boughts").
_VERB_TEXT = (
    "like love hate prefer enjoy want need live work own play speak eat drink drive use take study teach "
    "know think believe wear watch run walk cook sing dance swim ride write paint collect visit miss "
    "feel hope plan wish dislike avoid keep spend support follow practise practice train volunteer "
    "attend care suffer struggle sleep wake get make try buy rent share listen"
)
_VERBS = frozenset(_VERB_TEXT.split())
_ADVERB_TEXT = "really also always never still just usually often sometimes actually now truly"
_ADVERBS = frozenset(_ADVERB_TEXT.split())


def _third_person(text: str) -> str:
    """'I am allergic to nuts' -> 'The user is allergic to nuts.'; 'my dog is Rex' -> "The user's dog is Rex."."""
    words = text.replace("\u2019", "'").split()
    out: list[str] = []
    verb_next = False  # the last subject word was "I": the next verb takes the third person
    for word in words:
        core = word.rstrip(",;:")
        tail = word[len(core) :]
        low = core.casefold()
        if low == "i":
            out.append("the user" + tail)
            verb_next = not tail
            continue
        if low in _CONTRACTIONS:
            out.append(_CONTRACTIONS[low] + tail)
            verb_next = False
            continue
        if verb_next and low in _ADVERBS:
            out.append(word)
            continue
        if verb_next and (low in _IRREGULAR or low in _VERBS):
            out.append(_IRREGULAR.get(low) or _third_person_verb(low))
            out[-1] += tail
        else:
            out.append(_PRONOUNS.get(low, core) + tail)
        verb_next = False
    result = " ".join(out).rstrip(" ,;:")
    if result and result[-1] not in ".!?":
        result += "."
    return result[:1].upper() + result[1:]


def _third_person_verb(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in ("a", "e", "i", "o", "u"):
        return verb[:-1] + "ies"
    return verb + "s"
