"""The Chat tab: chat panes, each one assistant instance (persona + its own conversation).

A pane streams the reply's text into its chatbot and its speech to the page's WebAudio player
(ui/speech.py), so the reply is heard while it is still being written, in the persona's voice.
Several panes side by side are several instances, usable at once (the engine batches their turns).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from assistant.errors import AssistantError
from assistant.events import AudioChunk, Citations, Done, Error, TextDelta, ThinkingDelta, Transcript
from assistant.session import Session
from assistant.turns import Turn
from ui.web_context import WebContext

__all__ = ["ChatPane", "chat_pane", "history_messages", "reply"]

HISTORY_SHOWN = 100  # messages of an instance's stored conversation shown when a pane opens it
PLAY_JS = "(spec) => window.assistantSpeech && window.assistantSpeech.play(spec)"


@dataclass(frozen=True)
class ChatPane:
    pane: str  # "1", "2": ids in the page are suffixed with it
    persona: gr.Dropdown
    instance: gr.Dropdown
    bot: gr.Chatbot
    box: gr.MultimodalTextbox


def history_messages(ctx: WebContext, request: gr.Request, persona: str, instance: str | None) -> list[dict]:
    """The instance's stored conversation as chatbot messages (oldest first)."""
    s = ctx.session(request, persona, instance)
    stored = ctx.store.open_instance(ctx.user(request), s.persona.name, s.instance_name)  # the session's own
    return [
        {"role": m.role, "content": m.text or "(spoken)"}
        for m in ctx.store.history(stored, limit=HISTORY_SHOWN)
        if m.role in ("user", "assistant")
    ]


# None: the message's words decide
REASONING = {"Answer": None, "Think": "think", "Big Brain": "big_brain", "Deep Search": "deep_search"}


def sources_markdown(citations) -> str:
    """A Deep Search answer's sources, as links under it (with the encyclopedia's licence)."""
    lines = ["", "**Sources**"]
    for c in citations:
        quote = c.quote if len(c.quote) <= 240 else c.quote[:240] + "..."
        lines.append(f"{c.number}. [{c.title}]({c.url}): \"{quote}\"")
    if any(c.source == "encyclopedia" for c in citations):
        from assistant.research.encyclopedia import ATTRIBUTION

        lines.append(f"\n<small>{ATTRIBUTION}</small>")
    return "\n".join(lines)


def _thought(text: str, started: float, done: bool) -> dict:
    """The reasoning as a collapsible message above the answer (Gradio's thought metadata)."""
    took = time.monotonic() - started
    meta = ({"title": f"Thought for {took:.0f} s", "status": "done"} if done
            else {"title": "Thinking...", "status": "pending"})
    return {"role": "assistant", "content": text, "metadata": meta}


async def reply(s: Session, turn: Turn, speak: bool, history: list, relay=None, token: str | None = None,
                reasoning: str | None = None):
    """Yield (chat messages, reply audio or skip) as the reply is written; audio chunks go to the
    relay stream `token` as they are made; the whole reply's audio comes once it is complete. The
    reasoning of a thinking reply streams into a box of its own above the answer."""
    text, chunks, rate = "", [], 24_000
    thought, thought_at, started = "", None, time.monotonic()
    history = [*history, {"role": "assistant", "content": ""}]
    try:
        sources = ()
        if reasoning == "deep_search":
            import asyncio

            from assistant.research.setup import research_sources

            sources = tuple(await asyncio.to_thread(research_sources, s.engine, user_id=s.user, store=s.store))
        async for ev in s.converse(turn, speak=speak, reasoning=reasoning, sources=sources):
            if isinstance(ev, ThinkingDelta):
                thought += ev.text
                if thought_at is None:
                    thought_at = len(history) - 1
                    history.insert(thought_at, {})
                history[thought_at] = _thought(thought, started, done=False)
                yield history, gr.skip()
            elif isinstance(ev, TextDelta):
                text += ev.text
                if thought_at is not None and history[thought_at]["metadata"]["status"] == "pending":
                    history[thought_at] = _thought(thought, started, done=True)
                history[-1] = {"role": "assistant", "content": text}
                yield history, gr.skip()
            elif isinstance(ev, Citations) and ev.citations:
                history[-1] = {"role": "assistant", "content": text + "\n" + sources_markdown(ev.citations)}
                yield history, gr.skip()
            elif isinstance(ev, Transcript) and ev.text.strip() and len(history) >= 2:  # what was heard
                history[-2] = {"role": "user", "content": ev.text.strip()}
                yield history, gr.skip()
            elif isinstance(ev, AudioChunk):
                chunks.append(ev.pcm)
                rate = ev.sample_rate
                if token:
                    relay.put(token, ev.pcm, ev.sample_rate)
            elif isinstance(ev, Error):  # shown in the conversation; a raised gr.Error would cover the chat
                gr.Warning(ev.message)
                history[-1] = {"role": "assistant", "content": f"(could not answer: {ev.message})"}
                yield history, gr.skip()
                return
            elif isinstance(ev, Done):
                pcm = np.concatenate(chunks) if chunks else None
                audio = (rate, (np.clip(pcm, -1, 1) * 32767).astype(np.int16)) if pcm is not None else None
                yield history, audio
    finally:
        if token:
            relay.close(token)


