from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.render import render_pdf
from kiosk.documents.samples import sample_document
from kiosk.documents.seal import sign_document
from kiosk.documents.trust import TrustEntry
from kiosk.documents.verify import (
    DocumentInputError,
    VerifyStatus,
    load_pages,
    verify_image,
    verify_seal,
)
from tests.kiosk.documents import tamper
from tests.kiosk.documents.conftest import NOW, SCRAMBLE_KEY

FULL = bool(os.environ.get("CARDIO_DOC_FULL"))


def symbol_image(data: bytes) -> np.ndarray:
    bc = zxingcpp.create_barcode(data, zxingcpp.BarcodeFormat.DataMatrix)
    return np.asarray(bc.to_image(scale=5, add_quiet_zones=True))


def test_a_genuine_seal_is_valid_with_its_content(issuer_key: ec.EllipticCurvePrivateKey,
                                                  trust: list[TrustEntry]) -> None:
    doc = sample_document("fuhyo")
    v = verify_seal(sign_document(doc, issuer_key), trust, now=NOW, content=doc)
    assert v.valid and v.status is VerifyStatus.VALID and v.content == "digest-match"
    assert v.fields["name"] == "青葉　太郎" and v.fields["issue_number"] == doc.issue_number


def test_no_seal_and_unreadable(trust: list[TrustEntry]) -> None:
    blank = np.full((400, 400), 255, np.uint8)
    assert verify_image([blank], trust).status is VerifyStatus.NO_SEAL
    foreign = verify_image([symbol_image(b"not a seal, just text")], trust)
    assert foreign.status is VerifyStatus.UNREADABLE and not foreign.valid


def test_a_damaged_symbol_is_unreadable_not_valid(issuer_key: ec.EllipticCurvePrivateKey,
                                                  trust: list[TrustEntry]) -> None:
    img = symbol_image(sign_document(sample_document("tax"), issuer_key)).copy()
    h, w = img.shape
    img[h // 4:3 * h // 4, w // 4:3 * w // 4] = 255  # a quarter of the modules wiped out
    assert verify_image([img], trust).status in (VerifyStatus.UNREADABLE, VerifyStatus.NO_SEAL)


def test_pdf_verifies_against_its_own_printed_text(issuer_key: ec.EllipticCurvePrivateKey,
                                                    trust: list[TrustEntry]) -> None:
    doc = sample_document("kisai-jiko")
    pages = load_pages(render_pdf(doc, sign_document(doc, issuer_key), SCRAMBLE_KEY))
    v = verify_image(pages.images, trust, now=NOW, page_text=pages.text)
    assert v.valid and v.content == "fields-match"


def test_a_pdf_printed_with_another_documents_seal_fails(
        issuer_key: ec.EllipticCurvePrivateKey, trust: list[TrustEntry]) -> None:
    doc, other = sample_document("inkan"), sample_document("kisai-jiko")
    # The inkan seal on a page printing the kisai-jiko content: the name and birth match,
    # the 登録番号 and the issue number do not appear.
    pages = load_pages(render_pdf(other, sign_document(doc, issuer_key), SCRAMBLE_KEY))
    v = verify_image(pages.images, trust, now=NOW, page_text=pages.text)
    assert v.status is VerifyStatus.INVALID_SIGNATURE and v.content == "fields-mismatch"


def test_input_that_is_no_image_is_a_typed_error() -> None:
    with pytest.raises(DocumentInputError):
        load_pages(b"hello, not an image")
    with pytest.raises(DocumentInputError):
        load_pages(b"%PDF-1.4 truncated")


@pytest.mark.slow
def test_tampered_seals_are_never_valid(issuer_key: ec.EllipticCurvePrivateKey) -> None:
    """30 tampered seals in CI, 300 with CARDIO_DOC_FULL=1; every fifth goes through a printed
    DataMatrix image rather than bytes."""
    n = 330 if FULL else 33
    seen: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    for i, case in enumerate(tamper.cases(n, issuer_key, seed=12)):
        if i % 5 == 0:
            v = verify_image([symbol_image(case.seal)], case.trust, now=NOW,
                             content=case.content)
        else:
            v = verify_seal(case.seal, case.trust, now=NOW, content=case.content)
        assert not v.valid, (case.kind, v)
        assert v.status in case.expect, (case.kind, v)
        seen[case.kind] += 1
        statuses[v.status.value] += 1
    assert set(seen) == set(tamper.KINDS)
    print(f"\ntampered: {sum(seen.values())} cases, 0 valid; by kind {dict(seen)}; "
          f"verdicts {dict(statuses)}")


def _png(img: object) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")  # type: ignore[attr-defined]
    return buf.getvalue()


def test_a_decompression_bomb_is_an_input_error() -> None:
    """A 90 kB PNG of 400 million pixels: Pillow's DecompressionBombError is no OSError,
    so it escaped as an internal error (exit 70)."""
    from PIL import Image

    from kiosk.documents.verify import DocumentInputError, load_pages

    bomb = _png(Image.new("1", (20000, 20000), 1))
    with pytest.raises(DocumentInputError, match="too large to be a page"):
        load_pages(bomb, "bomb.png")


def test_a_huge_or_long_pdf_is_refused_before_rendering() -> None:
    """A 200-inch page at 300 dpi is 3.6 GB of bitmap (MemoryError, or the OOM killer);
    its size is known from the page box before any pixel is made."""
    import pypdfium2 as pdfium

    from kiosk.documents.verify import MAX_PDF_PAGES, DocumentInputError, load_pages

    def pdf_bytes(pages: int, side: float) -> bytes:
        import io

        pdf = pdfium.PdfDocument.new()
        for _ in range(pages):
            pdf.new_page(side, side)
        buf = io.BytesIO()
        pdf.save(buf)
        pdf.close()
        return buf.getvalue()

    with pytest.raises(DocumentInputError, match="too large to be a certificate"):
        load_pages(pdf_bytes(1, 14400), "huge.pdf")
    with pytest.raises(DocumentInputError, match="pages; a certificate has at most"):
        load_pages(pdf_bytes(MAX_PDF_PAGES + 1, 72), "long.pdf")
    assert len(load_pages(pdf_bytes(2, 72), "ok.pdf").images) == 2
