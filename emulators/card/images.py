"""Images the 券面事項確認AP holds: 1-bit PNGs of the name, address, security code and
個人番号, and the greyscale JPEG 2000 face photo."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

PHOTO_SIZE = (240, 320)
"""Width and height of the chip photo (3:4, as a passport-style picture)."""

_CJK_FONTS = (
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font with Japanese glyphs when one is installed (fonts-ipafont-gothic)."""
    for path in _CJK_FONTS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def text_png(text: str, width: int, line_height: int, max_lines: int = 1) -> bytes:
    """Render text in black on white, wrapped to ``max_lines``, as a 1-bit PNG."""
    font = _font(line_height - 4)
    lines: list[str] = []
    current = ""
    for ch in text:
        trial = current + ch
        if font.getlength(trial) > width - 4 and current:
            lines.append(current)
            current = ch
        else:
            current = trial
    lines.append(current)
    lines = lines[:max_lines]
    img = Image.new("1", (width, line_height * len(lines)), 1)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((2, i * line_height + 1), line, font=font, fill=0)
    return _png(img)


def digits_png(digits: str, width: int, height: int) -> bytes:
    """Small digit strip (the security code is 24×12, the 個人番号 72×12)."""
    img = Image.new("1", (width, height), 1)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((0, 0), digits, font=font, fill=0)
    return _png(img)


def synthetic_face() -> Image.Image:
    """A drawn face for the default fictional holder (no real person's photo)."""
    w, h = PHOTO_SIZE
    img = Image.new("L", (w, h), 200)
    d = ImageDraw.Draw(img)
    d.rectangle((0, int(h * 0.78), w, h), fill=90)  # shoulders
    d.ellipse((int(w * 0.22), int(h * 0.18), int(w * 0.78), int(h * 0.78)), fill=170)
    d.chord((int(w * 0.2), int(h * 0.12), int(w * 0.8), int(h * 0.5)), 180, 360, fill=40)
    for x in (0.38, 0.62):
        d.ellipse((int(w * x) - 9, int(h * 0.42) - 5, int(w * x) + 9, int(h * 0.42) + 5),
                  fill=30)
    d.line((w // 2, int(h * 0.46), w // 2 - 6, int(h * 0.56)), fill=110, width=3)
    d.arc((int(w * 0.4), int(h * 0.58), int(w * 0.6), int(h * 0.66)), 10, 170, fill=60, width=3)
    return img


def photo_jp2(source: Image.Image | Path | None = None, *, rate: float = 40.0) -> bytes:
    """The chip photo: greyscale JPEG 2000 (JP2 container), cropped to 3:4 and scaled to
    :data:`PHOTO_SIZE`. ``rate`` is the compression ratio (the chip keeps photos small)."""
    if source is None:
        img = synthetic_face()
    elif isinstance(source, Path):
        with Image.open(source) as opened:
            img = ImageOps.exif_transpose(opened).convert("L")
    else:
        img = source.convert("L")
    img = ImageOps.fit(img, PHOTO_SIZE, Image.Resampling.LANCZOS, centering=(0.5, 0.4))
    buf = io.BytesIO()
    img.save(buf, "JPEG2000", quality_mode="rates", quality_layers=[rate], no_jp2=False)
    return buf.getvalue()
