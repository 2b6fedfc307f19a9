"""Decode any audio file PyAV reads into mono float32 PCM; write WAV files.

Every front end goes through `load_audio`, so bad input gets the same one-line errors.
"""

from __future__ import annotations

import io
import logging
import os
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from assistant.errors import BadInput, MissingDependency

__all__ = [
    "SAMPLE_RATE",
    "AudioInfo",
    "load_audio",
    "probe_audio",
    "resample",
    "stream_audio",
    "wav_bytes",
    "write_wav",
]

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
    For long files prefer `stream_audio`, which holds one window at a time.
    """
    parts = list(stream_audio(source, sample_rate=sample_rate, channel=channel))
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What the container says about its first audio track, before decoding."""

    duration_s: float | None  # None when the container does not know (raw streams)
    channels: int
    sample_rate: int  # Hz, of the source track


def probe_audio(source: str | os.PathLike) -> AudioInfo:
    """Read the container header of a file: duration, channel count, rate. Raises BadInput."""
    with _open_container(source) as container:
        stream = _audio_stream(container, source)
        duration_s = None
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / 1_000_000  # av.time_base: microseconds
        channels = stream.codec_context.channels or 1
        return AudioInfo(duration_s=duration_s, channels=channels, sample_rate=stream.codec_context.sample_rate)


def stream_audio(
    source: AudioSource, sample_rate: int = SAMPLE_RATE, channel: int | None = None, window_s: float = 60.0
) -> Iterator[np.ndarray]:
    """Decode `source` lazily into float32 PCM windows of about `window_s` seconds (the last may be
    shorter). Memory stays bounded by one window however long the file is. Same errors and channel
    handling as `load_audio`; empty audio yields nothing.
    """
    import av

    window = max(1, int(window_s * sample_rate))  # samples
    with _open_container(source) as container:
        stream = _audio_stream(container, source)
        stream.thread_type = "AUTO"
        layout = "mono" if channel is None else None
        resampler = av.AudioResampler(format="flt", layout=layout, rate=sample_rate)
        parts: list[np.ndarray] = []
        buffered = 0
        decoded_any = False
        try:
            for frame in container.decode(stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    arr = _frame_array(out, channel)
                    parts.append(arr)
                    buffered += len(arr)
                    decoded_any = True
                if buffered >= window:
                    joined = np.concatenate(parts)
                    yield from _split_windows(joined, window, keep_tail=True, parts=parts)
                    buffered = sum(len(p) for p in parts)
            for out in resampler.resample(None):
                parts.append(_frame_array(out, channel))
        except av.FFmpegError as err:
            if not decoded_any:
                raise BadInput(f"cannot decode audio from {_name(source)}: the file is corrupt") from err
            log.warning("audio stream ended early (corrupt tail): %s", err)
        if not decoded_any and not parts:
            # An audio track that yields no samples at all: a damaged file (random bytes behind a
            # valid header decode to nothing) or one with no sound in it; either way, say so.
            raise BadInput(f"cannot decode audio from {_name(source)}: the file is corrupt or holds no samples")
        if parts:
            yield from _split_windows(np.concatenate(parts), window, keep_tail=False, parts=parts)


def _split_windows(joined: np.ndarray, window: int, keep_tail: bool, parts: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Yield full windows of `joined`; the remainder goes back into `parts` (or out, at the end)."""
    parts.clear()
    n_full = len(joined) // window
    for i in range(n_full):
        yield np.ascontiguousarray(joined[i * window : (i + 1) * window], dtype=np.float32)
    rest = joined[n_full * window :]
    if len(rest):
        if keep_tail:
            parts.append(rest)
        else:
            yield np.ascontiguousarray(rest, dtype=np.float32)


def _audio_stream(container, source):
    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        raise BadInput(f"{_name(source)} has no audio track")
    return streams[0]


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
