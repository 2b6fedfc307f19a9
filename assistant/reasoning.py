"""Thinking before answering, and Big Brain: more compute on a hard question.

Three modes (`Request.reasoning`):

- "none": the model answers at once.
- "think": the model reasons step by step, visibly, then gives the answer on a last line that
  starts with "Answer:" (Qwen3's `<think>...</think>` is read too). `ThoughtSplitter`, run by each
  stream's `emit_text`, sends the reasoning out as `ThinkingDelta` events and only the answer as
  `TextDelta`: the answer alone is spoken, stored and remembered.
- "big_brain": several attempts (`Request.attempts`) at once, in one batch through the engine:
  chains of thought, and programs whose printed result is the answer, run in the wasm sandbox
  (assistant/sandbox.py). The answers are normalised and the one most attempts agree on is kept;
  a program's result counts for more than a chain of thought; a tie goes to a judge (one more
  model call that re-reads the question). Each attempt and the verdict stream as thinking.

Backends whose speech is made from the text they emit (the offline cascade: Piper reads the
answer) think and speak in one pass; the others (an omni model's talker hears every token) think
silently and then speak the answer in a second, short pass.

API mapping (OpenAI's `reasoning_effort`): none, minimal, low -> "none"; medium -> "think";
high -> "big_brain".
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace

from assistant.errors import BadInput
from assistant.events import AudioChunk, Done, Error, Event, TextDelta, ThinkingDelta, Timings
from assistant.turns import Message, Request, new_turn_id

log = logging.getLogger(__name__)

__all__ = [
    "EFFORTS",
    "MODES",
    "Attempt",
    "ThoughtSplitter",
    "big_brain",
    "mode_for_effort",
    "normalise",
    "run_program",
    "think",
    "vote",
    "wants_thinking",
]

MODES = ("none", "think", "big_brain")
EFFORTS = {"none": "none", "minimal": "none", "low": "none", "medium": "think", "high": "big_brain"}
DEFAULT_ATTEMPTS = 5
MAX_ATTEMPTS = 16
THINK_TOKENS = 768  # a chain of thought needs room; a shorter limit from the caller is raised to this
FILLER = "Let me think about that."

THINK_INSTRUCTION = (
    "Think step by step before you answer: write your reasoning first, one step a line, checking "
    "each calculation. Then end with a last line that starts with 'Answer:' followed by only the "
    "final answer (a number, or a short sentence)."
)
PROGRAM_INSTRUCTION = (
    "Solve the user's question with a short Python program that computes the answer and prints only "
    "the final answer. Reply with just the program in one ```python code block, in this style:\n"
    "```python\nbooks = 4\nprice_each = 6\npaid = 30\ncost = books * price_each\nchange = paid - cost\n"
    "print(change)\n```\nOne line for each number the question gives, named for what it is, then each "
    "step of the calculation, then one print. No comments, no functions, no input()."
)
PROGRAM_TOKENS = 160  # a program in that style takes 30-80 tokens
JUDGE_PROMPT = (
    "Question:\n{question}\n\nCandidate answers:\n{options}\n\nRe-read the question carefully and "
    "work out which candidate is right. Reply with the letter of the right candidate only."
)
SAY_PROMPT = "Say this answer to the user in one short sentence, nothing else: {answer}"

# "Answer: 42", "**Final answer:** 42", "ANSWER - 42" at the start of a line
_ANSWER_LINE = re.compile(r"^\s*[*#_]*\s*(?:final\s+)?answer\s*[*_]*\s*[:：\-–]\s*[*_]*\s*", re.IGNORECASE)
_MARKER_ROOM = 24  # a line this long that is not an answer marker yet never becomes one
_OPEN, _CLOSE = "<think>", "</think>"
_FALLBACK_CHARS = 300  # the most of a reply's end taken as its answer when it gave no marker
_TRIGGERS = re.compile(
    r"\b(think (?:hard|carefully|it through|step by step)|think about (?:this|it) (?:hard|carefully)|"
    r"take your time|big brain)\b", re.IGNORECASE)


def mode_for_effort(effort: str | None) -> str:
    """OpenAI's `reasoning_effort` -> a mode; BadInput naming the values for anything else."""
    if effort is None:
        return "none"
    if not isinstance(effort, str) or effort not in EFFORTS:
        raise BadInput(f"reasoning_effort must be one of {', '.join(EFFORTS)} (got {effort!r})")
    return EFFORTS[effort]


