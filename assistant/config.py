"""Configuration as frozen dataclasses, parsed once at the edge (CLI or server start-up)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from assistant.errors import BadInput

__all__ = ["EngineConfig", "Profile", "build_once", "cache_dir", "default_data_dir", "resolve_profile"]


class Profile(StrEnum):
    OMNI = "omni"
    OFFLINE = "offline"
    TINY = "tiny"
    REMOTE = "remote"  # another OpenAI-compatible server is the core model (--model URL)


def default_data_dir() -> Path:
    """The platform's user data folder, or $ASSISTANT_DATA_DIR."""
    env = os.environ.get("ASSISTANT_DATA_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("assistant", appauthor=False))


def cache_dir() -> Path:
    """Where locally built models (tiny checkpoints, converted weights) are kept."""
    env = os.environ.get("ASSISTANT_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("assistant", appauthor=False))


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """Return the cache folder `path`, first filling it with `build(tmp_folder)` if it is not complete.

    The build happens in a temporary folder beside it that is renamed into place, so a crash or a
    concurrent build never leaves a half-written folder behind (a `.complete` marker proves it)."""
    if (path / ".complete").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is the user's, like any other
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def resolve_profile(name: str | None) -> Profile:
    """An explicit profile, or `omni` when a CUDA GPU is present, else `offline`."""
    if name:
        try:
            return Profile(name)
        except ValueError as err:
            raise BadInput(f"unknown profile {name!r}: choose omni, offline, tiny or remote") from err
    import torch

    return Profile.OMNI if torch.cuda.is_available() else Profile.OFFLINE


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What the engine loads and how it schedules."""

    profile: Profile = Profile.TINY
    model: str | None = None  # hub id or local path; None: the profile's default
    architecture: str = "qwen2_5_omni"  # qwen2_5_omni | qwen3_omni (tiny picks by this)
    device: str | None = None  # None: cuda if present, else cpu
    max_batch: int = 16  # sessions decoded together
    max_new_tokens: int = 256  # per reply (text tokens)
    max_context_tokens: int = 8192  # prompt + reply
    max_audio_tokens: int = 2048  # talker codec tokens per reply
    batch_window_ms: int = 5  # how long the scheduler waits for more arrivals before a step
    stream_speech: bool = True  # speech chunks as they are made (False: one chunk at the end)
    batch_speech: bool = True  # talker and vocoder steps of concurrent turns share forward passes
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise BadInput("max_batch must be at least 1")
        if self.max_new_tokens < 1:
            raise BadInput("max_new_tokens must be at least 1")
        if self.architecture not in ("qwen2_5_omni", "qwen3_omni"):
            raise BadInput(f"unknown architecture {self.architecture!r}: qwen2_5_omni or qwen3_omni")
