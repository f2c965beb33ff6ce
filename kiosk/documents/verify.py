"""The offline verifier: a PDF, a scan or a phone photo in; a verdict and the sealed fields out.

Steps: find every DataMatrix (zxing-cpp) → parse the COSE_Sign1 → look the kid up in the
trust list → verify ES256 over the protected header and the claims → check the key against
the claims' issuer, its revocation and its validity → compare with the content, where there
is content: the full document (``content``, checked against the sealed SHA-256 digest) or
the PDF's own text (every sealed field must be printed on the page).

Verdicts are exactly: ``valid``, ``invalid_signature`` (also: content differs from what the
seal signs — the signature does not cover what is in front of you), ``untrusted`` (no trusted
key with that kid, or a key trusted for another municipality), ``expired_key``,
``revoked_key``, ``no_seal`` (no seal found), ``unreadable`` (a symbol was seen but could not
be decoded, or it is not a seal of ours). Nothing here needs a network.
"""

from __future__ import annotations

import enum
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cardio.errors import CardioError
from kiosk.documents.model import Document
from kiosk.documents.seal import (
    SealClaims,
    SealFormatError,
    cose_verify,
    decode_cose,
    read_seal_bytes,
)
from kiosk.documents.trust import TrustEntry

__all__ = [
    "DocumentInputError",
    "Verdict",
    "VerifyStatus",
    "load_pages",
    "verify_file",
    "verify_image",
    "verify_seal",
]

MAX_PDF_PAGES = 50
MAX_PAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
"""A PDF page rasterised at PDF_DPI may hold no more pixels than Pillow lets an image have
(A4 at 300 dpi is 8.7 million): a 5 m page would otherwise be gigabytes of bitmap."""
PDF_DPI = 300  # enough for 0.34 mm modules (4 px) and for 2D-Doc's 300 dpi minimum


class DocumentInputError(CardioError):
    """The input file is missing or is neither a PDF nor an image we can read."""

    exit_code = 2


class VerifyStatus(enum.StrEnum):
    VALID = "valid"
    INVALID_SIGNATURE = "invalid_signature"
    UNTRUSTED = "untrusted"
    EXPIRED_KEY = "expired_key"
    REVOKED_KEY = "revoked_key"
    NO_SEAL = "no_seal"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Verdict:
    status: VerifyStatus
    reason: str
    fields: dict[str, str] = field(default_factory=dict)
    kid: str | None = None
    issuer_name: str | None = None
    content: str = "not-checked"  # digest-match | fields-match | not-checked

    @property
    def valid(self) -> bool:
        return self.status is VerifyStatus.VALID

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "status": self.status.value, "reason": self.reason,
                "fields": self.fields, "kid": self.kid, "issuer_name": self.issuer_name,
                "content": self.content}


def _norm(s: str) -> str:
    return re.sub(r"\s+", "", s)


def verify_seal(seal: bytes, trust: list[TrustEntry], *, now: datetime | None = None,
                content: Document | None = None, page_text: str | None = None) -> Verdict:
    """Verify one seal's bytes against ``trust`` at ``now`` (default: the current time)."""
    now = now or datetime.now(UTC)
    try:
        msg = decode_cose(seal)
    except SealFormatError as e:
        return Verdict(VerifyStatus.UNREADABLE, str(e))
    kid = msg.kid.hex()
    candidates = [t for t in trust if t.kid == msg.kid]
    if not candidates:
        return Verdict(VerifyStatus.UNTRUSTED, "no trusted issuer key has this key id", kid=kid)
    entry = next((t for t in candidates if cose_verify(msg, t.public_key)), None)
    if entry is None:
        return Verdict(VerifyStatus.INVALID_SIGNATURE,
                       "the signature does not verify with the issuer's key", kid=kid)
    try:
        claims = SealClaims.from_cbor(msg.payload)
    except SealFormatError as e:
        return Verdict(VerifyStatus.UNREADABLE, str(e), kid=kid)
    fields = claims.public_fields()

    def verdict(status: VerifyStatus, reason: str, content_state: str = "not-checked"
                ) -> Verdict:
        return Verdict(status, reason, fields, kid, entry.name, content_state)

    if claims.issuer != entry.issuer:
        return verdict(VerifyStatus.UNTRUSTED,
                       f"key {kid} is trusted for {entry.issuer}, not for {claims.issuer}")
    if entry.revoked_at is not None:
        return verdict(VerifyStatus.REVOKED_KEY,
                       f"issuer key revoked on {entry.revoked_at.isoformat()} "
                       f"({entry.revocation_reason})")
    if not entry.not_before <= claims.issued_at <= entry.not_after:
        return verdict(VerifyStatus.EXPIRED_KEY,
                       "the seal was made outside the issuer key's validity period")
    if now > entry.not_after:
        return verdict(VerifyStatus.EXPIRED_KEY,
                       f"the issuer key expired on {entry.not_after.isoformat()}")
    if content is not None:
        if hashlib.sha256(content.canonical_bytes()).digest() != claims.digest:
            return verdict(VerifyStatus.INVALID_SIGNATURE,
                           "the document's content differs from what the seal signs",
                           "digest-mismatch")
        return verdict(VerifyStatus.VALID, "seal verified; content matches its digest",
                       "digest-match")
    if page_text is not None:
        text = _norm(page_text)
        missing = [k for k, v in claims.fields.items() if _norm(v) not in text]
        if _norm(claims.issue_number) not in text:
            missing.append("issue_number")
        if missing:
            return verdict(VerifyStatus.INVALID_SIGNATURE,
                           f"printed text differs from the sealed fields: {', '.join(missing)}",
                           "fields-mismatch")
        return verdict(VerifyStatus.VALID, "seal verified; the sealed fields are printed",
                       "fields-match")
    return verdict(VerifyStatus.VALID,
                   "seal verified; compare the fields with the printed page")


