"""`assistant transcribe FILE...`: speech to txt/srt/vtt/json/tsv files, with a progress bar.

Exit codes: 0 all files done; 2 bad input (unreadable or empty file, no audio track, non-English
speech for an English-only model, unwritable output directory); 1 model or internal error;
130 interrupted. With several files, each failure is reported and the worst code is returned.
Output files are written whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from assistant.errors import AssistantError, BadInput

__all__ = ["add_parser", "run"]

FORMAT_CHOICES = ("txt", "srt", "vtt", "json", "tsv", "all")


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "transcribe",
        parents=parents,
        help="transcribe audio or video files",
        description="Transcribe audio or video files (any format FFmpeg reads; - for stdin).",
        epilog="exit codes: 0 ok, 1 model/internal error, 2 bad input or unwritable output, 130 interrupted",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio/video file, or - for stdin")
    p.add_argument("--format", "-f", choices=FORMAT_CHOICES, default="txt", help="output format (default: txt)")
    p.add_argument("--output-dir", "-o", help="where to write files (default: current folder; stdin: print)")
    p.add_argument("--language", help="language code, e.g. en, de (default: detect)")
    p.add_argument("--task", choices=["transcribe", "translate"], default="transcribe", help="translate: to English")
    p.add_argument("--word-timestamps", action="store_true", help="time every word (json, and karaoke-free srt/vtt)")
    p.add_argument("--model", help="name, hub id or local path (default: bundled tiny.en; large-v3-turbo on GPU)")
    p.add_argument("--split-channels", action="store_true", help="one speaker per channel: label segments by channel")
    p.add_argument("--diarize", action="store_true", help="label who speaks when (SPEAKER_00, ...); works on mono")
    p.add_argument("--speakers", type=int, metavar="N", help="with --diarize: exactly N speakers (default: estimate)")
    p.add_argument("--min-speakers", type=int, metavar="A", help="with --diarize: at least A speakers")
    p.add_argument("--max-speakers", type=int, metavar="B", help="with --diarize: at most B speakers")
    p.add_argument("--batch-size", type=int, default=8, help="speech chunks decoded together (default: 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from audio import transcribe
    from audio.formats import FORMATS, render, write_outputs

    formats = list(FORMATS) if args.format == "all" else [args.format]
    diarize = _diarization(args)
    worst = 0
    for name in args.files:
        try:
            source = sys.stdin.buffer if name == "-" else Path(name)
            bar = _ProgressBar(name, enabled=not args.no_progress)
            try:
                transcript = transcribe(
                    source,
                    model=args.model,
                    language=args.language,
                    task=args.task,
                    word_timestamps=args.word_timestamps,
                    split_channels=args.split_channels,
                    device=getattr(args, "device", None),
                    batch_size=args.batch_size,
                    progress=bar.update,
                    diarize=diarize,
                )
            finally:
                bar.close()
            if name == "-" and not args.output_dir:
                for fmt in formats:
                    sys.stdout.write(render(transcript, fmt))
                continue
            stem = "stdin" if name == "-" else Path(name).stem
            for path in write_outputs(transcript, stem, args.output_dir or ".", formats):
                print(path)
        except AssistantError as err:
            if len(args.files) == 1:
                raise
            print(f"assistant: error: {name}: {err.message}", file=sys.stderr)
            worst = max(worst, err.exit_code)
    return worst


def _diarization(args: argparse.Namespace):
    """The --diarize options as audio.diarize.Diarization (None without them); BadInput if they clash."""
    counts = {"speakers": args.speakers, "min_speakers": args.min_speakers, "max_speakers": args.max_speakers}
    if not args.diarize and all(v is None for v in counts.values()):
        return None
    if not args.diarize:
        raise BadInput("--speakers, --min-speakers and --max-speakers go with --diarize")
    if args.speakers is not None and (args.min_speakers is not None or args.max_speakers is not None):
        raise BadInput("give --speakers N, or --min-speakers/--max-speakers, not both")
    from audio.diarize import MAX_SPEAKERS, Diarization

    return Diarization(
        speakers=args.speakers,
        min_speakers=1 if args.min_speakers is None else args.min_speakers,
        max_speakers=MAX_SPEAKERS if args.max_speakers is None else args.max_speakers,
    )


class _ProgressBar:
    """tqdm on stderr in audio seconds (so the ETA is in real time), with the segment count."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name, self.enabled, self.bar = name, enabled, None

    def update(self, p) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.total_s, unit="s audio", desc=Path(self.name).name, file=sys.stderr, leave=False)
        if p.total_s and self.bar.total != p.total_s:
            self.bar.total = p.total_s
        self.bar.update(max(0.0, round(p.done_s - self.bar.n, 2)))
        self.bar.set_postfix(segments=p.segments, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
