"""PAdES signatures on PDF with the card's signature key (pyHanko), and their validation.

Why pyHanko and not asn1crypto by hand: a PAdES signature is a CMS SignedData, which
:mod:`cardio.cms` already builds, but the PDF side is most of the work — an incremental
update with a signature dictionary whose /ByteRange excludes exactly the /Contents hole,
the AcroForm field and widget with an appearance stream (with an embedded, subset CID
font for Japanese), the DSS with certificates, OCSP responses and CRLs for B-LT, and on
verification the difference analysis that tells an added DSS from a changed page.
pyHanko does all of it on asn1crypto's models, validates with pyhanko-certvalidator (OCSP,
CRL, time-stamps, point-in-time validation from the DSS), and signs through any object
that implements its :class:`~pyhanko.sign.signers.Signer` interface — so the key can stay
on the card (:class:`CardPdfSigner`). Writing a PDF incremental-update writer and a diff
analyser ourselves would be a large amount of security-relevant code for nothing.

Levels (ETSI EN 319 142-1): ``B-B`` (CAdES-style signed attributes, ESS signing
certificate v2, no time), ``B-T`` (plus a signature time-stamp token from a TSA), ``B-LT``
(plus a DSS in an incremental update holding the chain, the OCSP responses and CRLs for
the signer and the TSA, so the signature validates later without the network).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyhanko.sign.signers import Signer

from cardio.crypto import digest_info
from cardio.errors import EXIT_NOT_VALID, CardioError
from cardio.trust import TrustStore

LEVELS = ("B-B", "B-T", "B-LT")
IPA_FONTS = (Path("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf"),
             Path("/usr/share/fonts/truetype/fonts-japanese-gothic.ttf"))
MAX_PDF = 256 * 1024 * 1024
DEFAULT_FIELD = "Signature1"
SIGNATURE_BYTES = 256  # RSA-2048
STAMP_TEXT = "電子署名 (公的個人認証)\n署名者: %(signer)s\n日時: %(ts)s"


class PdfError(CardioError):
    """A PDF that cannot be read or signed as asked (not a PDF, damaged, no such field,
    a level that needs a TSA without one, ...)."""


class PdfNotValid(CardioError):
    """A PDF signature that was checked and is not valid (exit 6)."""

    exit_code = EXIT_NOT_VALID


def ipa_font() -> Path:
    """The IPA Gothic font the signature appearance is set in (fonts-ipafont-gothic),
    rescaled to 1000 units per em and cached.

    pyHanko writes a TrueType font's glyph widths (/W) and TJ adjustments in the font's
    own units, which PDF reads as thousandths of an em: right for 1000-unit fonts, but
    IPA Gothic has 2048, so every glyph came out twice as wide as laid out and the text
    ran out of the box. fontTools rescales the font once (several seconds, hence the
    cache: ``$CARDIO_CACHE_DIR`` or ``$XDG_CACHE_HOME/cardio``, ``~/.cache/cardio``)."""
    src = next((p for p in IPA_FONTS if p.is_file()), None)
    if src is None:
        raise PdfError("the IPA font is missing (Debian: fonts-ipafont-gothic)")
    cache = Path(os.environ.get("CARDIO_CACHE_DIR") or
                 Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cardio")
    st = src.stat()
    target = cache / f"{src.stem}-1000upem-{st.st_size}-{int(st.st_mtime)}.ttf"
    if target.is_file():
        return target
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.scaleUpem import scale_upem

    font = TTFont(str(src))
    if font["head"].unitsPerEm == 1000:
        return src
    scale_upem(font, 1000)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    font.save(str(tmp))
    os.replace(tmp, target)  # atomic: a concurrent signer sees the old state or this one
    return target


class CardPdfSigner(Signer):
    """A pyHanko signer whose private key stays on the card: pyHanko hands it the DER of
    the signed attributes, it returns the card's PKCS#1 v1.5 signature over their
    SHA-256 DigestInfo (``80 2A 00``). The card is asked once per signature; the dry run
    pyHanko does to size the /Contents hole gets placeholder bytes without touching it."""

    def __init__(self, cert_der: bytes, chain_der: tuple[bytes, ...],
                 sign: Callable[[bytes], bytes]) -> None:
        from asn1crypto import x509 as asn1_x509
        from pyhanko_certvalidator.registry import SimpleCertificateStore

        registry = SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [asn1_x509.Certificate.load(d) for d in chain_der])
        super().__init__(signing_cert=asn1_x509.Certificate.load(cert_der),
                         cert_registry=registry, embed_roots=True)
        self._sign = sign
        self.card_signatures = 0

    async def async_sign_raw(self, data: bytes, digest_algorithm: str,
                             dry_run: bool = False) -> bytes:
        if digest_algorithm != "sha256":
            raise PdfError(f"the card signs SHA-256 DigestInfos, not {digest_algorithm}")
        if dry_run:
            return bytes(SIGNATURE_BYTES)
        self.card_signatures += 1
        return self._sign(digest_info("sha256", hashlib.sha256(data).digest()))


def _asn1_roots(trust: TrustStore, which: str = "jpki") -> list[Any]:
    """The JPKI roots (signers), the TSA roots (time-stamps), or both (``all``: only
    while signing, where pyHanko checks both with one context before embedding data)."""
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives.serialization import Encoding

    roots = {"jpki": trust.x509_roots, "tsa": trust.tsa_roots,
             "all": [*trust.x509_roots, *trust.tsa_roots]}[which]
    return [asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in roots]


def _validation_context(trust: TrustStore, *, online: bool, which: str = "jpki",
                        **kw: Any) -> Any:
    from pyhanko_certvalidator import ValidationContext

    if not online:  # nothing to fetch, nothing given: revocation is then unknown
        kw = {"crls": [], "ocsps": [], **kw}
    return ValidationContext(trust_roots=_asn1_roots(trust, which), allow_fetching=online,
                             revocation_mode="hard-fail", **kw)


def _dss_context(dss: Any, kw: dict[str, Any]) -> Any:
    if not kw["allow_fetching"]:
        kw = {"crls": [], "ocsps": [], **kw}
    return dss.as_validation_context(kw)


def _reader(data: bytes) -> Any:
    from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
    from pyhanko.pdf_utils.reader import PdfFileReader

    if len(data) > MAX_PDF:
        raise PdfError(f"PDF of {len(data)} bytes exceeds {MAX_PDF}")
    if not data.lstrip()[:5] == b"%PDF-":
        raise PdfError("not a PDF (no %PDF- header)")
    try:
        return PdfFileReader(io.BytesIO(data), strict=False)
    except (PyHankoPdfError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise PdfError(f"a damaged PDF: {exc}") from exc


def sign_pdf(data: bytes, signer: CardPdfSigner, trust: TrustStore, *,
             level: str = "B-B", field_name: str = DEFAULT_FIELD, reason: str | None = None,
             location: str | None = None, tsa_url: str | None = None,
             visible: bool = True) -> bytes:
    """Sign ``data`` (a PDF) in an incremental update at ``level``; the signed PDF.

    ``trust`` supplies the roots pyHanko validates the signer (and the TSA) against
    before it embeds validation data for B-LT; it fetches the OCSP responses and CRLs
    over HTTP then, so the CA must be reachable while signing."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
    from pyhanko.pdf_utils.text import TextBoxStyle
    from pyhanko.sign import fields, signers
    from pyhanko.sign.general import SigningError
    from pyhanko.sign.timestamps import HTTPTimeStamper
    from pyhanko.sign.timestamps.common_utils import TimestampRequestError
    from pyhanko.stamp import TextStampStyle
    from pyhanko_certvalidator.errors import (
        InsufficientRevinfoError,
        PathBuildingError,
        ValidationError,
    )

    from cardio.tsp import TsaUnavailable

    if level not in LEVELS:
        raise PdfError(f"level must be one of {', '.join(LEVELS)}")
    if level != "B-B" and not tsa_url:
        raise PdfError(f"PAdES {level} needs a time-stamp: give a TSA URL")
    reader = _reader(data)
    from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory

    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
        existing = {name for name, _v, _r in fields.enumerate_sig_fields(reader)}
    except (PyHankoPdfError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise PdfError(f"a damaged PDF: {exc}") from exc
    new_field = None
    if field_name not in existing:
        new_field = fields.SigFieldSpec(field_name, on_page=0,
                                        box=(36, 36, 316, 106) if visible else None)
    style = TextStampStyle(
        stamp_text=STAMP_TEXT, border_width=1,
        text_box_style=TextBoxStyle(font=GlyphAccumulatorFactory(str(ipa_font())),
                                    font_size=9))
    meta = signers.PdfSignatureMetadata(
        field_name=field_name, md_algorithm="sha256", reason=reason, location=location,
        subfilter=fields.SigSeedSubFilter.PADES,
        embed_validation_info=level == "B-LT",
        validation_context=_validation_context(trust, online=True, which="all")
        if level == "B-LT" else None)
    timestamper = HTTPTimeStamper(tsa_url) if level != "B-B" and tsa_url else None
    pdf_signer = signers.PdfSigner(meta, signer, timestamper=timestamper,
                                   stamp_style=style, new_field_spec=new_field)
    out = io.BytesIO()
    try:
        try:
            pdf_signer.sign_pdf(writer, output=out)
        except SigningError as exc:
            if isinstance(exc.__cause__, (PathBuildingError, ValidationError)):
                raise exc.__cause__ from exc
            raise
    except CardioError:
        raise  # the card's own errors (wrong state, removed card) keep their exit codes
    except InsufficientRevinfoError as exc:
        raise PdfError(f"no revocation information for B-LT (is the CA's OCSP/CRL server"
                       f" reachable?): {exc}") from exc
    except (PathBuildingError, ValidationError) as exc:
        raise PdfNotValid(f"the signer's certificate does not validate: {exc}") from exc
    except TimestampRequestError as exc:
        raise TsaUnavailable(f"TSA {tsa_url}: {exc}") from exc
    except SigningError as exc:
        raise PdfError(f"signing failed: {exc}") from exc
    except PyHankoPdfError as exc:
        raise PdfError(f"a damaged PDF: {exc}") from exc
    except _DAMAGED as exc:
        raise PdfError(f"a damaged PDF: {type(exc).__name__}: {exc}") from exc
    return out.getvalue()


# -- verification -----------------------------------------------------------------------------
@dataclass
class PdfSignatureReport:
    field_name: str
    signer: str
    intact: bool
    signature_valid: bool
    chain_trusted: bool
    revocation: str
    signing_time_source: str
    signing_time: str | None
    timestamp: dict[str, object] | None
    coverage: str
    whole_document: bool
    modifications: str
    dss: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {"field": self.field_name, "signer": self.signer, "valid": self.ok,
                "integrity": self.intact and self.signature_valid,
                "chain": self.chain_trusted, "revocation_at_signing_time": self.revocation,
                "signing_time": self.signing_time,
                "signing_time_source": self.signing_time_source,
                "timestamp": self.timestamp, "coverage": self.coverage,
                "whole_document": self.whole_document, "modifications": self.modifications,
                "dss": self.dss, "problems": self.problems}


ACCEPTED_MODIFICATIONS = ("none", "lta_updates")
"""After signing, only validation data (DSS, document time-stamps) may be added for a
signature to count as valid; anything else (form filling, annotations, other changes) is
reported and makes it not valid."""


def _subject(cert: Any) -> str:
    from cryptography import x509

    return x509.load_der_x509_certificate(cert.dump()).subject.rfc4514_string()


def verify_pdf(data: bytes, trust: TrustStore, *, online: bool = True
               ) -> list[PdfSignatureReport]:
    """Validate every signature of a PDF with pyHanko's validator: integrity, chain to
    ``trust``, revocation at the time of signing (the time-stamp's time when there is one;
    from the DSS when it has the answers, else fetched when ``online``), the time-stamp
    token, coverage and what changed after signing. No signature at all, or a signature
    whose CMS cannot even be read, is :class:`PdfNotValid`; a file that does not parse as
    a PDF is :class:`PdfError` — whatever pyHanko or asn1crypto raised on the way."""
    from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
    from pyhanko.sign.general import CMSExtractionError, CMSStructuralError
    from pyhanko.sign.validation.errors import SignatureValidationError

    reader = _reader(data)
    try:
        return _verify(reader, trust, online)
    except (SignatureValidationError, CMSExtractionError, CMSStructuralError) as exc:
        raise PdfNotValid(f"a signature that cannot be validated: {exc}") from exc
    except PyHankoPdfError as exc:
        raise PdfError(f"a damaged PDF: {type(exc).__name__}: {exc}") from exc
    except _DAMAGED as exc:
        raise PdfError(f"a damaged PDF: {type(exc).__name__}: {exc}") from exc


_DAMAGED: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, IndexError,
                                         OverflowError, UnicodeDecodeError, AttributeError)
