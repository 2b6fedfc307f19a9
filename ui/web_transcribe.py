"""The Transcribe tab: a recording in, progress while it runs, the audio with its subtitles, downloads.

The options are the CLI's (`assistant transcribe`): format (or all), language, word timestamps,
one speaker per channel, or speakers told apart by voice (diarization: each speaker in a colour of
their own, names to give them before downloading). Nothing is stored: the files to download live
in a temporary folder that is emptied after an hour.
"""

from __future__ import annotations

import asyncio
import html
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from ui.web_context import fail, wire

__all__ = ["transcribe_tab"]

FORMATS = ("srt", "vtt", "txt", "json", "tsv", "all")
LANGUAGES = ("detect", "en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "uk", "zh", "ja", "ko", "ar", "hi")
KEEP_S = 3600  # downloads are deleted after this many seconds
BATCH = 4  # speech chunks decoded together (batches grow 1, 2, 4): progress after each batch
OUT_ROOT = "assistant-transcripts"
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MARKS = ("🔵", "🔴", "🟢", "🟣", "🟠", "🟤", "⚪", "⚫")  # the same colours, for the player's plain-text subtitles


def transcribe_tab(transcriber=None) -> None:
    """Build the tab. `transcriber`: an audio.isolated.TranscriberProcess (None: in this process)."""
    gr.Markdown("Upload a recording (any audio or video format). The subtitles play along with the audio "
                "below, and every file is ready to download. Nothing is kept on the server.")
    upload = gr.File(label="Audio or video", elem_id="transcribe-file", type="filepath")
    with gr.Row(equal_height=True):
        fmt = gr.Dropdown(list(FORMATS), value="srt", label="Format", elem_id="transcribe-format")
        language = gr.Dropdown(list(LANGUAGES), value="detect", label="Language", allow_custom_value=True,
                               elem_id="transcribe-language")
        words = gr.Checkbox(label="Word timestamps", elem_id="transcribe-words")
        channels = gr.Checkbox(label="One speaker per channel", elem_id="transcribe-channels")
        speakers = gr.Checkbox(label="Speakers (who spoke when)", elem_id="transcribe-speakers")
    go = gr.Button("Transcribe", variant="primary", elem_id="transcribe-go")
    status = gr.Markdown(elem_id="transcribe-status")
    player = gr.Audio(label="The recording with its subtitles", elem_id="transcribe-player", interactive=False)
    coloured = gr.HTML(elem_id="transcript-speakers")
    with gr.Row(equal_height=True, visible=False) as naming:
        names = gr.Textbox(label="Speaker names (one per line: SPEAKER_00 = Alice)", lines=3,
                           elem_id="transcribe-names")
        rename = gr.Button("Use these names", elem_id="transcribe-rename", scale=0, min_width=160)
    text = gr.Textbox(label="Transcript", lines=8, elem_id="transcript", buttons=["copy"])
    download = gr.File(label="Download", elem_id="transcript-file", file_count="multiple")
    result = gr.State()  # (transcript as diarized, audio path, format) for renaming

    async def transcribe(path, fmt_name, lang, word_ts, split, diarize, progress=gr.Progress()):
        from audio import transcribe

        run = transcriber.transcribe if transcriber is not None else transcribe

        if not path:
            raise fail("upload an audio or video file first")
        progress(0, desc="Reading the recording")

        def report(p) -> None:  # after each decoded chunk: the seconds of audio done of the total
            total = p.total_s or max(p.done_s, 1.0)
            progress((round(p.done_s, 1), round(total, 1)), desc=f"{p.segments} segments", unit="s of audio")

        if diarize and split:
            raise fail("choose either one speaker per channel or speakers by voice, not both")
        from audio.diarize import Diarization

        t = await asyncio.to_thread(run, path, language=None if lang in ("", "detect") else lang,
                                    word_timestamps=bool(word_ts), split_channels=bool(split), batch_size=BATCH,
                                    progress=report, diarize=Diarization() if diarize else None)
        who = _speakers(t)
        done = f"{len(t.segments)} segments, {t.duration_s:.0f} s of audio, language {t.language}"
        done += f", {len(who)} speakers." if diarize else "."
        listed = "\n".join(f"{s} = {s}" for s in who)
        return (*_show(t, path, fmt_name), gr.Row(visible=bool(diarize and who)), listed,
                (t, path, fmt_name) if diarize else None, done)

    def use_names(state, listed):
        from audio.diarize import rename_speakers

        if not state:
            raise fail("transcribe a recording with speakers first")
        t, path, fmt_name = state
        mapping = {}
        for line in (listed or "").splitlines():
            old, sep, new = line.partition("=")
            if sep:
                mapping[old.strip()] = new.strip()
        renamed = rename_speakers(t, mapping)
        return (*_show(renamed, path, fmt_name), f"Speakers: {', '.join(_speakers(renamed))}.")

    wire(go.click, transcribe, [upload, fmt, language, words, channels, speakers],
         [player, text, download, coloured, naming, names, result, status],
         "transcribe it", concurrency_limit=4, show_progress_on=[text])
    wire(rename.click, use_names, [result, names], [player, text, download, coloured, status], "rename the speakers")


def _speakers(t) -> list[str]:
    """The transcript's speakers, in order of first appearance."""
    return list(dict.fromkeys(s.speaker for s in t.segments if s.speaker))


def _show(t, path: str, fmt_name: str) -> tuple:
    """Player with subtitles, the text in the chosen format, the files, the coloured transcript."""
    from audio.formats import FORMATS as WRITERS
    from audio.formats import render, write_outputs

    formats = list(WRITERS) if fmt_name == "all" else [fmt_name]
    files = write_outputs(t, Path(path).stem, _out_dir(), formats)
    index = {name: i for i, name in enumerate(_speakers(t))}
    subtitles = [{"text": _cue(s.speaker, index) + s.text, "timestamp": [s.start, s.end]} for s in t.segments]
    shown = render(t, "txt" if fmt_name == "all" else fmt_name)
    return gr.Audio(value=path, subtitles=subtitles or None), shown, [str(f) for f in files], _coloured(t, index)


def _cue(speaker: str | None, index: dict[str, int]) -> str:
    if not speaker:
        return ""
    return f"{MARKS[index[speaker] % len(MARKS)]} {speaker}: "


def _coloured(t, index: dict[str, int]) -> str:
    """The segments as HTML, each speaker's label and text in their own colour ("" without speakers)."""
    if not index:
        return ""
    rows = []
    for s in t.segments:
        colour = COLOURS[index[s.speaker] % len(COLOURS)] if s.speaker else "inherit"
        rows.append(f'<p class="speaker-line" data-speaker="{html.escape(s.speaker or "")}" style="color:{colour}">'
                    f"<b>{html.escape(s.speaker or '')}</b> <small>{s.start:.1f}s</small> {html.escape(s.text)}</p>")
    return "".join(rows)


def _out_dir() -> Path:
    """A fresh folder for one transcription's files; folders older than KEEP_S are removed."""
    root = Path(tempfile.gettempdir()) / OUT_ROOT
    root.mkdir(exist_ok=True)
    for old in root.iterdir():
        try:
            if time.time() - old.stat().st_mtime > KEEP_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass  # removed by another request meanwhile
    return Path(tempfile.mkdtemp(dir=root))
