"""PAdES with the card (issue 15, step 3): B-B, B-T and B-LT signatures made through the
software card, checked by pyHanko's validator and by poppler's ``pdfsig`` (independent),
offline validation of B-LT with the CA's OCSP/CRL/TSA server stopped, and tampering:
a byte changed in the signed range, an incremental update after signing."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardio.card import MyNumberCard
from cardio.jpki import JpkiApplication
from cardio.pdf import CardPdfSigner, PdfError, PdfNotValid, sign_pdf, verify_pdf
from cardio.transport import InProcessTransport
from cardio.trust import TrustStore
from emulators.card import JlisHierarchy, Profile, SoftwareCard
from emulators.card.keys import KeyPool
from emulators.jpki_ca import CaServer, JpkiAuthority, export_roots
from emulators.pytest_plugin import CardHandle, PcscEnv
from tests.pki_env import PkiEnv, free_port

pytestmark = pytest.mark.slow
PDFSIG = shutil.which("pdfsig")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, key_pool: KeyPool) -> Iterator[PkiEnv]:
    """A private emulated J-LIS + CA/TSA server: this module stops it to prove offline
    validation, which must not disturb the shared ``pki`` fixture."""
    base = tmp_path_factory.mktemp("pdfpki")
    port = free_port()
    jlis = JlisHierarchy.load_or_create(base / "jlis", keys=key_pool,
                                        ca_url=f"http://127.0.0.1:{port}")
    authority = JpkiAuthority(jlis)
    server = CaServer(authority, "127.0.0.1", port).start()
    export_roots(jlis, base / "roots")
    e = PkiEnv(jlis, authority, server, TrustStore.from_dir(base / "roots"), base / "roots",
               base, key_pool)
    try:
        yield e
    finally:
        server.stop()


def plain_pdf(text: str = "Contract No. 15") -> bytes:
    """A one-page PDF with an uncompressed content stream (so a test can change a
    character of the text and the file stays a well-formed PDF)."""
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pageCompression=0)
    c.drawString(72, 720, text)
    c.showPage()
    c.save()
    return buf.getvalue()


def card_signer(path: Path, password: str) -> CardPdfSigner:
    jpki = JpkiApplication(MyNumberCard(InProcessTransport(SoftwareCard.open(path))))
    jpki.verify_pin("sign", password)
    return CardPdfSigner(jpki.certificate_der("sign"), (jpki.certificate_der("sign-ca"),),
                         lambda di: jpki.sign_digest_info("sign", di))


def pdfsig(path: Path) -> str:
    assert PDFSIG is not None
    res = subprocess.run([PDFSIG, "-nocert", str(path)], capture_output=True, text=True,
                         timeout=60)
    return res.stdout + res.stderr


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cardio.cli", *argv], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def card(env: PkiEnv) -> tuple[Path, Profile]:
    return env.new_card()


@pytest.fixture(scope="module")
def signed(env: PkiEnv, card: tuple[Path, Profile], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Path]:
    """One PDF per level; B-LT through the command line (PIN from the environment)."""
    out = tmp_path_factory.mktemp("signed")
    path, profile = card
    src = out / "in.pdf"
    src.write_bytes(plain_pdf())
    signer = card_signer(path, profile.sign_password)
    files = {}
    for level in ("B-B", "B-T"):
        files[level] = out / f"{level}.pdf"
        files[level].write_bytes(sign_pdf(src.read_bytes(), signer, env.trust, level=level,
                                          tsa_url=env.server.url + "/tsa", reason="承認",
                                          location="東京都千代田区"))
    assert signer.card_signatures == 2  # once per signature: the sizing run stays off-card
    files["B-LT"] = out / "B-LT.pdf"
    res = cli("--reader", f"emu:{path}", "jpki", "pdf", "sign", "--in", str(src), "--out",
              str(files["B-LT"]), "--level", "B-LT", "--tsa", env.server.url + "/tsa",
              "--reason", "同意します", "--location", "大阪", "--trust", str(env.roots),
              "--pin-env", "SP", "--json", env={**os.environ, "SP": profile.sign_password})
    assert res.returncode == 0, res.stderr
    assert profile.sign_password not in res.stdout + res.stderr
    assert profile.sign_password.encode() not in files["B-LT"].read_bytes()
    return files


@pytest.mark.parametrize("level", ["B-B", "B-T", "B-LT"])
def test_levels_verify_with_pyhanko_and_pdfsig(env: PkiEnv, signed: dict[str, Path],
                                               level: str) -> None:
    data = signed[level].read_bytes()
    [report] = verify_pdf(data, env.trust)
    assert report.ok, report.problems
    assert report.intact and report.chain_trusted and report.revocation == "good"
    assert (report.timestamp is not None) == (level != "B-B")
    if level == "B-B":
        assert report.signing_time_source.startswith("signer's claim")
    else:
        assert report.signing_time_source == "time-stamp token"
        assert report.timestamp is not None and report.timestamp["trusted"] is True
    assert report.dss == (level == "B-LT")
    # B-LT adds its DSS in a later revision: the signature covers its own revision only,
    # and what came after is validation data, nothing else.
    assert report.whole_document == (level != "B-LT")
    assert report.modifications == ("lta_updates" if level == "B-LT" else "none")
    assert re.search(rb"/BaseFont\s*/[A-Z]{6}\+IPAGothic", data), "IPA font not embedded"
    if PDFSIG:
        out = pdfsig(signed[level])
        assert "Signature is Valid." in out, out
        assert "ETSI.CAdES.detached" in out
        assert ("Total document signed" in out) == (level != "B-LT"), out


def to_unicode_text(pdf: bytes) -> str:
    """The characters the embedded fonts' ToUnicode CMaps map to (the appearance's
    Japanese text is set in a subset font, so it shows here, not as plain text)."""
    import zlib

    chars = []
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            body = zlib.decompress(m.group(1))
        except zlib.error:
            continue
        if b"begincmap" in body:
            chars += [chr(int(h, 16)) for h in re.findall(rb"<([0-9A-Fa-f]{4})>", body)]
    return "".join(chars)


def test_appearance_is_japanese_in_the_ipa_font(signed: dict[str, Path]) -> None:
    data = signed["B-B"].read_bytes()
    assert re.search(rb"/BaseFont\s*/[A-Z]{6}\+IPAGothic", data)
    text = to_unicode_text(data)
    assert all(ch in text for ch in "電子署名公的個人認証署名者日時"), text
    # Widths in thousandths of an em: a full-width kanji is 1000, not IPA's 2048 font
    # units (pyHanko copies font units; cardio.pdf.ipa_font rescales the font for it).
    widths = re.search(rb"/W\s*\[(.*?)\]\s*\]?\s*/", data, re.S)
    assert widths is not None and b"2048" not in widths.group(1)
    assert b"1000" in widths.group(1)
    # Rendered (pdfium draws the widget): ink inside the stamp box (36..316 x 36..106
    # pt at the lower left), none just right of it — the text stays in its box.
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(data)
    doc.init_forms()
    image = doc[0].render(scale=1, may_draw_forms=True).to_pil().convert("L")
    h = image.height
    inside = image.crop((40, h - 104, 312, h - 40))
    outside = image.crop((318, h - 104, 560, h - 40))
    assert inside.getextrema()[0] < 128 and outside.getextrema()[0] > 200


def test_cli_verify_json(env: PkiEnv, signed: dict[str, Path]) -> None:
    res = cli("jpki", "pdf", "verify", str(signed["B-T"]), "--trust", str(env.roots), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    [sig] = out["signatures"]
    assert out["valid"] and sig["integrity"] and sig["chain"]
    assert sig["revocation_at_signing_time"] == "good" and sig["whole_document"]
    assert sig["signer"].startswith("CN=")
    text = cli("jpki", "pdf", "verify", str(signed["B-T"]), "--trust", str(env.roots))
    assert "Signature Signature1: VALID" in text.stdout and "whole document" in text.stdout


def test_byte_changed_in_signed_range_is_reported(env: PkiEnv, signed: dict[str, Path],
                                                  tmp_path: Path) -> None:
    data = signed["B-B"].read_bytes()
    assert data.count(b"Contract No. 15") == 1
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(data.replace(b"Contract No. 15", b"Contract No. 16"))
    [report] = verify_pdf(bad.read_bytes(), env.trust)
    assert not report.ok and not report.intact
    assert any("integrity" in p for p in report.problems)
    res = cli("jpki", "pdf", "verify", str(bad), "--trust", str(env.roots), "--json")
    assert res.returncode == 6 and json.loads(res.stdout)["signatures"][0]["integrity"] is False
    if PDFSIG:
        out = pdfsig(bad)
        assert "Signature is Valid." not in out and "Digest Mismatch" in out, out


def test_incremental_update_after_signing_is_reported(env: PkiEnv, signed: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """Someone appends a revision that draws on the page: the signed revision is intact,
    but the document is not what was signed — reported, and not valid."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    w = IncrementalPdfFileWriter(io.BytesIO(signed["B-T"].read_bytes()))
    stream = generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 600 Td (PAID) Tj ET")
    w.add_stream_to_page(0, w.add_object(stream))
    out = io.BytesIO()
    w.write(out)
    changed = tmp_path / "changed.pdf"
    changed.write_bytes(out.getvalue())
    [report] = verify_pdf(changed.read_bytes(), env.trust)
    assert report.intact and report.chain_trusted  # the signature itself is fine ...
    assert not report.whole_document and report.modifications == "other"  # ... the file not
    assert not report.ok and any("modified after signing" in p for p in report.problems)
    res = cli("jpki", "pdf", "verify", str(changed), "--trust", str(env.roots))
    assert res.returncode == 6 and "after signing other" in res.stdout
    if PDFSIG:
        out = pdfsig(changed)
        assert "Signature is Valid." in out and "Not total document signed" in out, out


