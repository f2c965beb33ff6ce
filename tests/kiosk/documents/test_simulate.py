"""Seal robustness against phone photos (acceptance: ≥ 300 distortions across the six types,
≥ 99 % valid). CI runs 30; CARDIO_DOC_FULL=1 runs 300."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.layers import PagePlanes
from kiosk.documents.model import DocumentType
from kiosk.documents.render import render_pages
from kiosk.documents.samples import sample_document
from kiosk.documents.seal import sign_document
from kiosk.documents.simulate import (
    CopierSettings,
    PhoneSettings,
    copy_page,
    phone_photo,
    random_phone_settings,
)
from kiosk.documents.trust import TrustEntry
from kiosk.documents.verify import load_pages, verify_image
from tests.kiosk.documents.conftest import NOW, SCRAMBLE_KEY

FULL = bool(os.environ.get("CARDIO_DOC_FULL"))


def test_phone_photo_is_a_12_megapixel_jpeg() -> None:
    page = np.full((700, 500, 3), 255, np.uint8)
    jpeg = phone_photo(page, PhoneSettings(rotation_deg=10, jpeg_quality=50))
    (img,) = load_pages(jpeg).images
    assert img.shape == (4000, 3000)
    assert jpeg[:2] == b"\xff\xd8"


def test_random_settings_stay_in_the_acceptance_ranges() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        s = random_phone_settings(rng)
        assert -10 <= s.rotation_deg <= 10 and 50 <= s.jpeg_quality <= 95


def test_a_monochrome_copy_is_black_and_white() -> None:
    k = np.zeros((60, 60), np.uint8)
    k[20:40, 20:40] = 255
    page = PagePlanes(k, np.zeros_like(k), np.zeros_like(k), 600)
    copy = copy_page(page, CopierSettings(dpi=300))
    assert set(np.unique(copy.k)) <= {0, 255}
    assert copy.k[25:35, 25:35].all() and not copy.k[:10, :10].any()


@pytest.mark.slow
def test_phone_photos_of_all_six_types_verify(issuer_key: ec.EllipticCurvePrivateKey,
                                              trust: list[TrustEntry]) -> None:
    n = 300 if FULL else 30
    rng = np.random.default_rng(2026)
    results: collections.Counter[str] = collections.Counter()
    failures = []
    types = list(DocumentType)
    for t_i, doc_type in enumerate(types):
        doc = sample_document(doc_type)
        (front,) = render_pages(doc, sign_document(doc, issuer_key), SCRAMBLE_KEY, 300,
                                which=[0])
        rgb = front.planes.visible_rgb()
        for _ in range(n // len(types) + (t_i < n % len(types))):
            s = random_phone_settings(rng)
            v = verify_image(load_pages(phone_photo(rgb, s)).images, trust, now=NOW,
                             content=doc)
            results[v.status.value] += 1
            if not v.valid:
                failures.append((doc_type.value, s, v.status.value))
    total = sum(results.values())
    print(f"\nphone photos: {total}, valid {results['valid']} "
          f"({100 * results['valid'] / total:.1f} %); {dict(results)}; failures {failures}")
    assert total == n
    assert results["valid"] >= 0.99 * total
