"""Conversation quality on the real offline models: scripted multi-turn conversations, checked.

Each script is a few turns (typed or spoken through the bundled Piper voice, sent as audio), with
restarts (a new store and session on the same data dir, as a new process would see it), deletions
made as the Memory tab makes them, and checks on the answers (what they must and must not say) and
on the stored memories at the end (what is active, what was superseded or never stored). It prints
the share of checks right, each failure, and the time per turn (first audio, whole reply) and of
the background fact extraction.

    python bench/conversation.py [--limit N] [--every N] [--only NAME] [--set dev|heldout|all]
        [--model 0.5b|1.5b] [--code DIR] [--json OUT]

`--code /work/main` runs another checkout's code (today's) with the same scripts: the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the scripts
@dataclass(frozen=True)
class T:
    """One user turn: `has` (each item: alternatives separated by '|', one must be in the answer),
    `lacks` (none may be). `spoken`: sent as Piper speech instead of text."""

    text: str
    has: tuple[str, ...] = ()
    lacks: tuple[str, ...] = ()
    spoken: bool = False


RESTART = "<restart>"  # a new store and session on the same data dir


@dataclass(frozen=True)
class Forget:
    """The user deletes (Memory tab) every active memory holding `text`."""

    text: str


@dataclass(frozen=True)
class Script:
    name: str
    turns: tuple
    active: tuple[str, ...] = ()  # each must be in an active memory
    inactive: tuple[str, ...] = ()  # none may be in an active memory
    superseded: tuple[str, ...] = ()  # each must be in a superseded memory
    persona: dict | None = None  # name, style


ME = ("the user",)  # an answer about the user is said to them, not about them
GROK = ("witty", "curious")  # the default persona's traits: never said of the user


def Q(text, has=(), lacks=(), spoken=False):
    """A question; its answer is said to the user ("the user" never in it)."""
    return T(text, tuple(has), tuple(lacks) + ME, spoken)


def QY(text, has=(), lacks=(), spoken=False):
    """A question about the user: answered in the second person ("Your name is ...")."""
    return Q(text, (*has, "you"), (*lacks, "my name is"), spoken)


def S(text, spoken=False):
    """A statement: the reply neither talks of "the user" nor gives them the persona's traits."""
    return T(text, (), ME + GROK, spoken)

