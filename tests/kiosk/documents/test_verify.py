from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image

from kiosk.documents.render import render_pdf
from kiosk.documents.samples import sample_document
from kiosk.documents.seal import sign_document
from kiosk.documents.trust import TrustEntry
from kiosk.documents.verify import (
    DocumentInputError,
    VerifyStatus,
    load_pages,
    verify_file,
    verify_image,
    verify_seal,
)
from tests.kiosk.documents import hostile, tamper
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


def test_a_genuine_pdf_is_valid_and_its_content_not_checked(
        issuer_key: ec.EllipticCurvePrivateKey, trust: list[TrustEntry]) -> None:
    """The verdict never claims the page shows the sealed values: it was a text-layer
    search ("fields-match"), which hidden text satisfies (see the forgeries below)."""
    doc = sample_document("kisai-jiko")
    pages = load_pages(render_pdf(doc, sign_document(doc, issuer_key), SCRAMBLE_KEY))
    v = verify_image(pages.images, trust, now=NOW)
    assert v.valid and v.content == "not-checked" and len(v.pages) == 2
    assert "住民票記載事項証明書" in v.reason and "not read" in v.reason


def test_another_documents_seal_is_valid_for_itself_and_named(
        issuer_key: ec.EllipticCurvePrivateKey, trust: list[TrustEntry]) -> None:
    """The 印鑑登録証明書 seal on pages printing the 記載事項証明書: the seal is genuine, and
    the verdict says which document it is for (the page shows another) — never a match."""
    doc, other = sample_document("inkan"), sample_document("kisai-jiko")
    pages = load_pages(render_pdf(other, sign_document(doc, issuer_key), SCRAMBLE_KEY))
    v = verify_image(pages.images, trust, now=NOW)
    assert v.content == "not-checked" and v.sealed_title == "印鑑登録証明書"
    assert "印鑑登録証明書" in v.reason and v.fields["issue_number"] == doc.issue_number
    v = verify_image(pages.images, trust, now=NOW, content=other)
    assert v.status is VerifyStatus.INVALID_SIGNATURE and v.content == "digest-mismatch"


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
    from kiosk.documents.verify import DocumentInputError, load_pages

    bomb = _png(Image.new("1", (20000, 20000), 1))
    with pytest.raises(DocumentInputError, match="too large to be a page"):
        load_pages(bomb, "bomb.png")


def test_a_huge_or_long_pdf_is_refused_before_rendering() -> None:
    """A 200-inch page at 300 dpi is 3.6 GB of bitmap (MemoryError, or the OOM killer);
    its size is known from the page box before any pixel is made."""
    import pypdfium2 as pdfium

    from kiosk.documents.pages import DEFAULT_LIMITS

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
        load_pages(pdf_bytes(DEFAULT_LIMITS.max_pages + 1, 72), "long.pdf")
    assert len(load_pages(pdf_bytes(2, 72), "ok.pdf").images) == 2


# ------------------------------------------------------------ forged pages (issue 22, item 2)
# Each carries a genuine seal somewhere. A verdict about the page's content may only come
# from what a person sees on that page; until the page is read (OCR), content is
# "not-checked" and the verdict says which document the seal is for.


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_text_painted_over_the_real_text_is_never_a_content_match(
        issuer_key: ec.EllipticCurvePrivateKey, trust: list[TrustEntry],
        tmp_path: Path) -> None:
    doc = sample_document("juminhyo")
    pdf = hostile.painted_over(doc, issuer_key, SCRAMBLE_KEY)
    v = verify_file(_file(tmp_path, "painted.pdf", pdf), trust, now=NOW)
    out = json.dumps(v.to_json(), ensure_ascii=False)
    assert v.content == "not-checked" and "fields-match" not in out
    # The seal itself is genuine; the verdict names the sealed person and document so the
    # reader can see that the page shows someone else.
    assert v.status is VerifyStatus.VALID and v.fields["name"] == "青葉　太郎"
    assert "not read" in v.reason and "住民票の写し" in v.reason


