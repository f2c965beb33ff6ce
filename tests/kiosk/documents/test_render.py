from __future__ import annotations

import re

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.layers import DEVICE_DPI
from kiosk.documents.render import RenderedPage, layout, render_pages, render_pdf
from kiosk.documents.samples import sample_document
from kiosk.documents.seal import sign_document
from kiosk.documents.trust import TrustEntry
from kiosk.documents.verify import load_pages, verify_image
from tests.kiosk.documents.conftest import NOW, SCRAMBLE_KEY


@pytest.fixture(scope="module")
def koseki_pdf(issuer_key: ec.EllipticCurvePrivateKey) -> bytes:
    doc = sample_document("koseki")
    return render_pdf(doc, sign_document(doc, issuer_key), SCRAMBLE_KEY)


def _text(pdf: bytes) -> str:
    """The PDF's text layer (what the renderer wrote; the verifier never reads it)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    try:
        return "\n".join(page.get_textpage().get_text_range() for page in doc)
    finally:
        doc.close()


def test_multi_page_koseki_is_numbered_and_embeds_the_IPA_fonts(koseki_pdf: bytes) -> None:
    pages = load_pages(koseki_pdf)
    text = _text(koseki_pdf)
    sheets = len(pages.images) // 2
    assert len(pages.images) == 2 * sheets and sheets >= 2
    for i in range(1, sheets + 1):
        assert re.search(rf"{i}\s*/\s*{sheets}", text)
    assert "これは、戸籍に記録されている事項の全部を証明した書面である。" in text
    assert b"IPAMincho" in koseki_pdf and b"IPAGothic" in koseki_pdf
    h, w = pages.images[0].shape
    assert abs(h - 3508) <= 1 and abs(w - 2480) <= 1  # A4 at 300 dpi


def test_every_page_front_and_back_carries_a_valid_seal(koseki_pdf: bytes,
                                                       trust: list[TrustEntry]) -> None:
    """A verifier vouches only for a page that carries the seal, so a genuine sheet carries
    it on both sides (issue 22: a forged page put first was covered by page 2's seal)."""
    pages = load_pages(koseki_pdf)
    for page in pages.images:
        assert verify_image([page], trust, now=NOW).valid


def test_masks_are_page_sized_and_where_the_elements_are(
        juminhyo_600: list[RenderedPage]) -> None:
    front, back = juminhyo_600
    for rp, names in ((front, {"text", "stamp", "seal", "pantograph-word"}),
                      (back, {"latent", "latent-surround", "scramble", "seal",
                              "pantograph-word"})):
        assert names <= set(rp.masks)
        for name in names:
            m = rp.masks[name]
            assert m.shape == rp.planes.shape and m.any(), name
    seal = front.masks["seal"]
    _, xs = np.nonzero(seal)
    side_mm = (xs.max() - xs.min() + 1) / DEVICE_DPI * 25.4
    assert side_mm <= 25.0
    # The pantograph is kept out of the seal's quiet zone, on both sides.
    assert not (front.masks["pantograph-word"] & seal).any()
    assert not (back.masks["pantograph-word"] & back.masks["seal"]).any()
    # The stamp is red ink, the text black.
    assert front.planes.r[front.masks["stamp"]].mean() > 100
    assert front.planes.k[front.masks["stamp"] & ~front.masks["text"]].mean() < 60


def test_greyscale_print_still_verifies_and_shows_the_stamp(
        juminhyo_600: list[RenderedPage], trust: list[TrustEntry]) -> None:
    front = juminhyo_600[0]
    grey = (front.planes.lightness() * 255).astype(np.uint8)
    small = grey[::2, ::2]  # a 300 dpi scan of the greyscale print
    assert verify_image([small], trust, now=NOW).valid
    stamp = front.masks["stamp"]
    paper = ~front.masks["pantograph-word-area"] & ~stamp & ~front.masks["text"]
    assert grey[paper].mean() - grey[stamp].mean() > 60  # the 公印 prints as a dark grey


@pytest.mark.parametrize("doc_type", ["juminhyo", "kisai-jiko", "inkan", "tax", "fuhyo"])
def test_single_sheet_types_fit_one_sheet(doc_type: str,
                                          issuer_key: ec.EllipticCurvePrivateKey) -> None:
    doc = sample_document(doc_type)
    pages = layout(doc, sign_document(doc, issuer_key), SCRAMBLE_KEY)
    assert [p.side for p in pages] == ["front", "back"]


def test_png_at_other_resolutions_keeps_page_geometry(
        issuer_key: ec.EllipticCurvePrivateKey, trust: list[TrustEntry]) -> None:
    doc = sample_document("tax")
    (rp,) = render_pages(doc, sign_document(doc, issuer_key), SCRAMBLE_KEY, 200, which=[0])
    assert rp.planes.shape == (round(297 / 25.4 * 200), round(210 / 25.4 * 200))
    assert verify_image([(rp.planes.lightness() * 255).astype(np.uint8)], trust, now=NOW).valid


def test_the_pdf_keeps_the_latent_marks_ink_separation(koseki_pdf: bytes) -> None:
    """The printer must get the mark in K and its surround in C+M+Y, not one grey."""
    import base64
    import zlib

    ops = b""
    for m in re.finditer(rb"stream\r?\n(.*?)endstream", koseki_pdf, re.S):
        data = m.group(1).strip()
        if data.endswith(b"~>"):  # reportlab writes page content as ASCII85 over Flate
            data = base64.a85decode(data[:-2])
        try:
            ops += zlib.decompressobj().decompress(data)
        except zlib.error:
            continue
    assert re.search(rb"\b0 0 0 \.35 k\b", ops), "mark not in K"
    assert re.search(rb"(?m)^\.35 \.35 \.35 0 k$", ops), "surround not in CMY"
