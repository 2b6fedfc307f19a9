"""The web UI (Gradio 6 Blocks), mounted at `/` on the same FastAPI app as the API.

Handlers are thin: input -> Turn -> session.converse -> render. Tabs: Chat (text and images in,
streamed text and speech out), Voice (record, get a spoken reply), Transcribe (subtitles to
download), Personas, Memory.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np

from assistant.engine import Engine
from assistant.errors import AssistantError
from assistant.events import AudioChunk, Done, Error, TextDelta
from assistant.session import Session
from assistant.turns import Turn

__all__ = ["build_ui"]


def _error(err: AssistantError) -> gr.Error:
    return gr.Error(err.message)


def build_ui(get_engine, store, anonymous_user: str = "local", max_new_tokens: int = 256) -> gr.Blocks:
    """The Blocks app. `get_engine()` returns the loaded engine (it is loaded at server start-up).
    With a login (the server's API keys), each person sees only their own data."""
    from memory import Persona, create_persona, delete_persona, list_personas

    sessions: dict[tuple[str, str], Session] = {}

    def who(request: gr.Request | None) -> str:
        return (getattr(request, "username", None) or anonymous_user) if request else anonymous_user

    def session(persona: str | None, request: gr.Request | None) -> Session:
        engine: Engine = get_engine()
        key = (who(request), persona or "Grok")
        if key not in sessions:
            sessions[key] = Session(engine, store, user=key[0], persona_name=persona, max_new_tokens=max_new_tokens)
        return sessions[key]

    def persona_names(user: str = anonymous_user) -> list[str]:
        return [p.name for p in list_personas(store, store.user(user))]

    async def reply(s: Session, turn: Turn, speak: bool, history: list):
        """Text as it is written; the speech when the reply is complete. (Gradio's streaming
        player holds the event open until the audio has played, which blocks the next turn.)"""
        text, chunks, rate = "", [], 24_000
        history = [*history, {"role": "assistant", "content": ""}]
        async for ev in s.converse(turn, speak=speak):
            if isinstance(ev, TextDelta):
                text += ev.text
                history[-1] = {"role": "assistant", "content": text}
                yield history, gr.skip()
            elif isinstance(ev, AudioChunk):
                chunks.append(ev.pcm)
                rate = ev.sample_rate
            elif isinstance(ev, Error):
                raise gr.Error(ev.message)
            elif isinstance(ev, Done):
                pcm = np.concatenate(chunks) if chunks else None
                yield history, (rate, (np.clip(pcm, -1, 1) * 32767).astype(np.int16)) if pcm is not None else None

    async def chat(message: dict, history: list, persona: str, speak: bool, request: gr.Request):
        from vision.images import load_image

        try:
            images = tuple(load_image(f) for f in (message.get("files") or []))
            turn = Turn(text=message.get("text") or "", images=images)
        except AssistantError as err:
            raise _error(err) from err
        shown = [*history, {"role": "user", "content": turn.text or "(image)"}]
        yield {"text": "", "files": []}, shown, gr.skip()  # clear the box once; the person may type on
        async for out in reply(session(persona, request), turn, speak, shown):
            yield gr.skip(), *out

    async def voice(recording, history: list, persona: str, request: gr.Request):
        from audio.io import SAMPLE_RATE, resample

        if recording is None:
            raise gr.Error("nothing was recorded")
        rate, pcm = recording
        pcm = pcm.astype(np.float32)
        if pcm.ndim > 1:
            pcm = pcm.mean(axis=1)
        if np.abs(pcm).max() > 1.5:  # int16 samples
            pcm = pcm / 32768.0
        pcm = resample(pcm, rate, SAMPLE_RATE)
        if len(pcm) < SAMPLE_RATE // 10:
            raise gr.Error("the recording is shorter than 0.1 s")
        shown = [*history, {"role": "user", "content": "(spoken)"}]
        async for out in reply(session(persona, request), Turn(audio=pcm), True, shown):
            yield out

    async def transcribe(path: str | None, fmt: str):
        from audio import transcribe as run
        from audio.formats import render

        if not path:
            raise gr.Error("upload an audio or video file first")
        try:
            t = await asyncio.to_thread(run, path)
        except AssistantError as err:
            raise _error(err) from err
        out = Path(tempfile.mkdtemp(prefix="transcript-")) / f"{Path(path).stem}.{fmt}"
        out.write_text(render(t, fmt), encoding="utf-8")
        return t.text, str(out)

    def personas_table(request: gr.Request):
        user = who(request)
        rows = [[p.name, p.voice or "", p.style] for p in list_personas(store, store.user(user))]
        return rows, gr.Dropdown(choices=persona_names(user))

    def add_persona(name: str, voice: str, style: str, request: gr.Request):
        try:
            create_persona(store, store.user(who(request)),
                           Persona(name=name.strip(), voice=voice or None, style=style))
        except AssistantError as err:
            raise _error(err) from err
        return personas_table(request)

    def remove_persona(name: str, request: gr.Request):
        try:
            delete_persona(store, store.user(who(request)), name)
        except AssistantError as err:
            raise _error(err) from err
        sessions.pop((who(request), name), None)
        return personas_table(request)

    def memories(query: str, request: gr.Request):
        from memory import recall

        u = store.user(who(request))
        items = recall(store, u, query, k=50) if (query or "").strip() else store.memories(u)
        return [[m.id, m.text, m.kind, m.status] for m in items]

    def forget(memory_id, request: gr.Request):
        try:
            store.delete_memories(store.user(who(request)), [int(memory_id)])
        except (AssistantError, ValueError, TypeError) as err:
            raise gr.Error(f"cannot delete memory {memory_id!r}") from err
        return memories("", request)

    with gr.Blocks(title="assistant") as ui:
        gr.Markdown("# assistant\nTalk, show pictures, transcribe. Everything stays on this server.")
        persona = gr.Dropdown(choices=persona_names(), value="Grok", label="Persona", elem_id="persona")
        with gr.Tab("Chat"):
            bot = gr.Chatbot(elem_id="chatbot", height=380)
            box = gr.MultimodalTextbox(file_types=["image"], file_count="multiple", elem_id="chat-input",
                                       placeholder="Ask anything; drop or paste images")
            speak = gr.Checkbox(value=True, label="Spoken reply")
            spoken = gr.Audio(label="Reply", autoplay=True, elem_id="chat-audio")
            # Many people at once: the engine batches their turns, so Gradio must not queue them.
            box.submit(chat, [box, bot, persona, speak], [box, bot, spoken], concurrency_limit=None)
        with gr.Tab("Voice"):
            vbot = gr.Chatbot(elem_id="voice-chat", height=300)
            mic = gr.Audio(sources=["microphone"], type="numpy", label="Press record, speak, press stop",
                           elem_id="mic")
            vreply = gr.Audio(label="Reply", autoplay=True, elem_id="voice-audio")
            mic.stop_recording(voice, [mic, vbot, persona], [vbot, vreply], concurrency_limit=None)
        with gr.Tab("Transcribe"):
            upload = gr.File(label="Audio or video", elem_id="transcribe-file", type="filepath")
            fmt = gr.Dropdown(["srt", "vtt", "txt", "json", "tsv"], value="srt", label="Format")
            go = gr.Button("Transcribe", elem_id="transcribe-go")
            text = gr.Textbox(label="Text", lines=6, elem_id="transcript")
            download = gr.File(label="Download", elem_id="transcript-file")
            go.click(transcribe, [upload, fmt], [text, download], concurrency_limit=4)
        with gr.Tab("Personas"):
            table = gr.Dataframe(headers=["name", "voice", "style"], interactive=False, elem_id="personas")
            with gr.Row():
                pname = gr.Textbox(label="Name", elem_id="persona-name")
                pvoice = gr.Textbox(label="Voice (optional)")
                pstyle = gr.Textbox(label="Style", elem_id="persona-style")
            with gr.Row():
                gr.Button("Create", elem_id="persona-create").click(add_persona, [pname, pvoice, pstyle],
                                                                    [table, persona])
                gr.Button("Delete").click(remove_persona, [pname], [table, persona])
            ui.load(personas_table, None, [table, persona])
        with gr.Tab("Memory"):
            query = gr.Textbox(label="Search", elem_id="memory-query")
            mem = gr.Dataframe(headers=["id", "text", "kind", "status"], interactive=False, elem_id="memories")
            with gr.Row():
                mem_id = gr.Number(label="Memory id", precision=0, elem_id="memory-id")
                gr.Button("Delete", elem_id="memory-delete").click(forget, [mem_id], [mem])
            query.submit(memories, [query], [mem])
            ui.load(memories, [query], [mem])
    return ui
