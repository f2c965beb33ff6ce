"""Recorded sequences for liveness tests and the presentation-attack set, made from still
photos (``shared/data/faces/dev``): there is no consented video data here.

* Bona fide: the face is turned as a 3-D head would turn — a 2.5-D warp over an
  ellipsoid with a nose bump, so the nose moves further than the eye corners — and the
  head comes closer by scaling. Synthetic: a stand-in for real recordings, which BPCER
  must eventually be measured on.
* Print attack: the photo printed (lower contrast, slight blur, paper grain) and turned
  or brought closer as a flat sheet (a homography).
* Screen replay: the photo on a screen (gamma, a moiré pattern, a little glare), turned
  and brought closer as a flat screen.
* Still image played as video: the same frame throughout.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np

from cardio.identity import InvalidValue
from facepin.face import FaceBox
from facepin.liveness import Prompt

FPS = 10.0
SPECIES = ("print", "screen", "still_video")


def _cv2() -> Any:
    import cv2

    return cv2


def turn_head(rgb: np.ndarray, box: FaceBox, nose: tuple[int, int], degrees: float
              ) -> np.ndarray:
    """Rotate the face about a vertical axis as if it had depth."""
    if abs(degrees) < 1e-6:
        return rgb.copy()
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    theta = math.radians(degrees)
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2 + 0.05 * box.width
    a, b = 0.62 * box.width, 0.85 * (box.bottom - box.top)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xs - cx) / a, (ys - cy) / b
    inside = np.clip(1 - u * u - v * v, 0, None)
    z = 0.9 * a * np.sqrt(inside)
    sigma = 0.18 * a
    z += 0.45 * a * np.exp(-((xs - nose[0]) ** 2 + (ys - nose[1]) ** 2) / (2 * sigma**2)) \
        * (inside > 0)
    xprime = cx + (xs - cx) * math.cos(theta) + z * math.sin(theta)
    xprime = np.maximum.accumulate(xprime, axis=1)  # occlusion: keep rows monotonic
    map_x = np.empty_like(xs)
    grid = np.arange(w, dtype=np.float32)
    for row in range(h):
        map_x[row] = np.interp(grid, xprime[row], grid)
    return np.asarray(cv2.remap(rgb, map_x, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


def planar_turn(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """A flat picture turned about its vertical centre line, seen by a camera."""
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    theta = math.radians(degrees)
    f = 1.2 * w
    cx = w / 2
    src = np.asarray([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    dst = []
    for x, y in src:
        X = (x - cx) * math.cos(theta)
        Z = (x - cx) * math.sin(theta)
        s = f / (f + Z)
        dst.append([cx + X * s, h / 2 + (y - h / 2) * s])
    m = cv2.getPerspectiveTransform(src, np.asarray(dst, dtype=np.float32))
    return np.asarray(cv2.warpPerspective(rgb, m, (w, h), borderMode=cv2.BORDER_REPLICATE))


def zoom(rgb: np.ndarray, factor: float) -> np.ndarray:
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    m = np.asarray([[factor, 0, (1 - factor) * w / 2], [0, factor, (1 - factor) * h / 2]],
                   dtype=np.float32)
    return np.asarray(cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REPLICATE))


def printed(rgb: np.ndarray, rng: random.Random) -> np.ndarray:
    cv2 = _cv2()
    img = rgb.astype(np.float32)
    img = 40 + img * 0.75  # paper white and ink: lower contrast
    img = np.asarray(cv2.GaussianBlur(img, (0, 0), 0.8))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def on_screen(rgb: np.ndarray, rng: random.Random) -> np.ndarray:
    h, w = rgb.shape[:2]
    img = 255 * (rgb.astype(np.float32) / 255) ** 0.8
    ys, xs = np.mgrid[0:h, 0:w]
    period = rng.uniform(3.0, 5.0)
    angle = rng.uniform(0, math.pi)
    moire = 10 * np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
    glare = 30 * np.exp(-((xs - 0.7 * w) ** 2 + (ys - 0.3 * h) ** 2) / (2 * (0.2 * w) ** 2))
    img = img + moire[..., None] + glare[..., None]
    out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _timeline(prompts: list[Prompt]) -> Iterator[tuple[str, float]]:
    """(kind, amount) per frame: kind is 'yaw' (degrees) or 'zoom' (factor)."""
    for _ in range(3):
        yield "yaw", 0.0
    for p in prompts:
        if p is Prompt.COME_CLOSER:
            for f in (1.1, 1.2, 1.3, 1.4, 1.4, 1.2, 1.0):
                yield "zoom", f
        else:
            sign = -1.0 if p is Prompt.TURN_LEFT else 1.0
            for d in (8, 16, 24, 32, 32, 20, 8, 0):
                yield "yaw", sign * d
    for _ in range(3):
        yield "yaw", 0.0


def genuine_sequence(rgb: np.ndarray, box: FaceBox, nose: tuple[int, int],
                     prompts: list[Prompt]) -> Iterator[tuple[np.ndarray, float]]:
    for i, (kind, amount) in enumerate(_timeline(prompts)):
        frame = turn_head(rgb, box, nose, amount) if kind == "yaw" else zoom(rgb, amount)
        yield frame, i / FPS


def attack_sequence(rgb: np.ndarray, species: str, prompts: list[Prompt], seed: int = 0
                    ) -> Iterator[tuple[np.ndarray, float]]:
    """The attacker follows the prompts with the medium (turning or approaching it)."""
    rng = random.Random(seed)
    if species == "print":
        medium = printed(rgb, rng)
    elif species == "screen":
        medium = on_screen(rgb, rng)
    elif species == "still_video":
        for i, _ in enumerate(_timeline(prompts)):
            yield rgb, i / FPS
        return
    else:
        raise InvalidValue(f"unknown species {species!r}")
    for i, (kind, amount) in enumerate(_timeline(prompts)):
        frame = planar_turn(medium, amount) if kind == "yaw" else zoom(medium, amount)
        yield frame, i / FPS
