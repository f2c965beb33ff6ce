"""The 未交付 slip: a one-page PDF that says, in Japanese and English, what is owed and
why, with the transaction id readable by a bar-code scanner — and nothing personal."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pypdfium2 as pdfium
import pytest
import zxingcpp

from kiosk.documents.slip import JST, render_slip, slip_reason


def text_and_image(pdf: bytes) -> tuple[str, np.ndarray]:
    doc = pdfium.PdfDocument(pdf)
    try:
        assert len(doc) == 1
        page = doc[0]
        text = page.get_textpage().get_text_range()
        image = np.asarray(page.render(scale=300 / 72).to_pil().convert("L"))
    finally:
        doc.close()
    return text, image


def test_the_slip_says_what_is_owed_and_why_and_scans() -> None:
    when = dt.datetime(2026, 11, 26, 14, 5, tzinfo=JST)
    pdf = render_slip("T0123456789ab", 350, "print_failed:jam", kiosk_id="kiosk-0001",
                      when=when)
    assert pdf.startswith(b"%PDF-")
    text, image = text_and_image(pdf)
    for expected in ("未交付のお知らせ", "T0123456789ab", "350 円", "印刷できませんでした",
                     "the certificate could not be printed", "print_failed:jam",
                     "2026-11-26 14:05 JST", "kiosk-0001", "店員にお見せください"):
        assert expected in text, expected
    codes = zxingcpp.read_barcodes(image)
    assert [c.text for c in codes] == ["T0123456789ab"]
    assert codes[0].format == zxingcpp.BarcodeFormat.Code128


@pytest.mark.parametrize(("code", "words"), [
    ("payment_short", "おつりを全額お返しできませんでした"),
    ("escrow_stuck", "お金をお返しできませんでした"),
    ("recovered_unprinted", "機器の再起動により交付できませんでした"),
])
def test_reason_codes_have_plain_words(code: str, words: str) -> None:
    assert slip_reason(code)[0] == words


def test_an_unknown_reason_is_shown_as_its_code() -> None:
    assert slip_reason("binding_mismatch") == ("binding_mismatch", "binding_mismatch")
    text, _ = text_and_image(render_slip("Tx", 0, "binding_mismatch"))
    assert "binding_mismatch" in text


def test_a_slip_for_change_owed_after_printing_is_a_refund_notice() -> None:
    """Review of issue 24: the certificate printed but ¥100 of change could not be paid; the
    slip says so (not "not issued")."""
    text, _image = text_and_image(render_slip("T0123456789ab", 100, "change_short"))
    for expected in ("返金のお知らせ", "Refund due", "100 円",
                     "おつりを全額お返しできませんでした"):
        assert expected in text, expected
    assert "未交付" not in text
