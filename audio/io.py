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
    "MAX_FILE_AUDIO_S",
    "MAX_TURN_AUDIO_S",
    "SAMPLE_RATE",
    "AudioInfo",
    "AudioTooLong",
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
# Decoded length caps: a few MB of compressed silence decode to gigabytes of PCM (10 h of FLAC is
# 9 MB and 2.3 GB as float32), so decoding stops at the cap instead of after the whole file.
MAX_TURN_AUDIO_S = 300.0  # s: audio in one conversational turn (chat, voice, realtime, ask --audio)
MAX_FILE_AUDIO_S = 4 * 3600.0  # s: a file to transcribe (decoded in bounded windows, never whole)


class AudioTooLong(BadInput):
    """Decoded audio ran past the caller's duration cap."""

    def __init__(self, what: str, cap_s: float) -> None:
        if cap_s == MAX_TURN_AUDIO_S:
            limit = "the most one turn takes (longer recordings: transcribe them)"
        elif cap_s == MAX_FILE_AUDIO_S:
            limit = "the most one transcription takes"
        else:
            limit = "the limit here"
        super().__init__(f"{what} is longer than {_duration(cap_s)}, {limit}")
        self.cap_s = cap_s


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"

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
    """How messages call `source`: its path, but never a server's temporary file (an upload)."""
    if not isinstance(source, str):
        return "the upload"
    return "the upload" if _is_temporary(source) else source


def _is_temporary(path: str) -> bool:
    import tempfile

    return os.path.dirname(os.path.abspath(path)) == os.path.abspath(tempfile.gettempdir())


def load_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    channel: int | None = None,
    max_duration_s: float = MAX_TURN_AUDIO_S,
) -> np.ndarray:
    """Decode `source` (path, bytes or binary file) to float32 PCM at `sample_rate` Hz.

    Mono by default (channels averaged); `channel` picks one channel of a multi-channel file.
    Returns shape (n_samples,). Raises BadInput for anything that is not decodable audio, and
    AudioTooLong (a BadInput) as soon as decoding passes `max_duration_s` seconds.
    For long files prefer `stream_audio`, which holds one window at a time.
    """
    window_s = min(60.0, max_duration_s)
    parts = list(
        stream_audio(source, sample_rate=sample_rate, channel=channel, window_s=window_s, max_duration_s=max_duration_s)
    )
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
        duration_s = _header_duration(container, stream)
        channels = stream.codec_context.channels or 1
        return AudioInfo(duration_s=duration_s, channels=channels, sample_rate=stream.codec_context.sample_rate)


def stream_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    channel: int | None = None,
    window_s: float = 60.0,
    max_duration_s: float = MAX_FILE_AUDIO_S,
) -> Iterator[np.ndarray]:
    """Decode `source` lazily into float32 PCM windows of about `window_s` seconds (the last may be
    shorter). Memory stays bounded by one window however long the file is. Same errors and channel
    handling as `load_audio`; empty audio yields nothing. Raises AudioTooLong (before decoding when
    the header says so, else as soon as the decoded length passes `max_duration_s`).
    """
    import av

    window = max(1, int(window_s * sample_rate))  # samples
    cap = int(max_duration_s * sample_rate)  # samples
    with _open_container(source) as container:
        stream = _audio_stream(container, source)
        header_s = _plausible(_header_duration(container, stream), _size_bytes(source))
        if header_s is not None and header_s > max_duration_s + 1.0:  # headers are off a little
            raise AudioTooLong(f"{_what(source)} ({header_s / 60:.1f} min)", max_duration_s)
        total = 0  # samples decoded so far
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
                    total += len(arr)
                    decoded_any = True
                if total > cap:
                    raise AudioTooLong(_what(source), max_duration_s)
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


def _what(source) -> str:
    if isinstance(source, str | os.PathLike) and not _is_temporary(os.fspath(source)):
        return f"the audio file {Path(source).name}"
    return "the audio"


MIN_BITRATE_BPS = 500  # no codec we decode holds sound in fewer bits a second (FLAC of silence: ~1500)


def _size_bytes(source) -> int | None:
    if isinstance(source, bytes | bytearray):
        return len(source)
    if isinstance(source, str | os.PathLike):
        return Path(source).stat().st_size
    return None


def _plausible(header_s: float | None, size_bytes: int | None) -> float | None:
    """The header's duration, unless the file is too small to hold that much (a damaged header):
    then None, and the length is only known by decoding (which stops at the cap all the same)."""
    if header_s is None or size_bytes is None or header_s > size_bytes * 8 / MIN_BITRATE_BPS:
        return None
    return header_s


def _header_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base: microseconds
    return None


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