"""Built-ins pyHanko and asn1crypto raise on damaged input (both parse lazily).
AttributeError too: pyHanko's DSS reader calls ``read_data`` on whatever object the DSS
names, and a damaged file can put a dictionary where a stream belongs (found by the
mutation corpus, pyHanko 0.38)."""


def _verify(reader: Any, trust: TrustStore, online: bool) -> list[PdfSignatureReport]:
    from pyhanko.sign.validation.dss import DocumentSecurityStore
    from pyhanko.sign.validation.errors import NoDSSFoundError

    sigs = list(reader.embedded_signatures)
    if not sigs:
        raise PdfNotValid("the PDF has no signature")
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        dss = None
    reports = []
    for sig in sigs:
        # The DSS first, with nothing fetched: a B-LT signature must stand on what it
        # carries (and the CA may be long gone); the network only if that is not enough.
        status = _validate(sig, trust, dss, online and dss is None)
        if online and dss is not None and not status.bottom_line:
            status = _validate(sig, trust, dss, True)
        ts = status.timestamp_validity
        if (str(status.trust_problem_indic).endswith("REVOKED_NO_POE") and ts is not None
                and ts.intact and ts.valid and ts.trusted):
            # Revoked now, and a trusted time-stamp proves the signature existed at its
            # genTime: check again at that time (revocation after it does not count).
            status = _validate(sig, trust, dss, online, moment=ts.timestamp,
                               retroactive_revinfo=True)
        reports.append(_report(sig, status, dss is not None))
    return reports


