"""Open, validate, orient and resize images into what the core model takes."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from assistant.errors import BadInput

__all__ = ["MAX_INPUT_PIXELS", "MAX_SIDE", "load_image"]

MAX_INPUT_PIXELS = 64_000_000  # refuse anything larger before decoding (bombs, 20k x 20k scans)
MAX_INPUT_BYTES = 50 * 1024**2  # 50 MiB
MAX_SIDE = 1280  # px: the longer side after resizing; the model's cost grows with pixels


def load_image(source: str | os.PathLike | bytes, max_side: int = MAX_SIDE, name: str | None = None) -> Image.Image:
    """Open an image from a path or bytes; return an upright RGB image no longer than `max_side`.

    Raises BadInput for missing, empty, non-image, oversized or decompression-bomb input; its message
    calls the image `name` (default: its path, or "the image").
    """
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        name = name or "the image"
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise BadInput(f"image file not found: {path}")
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise BadInput(f"{name} is larger than 50 MiB")
        data = path.read_bytes()
    if not data:
        raise BadInput(f"{name} is empty (0 bytes)")
    if len(data) > MAX_INPUT_BYTES:
        raise BadInput(f"{name} is larger than 50 MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_INPUT_PIXELS:
                limit = MAX_INPUT_PIXELS // 1_000_000
                raise BadInput(f"{name} is too large: {width}x{height} pixels, over {limit} megapixels")
            img.load()
    except BadInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        limit = MAX_INPUT_PIXELS // 1_000_000
        raise BadInput(f"{name} is too large: over {limit} megapixels (refused before decoding)") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadInput(f"cannot read {name}: not a supported image file") from err
    if width < 1 or height < 1:
        raise BadInput(f"{name} has no pixels")
    img = ImageOps.exif_transpose(img)
    img = img.convert("RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Vision encoders patchify in 28-px units; tiny images are upscaled to one patch grid.
    if min(img.size) < 28:
        scale = 28 / min(img.size)
        img = img.resize((max(28, round(img.width * scale)), max(28, round(img.height * scale))))
    return img
