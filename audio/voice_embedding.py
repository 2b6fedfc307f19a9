"""Who is speaking, as a vector: GE2E speaker embeddings (256-dim, L2-normed) of short windows.

The weights are Resemblyzer's `pretrained.pt` (a 3-layer LSTM over 40 mel bands, trained with the
GE2E loss), shipped inside the PyPI package `resemblyzer` 0.1.4. Only the file is used: the
package's own code imports librosa and webrtcvad, so it is installed with --no-deps and its front
end is redone here (librosa's melspectrogram with the same settings, in torch). Nothing is
downloaded; the model is loaded on first use and kept.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from assistant.errors import MissingDependency, ModelError

__all__ = ["EMBEDDING_SIZE", "VoiceEncoder", "voice_encoder"]

SAMPLE_RATE = 16_000  # Hz: what the encoder was trained on
N_FFT = 400  # samples: a 25 ms window
HOP = 160  # samples: a 10 ms step
N_MELS = 40
EMBEDDING_SIZE = 256
TARGET_DBFS = -30.0  # the loudness Resemblyzer normalises its input to
_INSTALL_HINT = "pip install --no-deps resemblyzer==0.1.4"


class VoiceEncoder:
    """The GE2E network and its front end; `embed` is safe to call from several threads."""

    def __init__(self, weights: Path) -> None:
        import torch
        import torchaudio

        self._torch = torch
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)["model_state"]
        except (OSError, RuntimeError, KeyError) as err:
            raise ModelError(f"cannot load the speaker model {weights}: {err}") from err
        self.lstm = torch.nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = torch.nn.Linear(256, EMBEDDING_SIZE)
        self.lstm.load_state_dict({k.removeprefix("lstm."): v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.eval()
        self.linear.eval()
        self._window = torch.hann_window(N_FFT)  # periodic, as librosa's
        self._mel = torchaudio.functional.melscale_fbanks(
            N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
        )  # (201, 40)
        self._lock = threading.Lock()  # torch modules are not meant for concurrent forward passes

    def mel(self, pcm: np.ndarray):
        """Power mel spectrogram (not log: what the network was trained on), shape (frames, 40)."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32))
        spec = torch.stft(x, N_FFT, HOP, window=self._window, center=True, pad_mode="constant", return_complex=True)
        return (spec.abs() ** 2).T @ self._mel

    def embed(self, windows: list[np.ndarray], batch: int = 64) -> np.ndarray:
        """Embeddings of equally long 16 kHz windows, shape (n, 256); each row has unit length."""
        if not windows:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        torch = self._torch
        out = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(windows), batch):
                mels = torch.stack([self.mel(_normalise(w)) for w in windows[i : i + batch]])
                _, (hidden, _) = self.lstm(mels)
                raw = torch.relu(self.linear(hidden[-1]))
                out.append(torch.nn.functional.normalize(raw, dim=1).numpy())
        return np.concatenate(out)


def _normalise(pcm: np.ndarray) -> np.ndarray:
    """Scale to TARGET_DBFS RMS: the network sees linear power, so loudness would move the vector."""
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if len(pcm) else 0.0
    if rms < 1e-6:
        return pcm
    return (pcm * (10 ** (TARGET_DBFS / 20) / rms)).astype(np.float32)


def weights_path() -> Path:
    """Where `resemblyzer`'s pretrained.pt is, found without importing the package (it needs librosa)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.origin:
        raise MissingDependency(f"speaker labels need the resemblyzer package: {_INSTALL_HINT}")
    path = Path(spec.origin).resolve().parent / "pretrained.pt"
    if not path.is_file():
        raise MissingDependency(f"the speaker model {path} is missing: {_INSTALL_HINT} --force-reinstall")
    return path


@lru_cache(maxsize=1)
def voice_encoder() -> VoiceEncoder:
    """The shared encoder, loaded on first use."""
    return VoiceEncoder(weights_path())
