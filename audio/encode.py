"""Encode mono float32 PCM as the files an API client asks for: wav, pcm (16-bit), mp3, flac, opus, aac."""

from __future__ import annotations

import io

import numpy as np

from assistant.errors import BadInput

__all__ = ["FORMATS", "MEDIA_TYPES", "encode_audio", "pcm16_bytes"]

# format -> (container, codec); wav and pcm are written without PyAV
_CODECS = {"mp3": ("mp3", "libmp3lame"), "flac": ("flac", "flac"), "opus": ("ogg", "libopus"), "aac": ("adts", "aac")}
FORMATS = ("wav", "pcm", *_CODECS)
MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "opus": "audio/ogg",
    "aac": "audio/aac",
}


def pcm16_bytes(pcm: np.ndarray) -> bytes:
    """Little-endian 16-bit samples, clipped to [-1, 1] (NaN -> 0)."""
    return (np.clip(np.nan_to_num(pcm), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def encode_audio(pcm: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode mono float32 `pcm` at `sample_rate` Hz as `fmt` (one of FORMATS). Raises BadInput."""
    if fmt == "pcm":
        return pcm16_bytes(pcm)
    if fmt == "wav":
        from audio.io import wav_bytes

        return wav_bytes(pcm, sample_rate)
    if fmt not in _CODECS:
        raise BadInput(f"audio format {fmt!r} is not supported: use one of {', '.join(FORMATS)}")
    import av

    container_name, codec = _CODECS[fmt]
    rate = 48_000 if fmt == "opus" else sample_rate  # Opus runs at 48 kHz; the encoder's resampler converts
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_name) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        samples = np.clip(np.nan_to_num(np.asarray(pcm, dtype=np.float32)), -1.0, 1.0)
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name,
            layout="mono",
            rate=rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        frames = []
        if len(samples):  # PyAV refuses an empty frame; no samples is a valid, empty file
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frames = [*resampler.resample(frame), *resampler.resample(None)]
        for part in frames:
            out.mux(stream.encode(part))
        out.mux(stream.encode(None))
    return buf.getvalue()
