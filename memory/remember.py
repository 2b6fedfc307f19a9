"""The write path: after a turn, store the durable facts of the exchange.

Facts come from the explicit-statement rules and, when the session gives one, from an `extract`
callable (prompt -> the core model's answer). Slow work (the model, embeddings) happens before the
write transaction; inside it, with the write lock held, each fact is checked against the current
memories: a duplicate is skipped, a new value for a slot (key) or a stated correction supersedes
the old fact (kept, marked superseded, with history), "forget" deletes the closest matches.
Call it off the reply's latency path (a worker thread); it never raises for a bad model answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import numpy as np

from assistant.errors import AssistantError, BadInput
from memory.extract import build_extraction_prompt, grounded, parse_facts, rule_facts
from memory.recall import recall
from memory.store import NewMemory, Store, VectorIndex
from memory.types import Exchange, Fact, Instance, RememberResult, User

__all__ = ["Extractor", "outdated_messages", "remember"]

log = logging.getLogger(__name__)

Extractor = Callable[[str], str]  # prompt -> the model's answer
DUPLICATE_SIM = 0.9  # cosine at or above which a new fact repeats a stored one
CORRECTS_SIM = 0.75  # a stated `replaces` text must match a stored fact at least this well
FORGET_SIM = 0.6  # "forget that X" removes stored facts at least this close to X
KNOWN_FOR_PROMPT = 8  # related memories shown to the extractor
RULE_KEYS = frozenset({"user.name"})  # slots only the explicit-statement rules write
# A fact about the user's own name, whatever key the model gave it ("My name is a secret." came
# back keyed "user.secret"): only the rules, which know a name from "a secret", store names.
_OWN_NAME = re.compile(r"\b(?:my|the user's|user's) name\b|\b(?:call me|i am called|i'm called)\b", re.I)


def remember(
    store: Store,
    user: User,
    exchange: Exchange,
    *,
    instance: Instance | None = None,
    extract: Extractor | None = None,
    rules: bool = True,
    after_rules: bool = False,
) -> RememberResult:
    """Extract facts from `exchange` and store them for `user` (private ones in `instance`).

    `after_rules`: the rules were applied to this exchange by an earlier call (the session stores
    them before asking the model): the model's facts for what they read are left out."""
    if instance is not None and instance.user_id != user.id:
        raise BadInput("that instance belongs to another user")
    stated = rule_facts(exchange.user_text)
    facts = list(stated) if rules else []
    rejected: list[tuple[str, str]] = []
    if extract is not None and not any(f.action == "delete" for f in stated):
        model_facts, why = _ask_model(store, user, exchange, instance, extract)
        rejected += why
        kept, why = _checked(store, user, exchange, stated if (rules or after_rules) else [], model_facts)
        rejected += why
        facts += kept
    if not facts:
        return RememberResult(rejected=tuple(rejected))
    vectors = store.embedder.embed([f.text for f in facts])  # facts embed as plain text (see embedding_text)
    replaced = np.zeros_like(vectors)  # vectors of the facts a correction names, made before the write lock
    if any(f.replaces for f in facts):
        replaced = store.embedder.embed([f.replaces or "" for f in facts])
    result = _apply(store, user, instance, exchange, facts, vectors, replaced)
    return RememberResult(
        added=result.added,
        superseded=result.superseded,
        deleted=result.deleted,
        duplicates=result.duplicates,
        rejected=tuple(rejected) + result.rejected,
    )


def _ask_model(
    store: Store, user: User, exchange: Exchange, instance: Instance | None, extract: Extractor
) -> tuple[list[Fact], list[tuple[str, str]]]:
    known = (
        recall(store, user, exchange.user_text, instance=instance, k=KNOWN_FOR_PROMPT)
        if exchange.user_text.strip()
        else []
    )
    try:
        answer = extract(build_extraction_prompt(exchange, known))
    except (AssistantError, ValueError, RuntimeError, OSError, TimeoutError) as err:
        log.warning("fact extraction failed: %s", err)
        return [], [("", f"the extractor failed: {err}")]
    facts, rejected = parse_facts(answer)
    for text, why in rejected:
        log.info("extracted fact rejected (%s): %s", why, text)
    return facts, rejected


def outdated_messages(store: Store, user: User) -> set[int]:
    """Ids of the user's messages whose facts were since corrected or deleted."""
    rows = store.read(
        "SELECT DISTINCT h.message_id FROM memory_history h JOIN memories m ON m.id = h.memory_id"
        " WHERE h.user_id = ? AND h.action = 'add' AND m.status != 'active' AND h.message_id IS NOT NULL",
        (user.id,),
    )
    return {int(r[0]) for r in rows}


