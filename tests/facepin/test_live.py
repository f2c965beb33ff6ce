"""What the live capture takes as a camera frame (``facepin.live.camera_frame``): a colour
JPEG of one size within the bounds — never the card's own JPEG 2000 photo, a greyscale
picture, or another format."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facepin.live import MAX_FRAME_BYTES, FrameRefused, camera_frame


def encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def colour(size: tuple[int, int] = (640, 480)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_a_colour_jpeg_is_a_camera_frame() -> None:
    rgb = camera_frame(encoded(colour(), "JPEG", quality=90))
    assert rgb.shape == (480, 640, 3)
    assert camera_frame(encoded(colour(), "JPEG", progressive=True)).shape == (480, 640, 3)


@pytest.mark.parametrize(("data", "words"), [
    (encoded(colour((240, 320)).convert("L"), "JPEG2000"), "JPEG 2000"),  # the chip photo
    (encoded(colour((480, 640)), "JPEG2000", irreversible=True), "JPEG 2000"),
    (encoded(colour().convert("L"), "JPEG"), "colour"),
    (encoded(colour().convert("L").convert("RGB"), "JPEG"), "greyscale"),
    (encoded(colour(), "PNG"), "JPEG"),
    (encoded(colour(), "WEBP"), "JPEG"),
    (encoded(colour((200, 150)), "JPEG"), "200 × 150"),
    (encoded(colour((4000, 300)), "JPEG"), "4000 × 300"),
    (b"\xff\xd8\xff" + b"\0" * 100, "decoded"),
    (b"\xff\xd8\xff" + b"\0" * MAX_FRAME_BYTES, "bytes"),
])
def test_what_is_not_a_camera_frame(data: bytes, words: str) -> None:
    with pytest.raises(FrameRefused) as exc:
        camera_frame(data)
    assert words in exc.value.message


def test_the_frame_size_is_fixed_by_the_first_frame() -> None:
    with pytest.raises(FrameRefused, match="size changed"):
        camera_frame(encoded(colour((800, 600)), "JPEG"), (640, 480))
