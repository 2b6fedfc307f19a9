"""Audio in and out: decode any file, VAD, transcription, the mic loop.

Public entry point for transcription: `audio.transcribe(source, ...) -> audio.Transcript`.
Imports are lazy, so `import audio` loads no model and no heavy library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audio.transcription import Progress, Segment, Transcript, Word, transcribe

__all__ = ["Progress", "Segment", "Transcript", "Word", "transcribe"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from audio import transcription

        return getattr(transcription, name)
    raise AttributeError(f"module 'audio' has no attribute {name!r}")
