"""The 未交付 slip: what the kiosk prints when it kept money and issued nothing.

A resident who paid and got no certificate leaves with this paper: the transaction id
(also as a Code 128 bar code, so that staff or the operator's call centre can look the
case up without typing), the amount owed, why, when and at which kiosk — in Japanese and
English, in the IPA Gothic font. Nothing personal is on it: no name, no address, no
document content (the session no longer has any by the time a slip is printed).

It is a one-page PDF (A6 portrait, the size of a receipt-like notice), printed through
the same IPP printer as the certificates; the kiosk also keeps it in its held output so
that staff can reprint it when the printer itself was the failure.
"""

from __future__ import annotations

import datetime as dt
import io

__all__ = ["ISSUED", "REASONS", "render_slip", "slip_reason"]

JST = dt.timezone(dt.timedelta(hours=9), "JST")

REASONS: dict[str, tuple[str, str]] = {
    "print_failed": ("印刷できませんでした", "the certificate could not be printed"),
    "payment_short": ("おつりを全額お返しできませんでした", "the change could not be paid in full"),
    "escrow_stuck": ("お金をお返しできませんでした", "the money could not be handed back"),
    "change_short": ("おつりを全額お返しできませんでした", "the change could not be paid in full"),
    "cash_after_payment": ("お支払い後に入ったお金をお返しできませんでした",
                           "money put in after the payment could not be handed back"),
    "recovered_unprinted": ("機器の再起動により交付できませんでした",
                            "the kiosk restarted before the certificate was printed"),
    "recovered": ("機器の再起動により中断しました", "the kiosk restarted during the session"),
}
"""Reason codes (the session core's, up to the first ``:``) in plain words, ja and en."""

#: Reasons of a session whose certificate *was* printed and that still owes money: the
#: slip is then a refund notice, not a "not issued" one.
ISSUED = frozenset({"change_short", "cash_after_payment"})


def slip_reason(code: str) -> tuple[str, str]:
    """The words for a reason code; an unknown code is shown as itself (staff can look it
    up) rather than hidden."""
    return REASONS.get(code.partition(":")[0], (code or "不明", code or "unknown"))


def render_slip(txn: str, yen: int, reason: str, *, kiosk_id: str = "",
                when: dt.datetime | None = None) -> bytes:
    """The slip as PDF bytes."""
    from reportlab.graphics.barcode import code128
    from reportlab.lib.pagesizes import A6
    from reportlab.lib.units import mm
    from reportlab.pdfgen import canvas

    from kiosk.documents.render import register_fonts

    register_fonts()
    when = (when or dt.datetime.now(JST)).astimezone(JST)
    ja, en = slip_reason(reason)
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A6)
    issued = reason.partition(":")[0] in ISSUED
    c.setTitle(f"{'返金のお知らせ' if issued else '未交付のお知らせ'} {txn}")
    _width, height = A6
    x, y = 10 * mm, height - 16 * mm

    def line(text: str, size: float, step: float) -> None:
        nonlocal y
        c.setFont("IPAGothic", size)
        c.drawString(x, y, text)
        y -= step

    line("返金のお知らせ" if issued else "未交付のお知らせ", 16, 7 * mm)
    line("Refund due" if issued else "Certificate not issued", 10, 9 * mm)
    line(f"取引番号 Transaction: {txn}", 10, 6 * mm)
    line(f"返金額 Refund due: {yen:,} 円 (yen)", 12, 7 * mm)
    line(f"理由: {ja}", 9, 5 * mm)
    line(f"Reason: {en}", 9, 5 * mm)
    line(f"({reason})", 7, 6 * mm)
    line(f"日時 Time: {when:%Y-%m-%d %H:%M} JST", 9, 5 * mm)
    if kiosk_id:
        line(f"端末 Kiosk: {kiosk_id}", 9, 5 * mm)
    y -= 2 * mm
    barcode = code128.Code128(txn, barHeight=12 * mm, barWidth=0.3 * mm)
    barcode.drawOn(c, x - 4 * mm, y - 12 * mm)
    y -= 18 * mm
    line("この紙を店員にお見せください。", 9, 5 * mm)
    line("Please show this slip to the staff.", 9, 5 * mm)
    c.showPage()
    c.save()
    return buf.getvalue()