LONG = "The cat sat on the mat. " * 400  # 10,000 characters
SCRIPTS: list[Script] = [
    Script("igor-demo", (S("My name is Egor."), S("No, my name is Igor."), QY("What is my name?", ["Igor"], ["Egor"])),
           active=("Igor",), inactive=("Egor",), superseded=("Egor",)),
    Script("igor-restart", (S("My name is Egor."), S("No, my name is Igor."), RESTART,
                            QY("What is my name?", ["Igor"], ["Egor"]), QY("Who am I?", ["Igor"], ["Egor", "Grok"])),
           active=("Igor",), inactive=("Egor",)),
    Script("name-plain", (S("Hi, I'm Marta and I like tea."), QY("What's my name?", ["Marta"])), active=("Marta",)),
    Script("name-call-me", (S("Please call me Sasha."), RESTART, QY("What should you call me?", ["Sasha"])),
           active=("Sasha",)),
    Script("name-actually", (S("My name is Jon."), S("Actually, my name is John."), RESTART,
                             QY("Do you remember my name?", ["John"])), active=("John",), inactive=("Jon.",)),
    Script("move-city", (S("I live in Berlin."), S("I moved to Madrid last week."),
                         QY("Where do I live?", ["Madrid"], ["Berlin"])),
           active=("Madrid",), inactive=("Berlin",), superseded=("Berlin",)),
    Script("move-restart", (S("I live in Oslo."), S("Actually I live in Bergen now."), RESTART,
                            QY("Which city do I live in?", ["Bergen"], ["Oslo"])),
           active=("Bergen",), inactive=("Oslo",)),
    Script("city-then-chat", (S("I live in Lisbon."), S("Tell me about the sea in one sentence."),
                              QY("Where do I live?", ["Lisbon"])), active=("Lisbon",)),
    Script("job", (S("I work as a nurse."), RESTART, QY("What is my job?", ["nurse"])), active=("nurse",)),
    Script("job-change", (S("I work as a teacher."), S("I changed jobs, I work as a pilot now."),
                          QY("What do I do for work?", ["pilot"], ["teacher"])),
           active=("pilot",), inactive=("teacher",)),
    Script("sister-job", (S("My sister Anna works as a doctor."), Q("What does my sister do?", ["doctor"], ["Grok"])),
           active=("doctor",)),
    Script("brother-name", (S("My brother's name is Tom."), RESTART, Q("What is my brother's name?", ["Tom"])),
           active=("Tom",)),
    Script("dog", (S("I have a dog called Rex."), Q("What is my dog's name?", ["Rex"])), active=("Rex",)),
    Script("wife", (S("My wife is called Lena."), RESTART, Q("What is my wife's name?", ["Lena"])),
           active=("Lena",)),
    Script("pref-coffee", (S("I love black coffee."), RESTART, Q("What drink do I love?", ["coffee"])),
           active=("coffee",)),
    Script("pref-color", (S("My favorite color is green."), Q("What is my favorite color?", ["green"])),
           active=("green",)),
    Script("pref-change", (S("My favorite color is blue."), S("No, my favorite color is red."),
                           Q("What is my favorite color?", ["red"], ["blue"])),
           active=("red",), inactive=("blue",)),
    Script("allergy-peanuts", (S("I'm allergic to peanuts."), RESTART,
                               Q("Can I eat a peanut butter sandwich?", ["allerg|no|not|avoid"], ["Yes."])),
           active=("peanut",)),
    Script("allergy-shellfish", (S("I am allergic to shellfish."), Q("Should I order the shrimp pasta?",
                                                                     ["allerg|no|not|avoid"], ["Yes."])),
           active=("shellfish",)),
    Script("birthday", (S("My birthday is on March 3."), RESTART, Q("When is my birthday?", ["March"])),
           active=("March",)),
    Script("date-trip", (S("I fly to Tokyo on Friday."), Q("When do I fly to Tokyo?", ["Friday"])),
           active=("Tokyo",)),
    Script("earlier-turn", (S("Remember the number 42 for me."), S("What is the capital of Italy?"),
                            Q("What number did I ask you to remember?", ["42"])), active=("42",)),
    Script("earlier-topic", (S("Let's talk about volcanoes."), Q("What did I say we should talk about?",
                                                                ["volcano"]))),
    Script("no-name-said", (S("Tell me a fun fact about owls."), S("Thanks!"), QY("What is my name?", [],
                                                                                 ["Igor", "Egor"])),
           inactive=("Igor", "name is")),
    Script("no-fact-sea", (S("Tell me about the sea in one sentence."), S("And the sky?")),
           inactive=("Igor", "lives in", "name is")),
    Script("forget-holds", (S("My name is Pavel."), Forget("Pavel"), S("Tell me about the sea in one sentence."),
                            S("What's a good name for a cat?")), inactive=("Pavel",)),
    Script("forget-cli", (S("I live in Rome."), S("Please forget that I live in Rome."),
                          S("Tell me about pizza in one sentence.")), inactive=("Rome",)),
    Script("forget-said-again", (S("I live in Paris."), Forget("Paris"), S("I live in Paris."),
                                 QY("Where do I live?", ["Paris"])), active=("Paris",)),
    Script("name-secret", (S("My name is a secret."), QY("What is my name?", [], ["a secret is"])),
           inactive=("secret",)),
    Script("forget-everything", (S("My name is Olga."), S("Forget everything."), Q("Hello, how are you?"))),
    Script("long-prompt", (S("My name is Igor."), Q("Summarize this in one sentence: " + LONG,
                                                    ["cat|mat"], ["You are", "Igor"]))),
    Script("persona-pirate", (Q("What is the capital of France?", ["Paris", "ahoy|matey|arr"]),
                              Q("How many legs does a spider have?", ["ahoy|matey|arr"])),
           persona={"name": "Captain", "style": "You talk like a pirate: say 'Ahoy' or 'matey' in every reply."}),
    Script("persona-name", (Q("What is your name?", ["Nova"], ["Grok"]), S("My name is Kim."),
                            QY("What is my name?", ["Kim"], ["Nova is", "Curious"])),
           persona={"name": "Nova", "style": "Calm and kind: you speak softly and briefly."}),
    Script("persona-not-user", (S("My name is Egor."), QY("Who am I?", ["Egor"], ["witty", "curious", "Grok"]))),
    Script("grok-name", (Q("What's your name?", ["Grok"]),)),
    Script("relative-grok", (S("My mother works as an architect."), Q("What does my mother do?", ["architect"],
                                                                       ["You are Grok", "witty"]))),
    Script("spoken-name", (S("My name is Igor.", spoken=True), QY("What is my name?", ["Igor"])), active=("Igor",)),
    Script("spoken-city", (S("I live in Boston.", spoken=True), RESTART, QY("Where do I live?", ["Boston"])),
           active=("Boston",)),
    Script("spoken-question", (S("My name is Lucy."), QY("What is my name?", ["Lucy"], spoken=True)),
           active=("Lucy",)),
    Script("spoken-move", (S("I live in Denver."), S("I moved to Seattle.", spoken=True),
                           QY("Where do I live?", ["Seattle"], ["Denver"])),
           active=("Seattle",), inactive=("Denver",)),
    Script("two-facts", (S("My name is Ben and I live in Dublin."), RESTART,
                         QY("What is my name?", ["Ben"]), QY("Where do I live?", ["Dublin"])),
           active=("Ben", "Dublin")),
    Script("followup-ref", (S("My cat is called Mochi."), S("She is three years old."),
                            Q("What is my cat called?", ["Mochi"])), active=("Mochi",)),
]