def _validate(sig: Any, trust: TrustStore, dss: Any, online: bool, **extra: Any) -> Any:
    """pyHanko's validation: the signer against the JPKI roots, its time-stamp against
    the TSA roots (the ``extra`` settings apply to the signer's context only)."""
    from pyhanko.sign.validation import validate_pdf_signature

    return validate_pdf_signature(sig, _context(trust, dss, online, "jpki", **extra),
                                  ts_validation_context=_context(trust, dss, online, "tsa"))


def _context(trust: TrustStore, dss: Any, online: bool, which: str, **extra: Any) -> Any:
    kw = {"trust_roots": _asn1_roots(trust, which), "allow_fetching": online,
          "revocation_mode": "hard-fail", **extra}
    if dss is not None:
        return _dss_context(dss, kw)
    return _validation_context(trust, online=online, which=which, **extra)


def _report(sig: Any, status: Any, has_dss: bool) -> PdfSignatureReport:
    problems: list[str] = []
    intact, valid, trusted = bool(status.intact), bool(status.valid), bool(status.trusted)
    if not intact:
        problems.append("integrity: the signed bytes were changed (digest mismatch)")
    elif not valid:
        problems.append("integrity: the cryptographic signature does not verify")
    if not trusted:
        problems.append(f"chain: not trusted ({status.trust_problem_indic})")
    if status.revoked:
        revocation = "revoked"
        problems.append("revocation: the certificate was revoked at the time of signing")
    elif trusted:
        revocation = "good"
    else:
        revocation = "unknown"
    ts = status.timestamp_validity
    timestamp = None
    when: dt.datetime | None = status.signer_reported_dt
    source = "signer's claim (/M, signingTime)"
    if ts is not None:
        timestamp = {"time": ts.timestamp.isoformat(), "intact": bool(ts.intact),
                     "valid": bool(ts.valid), "trusted": bool(ts.trusted),
                     "tsa": _subject(ts.signing_cert)}
        if ts.intact and ts.valid and ts.trusted:
            when, source = ts.timestamp, "time-stamp token"
        else:
            problems.append("timestamp: the signature time-stamp does not validate")
    coverage = status.coverage.name.lower() if status.coverage is not None else "unknown"
    whole = coverage == "entire_file"
    mods = (status.modification_level.name.lower() if status.modification_level is not None
            else "unknown")
    if mods not in ACCEPTED_MODIFICATIONS:
        problems.append(f"modified after signing ({mods}): the document was changed in a"
                        " later incremental update")
    if status.docmdp_ok is False:
        problems.append("the changes after signing break the document's permissions")
    return PdfSignatureReport(
        field_name=str(sig.field_name), signer=_subject(status.signing_cert), intact=intact,
        signature_valid=valid, chain_trusted=trusted, revocation=revocation,
        signing_time_source=source, signing_time=when.isoformat() if when else None,
        timestamp=timestamp, coverage=coverage, whole_document=whole, modifications=mods,
        dss=has_dss, problems=problems)


__all__ = ["LEVELS", "CardPdfSigner", "PdfError", "PdfNotValid", "PdfSignatureReport",
           "ipa_font", "sign_pdf", "verify_pdf"]