def test_bad_input_is_a_typed_error(env: PkiEnv, card: tuple[Path, Profile],
                                    tmp_path: Path) -> None:
    path, profile = card
    signer = card_signer(path, profile.sign_password)
    with pytest.raises(PdfError, match="not a PDF"):
        sign_pdf(b"hello", signer, env.trust)
    with pytest.raises(PdfError, match="TSA"):
        sign_pdf(plain_pdf(), signer, env.trust, level="B-T")
    with pytest.raises(PdfError):
        sign_pdf(b"%PDF-1.7\n" + os.urandom(2000), signer, env.trust)
    with pytest.raises(PdfNotValid, match="no signature"):
        verify_pdf(plain_pdf(), env.trust)
    (tmp_path / "x.pdf").write_bytes(plain_pdf())
    res = cli("--reader", f"emu:{path}", "jpki", "pdf", "sign", "--in", str(tmp_path / "x.pdf"),
              "--out", str(tmp_path / "y.pdf"), "--level", "B-T", "--pin-env", "SP",
              env={**os.environ, "SP": profile.sign_password, "CARDIO_TSA_URL": ""})
    assert res.returncode == 2 and "TSA" in res.stderr
    res = cli("jpki", "pdf", "verify", str(tmp_path / "x.pdf"), "--trust", str(env.roots))
    assert res.returncode == 6 and "no signature" in res.stderr
    (tmp_path / "z.pdf").write_bytes(b"not a pdf")
    res = cli("jpki", "pdf", "verify", str(tmp_path / "z.pdf"), "--trust", str(env.roots))
    assert res.returncode == 1 and "not a PDF" in res.stderr


