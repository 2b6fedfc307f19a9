"""The Transcribe tab: a recording in, progress while it runs, the audio with its subtitles, downloads.

The options are the CLI's (`assistant transcribe`): format (or all), language, word timestamps,
one speaker per channel. Nothing is stored: the files to download live in a temporary folder that
is emptied after an hour.
"""

from __future__ import annotations

import asyncio
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
    go = gr.Button("Transcribe", variant="primary", elem_id="transcribe-go")
    status = gr.Markdown(elem_id="transcribe-status")
    player = gr.Audio(label="The recording with its subtitles", elem_id="transcribe-player", interactive=False)
    text = gr.Textbox(label="Transcript", lines=8, elem_id="transcript", buttons=["copy"])
    download = gr.File(label="Download", elem_id="transcript-file", file_count="multiple")

    async def transcribe(path, fmt_name, lang, word_ts, split, progress=gr.Progress()):
        from audio import transcribe
        from audio.formats import FORMATS as WRITERS
        from audio.formats import render, write_outputs

        run = transcriber.transcribe if transcriber is not None else transcribe

        if not path:
            raise fail("upload an audio or video file first")
        progress(0, desc="Reading the recording")

        def report(p) -> None:  # after each decoded chunk: the seconds of audio done of the total
            total = p.total_s or max(p.done_s, 1.0)
            progress((round(p.done_s, 1), round(total, 1)), desc=f"{p.segments} segments", unit="s of audio")

        t = await asyncio.to_thread(run, path, language=None if lang in ("", "detect") else lang,
                                    word_timestamps=bool(word_ts), split_channels=bool(split), batch_size=BATCH,
                                    progress=report)
        formats = list(WRITERS) if fmt_name == "all" else [fmt_name]
        files = write_outputs(t, Path(path).stem, _out_dir(), formats)
        subtitles = [{"text": (f"[{s.speaker}] " if s.speaker else "") + s.text, "timestamp": [s.start, s.end]}
                     for s in t.segments]
        shown = render(t, "txt" if fmt_name == "all" else fmt_name)
        done = f"{len(t.segments)} segments, {t.duration_s:.0f} s of audio, language {t.language}."
        return gr.Audio(value=path, subtitles=subtitles or None), shown, [str(f) for f in files], done

    wire(go.click, transcribe, [upload, fmt, language, words, channels], [player, text, download, status],
         "transcribe it", concurrency_limit=4, show_progress_on=[text])


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
