"""Rule-based extraction of explicit statements about the user: works whatever the model says.

"My name is X" / "No, my name is X" / "call me X", "I live in X" / "I moved to X", "I work as X",
a relative's or pet's name and job, favourites, a birthday, allergies, likes, "remember that X" and
"forget that X". Each sentence is read on its own; questions are skipped ("Do I live in Rome?"
states nothing), and a slot's value that holds no content word ("I live in ... now" -> "now") is
not a fact. Slots (keys) make a new value supersede the old one.
"""

from __future__ import annotations

import re

from memory.types import MAX_FACT_CHARS, Fact

__all__ = ["rule_facts", "third_person"]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WORD = r"[^\W\d_][\w'\-]*"
_CAP = r"(?-i:[A-Z])[\w'\-]*"  # a capitalised word: a name
_END = r"(?=\s*(?:[.!?,;]|$)|\s+(?:and|but|from|by|who|which)\b)"
_VALUE = r"([^.!?;,]{2,60})"
_HEDGE = r"(?:(?:actually|really|in fact|truly|now|still),?\s+)?"  # "my name is actually Dmitry": not "Actually Dmitry"
REL = (
    "sister|brother|wife|husband|mother|mom|mum|father|dad|son|daughter|partner|girlfriend|boyfriend|"
    "friend|boss|cat|dog|grandmother|grandfather|grandma|grandpa|aunt|uncle|cousin|niece|nephew|baby"
)
_SLOTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"\b(?:my name is|my name's|call me|i am called|i'm called)\s+{_HEDGE}({_WORD}(?:\s+{_WORD})?){_END}",
                re.I), "name"),
    (re.compile(rf"\b(?:i'm|i am)\s+({_CAP}){_END}", re.I), "name"),
    (re.compile(rf"\bi (?:live|am living|now live|still live|currently live) in\s+{_VALUE}", re.I), "city"),
    (re.compile(rf"\bi'm (?:now )?living in\s+{_VALUE}", re.I), "city"),
    (re.compile(rf"\bi(?:'ve| have)? (?:just |recently )?moved to\s+{_VALUE}", re.I), "city"),
    (re.compile(rf"\bi (?:now )?work as (?:an? )?{_VALUE}", re.I), "job"),
    (re.compile(r"\bmy birthday is (?:on )?([^.!?;]{2,40})", re.I), "birthday"),
)  # fmt: skip
_REL_NAME = re.compile(
    rf"\bmy ({REL})(?:'s name is| is called| is named| named| called|,)?\s+({_CAP}){_END}"
    rf"|\bi have an? ({REL}) (?:called|named)\s+({_CAP})", re.I)
_REL_JOB = re.compile(rf"\bmy ({REL})(?:,? ({_CAP}),?)? (?:works|is working) as (?:an? )?{_VALUE}", re.I)
_FAVOURITE = re.compile(r"\bmy favou?rite (\w+(?: \w+)?) is\s+([^.!?;,]{2,40})", re.I)
_ALLERGY = re.compile(r"\bi(?:'m| am) (?:very |severely |really )?allergic to\s+([^.!?;]{2,60})", re.I)
_LIKES = re.compile(r"\bi (?:really )?(love|like|hate|prefer|enjoy|dislike)\s+([^.!?;,]{2,60})", re.I)
_FORGET = re.compile(
    r"(?:^|[.!?,]\s*|\bplease |\b(?:can|could|would) you )(?:please )?forget (?:that |about )?([^.!?]{2,})", re.I
)
_REMEMBER = re.compile(r"\b(?:remember|(?:do not|don't|never) forget)[,:]?\s+(?:that )?([^.!?]{2,})", re.I)
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_TAIL = re.compile(  # time words after a value: "I live in Bergen now", "I moved to Madrid last week"
    r"\s+(?:now|today|currently|anymore|these days|at the moment|recently|yesterday|for now"
    r"|(?:last|this|next) (?:week|month|year)|\d+ (?:days?|weeks?|months?|years?) ago)$", re.I)
_CUT = re.compile(r"\s+(?:and|but|with|since|for|because|so|where|which)\b.*$", re.I)
_EMPTY_TEXT = (
    "a an the it this that there here now then not no yes so very just too you me him her them us one some "
    "something nothing anything everything secret"
)
_EMPTY_VALUES = frozenset(_EMPTY_TEXT.split())
_NOT_NAME_TEXT = (
    "sorry fine good okay ok tired back here not so very just glad happy sure ready done afraid "
    "hungry busy well new home alone lost confused"
)
_NOT_NAMES = frozenset(_NOT_NAME_TEXT.split())
_EVERYTHING = frozenset({"everything", "all", "it", "that", "this", "all of it", "all of that", "everything about me"})