def test_an_unsealed_page_put_first_is_not_vouched_for(
        issuer_key: ec.EllipticCurvePrivateKey, trust: list[TrustEntry],
        tmp_path: Path) -> None:
    doc = sample_document("juminhyo")
    pdf = hostile.unsealed_page_first(doc, issuer_key, SCRAMBLE_KEY)
    v = verify_file(_file(tmp_path, "first.pdf", pdf), trust, now=NOW)
    assert not v.valid and v.status is VerifyStatus.NO_SEAL
    assert [p.status for p in v.pages] == [VerifyStatus.NO_SEAL] + [VerifyStatus.VALID] * 2
    assert [p.page for p in v.pages] == [1, 2, 3]
    assert v.reason.startswith("page 1 of 3 carries no seal")
    assert "fields-match" not in json.dumps(v.to_json())
    page1 = v.to_json()["pages"][0]
    assert page1 == {"page": 1, "status": "no_seal", "reason": "no seal on this page"}


def test_a_seal_on_another_document_type_is_named_never_matched(
        issuer_key: ec.EllipticCurvePrivateKey, trust: list[TrustEntry],
        tmp_path: Path) -> None:
    pdf, sealed, printed = hostile.seal_on_another_type(issuer_key, SCRAMBLE_KEY)
    path = _file(tmp_path, "tax.pdf", pdf)
    v = verify_file(path, trust, now=NOW)
    assert v.content == "not-checked"
    assert v.fields["doc_type"] == "juminhyo" and v.to_json()["sealed_title"] == "住民票の写し"
    assert "住民票の写し" in v.reason and "not read" in v.reason
    # With the printed (tax) document in hand, the digest tells them apart.
    v = verify_file(path, trust, now=NOW, content=printed)
    assert v.status is VerifyStatus.INVALID_SIGNATURE and v.content == "digest-mismatch"
    assert "所得・課税証明書" in v.reason and "住民票の写し" in v.reason
    v = verify_file(path, trust, now=NOW, content=sealed)
    assert v.valid and v.content == "digest-match" and "not read" in v.reason


def test_a_genuine_pdf_is_valid_page_by_page(issuer_key: ec.EllipticCurvePrivateKey,
                                            trust: list[TrustEntry], tmp_path: Path) -> None:
    doc = sample_document("koseki")
    pdf = render_pdf(doc, sign_document(doc, issuer_key), SCRAMBLE_KEY)
    v = verify_file(_file(tmp_path, "k.pdf", pdf), trust, now=NOW)
    assert v.valid and v.content == "not-checked", v.reason
    assert len(v.pages) >= 4 and all(p.status is VerifyStatus.VALID for p in v.pages)
    assert v.reason.startswith(f"seal verified on every page ({len(v.pages)} of")


# ------------------------------------------------------------ hostile files (issue 22, item 2)
# Every one is a typed one-line error (DocumentInputError, exit 1) within seconds.


def _truncated(key: ec.EllipticCurvePrivateKey) -> bytes:
    doc = sample_document("tax")
    return render_pdf(doc, sign_document(doc, key), SCRAMBLE_KEY)[:1500]


HOSTILE: dict[str, Callable[[ec.EllipticCurvePrivateKey], bytes]] = {
    # One page of 5 × 5 m: 3.6 GB of bitmap at 300 dpi.
    "huge-mediabox": lambda _: hostile.blank_pdf(1, 14400, 14400),
    # The reported one: 50 pages just under the old per-page limit (35.7 s, 4.4 GB).
    "50-huge-pages": lambda _: hostile.blank_pdf(50, 2270, 2270),
    "5000-pages": lambda _: hostile.blank_pdf(5000, 72, 72),
    # 20 pages of 80 cm: each past the page limit.
    "20-huge-pages": lambda _: hostile.blank_pdf(20, 2270, 2270),
    # 32 A3 pages: each allowed, together 557 million pixels at 300 dpi.
    "32-a3-pages": lambda _: hostile.blank_pdf(32, 842, 1191),
    # A 20,000² image in a 50 kB file (at 60,000²: 4.6 s and 650 MB before).
    "huge-image": lambda _: hostile.huge_image_pdf(20_000),
    # 200,000 strokes on one page in 9 kB.
    "operator-flood": lambda _: hostile.operator_flood_pdf(200_000),
    "truncated-pdf": _truncated,
    # 56 million pixels: past the image limit (50 M), under Pillow's own (179 M).
    "image-over-limit": lambda _: _png(Image.new("1", (8000, 7000), 1)),
    # Pillow would hand an EPS to Ghostscript: not a format read here.
    "eps": lambda _: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "garbage-pdf": lambda _: b"%PDF-1.7\n" + np.random.default_rng(1).bytes(20_000),
    "binary": lambda _: np.random.default_rng(2).bytes(50_000),
    "empty": lambda _: b"",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_file_is_a_typed_error_in_bounded_time(
        name: str, issuer_key: ec.EllipticCurvePrivateKey, trust: list[TrustEntry],
        tmp_path: Path) -> None:
    path = _file(tmp_path, f"{name}.pdf", HOSTILE[name](issuer_key))
    t = time.perf_counter()
    with pytest.raises(DocumentInputError) as err:
        verify_file(path, trust, now=NOW)
    elapsed = time.perf_counter() - t
    assert elapsed < 10, (name, elapsed)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)) and err.value.exit_code == 1