def wants_thinking(text: str) -> bool:
    """The user asked for it in so many words ("think hard about this", "take your time")."""
    return bool(_TRIGGERS.search(text or ""))


class ThoughtSplitter:
    """Splits a streamed reply into reasoning and answer, as it streams.

    `feed(delta, final)` returns [("thinking" | "answer", text), ...]. The reasoning streams on as it
    comes (a line is held only while it could still turn out to be the answer marker); once the
    marker (or `</think>`) is seen, everything after it is the answer. A reply that ends without a
    marker gets its last sentence as the answer."""

    def __init__(self) -> None:
        self.state = "start"  # start (undecided) | lines | tagged (<think>) | answer
        self.buf = ""
        self.thought = ""
        self._line_is_thought = False  # the current line was let out as reasoning already
        self.answered = False  # some of the answer was let out

    def feed(self, delta: str, final: bool = False) -> list[tuple[str, str]]:
        self.buf += delta
        out: list[tuple[str, str]] = []
        if self.state == "start":
            head = self.buf.lstrip()
            if not final and len(head) < len(_OPEN) and _OPEN.startswith(head):
                return out  # could still be "<think>"
            if head.startswith(_OPEN):
                self.state, self.buf = "tagged", head[len(_OPEN):]
            else:
                self.state = "lines"
        if self.state == "tagged":
            self._tagged(out, final)
        elif self.state == "lines":
            self._lines(out, final)
        if self.state == "answer" and self.buf:
            # only the answer's start loses its spaces: a later delta's leading space joins two words
            out.append(("answer", self.buf if self.answered else self.buf.lstrip()))
            self.answered, self.buf = self.answered or bool(self.buf.strip()), ""
        if final and self.state != "answer":
            self._fallback(out)
        return [(k, t) for k, t in out if t]

    def _think(self, out: list, text: str) -> None:
        if text:
            self.thought += text
            out.append(("thinking", text))

    def _tagged(self, out: list, final: bool) -> None:
        end = self.buf.find(_CLOSE)
        if end >= 0:
            self._think(out, self.buf[:end])
            self.buf, self.state = self.buf[end + len(_CLOSE):].lstrip(), "answer"
            if _ANSWER_LINE.match(self.buf):  # "</think>\nAnswer: 42"
                self.buf = _ANSWER_LINE.sub("", self.buf, count=1)
            return
        keep = 0 if final else len(_CLOSE) - 1  # a tag split across deltas
        cut = max(0, len(self.buf) - keep)
        self._think(out, self.buf[:cut])
        self.buf = self.buf[cut:]

    def _lines(self, out: list, final: bool) -> None:
        while True:
            newline = self.buf.find("\n")
            line = self.buf if newline < 0 else self.buf[: newline + 1]
            if not self._line_is_thought:
                marker = _ANSWER_LINE.match(line)
                if marker and (newline >= 0 or final or len(line) > marker.end()):
                    self.buf, self.state = self.buf[marker.end():], "answer"
                    return
                if newline < 0 and not final and len(line) <= _MARKER_ROOM:
                    return  # could still become "Answer:"
            if newline < 0:
                self._think(out, line)
                self.buf, self._line_is_thought = "", not final
                return
            self._think(out, line)
            self.buf, self._line_is_thought = self.buf[newline + 1:], False

    def _fallback(self, out: list) -> None:
        """No marker came: the reply's last sentence is the answer (it stays in the reasoning too)."""
        if self.buf:
            self._think(out, self.buf)
            self.buf = ""
        lines = [ln.strip() for ln in self.thought.strip().splitlines() if ln.strip()]
        if not lines:
            return
        sentences = re.split(r"(?<=[.!?])\s+", lines[-1])
        answer = sentences[-1] if sentences[-1].strip(" .") else lines[-1]
        if len(answer) > _FALLBACK_CHARS:  # a last "sentence" that runs on: its end, from a word
            tail = answer[-_FALLBACK_CHARS:]
            answer = tail.split(" ", 1)[-1] if " " in tail else tail
        self.state = "answer"
        out.append(("answer", answer.strip()))