def rule_facts(user_text: str) -> list[Fact]:
    """Facts from the explicit statements in `user_text`, in order; a forget request alone."""
    text = " ".join(_CONTROL.sub(" ", user_text or "").split())
    if not text:
        return []
    sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip() and not s.strip().endswith("?")]
    facts, noted = [], []
    for sentence in sentences:  # "remember that X": X as it was said, nothing more read from it
        for m in _REMEMBER.finditer(sentence):
            facts.append(Fact(text=third_person(m.group(1).strip())[:MAX_FACT_CHARS], kind="note"))
            noted.append(sentence)
    if not facts:
        forget = _forget(text)
        if forget is not None:
            return forget
    for sentence in sentences:
        if sentence not in noted:
            facts += _sentence_facts(sentence)
    out, seen = [], set()
    for fact in facts:
        if fact.text.casefold() not in seen:
            seen.add(fact.text.casefold())
            out.append(fact)
    return out


def _forget(text: str) -> list[Fact] | None:
    """A forget request: [the fact to delete], [] when it names nothing one fact could be ("forget
    everything", a joke or a wish the rules do not act on), None when there is none."""
    m = _FORGET.search(text)
    if m is None or re.search(r"\b(don't|do not|never)\s+$", text[: m.start()], re.I):
        return None
    target = m.group(1).strip()
    if target.casefold() in _EVERYTHING:
        return []
    return [Fact(text=third_person(target)[:MAX_FACT_CHARS], kind="note", action="delete")]


def _sentence_facts(sentence: str) -> list[Fact]:
    facts = []
    for pattern, slot in _SLOTS:
        for m in pattern.finditer(sentence):
            value = _clean(m.group(1))
            if value is None or (slot == "name" and not _is_name(value)):
                continue
            facts.append(Fact(text=_slot_text(slot, value), key=f"user.{slot}"))
    for m in _REL_NAME.finditer(sentence):
        rel, name = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        if _is_name(name):
            facts.append(Fact(text=f"The user's {rel.casefold()} is called {name}.", key=f"user.{rel.casefold()}.name"))
    for m in _REL_JOB.finditer(sentence):
        if (job := _clean(m.group(3))) is not None:
            rel = m.group(1).casefold()
            who = f"{rel} {m.group(2)}" if m.group(2) else rel
            facts.append(Fact(text=f"The user's {who} works as {_article(job)}.", key=f"user.{rel}.job"))
    for m in _FAVOURITE.finditer(sentence):
        if (value := _clean(m.group(2))) is not None:
            thing = " ".join(m.group(1).casefold().split())
            facts.append(Fact(text=f"The user's favorite {thing} is {value}.", kind="preference",
                              key="user.favorite." + thing.replace(" ", "_")))  # fmt: skip
    for m in _ALLERGY.finditer(sentence):
        if (value := _clean(m.group(1), cut=False)) is not None:
            facts.append(Fact(text=f"The user is allergic to {value}.", kind="fact"))
    for m in _LIKES.finditer(sentence):
        if (value := _clean(m.group(2))) is not None:
            facts.append(Fact(text=third_person(f"I {m.group(1).casefold()} {value}"), kind="preference"))
    return facts


def _clean(value: str, cut: bool = True) -> str | None:
    """A slot's value without trailing time words or a following clause; None if nothing is left."""
    value = value.strip()
    if cut:
        value = _CUT.sub("", value)
    while (shorter := _TAIL.sub("", value)) != value:
        value = shorter
    value = value.strip(" '\"")
    words = [w.casefold() for w in re.findall(r"\w+", value)]
    if not words or all(w in _EMPTY_VALUES for w in words) or words[0] in ("not", "no"):
        return None
    return value


def _is_name(value: str) -> bool:
    first = value.split()[0].casefold()
    return first not in _EMPTY_VALUES and first not in _NOT_NAMES and not first.isdigit()


def _article(job: str) -> str:
    if job.split()[0].casefold() in ("a", "an", "the"):
        return job
    return f"{'an' if job[0] in 'aeiouAEIOU' else 'a'} {job}"


def _slot_text(slot: str, value: str) -> str:
    return {
        "name": f"The user's name is {value}.",
        "city": f"The user lives in {value}.",
        "job": f"The user works as {_article(value)}.",
        "birthday": f"The user's birthday is on {value}.",
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


def third_person(text: str) -> str:
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
            out.append(_IRREGULAR.get(low) or _verb_s(low))
            out[-1] += tail
        else:
            out.append(_PRONOUNS.get(low, core) + tail)
        verb_next = False
    result = " ".join(out).rstrip(" ,;:")
    if result and result[-1] not in ".!?":
        result += "."
    return result[:1].upper() + result[1:]


def _verb_s(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in ("a", "e", "i", "o", "u"):
        return verb[:-1] + "ies"
    return verb + "s"