def test_a_fifo_without_a_writer_is_refused_at_once(trust: list[TrustEntry],
                                                   tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)

    def unblock() -> None:  # if verify waits for a writer, release it (the test then fails)
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    watchdog = threading.Timer(5.0, unblock)
    watchdog.start()
    t = time.perf_counter()
    try:
        with pytest.raises(DocumentInputError, match="not a regular file"):
            verify_file(fifo, trust, now=NOW)
    finally:
        watchdog.cancel()
    assert time.perf_counter() - t < 2


@pytest.mark.parametrize("where", ["/dev/zero", "/dev/null", "directory"])
def test_devices_and_directories_are_refused_unread(where: str, trust: list[TrustEntry],
                                                   tmp_path: Path) -> None:
    path = tmp_path if where == "directory" else Path(where)
    t = time.perf_counter()
    with pytest.raises(DocumentInputError, match="not a regular file"):
        verify_file(path, trust, now=NOW)
    assert time.perf_counter() - t < 2


def test_a_file_over_the_size_limit_is_refused_unread(trust: list[TrustEntry],
                                                     tmp_path: Path) -> None:
    from kiosk.documents.pages import DEFAULT_LIMITS

    big = tmp_path / "big.pdf"
    with big.open("wb") as f:  # sparse: no disk used
        f.truncate(DEFAULT_LIMITS.max_bytes + 1)
    with pytest.raises(DocumentInputError, match="larger than"):
        verify_file(big, trust, now=NOW)


def test_a_page_that_would_take_a_minute_is_cut_off(trust: list[TrustEntry],
                                                    tmp_path: Path) -> None:
    """874 kB of deflated strokes (20 million): unbounded, pdfium took 42 s and 5.4 GB just
    to load the page. The renderer runs in a child process with a CPU-time limit, a
    wall-clock backstop and a capped address space; each ends the read with one line."""
    from kiosk.documents.pages import DEFAULT_LIMITS

    path = _file(tmp_path, "flood.pdf", hostile.operator_flood_pdf(20_000_000))
    roomy = 2 * 2**30  # so that time, not memory, runs out first
    for change, says in (({"cpu_seconds": 1.0, "memory_bytes": roomy},
                          "gave up after 1 s of CPU time"),
                         ({"wall_seconds": 1.0, "memory_bytes": roomy}, "gave up after 1 s "),
                         ({"memory_bytes": 400 * 2**20}, "more than the 400 MiB allowed"),
                         ({}, "more than the 1024 MiB allowed")):
        limits = dataclasses.replace(DEFAULT_LIMITS, **change)
        t = time.perf_counter()
        with pytest.raises(DocumentInputError, match=says):
            verify_file(path, trust, now=NOW, limits=limits)
        assert time.perf_counter() - t < 25, change


def test_each_frame_of_a_multi_page_tiff_is_a_page(issuer_key: ec.EllipticCurvePrivateKey,
                                                  trust: list[TrustEntry],
                                                  tmp_path: Path) -> None:
    """A scanner's multi-page TIFF: frame 1 without a seal, frame 2 with one."""
    import io

    sealed = Image.fromarray(symbol_image(sign_document(sample_document("tax"), issuer_key)))
    blank = Image.new("L", sealed.size, 255)
    buf = io.BytesIO()
    blank.save(buf, format="TIFF", save_all=True, append_images=[sealed])
    v = verify_file(_file(tmp_path, "scan.tiff", buf.getvalue()), trust, now=NOW)
    assert [p.status for p in v.pages] == [VerifyStatus.NO_SEAL, VerifyStatus.VALID]
    assert v.status is VerifyStatus.NO_SEAL and v.reason.startswith("page 1 of 2 carries no")