# ---------------------------------------------------------------------------------------- answers

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalise(answer: str) -> str:
    """What two answers must share to agree: the last number in it (commas, units and a trailing
    .0 dropped), else the words in lower case without punctuation."""
    text = (answer or "").strip().replace("$", "").replace("**", "")
    numbers = _NUMBER.findall(text)
    if numbers:
        value = numbers[-1].replace(",", "")
        if "." in value:
            value = value.rstrip("0").rstrip(".")
        return value if value not in ("-0", "") else "0"
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass
class Attempt:
    index: int
    kind: str  # "thought" | "program"
    answer: str = ""  # as the attempt gave it
    key: str = ""  # normalise(answer); "" when it failed
    detail: str = ""  # the reasoning, or the program and what it printed
    error: str = ""
    tokens: int = 0
    prompt_tokens: int = 0


def vote(attempts: list[Attempt]) -> tuple[str | None, list[str]]:
    """The normalised answer most attempts agree on (a program's result weighs 1.5: it was
    computed), and the tied leaders when there is no single one."""
    scores: Counter[str] = Counter()
    for a in attempts:
        if a.key:
            scores[a.key] += 1.5 if a.kind == "program" else 1.0
    if not scores:
        return None, []
    best = max(scores.values())
    leaders = [k for k, v in scores.items() if v == best]
    return (leaders[0] if len(leaders) == 1 else None), leaders


def settled(attempts: list[Attempt], left: list[Request]) -> bool:
    """Whether the attempts still running could no longer change the winner, even all agreeing
    on the runner-up (their weights as in `vote`)."""
    scores: Counter[str] = Counter()
    for a in attempts:
        if a.key:
            scores[a.key] += 1.5 if a.kind == "program" else 1.0
    if not scores:
        return False
    ranked = scores.most_common(2)
    runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
    still = sum(1.0 if p.reasoning == "think" else 1.5 for p in left)
    return ranked[0][1] > runner_up + still


_CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def program_of(reply: str) -> str:
    """The Python program in a reply (its first code block, else the reply if it looks like code)."""
    found = _CODE.search(reply)
    if found:
        return found.group(1).strip()
    if "```" in reply:  # an unclosed block (the reply hit its token limit)
        return reply.split("```", 1)[1].split("\n", 1)[-1].strip()
    return reply.strip() if "print(" in reply else ""


def run_program(sandbox, reply: str) -> tuple[str, str, str]:
    """Run the program in a model's reply in the sandbox: (answer, what to show, error). A program
    that loops, allocates without end, reads files or opens sockets is stopped by the sandbox's
    limits and counts as a failed attempt (error set)."""
    code = program_of(reply)
    if not code:
        return "", reply.strip()[:400], "no program in the reply"
    result = sandbox.run(code)
    printed = result.stdout.strip().splitlines()
    detail = f"{code}\n# printed: {result.stdout.strip()[:200] or '(nothing)'}"
    if not result.ok:
        return "", detail, result.message or f"the program failed ({result.error})"
    if not printed:
        return "", detail, "the program printed nothing"
    return printed[-1].strip(), detail, ""


# ---------------------------------------------------------------------------------------- running

def with_instruction(request: Request, instruction: str, **changes) -> Request:
    system = "\n\n".join(p for p in (request.system, instruction) if p)
    return replace(request, system=system, turn_id=new_turn_id(), **changes)


def _question(request: Request) -> str:
    return request.messages[-1].text.strip()


async def _collect(engine, request: Request) -> tuple[str, str, Done | None, str]:
    """Run one request to its end: (answer text, thinking, Done, error message)."""
    thinking, text = [], []
    async with aclosing(engine.submit(request)) as events:
        async for ev in events:
            if isinstance(ev, ThinkingDelta):
                thinking.append(ev.text)
            elif isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, Done):
                return ev.text or "".join(text), "".join(thinking), ev, ""
            elif isinstance(ev, Error):
                return "", "".join(thinking), None, ev.message
    return "", "".join(thinking), None, "cancelled"


