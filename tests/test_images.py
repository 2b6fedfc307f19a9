"""vision.load_image: orientation, resizing and refusal of dangerous input."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from assistant.errors import BadInput
from vision.images import MAX_SIDE, load_image


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_large_photo_is_resized_and_rgb():
    img = load_image(png(Image.new("RGBA", (4000, 3000), (10, 20, 30, 128))))
    assert img.mode == "RGB" and max(img.size) == MAX_SIDE and img.size[0] > img.size[1]


def test_exif_rotation_is_applied():
    src = Image.new("RGB", (200, 100), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    src.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (100, 200)


def test_tiny_image_is_upscaled_to_one_patch():
    assert min(load_image(png(Image.new("RGB", (5, 3)))).size) >= 28


def test_20k_square_image_is_refused_fast():
    data = png(Image.new("1", (20_000, 20_000)))
    with pytest.raises(BadInput, match="too large"):
        load_image(data)


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100])
def test_non_images_are_refused(data):
    with pytest.raises(BadInput):
        load_image(data)
