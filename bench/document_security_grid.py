"""The copy-evidence grid: けん制文字 and IR latent mark through the copier simulator over
scan resolutions, blurs and print modes, on a 住民票 rendered at the print engine's 600 dpi.

Prints every cell, including where the effect fails (high-resolution copiers, halftone
copiers without background suppression). Figures are lightness differences between the
hidden word's area and its background (eye model: Gaussian σ 0.25 mm), and IR reflectance
differences between the latent mark and its surround. Acceptance: original < 0.01, copies at
≤ 400 dpi > 0.04; latent > 0.1 in IR on the original, < 0.01 in IR on a copy.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.layers import PagePlanes
from kiosk.documents.render import render_pages
from kiosk.documents.samples import sample_document
from kiosk.documents.seal import sign_document
from kiosk.documents.simulate import (
    CopierSettings,
    copy_page,
    eye_view,
    ir_view,
    lightness_difference,
)

BANDS = {"front": (0, 150.0, 200.0), "back": (1, 200.0, 260.0)}


def _mm(v: float) -> int:
    return round(v / 25.4 * 600)


def _disk(mm: float) -> np.ndarray:
    r = max(_mm(mm), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def main() -> None:
    t0 = time.perf_counter()
    doc = sample_document("juminhyo")
    pages = render_pages(doc, sign_document(doc, ec.generate_private_key(ec.SECP256R1())),
                         bytes(32), 600, masks=True)
    print("けん制文字 (void pantograph): |L(word) − L(background)| seen through the eye model")
    for side, (idx, top, bottom) in BANDS.items():
        rp = pages[idx]
        y0, y1 = _mm(top), _mm(bottom)
        planes = rp.planes.crop(y0, y1, 0, rp.planes.shape[1])
        masks = {n: m[y0:y1] for n, m in rp.masks.items()}
        other = np.zeros(planes.shape, np.uint8)
        for n, m in masks.items():
            if not n.startswith("pantograph"):
                other |= m.view(np.uint8)
        near = cv2.dilate(other, _disk(2.5)).astype(bool)
        word = masks["pantograph-word-area"] & ~near
        bg = ~masks["pantograph-word-area"] & ~near
        orig = lightness_difference(eye_view(planes.lightness(), 600), word, bg)
        print(f"\n{side} (band {top:.0f}–{bottom:.0f} mm): original {orig:.4f} "
              f"({'< 0.01 ok' if orig < 0.01 else 'VISIBLE'})")
        print(f"  {'copier':54s} {'diff':>7s}  verdict")
        for dpi in (300, 400, 600, 1200):
            for blur in (0.6, 0.8, 1.2):
                modes: list[CopierSettings] = [
                    CopierSettings(dpi=dpi, blur_px=blur, threshold=t) for t in (0.5, 0.6, 0.7)]
                modes += [CopierSettings(dpi=dpi, blur_px=blur, mode="halftone"),
                          CopierSettings(dpi=dpi, blur_px=blur, mode="halftone",
                                         background_removal=0.85)]
                for s in modes:
                    d = lightness_difference(eye_view(copy_page(planes, s).lightness(), 600),
                                             word, bg)
                    need = dpi <= 400
                    verdict = ("appears" if d > 0.04 else "faint" if d > 0.01 else "hidden")
                    flag = " (FAILS acceptance)" if need and d <= 0.04 else ""
                    print(f"  {s.label():54s} {d:7.4f}  {verdict}{flag}")

    print("\nIR latent mark: |IR(mark) − IR(surround)|, and the eye's |L(mark) − L(surround)|")
    back = pages[1]
    y0, y1, x0, x1 = _mm(45), _mm(105), _mm(130), _mm(190)
    planes: PagePlanes = back.planes.crop(y0, y1, x0, x1)
    mark = back.masks["latent"][y0:y1, x0:x1]
    sur = cv2.erode(back.masks["latent-surround"][y0:y1, x0:x1].view(np.uint8),
                    _disk(1.0)).astype(bool)
    sur &= ~cv2.dilate(mark.view(np.uint8), _disk(1.0)).astype(bool)
    ir0 = lightness_difference(ir_view(planes), mark, sur, erode_mm=0.1)
    eye0 = lightness_difference(eye_view(planes.lightness(), 600), mark, sur, erode_mm=0.1)
    print(f"  original: IR {ir0:.4f} ({'> 0.1 ok' if ir0 > 0.1 else 'WEAK'}), eye {eye0:.4f}")
    for dpi in (300, 400, 600, 1200):
        for colour in (True, False):
            for s in (CopierSettings(dpi=dpi, colour=colour),
                      CopierSettings(dpi=dpi, colour=colour, mode="halftone")):
                if colour and s.mode == "halftone":
                    continue  # the colour model is continuous-tone
                d = lightness_difference(ir_view(copy_page(planes, s)), mark, sur, erode_mm=0.1)
                print(f"  copy {s.label():52s} IR {d:.4f} "
                      f"({'< 0.01 ok' if d < 0.01 else 'MARK SURVIVES'})")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