# Held out: written after the scripts above were tuned on, and never tuned on themselves (other
# names, places and phrasings of the same kinds, and kinds the dev set lacks). Report both.
HELDOUT: list[Script] = [
    Script("h-name-sorry", (S("My name is Dmitri."), S("Sorry, my name is actually Dmitry."),
                            QY("What is my name?", ["Dmitry"])), active=("Dmitry",), inactive=("Dmitri.",)),
    Script("h-name-this-is", (S("Hello, I'm Priya."), RESTART, QY("Do you know my name?", ["Priya"])),
           active=("Priya",)),
    Script("h-relocated", (S("I live in Chicago."), S("I moved to Austin in June."), RESTART,
                           QY("Where do I live now?", ["Austin"], ["Chicago"])),
           active=("Austin",), inactive=("Chicago",)),
    Script("h-city", (S("I live in Warsaw."), QY("Which city do I live in?", ["Warsaw"])),
           active=("Warsaw",)),
    Script("h-son-job", (S("My son Leo works as a chef."), Q("What does my son do for a living?", ["chef"],
                                                             ["You are Grok"])), active=("chef",)),
    Script("h-daughter", (S("My daughter's name is Maya."), RESTART, Q("What is my daughter's name?", ["Maya"])),
           active=("Maya",)),
    Script("h-brother-fix", (S("My brother is called Max."), S("No, my brother is called Alex."),
                             Q("What is my brother's name?", ["Alex"], ["Max"])), active=("Alex",)),
    Script("h-milk", (S("I'm allergic to milk."), RESTART,
                         Q("Is a milkshake a good idea for me?", ["allerg|no|not|avoid"], ["Yes."])),
           active=("milk",)),
    Script("h-birthday-june", (S("My birthday is on June 12."), RESTART, Q("When is my birthday?", ["June"])),
           active=("June",)),
    Script("h-music", (S("I love jazz music."), Q("What music do I love?", ["jazz"])), active=("jazz",)),
    Script("h-pref-tea", (S("My favorite drink is green tea."), RESTART, Q("What is my favorite drink?", ["tea"])),
           active=("tea",)),
    Script("h-job-restart", (S("I work as an engineer."), RESTART, QY("What do I do for work?", ["engineer"])),
           active=("engineer",)),
    Script("h-job-swap", (S("I work as a waiter."), S("Actually, I work as a baker now."),
                          QY("What is my job?", ["baker"], ["waiter"])), active=("baker",), inactive=("waiter",)),
    Script("h-lucky", (S("Remember that my lucky number is 7."), S("What is the capital of Spain?"),
                       Q("What is my lucky number?", ["7"])), active=("7",)),
    Script("h-no-name", (S("What is two plus two?"), S("Nice."), QY("Do you know my name?", [], ["Igor", "Egor"])),
           inactive=("name is",)),
    Script("h-no-fact", (S("Give me a tip for sleeping better."), S("Thank you.")),
           inactive=("lives in", "name is", "works as")),
    Script("h-forget-job", (S("I work as a lawyer."), Forget("lawyer"), S("Tell me a short joke."),
                            S("What is a good book?")), inactive=("lawyer",)),
    Script("h-butler", (Q("What is the tallest mountain?", ["Everest", "sir|madam"]),
                        Q("Name a fruit.", ["sir|madam"])),
           persona={"name": "Jeeves", "style": "You are a formal butler: call the user 'sir' in every reply."}),
    Script("h-persona-name", (Q("Who are you?", ["Iris"], ["Grok"]), S("My name is Omar."),
                              QY("What is my name?", ["Omar"], ["Iris is"])),
           persona={"name": "Iris", "style": "Cheerful and brief."}),
    Script("h-spoken-name", (S("My name is Hannah.", spoken=True), RESTART, QY("What is my name?", ["Hannah"])),
           active=("Hannah",)),
    Script("h-spoken-job", (S("I work as a dentist.", spoken=True), QY("What is my job?", ["dentist"])),
           active=("dentist",)),
    Script("h-spoken-ask", (S("I live in Toronto."), QY("Where do I live?", ["Toronto"], spoken=True)),
           active=("Toronto",)),
    Script("h-two-facts", (S("I'm Rosa and I work as a pharmacist."), RESTART,
                           QY("What is my name?", ["Rosa"]), QY("What is my job?", ["pharmacist"])),
           active=("Rosa", "pharmacist")),
    Script("h-pet", (S("I have a parrot named Kiwi."), RESTART, Q("What is my parrot's name?", ["Kiwi"])),
           active=("Kiwi",)),
]
SETS = {"dev": SCRIPTS, "heldout": HELDOUT, "all": SCRIPTS + HELDOUT}