PDF_MUTANTS = 2000 if os.environ.get("CARDIO_PDF_FULL") == "1" else 120


def test_mutated_signed_pdfs_give_typed_errors_only(env: PkiEnv, signed: dict[str, Path]
                                                    ) -> None:
    """Byte flips, truncations and insertions anywhere in a B-LT PDF: each is a report
    (valid or not) or a PdfError/PdfNotValid — never another exception (120 in CI,
    2,000 with CARDIO_PDF_FULL=1). Offline: nothing is fetched."""
    import random

    data = signed["B-LT"].read_bytes()
    rng = random.Random(15)
    seen: dict[str, int] = {}
    for _ in range(PDF_MUTANTS):
        d = bytearray(data)
        kind = rng.randrange(3)
        if kind == 0:
            for _ in range(rng.randint(1, 4)):
                d[rng.randrange(len(d))] = rng.randrange(256)
        elif kind == 1:
            del d[rng.randrange(len(d)):]
        else:
            at = rng.randrange(len(d))
            d[at:at] = rng.randbytes(rng.randint(1, 8))
        try:
            reports = verify_pdf(bytes(d), env.trust, online=False)
            outcome = "valid" if all(r.ok for r in reports) else "not valid"
        except (PdfError, PdfNotValid) as exc:
            outcome = type(exc).__name__
        seen[outcome] = seen.get(outcome, 0) + 1
    assert seen.get("valid", 0) < PDF_MUTANTS * 0.2, seen


def test_revocation_at_signing_time(env: PkiEnv, tmp_path: Path) -> None:
    """B-T made before the key's revocation stays valid (the token dates it); a signature
    made after it is reported revoked, and B-LT refuses to sign with a revoked key."""
    import time

    path, profile = env.new_card()
    signer = card_signer(path, profile.sign_password)
    before = sign_pdf(plain_pdf(), signer, env.trust, level="B-T",
                      tsa_url=env.server.url + "/tsa")
    time.sleep(1.1)  # revocation times have one-second resolution
    env.authority.revoke_card(path, "sign", "key_compromise")
    [report] = verify_pdf(before, env.trust)
    assert report.ok and report.revocation == "good", report.problems
    after = sign_pdf(plain_pdf(), signer, env.trust, level="B-B")
    [report] = verify_pdf(after, env.trust)
    assert not report.ok and report.revocation == "revoked"
    with pytest.raises(PdfNotValid):
        sign_pdf(plain_pdf(), signer, env.trust, level="B-LT", tsa_url=env.server.url + "/tsa")