async def _speak(engine, request: Request, answer: str) -> AsyncIterator[AudioChunk]:
    """The answer's speech, in the reply's voice: read as it is where the backend can (the cascade),
    else said by the model in a short second pass."""
    if getattr(engine.backend, "speaks_verbatim", False):
        say = replace(request, reasoning="none", say=answer, turn_id=new_turn_id())
    else:
        say = replace(request, messages=(Message("user", SAY_PROMPT.format(answer=answer)),), reasoning="none",
                      system=request.system, context=None, max_new_tokens=64, turn_id=new_turn_id())
    async with aclosing(engine.submit(say)) as events:
        async for ev in events:
            if isinstance(ev, AudioChunk):
                yield AudioChunk(request.turn_id, ev.pcm, ev.sample_rate)
            elif isinstance(ev, Done | Error):
                return


async def think(engine, request: Request) -> AsyncIterator[Event]:
    """One visible chain of thought, then the answer (see the module docstring)."""
    t0 = time.perf_counter()
    inner = with_instruction(request, THINK_INSTRUCTION, max_new_tokens=max(request.max_new_tokens, THINK_TOKENS),
                             thinker=True)  # on the larger model where the backend has one
    inner = replace(inner, turn_id=request.turn_id)
    if request.speak and request.filler:
        async for chunk in _speak(engine, request, FILLER):
            yield chunk
    one_pass = not request.speak or getattr(engine.backend, "speaks_verbatim", False)
    if one_pass:  # its speech is made from the answer text alone
        async with aclosing(engine.submit(inner)) as events:
            async for ev in events:
                yield ev
        return
    done = None
    async with aclosing(engine.submit(replace(inner, speak=False))) as events:
        async for ev in events:
            if isinstance(ev, Done):
                done = ev
            else:
                yield ev
            if isinstance(ev, Error):
                return
    if done is None:  # cancelled
        return
    first_audio = None
    audio_s = 0.0
    if done.text.strip():
        async for chunk in _speak(engine, request, done.text):
            first_audio = first_audio or time.perf_counter() - t0
            audio_s += chunk.duration_s
            yield chunk
    timings = replace(done.timings, first_audio_s=first_audio, audio_s=audio_s, total_s=time.perf_counter() - t0)
    yield replace(done, turn_id=request.turn_id, timings=timings)


def _plan(request: Request) -> list[Request]:
    """The attempts of a Big Brain turn: a greedy chain of thought and a greedy program first, then
    sampled ones (temperature 0.7, each its own seed), alternating."""
    n = max(1, min(request.attempts or DEFAULT_ATTEMPTS, MAX_ATTEMPTS))
    base = (request.seed or 0) * 1000
    plans = []
    tokens = max(request.max_new_tokens, THINK_TOKENS)
    for i in range(n):
        sampled = {"temperature": 0.7, "top_p": 0.95, "seed": base + i} if i >= 2 else {"temperature": 0.0}
        # on the larger model where the backend has one; attempts of a kind share their whole prompt
        shared = {"speak": False, "thinker": True, "keep_prompt": True}
        if i % 2 == 1:  # programs first: short, and computed
            plans.append(with_instruction(request, THINK_INSTRUCTION, reasoning="think", max_new_tokens=tokens,
                                          **shared, **sampled))
        else:
            plans.append(with_instruction(request, PROGRAM_INSTRUCTION, reasoning="none", ends_with_code=True,
                                          max_new_tokens=PROGRAM_TOKENS, **shared, **sampled))
    return plans


async def _attempt(engine, index: int, req: Request) -> Attempt:
    kind = "thought" if req.reasoning == "think" else "program"
    answer, thinking, done, error = await _collect(engine, req)
    a = Attempt(index, kind, error=error)
    if done is not None:
        a.tokens, a.prompt_tokens = done.completion_tokens, done.prompt_tokens
    if error:
        return a
    if kind == "thought":
        a.answer, a.detail = answer.strip(), thinking.strip()
    else:
        a.answer, a.detail, a.error = await asyncio.to_thread(run_program, engine.sandbox(), answer)
        if a.error:
            return a
    a.key = normalise(a.answer)
    if not a.key:
        a.error = a.error or "no answer"
    return a


