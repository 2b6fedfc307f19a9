"""Decode any audio file PyAV reads into mono float32 PCM; write WAV files.

Every front end goes through `load_audio`, so bad input gets the same one-line errors.
"""

from __future__ import annotations

import io
import logging
import os
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

from assistant.errors import BadInput, MissingDependency

__all__ = ["SAMPLE_RATE", "load_audio", "resample", "write_wav", "wav_bytes"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Hz: what speech models take
MAX_INPUT_BYTES = 2 * 1024**3  # 2 GiB: larger inputs are refused before decoding

AudioSource = str | os.PathLike | bytes | BinaryIO


def _open_container(source: AudioSource):
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a hard dependency
        raise MissingDependency("decoding audio needs PyAV: pip install av") from err
    if isinstance(source, bytes | bytearray):
        if not source:
            raise BadInput("the audio is empty (0 bytes)")
        source = io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise BadInput(f"audio file not found: {path}")
        if path.is_dir():
            raise BadInput(f"expected an audio file, got a directory: {path}")
        size = path.stat().st_size
        if size == 0:
            raise BadInput(f"the audio file is empty (0 bytes): {path}")
        if size > MAX_INPUT_BYTES:
            raise BadInput(f"the audio file is larger than 2 GiB: {path}")
        source = str(path)
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as err:
        raise BadInput(f"cannot read audio from {_name(source)}: not a decodable audio file") from err


def _name(source) -> str:
    return source if isinstance(source, str) else "the upload"


def load_audio(source: AudioSource, sample_rate: int = SAMPLE_RATE, channel: int | None = None) -> np.ndarray:
    """Decode `source` (path, bytes or binary file) to float32 PCM at `sample_rate` Hz.

    Mono by default (channels averaged); `channel` picks one channel of a multi-channel file.
    Returns shape (n_samples,). Raises BadInput for anything that is not decodable audio.
    """
    import av

    with _open_container(source) as container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise BadInput(f"{_name(source)} has no audio track")
        stream = streams[0]
        stream.thread_type = "AUTO"
        layout = "mono" if channel is None else None
        resampler = av.AudioResampler(format="flt", layout=layout, rate=sample_rate)
        parts: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    parts.append(_frame_array(out, channel))
            for out in resampler.resample(None):
                parts.append(_frame_array(out, channel))
        except av.FFmpegError as err:
            if not parts:
                raise BadInput(f"cannot decode audio from {_name(source)}: the file is corrupt") from err
            log.warning("audio stream ended early (corrupt tail): %s", err)
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _frame_array(frame, channel: int | None) -> np.ndarray:
    arr = frame.to_ndarray()  # packed flt: shape (1, n * channels)
    if channel is None:
        return arr.reshape(-1)
    n_ch = len(frame.layout.channels)
    if channel >= n_ch:
        raise BadInput(f"channel {channel} asked for, but the audio has {n_ch} channel(s)")
    return arr.reshape(-1, n_ch)[:, channel]


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float32 PCM (band-limited, via torchaudio)."""
    if from_rate == to_rate or len(pcm) == 0:
        return pcm.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as F

    out = F.resample(torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32)), from_rate, to_rate)
    return out.numpy()


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    """Encode mono float32 PCM as 16-bit PCM WAV bytes."""
    buf = io.BytesIO()
    pcm16 = (np.clip(np.nan_to_num(pcm), -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16.tobytes())
    return buf.getvalue()


def write_wav(path: str | os.PathLike, pcm: np.ndarray, sample_rate: int) -> Path:
    """Write mono float32 PCM to a 16-bit WAV file atomically (no partial file on failure)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        tmp.write_bytes(wav_bytes(pcm, sample_rate))
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write {path}: {err.strerror or err}") from err
    return path
