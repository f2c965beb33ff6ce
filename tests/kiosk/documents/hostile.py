"""Forged and hostile inputs for ``doc verify``, built in the test from nothing but the
project's renderer, reportlab and pdfium: what an attacker hands a relying party.

Forgeries (each carries a genuine seal somewhere, so a verifier that trusts text or
another page calls them valid):

* :func:`painted_over` — the genuine PDF with white boxes painted over the name and address
  and other values drawn on top; the real text stays in the content stream underneath.
* :func:`unsealed_page_first` — a forged page without a seal put before the genuine pages.
* :func:`seal_on_another_type` — a 税証明書 laid out with a 住民票's seal (same person, same
  issue number, so every sealed value occurs in its text).

Hostile files (each must end in a typed one-line error, in bounded time and memory):
huge pages, many pages, a huge image, a flood of drawing operations, truncated or garbage
PDFs, binary junk. FIFOs and devices are made by the tests themselves.
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from collections.abc import Callable
from typing import Any

import pypdfium2 as pdfium
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.model import Document, Field, Section
from kiosk.documents.render import A4_MM, MM_PER_PT, Text, layout, register_fonts, render_pdf
from kiosk.documents.samples import sample_document
from kiosk.documents.seal import sign_document

PT_PER_MM = 1 / MM_PER_PT
A4_PT = (A4_MM[0] * PT_PER_MM, A4_MM[1] * PT_PER_MM)
FORGED_NAME = "偽造　次郎"
FORGED_ADDRESS = "偽造県偽造市東区一丁目1番1号"


def _reportlab_page(draw: Callable[[Any], None]) -> bytes:
    """One A4 page drawn by ``draw(canvas)`` with the IPA fonts registered."""
    from reportlab.pdfgen import canvas as rl_canvas

    register_fonts()
    buf = io.BytesIO()
    c = rl_canvas.Canvas(buf, pagesize=A4_PT)
    draw(c)
    c.showPage()
    c.save()
    return buf.getvalue()


def _save(pdf: pdfium.PdfDocument) -> bytes:
    buf = io.BytesIO()
    pdf.save(buf)
    pdf.close()
    return buf.getvalue()


def painted_over(doc: Document, key: ec.EllipticCurvePrivateKey,
                 scramble_key: bytes) -> bytes:
    """The genuine PDF of ``doc`` whose first page shows another name and address: opaque
    white boxes over the printed values, the forged values drawn on them. The genuine text
    is still in the page's content stream (hidden under the boxes, but in its text layer)."""
    seal = sign_document(doc, key)
    genuine = render_pdf(doc, seal, scramble_key)
    targets = {v: FORGED_NAME for v in doc.find("name")[:1]}
    targets.update({v: FORGED_ADDRESS for v in doc.find("address")[:1]})
    ops = [op for op in layout(doc, seal, scramble_key)[0].ops
           if isinstance(op, Text) and op.text in targets]
    assert ops, "no value to paint over"

    def draw(c: Any) -> None:
        for op in ops:
            x, y = op.x * PT_PER_MM, A4_PT[1] - op.y * PT_PER_MM
            c.setFillColorRGB(1, 1, 1)
            c.rect(x - 1, y - 3, 128 * PT_PER_MM, op.size + 4,
                   stroke=0, fill=1)
            c.setFillColorRGB(0, 0, 0)
            c.setFont("IPAMincho", op.size)
            c.drawString(x, y, targets[op.text])

    overlay = pdfium.PdfDocument(_reportlab_page(draw))
    pdf = pdfium.PdfDocument(genuine)
    page = pdf[0]
    xobj = overlay.page_as_xobject(0, pdf)
    page.insert_obj(xobj.as_pageobject())
    page.gen_content()
    page.close()
    out = _save(pdf)
    overlay.close()
    return out


def forged_page(doc: Document) -> bytes:
    """A one-page forgery of ``doc``'s front without any seal: title, issue number and the
    forged name and address, where the genuine page prints them."""

    def draw(c: Any) -> None:
        c.setFont("IPAMincho", 20)
        c.drawCentredString(A4_PT[0] / 2, A4_PT[1] - 32 * PT_PER_MM,
                            doc.title)
        c.setFont("IPAMincho", 10)
        y = A4_PT[1] - 60 * PT_PER_MM
        for label, value in (("発行番号", doc.issue_number), ("氏名", FORGED_NAME),
                             ("住所", FORGED_ADDRESS)):
            c.drawString(22 * PT_PER_MM, y, f"{label}　{value}")
            y -= 8 * PT_PER_MM

    return _reportlab_page(draw)