async def _judge(engine, request: Request, leaders: list[str], by_key: dict[str, Attempt]) -> str | None:
    letters = "ABCDEFGHIJKLMNOP"
    options = "\n".join(f"{letters[i]}) {by_key[k].answer}" for i, k in enumerate(leaders))
    prompt = JUDGE_PROMPT.format(question=_question(request), options=options)
    judge = Request((Message("user", prompt),), speak=False, max_new_tokens=8, temperature=0.0, thinker=True)
    answer, _, _, error = await _collect(engine, judge)
    found = re.search(rf"\b([{letters[:len(leaders)]}])\b", answer.upper())
    return leaders[letters.index(found.group(1))] if found and not error else None


async def big_brain(engine, request: Request) -> AsyncIterator[Event]:
    """Several attempts in one batch, the best kept (see the module docstring)."""
    t0 = time.perf_counter()
    tid = request.turn_id
    plans = _plan(request)
    filler_audio = None
    if request.speak and request.filler:
        filler_audio = asyncio.ensure_future(_gather_audio(_speak(engine, request, FILLER)))
    # all submitted before any is awaited: the engine admits them together, one batch
    tasks = [asyncio.ensure_future(_attempt(engine, i, req)) for i, req in enumerate(plans)]
    yield ThinkingDelta(tid, f"Big Brain: {len(plans)} attempts at once "
                             f"({sum(p.reasoning == 'think' for p in plans)} reasoned, "
                             f"{sum(p.reasoning != 'think' for p in plans)} as programs).\n")
    first_audio, audio_s = None, 0.0
    attempts: list[Attempt] = []
    try:
        if filler_audio is not None:
            for chunk in await filler_audio:
                first_audio = first_audio or time.perf_counter() - t0
                audio_s += chunk.duration_s
                yield chunk
        for next_done in asyncio.as_completed(tasks):
            a = await next_done
            attempts.append(a)
            how = "reasoned" if a.kind == "thought" else "program"
            said = f"-> {a.answer}" if a.key else f"failed: {a.error}"
            detail = a.detail if len(a.detail) <= 1200 else a.detail[:1200] + " ..."
            yield ThinkingDelta(tid, f"\nAttempt {a.index + 1} ({how}) {said}\n{detail}\n")
            left = [p for i, p in enumerate(plans) if i not in {x.index for x in attempts}]
            if left and settled(attempts, left):
                yield ThinkingDelta(tid, f"\n{len(left)} attempt(s) stopped: they could no longer change the vote.\n")
                break
    finally:
        for t in tasks:
            t.cancel()  # a cancelled turn frees every attempt at once
        if filler_audio is not None:
            filler_audio.cancel()
    attempts.sort(key=lambda a: a.index)
    winner, leaders = vote(attempts)
    by_key: dict[str, Attempt] = {}  # an answer's words: a reasoned attempt's where there is one
    for a in attempts:
        if a.key and (a.key not in by_key or (a.kind == "thought" and by_key[a.key].kind == "program")):
            by_key[a.key] = a
    why = ""
    if winner is not None:
        agree = [a for a in attempts if a.key == winner]
        why = f"{len(agree)} of {len(attempts)} attempts agree"
    elif leaders:
        winner = await _judge(engine, request, leaders, by_key)
        why = "a tie, settled by a judge that re-read the question"
        if winner is None:
            winner = next((a.key for a in attempts if a.key in leaders), leaders[0])
            why = "a tie the judge could not settle; the first attempt's answer is kept"
    tokens = sum(a.tokens for a in attempts)
    prompt_tokens = sum(a.prompt_tokens for a in attempts)
    if winner is None:
        yield Error(tid, "model_error", "no attempt reached an answer")
        return
    kept = by_key[winner]
    yield ThinkingDelta(tid, f"\nKept: {kept.answer} ({why}).\n")
    answer = kept.answer
    yield TextDelta(tid, answer)
    first_text = time.perf_counter() - t0
    if request.speak:
        async for chunk in _speak(engine, request, answer):
            first_audio = first_audio or time.perf_counter() - t0
            audio_s += chunk.duration_s
            yield chunk
    total = time.perf_counter() - t0
    timings = Timings(queued_s=0.0, first_text_s=first_text, first_audio_s=first_audio, total_s=total,
                      audio_s=audio_s)
    yield Done(tid, answer, timings, prompt_tokens, tokens, batch_size=len(plans), reasoning_tokens=tokens)


async def _gather_audio(chunks: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    return [c async for c in chunks]