def _grey(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L"))
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = (arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr, dtype=np.uint8)


@dataclass
class _Input:
    images: list[np.ndarray]
    text: str | None


def load_pages(data: bytes, source: str = "<input>") -> _Input:
    """Greyscale images of the input: each page of a PDF (rasterised at 300 dpi, with its
    text), or the one image of a scan or photo."""
    if data[:5] == b"%PDF-":
        import pypdfium2 as pdfium

        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as e:
            raise DocumentInputError(f"{source}: unreadable PDF: {e}") from None
        images, texts = [], []
        try:
            if len(pdf) > MAX_PDF_PAGES:
                raise DocumentInputError(f"{source}: {len(pdf)} pages; a certificate has at"
                                         f" most {MAX_PDF_PAGES}")
            for page in pdf:
                width, height = page.get_size()  # points: checked before any pixel exists
                pixels = (width * PDF_DPI / 72) * (height * PDF_DPI / 72)
                if not pixels <= MAX_PAGE_PIXELS:
                    raise DocumentInputError(
                        f"{source}: a page of {width / 72 * 25.4:.0f} × "
                        f"{height / 72 * 25.4:.0f} mm is too large to be a certificate")
                bitmap = page.render(scale=PDF_DPI / 72, grayscale=True)
                images.append(_grey(bitmap.to_pil()))
                texts.append(page.get_textpage().get_text_range())
        finally:
            pdf.close()
        return _Input(images, "\n".join(texts))
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _Input([_grey(img)], None)
    except Image.DecompressionBombError:  # Pillow's own limit (not an OSError)
        raise DocumentInputError(f"{source}: the image is too large to be a page (over"
                                 f" {2 * MAX_PAGE_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DocumentInputError(f"{source}: neither a PDF nor a readable image ({e})") from None


def verify_image(images: list[np.ndarray], trust: list[TrustEntry], *,
                 now: datetime | None = None, content: Document | None = None,
                 page_text: str | None = None) -> Verdict:
    """Find the seals in ``images`` and verify them. Every distinct seal found must verify
    and they must all sign the same document; the first failure is the verdict."""
    seals: list[bytes] = []
    unreadable = False
    for img in images:
        found, bad = read_seal_bytes(img)
        unreadable |= bad
        seals += [s for s in found if s not in seals]
    if not seals:
        if unreadable:
            return Verdict(VerifyStatus.UNREADABLE, "a 2D code was found but cannot be decoded")
        return Verdict(VerifyStatus.NO_SEAL, "no seal found in the input")
    verdicts = [verify_seal(s, trust, now=now, content=content, page_text=page_text)
                for s in seals]
    for v in verdicts:
        if not v.valid:
            return v
    if len({v.fields.get("content_digest") for v in verdicts}) > 1:
        return Verdict(VerifyStatus.INVALID_SIGNATURE,
                       "the pages carry seals of different documents", verdicts[0].fields)
    return verdicts[0]


def verify_file(path: Path, trust: list[TrustEntry], *, now: datetime | None = None,
                content: Document | None = None) -> Verdict:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DocumentInputError(f"{path}: cannot read: {e.strerror}") from None
    pages = load_pages(data, str(path))
    return verify_image(pages.images, trust, now=now, content=content, page_text=pages.text)