# ------------------------------------------------------------------ running
@dataclass
class Tally:
    right: int = 0
    total: int = 0
    failures: list[str] = field(default_factory=list)
    first_audio_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    memory_s: list[float] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.total += 1
        self.right += bool(ok)
        if not ok:
            self.failures.append(what)


def _answer_checks(tally: Tally, script: Script, turn: T, answer: str) -> None:
    low = answer.casefold()
    for want in turn.has:
        tally.check(any(w.casefold() in low for w in want.split("|")), f"{script.name}: {turn.text[:40]!r} -> "
                    f"{answer[:120]!r} lacks {want!r}")
    for bad in turn.lacks:
        tally.check(bad.casefold() not in low, f"{script.name}: {turn.text[:40]!r} -> {answer[:120]!r} has {bad!r}")
    said = turn.text.strip().rstrip(".!?").casefold()
    if len(said.split()) >= 4 and len(said) < 200:  # the user's words are not repeated back
        tally.check(said not in low, f"{script.name}: {turn.text[:40]!r} -> {answer[:120]!r} repeats the user")


def _memory_checks(tally: Tally, script: Script, memories) -> None:
    active = [m.text.casefold() for m in memories if m.status == "active"]
    superseded = [m.text.casefold() for m in memories if m.status == "superseded"]
    shown = "; ".join(f"{m.status[0]}:{m.text}" for m in memories)[:300]
    for want in script.active:
        tally.check(any(want.casefold() in a for a in active),
                    f"{script.name}: no active memory with {want!r} [{shown}]")
    for bad in script.inactive:
        tally.check(not any(bad.casefold() in a for a in active),
                    f"{script.name}: an active memory holds {bad!r} [{shown}]")
    for old in script.superseded:
        tally.check(any(old.casefold() in s for s in superseded),
                    f"{script.name}: no superseded memory with {old!r} [{shown}]")


def _speech(backend, text: str):
    from audio.io import resample

    pcm = backend.speaker.speak(text)
    return resample(pcm, backend.sample_rate, 16_000)


async def _say(session, turn, speak: bool):
    from assistant.events import Done, Error

    done = None
    async for ev in session.converse(turn, speak=speak):
        if isinstance(ev, Done):
            done = ev
        elif isinstance(ev, Error):
            return None, ev.message
    t0 = time.perf_counter()
    await session.wait_for_memory()
    return done, time.perf_counter() - t0


