"""Test instruments: a photocopier, an IR camera, the eye, and a phone camera, in software.

They are models, not physics, and are parameterised so the acceptance grid can be swept
(``reference/kiosk-domain.md`` A.3): a copier is a low-pass filter (scan blur, σ ≈ 0.8 px at
scan resolution), a resampling to its scan resolution, and a threshold or an ordered-dither
halftone; a colour copier re-separates what it scanned into K and CMY by its own rule, the
same for equal visible greys — which is why an IR latent mark does not survive it. The eye is
a Gaussian of σ ≈ 0.25 mm. The phone camera warps a page into a 12-megapixel frame with
perspective, rotation, scale, defocus, uneven light, sensor noise and JPEG compression.

Every function is deterministic given its ``numpy.random.Generator``, so a failing case can
be replayed from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from cardio.errors import CardioError
from kiosk.documents.layers import DEVICE_DPI, PagePlanes

__all__ = [
    "CopierSettings",
    "PhoneSettings",
    "copy_page",
    "eye_view",
    "ir_view",
    "lightness_difference",
    "phone_photo",
    "random_phone_settings",
]


class EmptyMaskError(CardioError, ValueError):
    """A contrast measurement over a mask with nothing left after erosion: the element
    is too small at this resolution to be measured."""


@dataclass(frozen=True)
class CopierSettings:
    """One photocopier: scan resolution, scan blur (σ in scan pixels), and the print-side
    rendering of the scan: a fixed threshold on lightness, or a 4×4 ordered-dither halftone.
    ``colour`` re-separates into K and CMY (partial grey-component replacement)."""

    dpi: int = 300
    blur_px: float = 0.8
    mode: Literal["threshold", "halftone"] = "threshold"
    threshold: float = 0.6
    colour: bool = False
    gcr: float = 0.6  # share of a grey the colour copier prints in K
    # 下地除去 (background suppression): scanned lightness at or above this level prints as
    # paper white, the rest is stretched to fill the range. None: off.
    background_removal: float | None = None

    def label(self) -> str:
        m = f"thr {self.threshold:.2f}" if self.mode == "threshold" else "halftone"
        if self.background_removal is not None:
            m += f" + bg removal {self.background_removal:.2f}"
        return f"{self.dpi} dpi, blur {self.blur_px:.1f} px, {m}" + (", colour" if self.colour
                                                                      else "")


_BAYER4 = (np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]],
                    np.float32) + 0.5) / 16.0


def _scan(lightness: np.ndarray, dpi_in: int, s: CopierSettings) -> np.ndarray:
    sigma_in = s.blur_px * dpi_in / s.dpi
    blurred = cv2.GaussianBlur(lightness, (0, 0), sigma_in) if sigma_in > 0 else lightness
    h, w = lightness.shape
    size = (round(w * s.dpi / dpi_in), round(h * s.dpi / dpi_in))
    if size == (w, h):
        return blurred
    return cv2.resize(blurred, size, interpolation=cv2.INTER_AREA)


def copy_page(page: PagePlanes, s: CopierSettings) -> PagePlanes:
    """The copy of ``page`` as the copier prints it, back at the original's resolution."""
    light = page.lightness()
    scan = _scan(light, page.dpi, s)
    if s.background_removal is not None:
        scan = np.minimum(scan / np.float32(s.background_removal), np.float32(1.0))
    h, w = page.shape
    if s.colour:
        dark = 1.0 - scan
        k = s.gcr * dark
        g = np.where(k < 1.0, (dark - k) / np.maximum(1.0 - k, 1e-6), 0.0)
        k8 = cv2.resize((k * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        g8 = cv2.resize((g * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        return PagePlanes(k8, g8, np.zeros_like(k8), page.dpi)
    if s.mode == "threshold":
        ink = scan < s.threshold
    else:
        sh, sw = scan.shape
        bayer = np.tile(_BAYER4, (-(-sh // 4), -(-sw // 4)))[:sh, :sw]
        ink = (1.0 - scan) > bayer
    k8 = cv2.resize(ink.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_NEAREST)
    return PagePlanes(k8, np.zeros_like(k8), np.zeros_like(k8), page.dpi)


def eye_view(lightness: np.ndarray, dpi: int, sigma_mm: float = 0.25) -> np.ndarray:
    """Lightness as the eye sees it at reading distance: a Gaussian of ``sigma_mm``."""
    return cv2.GaussianBlur(lightness, (0, 0), sigma_mm / 25.4 * dpi)


def ir_view(page: PagePlanes) -> np.ndarray:
    """What a near-IR camera sees (reflectance in [0, 1])."""
    return page.ir()


def lightness_difference(image: np.ndarray, a: np.ndarray, b: np.ndarray,
                         erode_mm: float = 0.6, dpi: int = DEVICE_DPI) -> float:
    """|mean(image over a) − mean(image over b)|, each mask eroded by ``erode_mm`` so edges
    (where both the eye blur and the copier mix the two) do not count."""
    r = max(round(erode_mm / 25.4 * dpi), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    ea = cv2.erode(a.astype(np.uint8), kernel).astype(bool)
    eb = cv2.erode(b.astype(np.uint8), kernel).astype(bool)
    if not ea.any() or not eb.any():
        raise EmptyMaskError("a mask is empty after erosion: nothing left to measure")
    return abs(float(image[ea].mean()) - float(image[eb].mean()))


@dataclass(frozen=True)
class PhoneSettings:
    """One phone photo of a page."""

    rotation_deg: float = 0.0
    scale: float = 0.85  # page height as a share of the frame height
    perspective: float = 0.0  # corner jitter as a share of the page size
    defocus_px: float = 0.0
    jpeg_quality: int = 90
    light_gradient: float = 0.0  # darkest corner's share of light lost
    noise: float = 2.0  # sensor noise σ in 8-bit levels
    frame: tuple[int, int] = (4000, 3000)  # 12 MP, portrait: (height, width)
    seed: int = 0


def random_phone_settings(rng: np.random.Generator) -> PhoneSettings:
    """A draw from the acceptance ranges: rotation ±10°, JPEG 50–95, and the rest."""
    return PhoneSettings(
        rotation_deg=float(rng.uniform(-10, 10)),
        scale=float(rng.uniform(0.7, 0.9)),
        perspective=float(rng.uniform(0.0, 0.06)),
        defocus_px=float(rng.uniform(0.0, 1.2)),
        jpeg_quality=int(rng.integers(50, 96)),
        light_gradient=float(rng.uniform(0.0, 0.5)),
        noise=float(rng.uniform(1.0, 4.0)),
        seed=int(rng.integers(0, 2**31)),
    )


def phone_photo(page_rgb: np.ndarray, s: PhoneSettings) -> bytes:
    """A JPEG of ``page_rgb`` (uint8 RGB, any dpi) as a phone photographs it on a table."""
    rng = np.random.default_rng(s.seed)
    fh, fw = s.frame
    ph, pw = page_rgb.shape[:2]
    k = s.scale * fh / ph
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    c = np.array([pw / 2, ph / 2], np.float32)
    th = np.deg2rad(s.rotation_deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]], np.float32)
    jitter = rng.uniform(-s.perspective, s.perspective, (4, 2)).astype(np.float32) * [pw, ph]
    dst = ((src - c + jitter) * k) @ rot.T
    span = dst.max(0) - dst.min(0)
    room = np.maximum(np.array([fw, fh], np.float32) - span, 0)
    offset = -dst.min(0) + room * rng.uniform(0.2, 0.8, 2).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, (dst + offset).astype(np.float32))
    table = tuple(int(v) for v in rng.integers(40, 120, 3))
    img = cv2.warpPerspective(cv2.cvtColor(page_rgb, cv2.COLOR_RGB2BGR), m, (fw, fh),
                              flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=table)
    if s.defocus_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), s.defocus_px)
    yy, xx = np.mgrid[0:fh:16, 0:fw:16].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(ang) * xx / fw + np.sin(ang) * yy / fh)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    vignette = ((xx / fw - 0.5) ** 2 + (yy / fh - 0.5) ** 2) * 0.6
    light = np.clip(1.0 - s.light_gradient * ramp - vignette * s.light_gradient, 0.2, 1.0)
    light = cv2.resize(light, (fw, fh), interpolation=cv2.INTER_LINEAR)
    out = img.astype(np.float32) * light[..., None]
    if s.noise > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(s.noise)
    ok, jpeg = cv2.imencode(".jpg", np.clip(out, 0, 255).astype(np.uint8),
                            [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
    assert ok
    return jpeg.tobytes()