def test_b_lt_validates_with_the_servers_stopped(env: PkiEnv, signed: dict[str, Path]
                                                 ) -> None:
    """Last in the module: stops the CA's OCSP/CRL/TSA server. B-LT still validates from
    its DSS (with and without --offline); B-T, which carries no revocation data, cannot."""
    env.server.stop()
    [lt] = verify_pdf(signed["B-LT"].read_bytes(), env.trust, online=False)
    assert lt.ok and lt.revocation == "good", lt.problems
    [bt] = verify_pdf(signed["B-T"].read_bytes(), env.trust, online=False)
    assert not bt.ok and not bt.chain_trusted
    res = cli("jpki", "pdf", "verify", str(signed["B-LT"]), "--trust", str(env.roots),
              "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli("jpki", "pdf", "verify", str(signed["B-LT"]), "--trust", str(env.roots),
              "--offline")
    assert res.returncode == 0 and "VALID" in res.stdout


def test_signing_with_the_servers_stopped_is_a_clear_error(
        env: PkiEnv, card: tuple[Path, Profile]) -> None:
    """After the previous test stopped the server: B-T cannot reach the TSA, B-LT cannot
    fetch revocation data — each a typed error that says so (exit 1), not a traceback."""
    from cardio.tsp import TsaUnavailable

    path, profile = card
    signer = card_signer(path, profile.sign_password)
    with pytest.raises(TsaUnavailable):
        sign_pdf(plain_pdf(), signer, env.trust, level="B-T", tsa_url=env.server.url + "/tsa")
    with pytest.raises(PdfError, match="no revocation information"):
        sign_pdf(plain_pdf(), signer, env.trust, level="B-LT",
                 tsa_url=env.server.url + "/tsa")
    assert TsaUnavailable.exit_code == PdfError.exit_code == 1


def test_kiosk_documents_are_sealed_not_pdf_signed(env: PkiEnv, tmp_path: Path) -> None:
    """docs/signatures.md: a kiosk certificate's PDF carries the municipality's COSE seal
    (a DataMatrix), not a PDF signature — `pdf verify` says so, `doc verify` checks it."""
    jlis_env = {**os.environ, "CARDIO_JLIS_DIR": str(tmp_path / "jlis")}
    pdf = tmp_path / "juminhyo.pdf"
    res = cli("doc", "render", "--sample", "juminhyo", "--out", str(pdf), env=jlis_env)
    assert res.returncode == 0, res.stderr
    res = cli("jpki", "pdf", "verify", str(pdf), "--trust", str(env.roots))
    assert res.returncode == 6 and "no signature" in res.stderr


@pytest.mark.pcsc
def test_signing_through_pcscd_and_vpcd(pcsc_stack: PcscEnv, pcsc_card: CardHandle,
                                        tmp_path: Path) -> None:
    """The card behind the real pcscd (vpcd): `jpki pdf sign` and `jpki cms sign
    --attached` from the command line, the PIN from stdin; pdfsig and openssl verify."""
    roots = tmp_path / "roots"
    export_roots(pcsc_stack.jlis, roots)
    src = tmp_path / "in.pdf"
    src.write_bytes(plain_pdf())
    env = {**os.environ, **pcsc_stack.env}
    base = [sys.executable, "-m", "cardio.cli", "--reader", pcsc_card.reader, "jpki"]
    pin = pcsc_card.profile.sign_password + "\n"
    res = subprocess.run([*base, "pdf", "sign", "--in", str(src), "--out",
                          str(tmp_path / "out.pdf"), "--trust", str(roots), "--pin-stdin"],
                         input=pin, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert pcsc_card.profile.sign_password not in res.stdout + res.stderr
    # No CA server for this J-LIS: integrity and coverage, not revocation.
    [report] = verify_pdf((tmp_path / "out.pdf").read_bytes(), TrustStore.from_dir(roots),
                          online=False)
    assert report.intact and report.signature_valid and report.whole_document
    if PDFSIG:
        assert "Signature is Valid." in pdfsig(tmp_path / "out.pdf")
    res = subprocess.run([*base, "cms", "sign", "--in", str(src), "--out",
                          str(tmp_path / "out.p7m"), "--attached", "--pin-stdin"],
                         input=pin, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
                          str(tmp_path / "out.p7m"), "-CAfile", str(roots / "sign-ca.pem"),
                          "-purpose", "any", "-out", str(tmp_path / "content.pdf")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "content.pdf").read_bytes() == src.read_bytes()