def run_script(engine, script: Script, tally: Tally, max_new_tokens: int) -> None:
    from assistant.session import Session
    from assistant.turns import Turn
    from memory import Persona, create_persona, open_store

    data = tempfile.mkdtemp(prefix="conv-")
    user = f"bench-{script.name}"
    store = open_store(data, embedder=_EMBEDDER.get("e"))
    _EMBEDDER["e"] = store.embedder
    persona = None
    if script.persona:
        persona = script.persona["name"]
        create_persona(store, store.user(user), Persona(name=persona, style=script.persona["style"]))

    def session():
        return Session(engine, store, user=user, persona_name=persona, max_new_tokens=max_new_tokens)

    s = session()
    for item in script.turns:
        if item == RESTART:
            store.close()
            store = open_store(data, embedder=_EMBEDDER["e"])
            s = session()
            continue
        if isinstance(item, Forget):
            u = store.user(user)
            ids = [m.id for m in store.memories(u) if item.text.casefold() in m.text.casefold()]
            store.delete_memories(u, ids)
            continue
        turn = Turn(audio=_speech(engine.backend, item.text)) if item.spoken else Turn(text=item.text)
        done, took = asyncio.run(_say(s, turn, speak=True))
        if done is None:
            tally.check(False, f"{script.name}: {item.text[:40]!r} -> error {took}")
            continue
        if done.timings.first_audio_s is not None:
            tally.first_audio_s.append(done.timings.first_audio_s)
        tally.total_s.append(done.timings.total_s)
        tally.memory_s.append(took)
        _answer_checks(tally, script, item, done.text)
        print(f"  {item.text[:60]!r} -> {done.text[:100]!r} ({done.timings.first_audio_s or 0:.2f} s)", flush=True)
    _memory_checks(tally, script, store.memories(store.user(user), include_inactive=True))
    store.close()


_EMBEDDER: dict = {}  # one sentence embedder for every store of the run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="run only the first N scripts")
    ap.add_argument("--only", default=None, help="run only scripts whose name holds this")
    ap.add_argument("--every", type=int, default=1, help="run every Nth script (a spread sample)")
    ap.add_argument("--set", choices=sorted(SETS), default="dev",
                    help="dev: the scripts tuned on; heldout: the ones never tuned on; all")
    ap.add_argument("--model", default="0.5b")
    ap.add_argument("--code", default=str(ROOT), help="the checkout whose code runs (default: this one)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.code).resolve()))

    from assistant.backends.cascade import load_cascade_backend
    from assistant.config import EngineConfig, Profile
    from assistant.engine import Engine

    scripts = [s for s in SETS[args.set][:: args.every] if args.only is None or args.only in s.name][: args.limit]
    config = EngineConfig(profile=Profile.OFFLINE, model=args.model)
    engine = Engine(load_cascade_backend(config), config)
    from assistant.session import Session
    from assistant.turns import Turn

    asyncio.run(_say(Session(engine), Turn(text="Hi"), speak=True))  # the engine's warm-up is not a turn
    tally = Tally()
    t0 = time.perf_counter()
    try:
        for script in scripts:
            print(f"{script.name}", flush=True)
            run_script(engine, script, tally, args.max_new_tokens)
            fa = statistics.median(tally.first_audio_s) if tally.first_audio_s else 0.0
            print(f"  so far: {tally.right}/{tally.total} checks right, first audio p50 {fa:.3f} s "
                  f"over {len(tally.first_audio_s)} turns", flush=True)
    finally:
        engine.close()
    wall = time.perf_counter() - t0
    med = statistics.median
    figures = {
        "code": args.code, "set": args.set, "scripts": len(scripts), "right": tally.right, "checks": tally.total,
        "share": tally.right / max(1, tally.total), "turns": len(tally.total_s),
        "first_audio_p50_s": med(tally.first_audio_s) if tally.first_audio_s else None,
        "turn_p50_s": med(tally.total_s) if tally.total_s else None,
        "memory_p50_s": med(tally.memory_s) if tally.memory_s else None, "wall_s": wall,
        "failures": tally.failures,
    }  # fmt: skip
    print("\nfailures:\n  " + "\n  ".join(tally.failures))
    print(f"\n{tally.right}/{tally.total} checks right ({figures['share']:.1%}) in {len(scripts)} scripts, "
          f"{figures['turns']} turns; first audio p50 {figures['first_audio_p50_s'] or 0:.3f} s, "
          f"reply p50 {figures['turn_p50_s'] or 0:.3f} s, "
          f"memory after a turn p50 {figures['memory_p50_s'] or 0:.3f} s; "
          f"{wall:.0f} s in all ({args.code})")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
