"""Anti-forgery layers of a printed certificate, each with its own parameters.

- :class:`VoidPantograph` — けん制文字: 「複写」 hidden in a field of fine dots. Background and
  word have the same ink coverage, but the background is isolated 1-dot specks the copier's
  scan blur and threshold wash out, while the word is clusters of dots that survive, so the
  word appears on a copy (``reference/kiosk-domain.md`` §2.2, A.3: "big-dot/little-dot").
  It is laid out in device pixels of the 600 dpi print engine: the effect depends on the
  printer's real dot size, so these parameters are per printer model.
- :class:`IrLatentMark` — 偽造防止検出画像: a circled 「証」 printed in carbon black (K) inside a
  flower of composite CMY grey matched to it visually. K absorbs near-IR, CMY does not, so an
  IR camera sees the mark; a copier re-separates both areas from the same visible grey and
  the mark is gone (§2.2, A.3).
- :class:`ScrambleImage` — スクランブル画像: an image of the key content cut into blocks,
  shuffled and inverted under a keyed permutation; only the key holder can put it back. Our
  design (``docs/document-security.md``): it proves the printed content, not the paper.

:class:`PagePlanes` is the ink model every layer and simulator shares: coverage of K, of a
CMY composite grey, and of the red 公印 ink, from which the visible and the IR views follow.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cardio.errors import CardioError

__all__ = [
    "DEVICE_DPI",
    "IrLatentMark",
    "PagePlanes",
    "ScrambleError",
    "ScrambleImage",
    "VoidPantograph",
    "font_path",
]

DEVICE_DPI = 600
"""The print engine's resolution: security layers are designed in its dots."""

_FONT_DIRS = (Path("/usr/share/fonts/opentype/ipafont-mincho"),
              Path("/usr/share/fonts/opentype/ipafont-gothic"),
              Path("/usr/share/fonts/truetype/fonts-japanese-mincho.ttf").parent)
_FONT_FILES = {"mincho": ("ipam.ttf", "fonts-japanese-mincho.ttf"),
               "gothic": ("ipag.ttf", "fonts-japanese-gothic.ttf")}


class FontMissingError(CardioError):
    """The IPA fonts are not installed (Debian: fonts-ipafont-mincho, fonts-ipafont-gothic)."""

    exit_code = 2


def font_path(face: str) -> Path:
    """The TrueType file of the IPA font ``face`` ("mincho" or "gothic"). reportlab embeds
    TrueType outlines only, which is why the IPA fonts and not Noto CJK (CFF)."""
    for d in _FONT_DIRS:
        for name in _FONT_FILES[face]:
            if (d / name).is_file():
                return d / name
    raise FontMissingError(f"IPA {face} font not found; install fonts-ipafont-{face}")


_font_cache: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def pil_font(face: str, px: int) -> ImageFont.FreeTypeFont:
    key = (face, px)
    if key not in _font_cache:
        _font_cache[key] = ImageFont.truetype(str(font_path(face)), size=max(px, 1))
    return _font_cache[key]


