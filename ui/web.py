"""The web UI (Gradio 6 Blocks), mounted at `/` on the same FastAPI app as the API.

Tabs: Chat (one or two instances side by side: text and images in, streamed text and speech out),
Voice (record, get a spoken reply), Transcribe, Personas, Memory, Documents (the user's own, for Deep
Search). Handlers are thin: input ->
Turn/store call -> render. Speech reaches the page through ui/speech.py and ui/static/web.js.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from fastapi import FastAPI, Request
from gradio.routes import App as GradioApp

from assistant.turns import Turn
from memory import Store
from ui.speech import SpeechRelay, make_speech_router
from ui.web_chat import chat_pane, history_messages, reply
from ui.web_context import WebContext, fail
from ui.web_documents import documents_tab
from ui.web_memory import memory_tab
from ui.web_personas import personas_tab, voice_choices
from ui.web_transcribe import transcribe_tab

__all__ = ["build_ui", "mount_web_ui"]

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # an upload to the page (images are up to 50 MiB, vision.images)
LOGIN_MESSAGE = "Log in with your user name and your API key (the operator gives them out: serve --api-key KEY=USER)."
SECOND = "2"  # the second pane's id


def mount_web_ui(
    app: FastAPI,
    get_engine,
    store: Store,
    *,
    logins: list[tuple[str, str]],
    anonymous_user: str = "local",
    max_new_tokens: int = 256,
    transcriber=None,
) -> FastAPI:
    """Add the speech streams and the Gradio UI (at /) to `app`; returns the app to serve."""
    relay = SpeechRelay()
    app.include_router(make_speech_router(relay, _page_user(app, anonymous_user, logins_on=bool(logins))))
    ui = build_ui(WebContext(get_engine, store, relay, anonymous_user, max_new_tokens, transcriber))
    head = f"<script>{(STATIC / 'web.js').read_text(encoding='utf-8')}</script>"
    return gr.mount_gradio_app(
        app,
        ui,
        path="/",
        auth=logins or None,
        auth_message=LOGIN_MESSAGE,
        head=head,
        css=(STATIC / "web.css").read_text(encoding="utf-8"),
        footer_links=["api"],
        max_file_size=MAX_UPLOAD_BYTES,  # Gradio's uploads: the API's limit; a bigger one is refused while it arrives
    )


def _page_user(app: FastAPI, anonymous_user: str, *, logins_on: bool):
    """`reader(request)` for the speech streams: the user logged in to the page (Gradio's login cookie,
    the same name `gr.Request.username` gives the tabs), None when nobody is; the anonymous user
    when the server has no logins."""

    def reader(request: Request) -> str | None:
        if not logins_on:
            return anonymous_user
        page = next((r.app for r in app.routes if isinstance(getattr(r, "app", None), GradioApp)), None)
        if page is None:  # not mounted yet: nobody can have logged in
            return None
        token = request.cookies.get(f"access-token-{page.cookie_id}") or request.cookies.get(
            f"access-token-unsecure-{page.cookie_id}"
        )
        return page.tokens.get(token)

    return reader


def build_ui(ctx: WebContext) -> gr.Blocks:
    """The Blocks app. With a login (the server's API keys), each person sees only their own data."""
    with gr.Blocks(title="assistant", delete_cache=(1800, 7200), analytics_enabled=False) as ui:
        gr.Markdown(
            "# assistant\nTalk, show pictures, transcribe recordings. Everything stays on this server.", elem_id="title"
        )
        with gr.Tab("Chat"):
            side = gr.Button("Open a second conversation side by side", elem_id="open-second", size="sm")
            with gr.Row():
                with gr.Column():
                    first = chat_pane(ctx, "1", "Persona")
                with gr.Column(visible=False) as second_column:
                    second = chat_pane(ctx, SECOND, "Persona (second conversation)")
        with gr.Tab("Voice"):
            gr.Markdown(
                "Hands-free: **[open the voice call](/call)** — just talk; it answers when you stop "
                "and stops when you talk over it. Or record one message here.",
                elem_id="call-link",
            )
            vpersona = gr.Dropdown(choices=["Grok"], value="Grok", label="Persona", elem_id="voice-persona")
            vbot = gr.Chatbot(elem_id="voice-chat", height=300, show_label=False)
            # a file path, decoded here with the turn's duration cap (Gradio's numpy decodes all of it)
            mic = gr.Audio(sources=["microphone"], type="filepath", label="Press record, speak, press stop",
                           elem_id="mic")
            vreply = gr.Audio(label="Reply", autoplay=True, elem_id="voice-audio")
        with gr.Tab("Transcribe"):
            transcribe_tab(ctx.transcriber)
        with gr.Tab("Personas"):
            table, voice_picker, refresh_personas = personas_tab(ctx, [first.persona, second.persona, vpersona])
        with gr.Tab("Memory"):
            memories, load_memories = memory_tab(ctx)
        with gr.Tab("Documents"):
            documents, load_documents = documents_tab(ctx)

        async def voice(recording, history: list, persona: str, request: gr.Request):
            import asyncio

            from assistant.errors import BadInput
            from audio.io import SAMPLE_RATE, load_audio

            if recording is None:
                raise fail("nothing was recorded")
            try:  # stops at MAX_TURN_AUDIO_S, whatever the upload's length
                pcm = await asyncio.to_thread(load_audio, recording)
            except BadInput as err:
                raise fail(err.message.replace(str(recording), "the recording")) from err
            if len(pcm) < SAMPLE_RATE // 10:
                raise fail("the recording is shorter than 0.1 s")
            shown = [*history, {"role": "user", "content": "(spoken)"}]
            async for out in reply(ctx.session(request, persona), Turn(audio=pcm), True, shown):
                yield out

        def toggle_second(open_now: bool, request: gr.Request):
            opening = not open_now
            label = "Close the second conversation" if opening else "Open a second conversation side by side"
            history = history_messages(ctx, request, "Grok", f"Grok {SECOND}") if opening else gr.skip()
            return (
                gr.Column(visible=opening),
                gr.Button(label),
                opening,
                gr.Dropdown(value="Grok"),
                gr.Dropdown(choices=[*ctx.instance_names(request, "Grok"), f"Grok {SECOND}"], value=f"Grok {SECOND}"),
                history,
            )

        def load(request: gr.Request):
            rows, *pickers = refresh_personas(request)
            names = ctx.instance_names(request, "Grok")
            return (
                rows,
                *pickers,
                gr.Dropdown(choices=names, value="Grok"),
                history_messages(ctx, request, "Grok", "Grok"),
                voice_choices(ctx),
                load_memories(request),
                load_documents(request),
            )

        mic.stop_recording(voice, [mic, vbot, vpersona], [vbot, vreply], concurrency_limit=None)
        second_open = gr.State(False)
        side.click(
            toggle_second,
            [second_open],
            [second_column, side, second_open, second.persona, second.instance, second.bot],
        )
        ui.load(
            load,
            None,
            [table, first.persona, second.persona, vpersona, first.instance, first.bot, voice_picker, memories,
             documents],
        )
    return ui
