"""Write a Transcript as txt, srt, vtt, json or tsv; files appear whole or not at all."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from assistant.errors import BadInput

from .transcription import Segment, Transcript

__all__ = ["FORMATS", "render", "write_outputs"]


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _label(seg: Segment) -> str:
    return f"[{seg.speaker}] " if seg.speaker else ""


def to_txt(t: Transcript) -> str:
    """One line per segment; with speakers, one paragraph per turn, opened by the speaker's label."""
    if not any(s.speaker for s in t.segments):
        return "".join(f"{s.text}\n" for s in t.segments)
    paragraphs: list[tuple[str | None, list[str]]] = []
    for s in t.segments:
        if paragraphs and paragraphs[-1][0] == s.speaker:
            paragraphs[-1][1].append(s.text)
        else:
            paragraphs.append((s.speaker, [s.text]))
    return "\n".join(f"{f'[{who}] ' if who else ''}{' '.join(texts)}\n" for who, texts in paragraphs)


def to_srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{_label(s)}{s.text}\n"
        for i, s in enumerate(t.segments, 1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n"
        + (f"<v {s.speaker}>" if s.speaker else "")
        + f"{s.text}\n"
        for s in t.segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_tsv(t: Transcript) -> str:
    """Like Whisper's tsv: integer milliseconds, tabs in text replaced."""
    rows = ["start\tend\tspeaker\ttext"]
    rows += [
        f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{s.speaker or ''}\t{s.text.replace(chr(9), ' ')}"
        for s in t.segments
    ]
    return "\n".join(rows) + "\n"


def to_json(t: Transcript) -> str:
    data = {
        "text": t.text,
        "language": t.language,
        "language_probability": t.language_probability,
        "language_source": t.language_source,
        "duration_s": t.duration_s,
        "model": t.model,
        "segments": [asdict(s) for s in t.segments],
    }
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


FORMATS: dict[str, Callable[[Transcript], str]] = {
    "txt": to_txt,
    "srt": to_srt,
    "vtt": to_vtt,
    "json": to_json,
    "tsv": to_tsv,
}


def render(t: Transcript, fmt: str) -> str:
    """The transcript as text in format `fmt` (one of FORMATS)."""
    try:
        return FORMATS[fmt](t)
    except KeyError:
        raise BadInput(f"unknown format {fmt!r}: use {', '.join(FORMATS)} or all") from None


def write_outputs(t: Transcript, stem: str, output_dir: str | os.PathLike, formats: list[str]) -> list[Path]:
    """Write `stem.<fmt>` for each format into `output_dir`; all files or none (temp + rename)."""
    out_dir = Path(output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create output directory {out_dir}: {err.strerror or err}") from err
    texts = {fmt: render(t, fmt) for fmt in formats}
    done: list[tuple[Path, Path]] = []
    try:
        for fmt, text in texts.items():
            final = out_dir / f"{stem}.{fmt}"
            tmp = out_dir / f".{stem}.{fmt}.part"
            done.append((tmp, final))
            tmp.write_text(text, encoding="utf-8")
        for tmp, final in done:
            os.replace(tmp, final)
    except OSError as err:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write to {out_dir}: {err.strerror or err}") from err
    return [final for _, final in done]
