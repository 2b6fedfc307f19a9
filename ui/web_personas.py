"""The Personas tab: the user's personas in a table; create, edit, delete, and hear a voice sample."""

from __future__ import annotations

import gradio as gr

from assistant.errors import AssistantError
from assistant.events import AudioChunk, Done, Error
from assistant.turns import Message, Request
from memory import DEFAULT_PERSONA, Persona, create_persona, delete_persona, edit_persona, get_persona, list_personas
from ui.web_chat import PLAY_JS
from ui.web_context import WebContext, fail, wire

__all__ = ["personas_tab", "voice_choices"]

HEADERS = ["name", "voice", "style", "language", "greeting"]


def voice_choices(ctx: WebContext) -> gr.Dropdown:
    """The voice picker's choices: the model's voices (a remote model's are typed in)."""
    voices = list(ctx.engine.voices)
    return gr.Dropdown(choices=["(default)", *voices], allow_custom_value=not voices)


def personas_tab(ctx: WebContext, dropdowns: list[gr.Dropdown]):
    """Build the tab; `dropdowns` (the persona pickers elsewhere) follow every change. Returns the
    table, the voice picker and the function that refreshes table and pickers (for the page's load)."""
    gr.Markdown(
        "Pick a persona in the table to edit, delete or hear it; fill the form and press "
        "**Create** for a new one. Each persona keeps its own conversations; memories are shared."
    )
    table = gr.Dataframe(
        headers=HEADERS,
        interactive=False,
        elem_id="personas",
        wrap=True,
        column_widths=["12%", "11%", "42%", "10%", "25%"],
    )
    with gr.Row():
        name = gr.Textbox(label="Name", elem_id="persona-name", max_lines=1)
        voice = gr.Dropdown(choices=["(default)"], value="(default)", label="Voice", elem_id="persona-voice")
        language = gr.Textbox(value="en", label="Language", elem_id="persona-language", max_lines=1)
    style = gr.Textbox(label="Style (how it talks, in plain words)", lines=2, elem_id="persona-style")
    greeting = gr.Textbox(label="Greeting (also the voice sample)", elem_id="persona-greeting", max_lines=1)
    editing = gr.Textbox(visible="hidden", elem_id="persona-editing")  # the name of the persona picked in the table
    with gr.Row():
        create = gr.Button("Create", variant="primary", elem_id="persona-create")
        save = gr.Button("Save changes", elem_id="persona-save")
        remove = gr.Button("Delete", variant="stop", elem_id="persona-delete")
        preview = gr.Button("Preview voice", elem_id="persona-preview")
    status = gr.Markdown(elem_id="persona-status")
    speech = gr.Textbox(visible="hidden", elem_id="speech-preview")
    outputs = [table, *dropdowns]

    def refresh(request: gr.Request, *current: str, renamed: tuple[str, str] | None = None):
        """The table, and each picker's choices; a picker on a renamed persona follows it, one on a
        deleted persona goes back to the first."""
        rows = [
            [p.name, p.voice or "(default)", p.style, p.language, p.greeting]
            for p in list_personas(ctx.store, ctx.user(request))
        ]
        names = [r[0] for r in rows]
        pickers = []
        for value in current or [None] * len(dropdowns):
            if renamed and value == renamed[0]:
                value = renamed[1]
            fallback = DEFAULT_PERSONA.name if DEFAULT_PERSONA.name in names else names[0]
            pickers.append(gr.Dropdown(choices=names, value=value if value in names else fallback))
        return rows, *pickers

    def form(voice_name: str, style_text: str, language_code: str, greeting_text: str) -> dict:
        return {
            "voice": None if voice_name in ("", "(default)") else voice_name,
            "style": style_text or "",
            "language": (language_code or "en").strip(),
            "greeting": greeting_text or "",
        }

    def on_create(request: gr.Request, n, v, s, lang, g, *current):
        try:
            p = create_persona(ctx.store, ctx.user(request), Persona(name=(n or "").strip(), **form(v, s, lang, g)))
        except AssistantError as err:
            raise fail(err) from err
        return *refresh(request, *current), p.name, f"Created **{p.name}**."

    def on_save(request: gr.Request, old, n, v, s, lang, g, *current):
        if not old:
            raise fail("pick a persona in the table first")
        fields = form(v, s, lang, g)
        try:
            p = edit_persona(
                ctx.store,
                ctx.user(request),
                old,
                new_name=(n or "").strip() or None,
                **{**fields, "voice": fields["voice"] or ""},
            )  # "": the model's default voice
        except AssistantError as err:
            raise fail(err) from err
        ctx.forget_sessions(request, old)
        return *refresh(request, *current, renamed=(old, p.name)), p.name, f"Saved **{p.name}**."

    def on_delete(request: gr.Request, n, *current):
        n = (n or "").strip()
        try:
            delete_persona(ctx.store, ctx.user(request), n)
        except AssistantError as err:
            raise fail(err) from err
        ctx.forget_sessions(request, n)
        return *refresh(request, *current), "", f"Deleted **{n}** (its conversations are kept)."

    def on_pick(evt: gr.SelectData, request: gr.Request):
        row = evt.row_value
        try:
            p = get_persona(ctx.store, ctx.user(request), row[0])
        except AssistantError as err:
            raise fail(err) from err
        return (
            p.name,
            p.voice or "(default)",
            p.style,
            p.language,
            p.greeting,
            p.name,
            f"Editing **{p.name}**: change the fields, then press Save changes.",
        )

    async def on_preview(n, v, lang, g, request: gr.Request):
        """Say the greeting in the chosen voice (the form's, so a voice can be tried before saving)."""
        text = (g or "").strip() or f"Hello, I am {(n or '').strip() or 'your assistant'}. How can I help?"
        voice_name = form(v, "", lang, "")["voice"]
        voices = ctx.engine.voices
        if voice_name and voices and voice_name not in voices:
            yield gr.skip(), f"**Could not play it:** unknown voice {voice_name!r}; this model has: {', '.join(voices)}"
            return
        token = ctx.relay.open(ctx.engine.sample_rate, ctx.who(request))
        yield ctx.relay.spec(token, "preview"), f"Playing a sample in the voice **{voice_name or 'default'}**…"
        req = Request(
            (Message("user", text),),
            system="Read the user's message aloud exactly as written.",
            speak=True,
            voice=voice_name,
            max_new_tokens=min(ctx.max_new_tokens, 2 * len(text) + 16),
        )  # the server's reply cap
        samples = 0
        try:
            async for ev in ctx.engine.stream(req):
                if isinstance(ev, AudioChunk):
                    ctx.relay.put(token, ev.pcm, ev.sample_rate)
                    samples += len(ev.pcm)
                elif isinstance(ev, Error):
                    yield gr.skip(), f"**Could not play it:** {ev.message}"
                    return
                elif isinstance(ev, Done):
                    break
        finally:
            ctx.relay.close(token)
        seconds = samples / ctx.engine.sample_rate
        yield gr.skip(), f"Played a {seconds:.1f} s sample in the voice **{voice_name or 'default'}**."

    fields = [name, voice, style, language, greeting]
    wire(create.click, on_create, [*fields, *dropdowns], [*outputs, editing, status], "create it")
    wire(save.click, on_save, [editing, *fields, *dropdowns], [*outputs, editing, status], "save")
    wire(remove.click, on_delete, [name, *dropdowns], [*outputs, editing, status], "delete")
    wire(table.select, on_pick, None, [*fields, editing, status], "open it")
    preview.click(on_preview, [name, voice, language, greeting], [speech, status], concurrency_limit=None)
    speech.change(None, [speech], None, js=PLAY_JS)
    return table, voice, refresh