def unsealed_page_first(doc: Document, key: ec.EllipticCurvePrivateKey,
                        scramble_key: bytes) -> bytes:
    """A forged, unsealed page 1 followed by every page of the genuine PDF of ``doc``."""
    genuine = pdfium.PdfDocument(render_pdf(doc, sign_document(doc, key), scramble_key))
    forged = pdfium.PdfDocument(forged_page(doc))
    out = pdfium.PdfDocument.new()
    out.import_pages(forged)
    out.import_pages(genuine)
    data = _save(out)
    genuine.close()
    forged.close()
    return data


def seal_on_another_type(key: ec.EllipticCurvePrivateKey,
                         scramble_key: bytes) -> tuple[bytes, Document, Document]:
    """A 所得・課税証明書 printed with a 住民票の写し's seal. The tax page is made to print
    every value the 住民票 seal carries (name, birth, address, issue number), so a check that
    only looks for those values in the text finds them all. Returns (pdf, sealed, printed)."""
    sealed = sample_document("juminhyo")
    tax = sample_document("tax")
    first = tax.sections[0]
    birth = Field("birth", "生年月日", sealed.find("birth")[0])
    sections = (Section(first.title, (*first.fields, birth)), *tax.sections[1:])
    printed = dataclasses.replace(tax, issue_number=sealed.issue_number, sections=sections)
    return (render_pdf(printed, sign_document(sealed, key), scramble_key), sealed, printed)


# ---------------------------------------------------------------- hostile files


def blank_pdf(pages: int, width_pt: float, height_pt: float) -> bytes:
    """``pages`` empty pages of the given size (a few hundred bytes per page)."""
    pdf = pdfium.PdfDocument.new()
    for _ in range(pages):
        pdf.new_page(width_pt, height_pt)
    return _save(pdf)


def raw_pdf(pages: list[tuple[tuple[float, float], bytes, dict[str, bytes]]], *,
            deflated: bool = False) -> bytes:
    """A minimal PDF written by hand: each page is (size in points, content stream,
    image XObjects by name as complete object bodies ``<<...>>stream...endstream``).
    ``deflated``: the content streams are given already deflated."""
    objs: list[bytes] = []

    def add(body: bytes) -> int:
        objs.append(body)
        return len(objs)

    catalog = add(b"")
    tree = add(b"")
    kids = []
    for (w, h), content, images in pages:
        xobjs = b" ".join(b"/%s %d 0 R" % (name.encode(), add(body))
                          for name, body in images.items())
        data = content if deflated else zlib.compress(content, 9)
        stream = add(b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream"
                     % (len(data), data))
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %g %g] /Contents %d 0 R"
                        b" /Resources << /XObject << %s >> >> >>"
                        % (tree, w, h, stream, xobjs)))
    objs[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % tree
    objs[tree - 1] = (b"<< /Type /Pages /Count %d /Kids [%s] >>"
                      % (len(kids), b" ".join(b"%d 0 R" % k for k in kids)))
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1, catalog, xref)
    return bytes(out)


def huge_image_pdf(side_px: int = 60_000) -> bytes:
    """An A4 page drawing one 1-bit image of ``side_px`` × ``side_px`` pixels (450 MB
    decoded at 60,000), stored as a deflated run of zeros of a few hundred kilobytes."""
    row = (side_px + 7) // 8
    comp = zlib.compressobj(9)
    chunk = bytes(row * 256)
    data = b"".join(comp.compress(chunk) for _ in range(side_px // 256)) + comp.flush()
    img = (b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
           b" /BitsPerComponent 1 /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream"
           % (side_px, side_px - side_px % 256, len(data), data))
    content = b"q %g 0 0 %g 0 0 cm /Im0 Do Q" % A4_PT
    return raw_pdf([(A4_PT, content, {"Im0": img})])


def operator_flood_pdf(n_ops: int = 2_000_000) -> bytes:
    """An A4 page whose deflated content stream holds ``n_ops`` tiny strokes: 2 million
    are 87 kB, 20 million 874 kB (360 MB of operators; pdfium took 42 s and 5.4 GB to load
    that one page). Deflated in chunks, so building it costs no memory."""
    comp = zlib.compressobj(9)
    block = b"10 10 m 11 11 l S\n" * 10_000
    parts = [comp.compress(b"0.1 w\n")]
    parts += [comp.compress(block) for _ in range(n_ops // 10_000)]
    parts.append(comp.compress(b"10 10 m 11 11 l S\n" * (n_ops % 10_000)) + comp.flush())
    return raw_pdf([(A4_PT, b"".join(parts), {})], deflated=True)