def _checked(
    store: Store, user: User, exchange: Exchange, stated: list[Fact], model_facts: list[Fact]
) -> tuple[list[Fact], list[tuple[str, str]]]:
    """The model's facts that may be stored: in the user's own words (memory.extract.grounded), not
    one the rules found already, no name the rules did not see (the 0.5B stored "a secret" and
    its prompt's example as names), and no fact the user deleted or corrected unless the rules read
    it again."""
    seen = {f.key for f in stated if f.key} | {_norm(f.text) for f in stated}
    deleted = {_norm(r["text"]) for r in store.read(
        "SELECT text FROM memories WHERE user_id = ? AND status != 'active'", (user.id,))}  # fmt: skip
    kept, rejected = [], []
    for fact in model_facts:
        why = grounded(fact, exchange.user_text)
        if why is None and (fact.key in seen or _norm(fact.text) in seen):
            continue
        if why is None and (fact.key in RULE_KEYS or _OWN_NAME.search(fact.text)):
            why = "the user's name is read from their words by the rules only"
        if why is None and fact.action == "add" and _norm(fact.text) in deleted:
            why = "the user deleted or corrected this fact"
        if why is None:
            kept.append(fact)
        else:
            log.info("extracted fact rejected (%s): %s", why, fact.text)
            rejected.append((fact.text[:80], why))
    return kept, rejected


def _apply(
    store: Store,
    user: User,
    instance: Instance | None,
    exchange: Exchange,
    facts: list[Fact],
    vectors: np.ndarray,
    replaced: np.ndarray,
) -> RememberResult:
    added, superseded, deleted, duplicates, rejected = [], [], [], [], []
    with store.transaction() as db:
        index = store.vector_index(user)  # read under the write lock: no other writer can interleave
        scope = instance.id if instance is not None else 0  # what this instance sees (0: user-wide only)
        for n, (fact, vec) in enumerate(zip(facts, vectors, strict=True)):
            instance_id = instance.id if (instance is not None and fact.scope == "instance") else None
            ids, sims = index.cosines(vec, scope)
            if fact.action == "delete":
                for i in np.flatnonzero(sims >= FORGET_SIM):
                    if store.retire(db, user, int(ids[i]), "deleted", exchange.message_id):
                        deleted.append(int(ids[i]))
                continue
            same_slot = store.active_by_key(db, user, fact.key, instance_id) if fact.key else []
            if _said_later(db, same_slot, exchange.message_id):
                rejected.append((fact.text[:80], "a later message already set this"))
                continue
            if any(_norm(r["text"]) == _norm(fact.text) for r in same_slot):
                duplicates.append(int(same_slot[0]["id"]))
                continue
            if not fact.key and len(sims) and sims.max() >= DUPLICATE_SIM:
                duplicates.append(int(ids[int(sims.argmax())]))
                continue
            if any(_norm(fact.text) == _norm(f.text) for f in facts[:n] if f.action == "add"):
                continue  # the same fact twice in one answer
            try:
                item = NewMemory(fact.text, kind=fact.kind, key=fact.key, speaker=exchange.speaker,
                                 said_at=exchange.said_at, instance_id=instance_id, embedding=vec)  # fmt: skip
                new_id = store.insert_memory(db, user, item, exchange.said_at, exchange.message_id)
            except BadInput as err:
                rejected.append((fact.text[:80], err.message))
                continue
            added.append(new_id)
            old_ids = [int(r["id"]) for r in same_slot]
            if fact.replaces and not old_ids:
                old_ids = _closest(index, replaced[n], scope)
            for old in old_ids:
                if store.retire(db, user, old, "superseded", exchange.message_id, replaced_by=new_id):
                    superseded.append(old)
        store.bump(db, user)
    return RememberResult(tuple(added), tuple(superseded), tuple(deleted), tuple(duplicates), tuple(rejected))


def _said_later(db, rows: list, message_id: int | None) -> bool:
    """Whether any of these memories was stored from a message newer than `message_id`: then an
    older statement (its extraction finished late) must not supersede what was said after it."""
    if message_id is None or not rows:
        return False
    marks = ",".join("?" * len(rows))
    found = db.execute(
        f"SELECT 1 FROM memory_history WHERE action = 'add' AND message_id > ? AND memory_id IN ({marks}) LIMIT 1",
        (message_id, *[int(r["id"]) for r in rows]),
    ).fetchone()
    return found is not None


def _closest(index: VectorIndex, vec: np.ndarray, scope: int) -> list[int]:
    """The stored fact a stated correction refers to, if one is close enough."""
    ids, sims = index.cosines(vec, scope)
    if not len(ids):
        return []
    best = int(sims.argmax())
    return [int(ids[best])] if sims[best] >= CORRECTS_SIM else []


def _norm(text: str) -> str:
    return " ".join(text.casefold().replace(".", " ").split())