def chat_pane(ctx: WebContext, pane: str, label: str) -> ChatPane:
    """One pane's components and events, inside the current Blocks layout."""
    with gr.Row(equal_height=True):
        persona = gr.Dropdown(
            choices=["Grok"],
            value="Grok",
            label=label,
            info="who answers, in which voice",  # a line like Conversation's, so the two boxes line up
            elem_id=_id("persona", pane),
            scale=1,
        )
        instance = gr.Dropdown(
            choices=["Grok"],
            value="Grok",
            label="Conversation",
            allow_custom_value=True,
            info="type a new name for a fresh one",
            elem_id=f"instance-{pane}",
            scale=1,
        )
    bot = gr.Chatbot(
        elem_id=_id("chatbot", pane),
        height=380,
        buttons=["copy"],
        show_label=False,
        placeholder="Say hello, or drop a picture into the box below and ask about it.",
    )
    box = gr.MultimodalTextbox(
        file_types=["image"],
        file_count="multiple",
        elem_id=_id("chat-input", pane),
        placeholder="Ask anything; drop or paste images",
        show_label=False,
    )
    with gr.Row(equal_height=True, elem_classes="speech-row"):
        speak = gr.Checkbox(value=True, label="Speak replies", elem_id=f"speak-{pane}", container=False, scale=2)
        how = gr.Radio(list(REASONING), value="Answer", show_label=False, container=False, scale=3,
                       elem_id=f"reasoning-{pane}",
                       info="Think: reasons step by step, shown apart; Big Brain: several attempts, the best kept; "
                            "Deep Search: looked up in the sources, with citations")
        stop = gr.Button("Stop speaking", size="sm", elem_id=f"stop-speaking-{pane}", scale=1, min_width=120)
    spoken = gr.Audio(
        label="Last spoken reply (replay or download)",
        elem_id=_id("chat-audio", pane),
        buttons=["download"],
        interactive=False,
    )
    speech = gr.Textbox(visible="hidden", elem_id=f"speech-{pane}")

    async def chat(message: dict, persona_name: str, instance_name: str, speak_on: bool, how_name: str,
                   request: gr.Request):
        from vision.images import load_image

        files = list(message.get("files") or [])
        try:
            images = tuple(load_image(f, name=Path(f).name) for f in files)  # not the server's upload path
            turn = Turn(text=message.get("text") or "", images=images)
            s = ctx.session(request, persona_name, instance_name)
        except (AssistantError, gr.Error) as err:  # the message stays in the box to fix
            gr.Warning(err.message)
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        content = [turn.text] if turn.text else []
        earlier = history_messages(ctx, request, persona_name, instance_name)  # stored, whatever the page showed
        shown = [*earlier, {"role": "user", "content": [*content, *({"path": f} for f in files)]}]
        token = ctx.relay.open(ctx.engine.sample_rate, ctx.who(request)) if speak_on else None
        spec = ctx.relay.spec(token, pane) if token else gr.skip()
        yield {"text": "", "files": []}, shown, None, spec  # clear the box once; the person may type on
        async for messages, audio in reply(s, turn, speak_on, shown, ctx.relay, token, REASONING.get(how_name)):
            yield gr.skip(), messages, audio, gr.skip()

    def open_persona(persona_name: str, request: gr.Request):
        names = ctx.instance_names(request, persona_name)
        return (
            gr.Dropdown(choices=names, value=persona_name),
            history_messages(ctx, request, persona_name, persona_name),
        )

    def open_instance(persona_name: str, instance_name: str, request: gr.Request):
        return history_messages(ctx, request, persona_name, (instance_name or "").strip() or persona_name)

    def fresh(persona_name: str, request: gr.Request):
        """The chat's clear button starts a new conversation (the old one stays, listed under Conversation)."""
        name = f"{persona_name} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        return gr.Dropdown(choices=[*ctx.instance_names(request, persona_name), name], value=name)

    done_js = f"() => window.assistantSpeech && window.assistantSpeech.mark('{pane}', 'reply-done')"
    box.submit(chat, [box, persona, instance, speak, how], [box, bot, spoken, speech], concurrency_limit=None).then(
        None, None, None, js=done_js
    )
    speech.change(None, [speech], None, js=PLAY_JS)
    stop.click(None, None, None, js=f"() => window.assistantSpeech && window.assistantSpeech.stop('{pane}')")
    persona.input(open_persona, [persona], [instance, bot])
    instance.input(open_instance, [persona, instance], [bot])
    bot.clear(fresh, [persona], [instance])
    return ChatPane(pane, persona, instance, bot, box)


def _id(name: str, pane: str) -> str:
    """Pane 1 keeps the plain ids (#chatbot, #chat-input...); others get a suffix."""
    return name if pane == "1" else f"{name}-{pane}"