@dataclass
class PagePlanes:
    """A printed page as ink coverage (uint8, 255 = full) at ``dpi``.

    Visible reflectance is ``(1-k)(1-g)`` in grey, with the red ink absorbing green and blue;
    the composite grey is calibrated to look like the same coverage of K (that calibration is
    what hides the latent mark). Near-IR reflectance is ``1 - 0.9 k`` with a small absorption
    by the colour inks (A.3's model).
    """

    k: np.ndarray
    g: np.ndarray
    r: np.ndarray
    dpi: int

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.k.shape[0]), int(self.k.shape[1]))

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> PagePlanes:
        """A window of the page (copier and camera models are local, so measuring on a
        window with a margin gives the page's figures at a fraction of the cost)."""
        return PagePlanes(self.k[y0:y1, x0:x1], self.g[y0:y1, x0:x1], self.r[y0:y1, x0:x1],
                          self.dpi)

    def visible_rgb(self) -> np.ndarray:
        """sRGB-ish uint8 image of the page as the eye sees it."""
        grey = (255 - self.k.astype(np.uint16)) * (255 - self.g.astype(np.uint16)) // 255
        red = self.r.astype(np.uint16)
        out = np.empty((*self.shape, 3), np.uint8)
        out[..., 0] = grey * (255 - red // 10) // 255
        gb = (grey * (255 - red * 85 // 100) // 255).astype(np.uint8)
        out[..., 1] = gb
        out[..., 2] = gb
        return out

    def lightness(self) -> np.ndarray:
        """Luminance of the visible view, float32 in [0, 1]."""
        k = self.k.astype(np.float32) / 255.0
        grey = (1.0 - k) * (1.0 - self.g.astype(np.float32) / 255.0)
        if not self.r.any():
            return grey
        r = self.r.astype(np.float32) / 255.0
        out: np.ndarray = grey * (0.2126 * (1.0 - 0.1 * r) + 0.7874 * (1.0 - 0.85 * r))
        return out

    def ir(self) -> np.ndarray:
        """Near-IR reflectance, float32 in [0, 1] (what an IR camera sees)."""
        k = self.k.astype(np.float32) / 255.0
        g = self.g.astype(np.float32) / 255.0
        r = self.r.astype(np.float32) / 255.0
        out: np.ndarray = (1.0 - 0.9 * k) * (1.0 - 0.05 * g) * (1.0 - 0.05 * r)
        return out


@dataclass(frozen=True)
class VoidPantograph:
    """けん制文字 parameters, in 600 dpi device dots. The defaults give equal ink coverage
    (1/9) to background and word: 1-dot specks on a 3-dot pitch against 7×7 clusters on a
    21-dot pitch. (A.3's 5×5 on 15 vanishes on a 300 dpi copier with a soft scan — blur
    1.2 px, threshold 0.5 — and on 400 dpi halftoning copiers; 7×7 survives both, measured
    in ``bench/document_security_grid.py``.)"""

    word: str = "複写"
    bg_dot: int = 1
    bg_pitch: int = 3
    word_dot: int = 7
    word_pitch: int = 21
    word_height_mm: float = 28.0
    tile_mm: tuple[float, float] = (75.0, 55.0)

    def coverage(self) -> tuple[float, float]:
        return (self.bg_dot**2 / self.bg_pitch**2, self.word_dot**2 / self.word_pitch**2)

    def word_area(self, shape: tuple[int, int], dpi: int = DEVICE_DPI) -> np.ndarray:
        """Where the hidden word is (bool), tiled in staggered rows over the page."""
        h, w = shape
        img = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(img)
        px = round(self.word_height_mm / 25.4 * dpi)
        font = pil_font("gothic", px)
        tx, ty = (round(t / 25.4 * dpi) for t in self.tile_mm)
        for row, y in enumerate(range(-ty // 2, h + ty, ty)):
            x0 = (row % 2) * tx // 2 - tx // 2
            for x in range(x0, w + tx, tx):
                draw.text((x, y), self.word, font=font, fill=255)
        return np.asarray(img) > 127

    def _tile(self, dot: int, pitch: int, shape: tuple[int, int]) -> np.ndarray:
        cell = np.zeros((pitch, pitch), bool)
        o = (pitch - dot) // 2
        cell[o:o + dot, o:o + dot] = True
        h, w = shape
        reps = (-(-h // pitch), -(-w // pitch))
        return np.tile(cell, reps)[:h, :w]

    def render(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ink dots, word area, word dots) as bool arrays at the device resolution."""
        area = self.word_area(shape)
        bg = self._tile(self.bg_dot, self.bg_pitch, shape)
        word = self._tile(self.word_dot, self.word_pitch, shape)
        dots = np.where(area, word, bg)
        return dots, area, dots & area


@dataclass(frozen=True)
class IrLatentMark:
    """偽造防止検出画像 parameters: a flower of CMY grey at ``coverage`` hiding a circled
    「証」 in K at the same coverage."""

    diameter_mm: float = 40.0
    coverage: float = 0.35
    glyph: str = "証"


class ScrambleError(CardioError):
    """The スクランブル画像 could not be found or decoded (frame not detected, wrong size)."""

    exit_code = 1


def _keystream(key: bytes, label: bytes, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hmac.new(key, label + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        counter += 1
    return bytes(out[:n])


@dataclass(frozen=True)
class ScrambleImage:
    """スクランブル画像: ``cols × rows`` blocks of ``block`` device dots.

    The permutation is a Fisher–Yates shuffle driven by HMAC-SHA256(key, "perm"‖counter),
    and each block is inverted when its bit of HMAC-SHA256(key, "flip"‖counter) is set, so the
    print is ~50 % ink whatever the content ("砂嵐"). A 2 mm frame around it lets a
    descrambler find and rectify it in a scan.
    """

    cols: int = 48
    rows: int = 18
    block: int = 40
    frame_dots: int = 24  # frame thickness (≈1 mm)
    gap_dots: int = 24  # white gap between frame and blocks

    @property
    def inner_shape(self) -> tuple[int, int]:
        return (self.rows * self.block, self.cols * self.block)

    @property
    def outer_shape(self) -> tuple[int, int]:
        m = 2 * (self.frame_dots + self.gap_dots)
        return (self.rows * self.block + m, self.cols * self.block + m)

    def permutation(self, key: bytes) -> tuple[np.ndarray, np.ndarray]:
        n = self.cols * self.rows
        stream = _keystream(key, b"perm", 4 * n)
        perm = np.arange(n)
        for i in range(n - 1, 0, -1):
            j = int.from_bytes(stream[4 * i:4 * i + 4], "big") % (i + 1)
            perm[i], perm[j] = perm[j], perm[i]
        flips = np.unpackbits(np.frombuffer(_keystream(key, b"flip", -(-n // 8)), np.uint8))
        return perm, flips[:n].astype(bool)

    def content(self, lines: list[str]) -> np.ndarray:
        """The plain image of the key content (bool, True = ink) at the block grid's size."""
        h, w = self.inner_shape
        img = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(img)
        px = h // (len(lines) + 1)
        longest = max((len(line) for line in lines), default=1)
        size = int(min(px * 0.8, (w - self.block) / max(longest, 1)))
        for i, line in enumerate(lines):
            draw.text((self.block // 2, px // 2 + i * px), line, font=pil_font("gothic", size),
                      fill=255)
        return np.asarray(img) > 127

    def _blocks(self, img: np.ndarray) -> np.ndarray:
        b = self.block
        return img.reshape(self.rows, b, self.cols, b).swapaxes(1, 2).reshape(-1, b, b)

    def _unblocks(self, blocks: np.ndarray) -> np.ndarray:
        b = self.block
        return blocks.reshape(self.rows, self.cols, b, b).swapaxes(1, 2).reshape(
            self.rows * b, self.cols * b)

    def scramble(self, plain: np.ndarray, key: bytes) -> np.ndarray:
        perm, flips = self.permutation(key)
        blocks = self._blocks(plain)
        out = blocks[perm] ^ flips[:, None, None]
        return self._unblocks(out)

    def descramble(self, scrambled: np.ndarray, key: bytes) -> np.ndarray:
        """Inverse of :meth:`scramble`; works on float images too (inversion = 1 - x)."""
        perm, flips = self.permutation(key)
        blocks = self._blocks(scrambled.astype(np.float32))
        blocks = np.where(flips[:, None, None], 1.0 - blocks, blocks)
        plain = np.empty_like(blocks)
        plain[perm] = blocks
        return self._unblocks(plain)

    def framed(self, scrambled: np.ndarray) -> np.ndarray:
        """The printed element: frame, gap, blocks (bool, True = ink)."""
        out = np.zeros(self.outer_shape, bool)
        f, g = self.frame_dots, self.gap_dots
        out[:f, :] = out[-f:, :] = True
        out[:, :f] = out[:, -f:] = True
        out[f + g:-(f + g), f + g:-(f + g)] = scrambled
        return out

    def extract(self, grey: np.ndarray) -> np.ndarray:
        """Find the frame in a greyscale scan (uint8, any dpi, roughly upright) and return the
        block area rectified to the grid's size, as ink coverage in [0, 1]."""
        import cv2

        g = grey if grey.dtype == np.uint8 else np.clip(grey * 255, 0, 255).astype(np.uint8)
        _, bw = cv2.threshold(cv2.GaussianBlur(g, (3, 3), 0), 0, 255,
                              cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
        contours, _ = cv2.findContours(bw, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        oh, ow = self.outer_shape
        want = ow / oh
        best = None
        for c in contours:
            _, _, w, h = cv2.boundingRect(c)
            if h < 20 or abs(w / h - want) > 0.08 * want:
                continue
            approx = cv2.approxPolyDP(c, 0.02 * cv2.arcLength(c, True), True)
            if len(approx) != 4:
                continue
            area = cv2.contourArea(approx)
            if area < 0.8 * w * h:
                continue
            if best is None or area > best[0]:
                best = (area, approx.reshape(4, 2).astype(np.float32))
        if best is None:
            raise ScrambleError("スクランブル画像 frame not found in the image")
        pts = best[1]
        s, d = pts.sum(1), np.diff(pts, axis=1).ravel()
        src = np.array([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)],
                        pts[np.argmax(d)]], np.float32)
        dst = np.array([[0, 0], [ow - 1, 0], [ow - 1, oh - 1], [0, oh - 1]], np.float32)
        m = cv2.getPerspectiveTransform(src, dst)
        rect = cv2.warpPerspective(g, m, (ow, oh), flags=cv2.INTER_LINEAR)
        fg = self.frame_dots + self.gap_dots
        inner = rect[fg:oh - fg, fg:ow - fg].astype(np.float32) / 255.0
        return 1.0 - inner
