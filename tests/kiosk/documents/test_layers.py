"""The anti-forgery layers, measured with the simulators (``reference/kiosk-domain.md`` A.3).
The whole grid is printed by ``bench/document_security_grid.py``; here the acceptance points
are asserted on a bounded grid."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiosk.documents.layers import PagePlanes, ScrambleImage, VoidPantograph
from kiosk.documents.render import RenderedPage
from kiosk.documents.simulate import (
    CopierSettings,
    copy_page,
    eye_view,
    ir_view,
    lightness_difference,
)
from tests.kiosk.documents.conftest import SCRAMBLE_KEY


def _disk(mm: float, dpi: int = 600) -> np.ndarray:
    r = max(round(mm / 25.4 * dpi), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


# Windows measured (mm from the top): a band of table rows on the front, the empty lower
# back, and the latent image. The simulators are local, so a window stands for the page.
BANDS = {"front": (150.0, 200.0), "back": (200.0, 260.0)}


def _band(rp: RenderedPage, top: float, bottom: float, left: float = 0.0,
          right: float = 210.0) -> tuple[PagePlanes, dict[str, np.ndarray]]:
    y0, y1 = (round(v / 25.4 * 600) for v in (top, bottom))
    x0, x1 = (round(v / 25.4 * 600) for v in (left, right))
    return rp.planes.crop(y0, y1, x0, x1), {n: m[y0:y1, x0:x1] for n, m in rp.masks.items()}


def pantograph_regions(masks: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Word area and background area, away (2.5 mm) from every other printed element."""
    shape = masks["pantograph-word-area"].shape
    other = np.zeros(shape, np.uint8)
    for name, m in masks.items():
        if not name.startswith("pantograph"):
            other |= m.view(np.uint8)
    near = cv2.dilate(other, _disk(2.5)).astype(bool)
    area = masks["pantograph-word-area"]
    return area & ~near, ~area & ~near


def latent_regions(masks: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    mark = masks["latent"]
    inner = cv2.erode(masks["latent-surround"].view(np.uint8), _disk(1.0)).astype(bool)
    return mark, inner & ~cv2.dilate(mark.view(np.uint8), _disk(1.0)).astype(bool)


def test_pantograph_background_and_word_carry_equal_ink() -> None:
    bg, word = VoidPantograph().coverage()
    assert bg == pytest.approx(word)


@pytest.mark.slow
@pytest.mark.parametrize("side", [0, 1], ids=["front", "back"])
def test_hidden_word_is_invisible_on_the_original_and_appears_on_copies(
        juminhyo_600: list[RenderedPage], side: int) -> None:
    planes, masks = _band(juminhyo_600[side], *BANDS[["front", "back"][side]])
    word, bg = pantograph_regions(masks)
    original = lightness_difference(eye_view(planes.lightness(), 600), word, bg)
    assert original < 0.01
    for dpi in (300, 400):
        for threshold in (0.5, 0.6, 0.7):
            copy = copy_page(planes, CopierSettings(dpi=dpi, threshold=threshold))
            diff = lightness_difference(eye_view(copy.lightness(), 600), word, bg)
            assert diff > 0.04, (dpi, threshold, diff)


@pytest.mark.slow
def test_latent_mark_shows_in_IR_only_on_the_original(juminhyo_600: list[RenderedPage]) -> None:
    planes, masks = _band(juminhyo_600[1], 45.0, 105.0, 130.0, 190.0)
    mark, surround = latent_regions(masks)
    assert lightness_difference(ir_view(planes), mark, surround, erode_mm=0.1) > 0.1
    # ...and is invisible to the eye.
    eye = eye_view(planes.lightness(), 600)
    assert lightness_difference(eye, mark, surround, erode_mm=0.1) < 0.01
    for dpi in (300, 600):
        for colour in (True, False):
            copy = copy_page(planes, CopierSettings(dpi=dpi, colour=colour))
            assert lightness_difference(ir_view(copy), mark, surround, erode_mm=0.1) < 0.01


def test_scramble_round_trips_exactly_and_only_with_its_key() -> None:
    sc = ScrambleImage()
    plain = sc.content(["見本市", "青葉　太郎"])
    scrambled = sc.scramble(plain, SCRAMBLE_KEY)
    assert abs(scrambled.mean() - 0.5) < 0.05  # noise-like, whatever the content
    assert np.array_equal(sc.descramble(scrambled, SCRAMBLE_KEY) > 0.5, plain)
    wrong = sc.descramble(scrambled, bytes(32)) > 0.5
    assert (wrong == plain).mean() < 0.75


def test_scramble_is_found_and_decoded_in_a_300dpi_scan(
        juminhyo_600: list[RenderedPage]) -> None:
    back = juminhyo_600[1]
    scan = cv2.resize((back.planes.lightness() * 255).astype(np.uint8), None, fx=0.5, fy=0.5,
                      interpolation=cv2.INTER_AREA)
    sc = ScrambleImage()
    got = sc.descramble(sc.extract(scan), SCRAMBLE_KEY)
    from kiosk.documents.render import _scramble_lines
    from kiosk.documents.samples import sample_document

    want = sc.content(_scramble_lines(sample_document("juminhyo")))
    assert ((got > 0.5) == want).mean() > 0.97
