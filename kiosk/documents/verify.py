"""The offline verifier: a PDF, a scan or a phone photo in; a verdict per page and for the
whole input, and the sealed fields, out.

Steps, for every page on its own: find the DataMatrix symbols on that page (zxing-cpp, in
the bounded reader of :mod:`kiosk.documents.pages`) → parse the COSE_Sign1 → look the kid up
in the trust list → verify ES256 over the protected header and the claims → check the key
against the claims' issuer, its revocation and its validity → with ``content`` (the full
document in hand), compare its SHA-256 with the sealed digest.

What a verdict vouches for, and what it does not:

* **A seal vouches only for the page it is printed on.** Each page is judged from the
  symbols found on that page alone; a page without one is ``no_seal``, whatever the other
  pages carry. The input is ``valid`` only if *every* page carries a seal that verifies
  and all of them seal the same document (our certificates print the seal on every page,
  front and back); otherwise its verdict is the worst page's, and the reason names the
  pages. So a forged page put in front of genuine ones is never covered by their seal.
* **The page's content is not checked.** A seal proves what the municipality issued (the
  sealed fields, the document type, the digest of the whole content); it does not prove
  that the page in front of you shows it. Reading the page means reading what a person
  sees (OCR of the rendered page, a later issue) — never the PDF's text layer, which can
  hold text that is painted over, off the page, or another document's. Until then
  ``content`` is ``not-checked`` and the reason says which document the seal is for, so
  the reader compares title and fields with the page. ``content`` is ``digest-match`` only
  for a document given with ``--content`` (canonical JSON), which is then the sealed one;
  that still says nothing about the page.

Verdicts are exactly: ``valid``, ``invalid_signature`` (also: the document given as content
differs from what the seal signs, or the pages carry seals of different documents),
``untrusted`` (no trusted key with that kid, or a key trusted for another municipality),
``expired_key``, ``revoked_key``, ``no_seal`` (a page, or the input, carries no seal),
``unreadable`` (a symbol was seen but could not be decoded, or it is not a seal of ours).
Nothing here needs a network.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kiosk.documents.model import DOCUMENT_TITLES, Document, DocumentType
from kiosk.documents.pages import (
    DEFAULT_LIMITS,
    PDF_DPI,
    DocumentInputError,
    InputLimits,
    PageScan,
    iter_images,
    read_input,
    scan_pages,
)
from kiosk.documents.seal import (
    SealClaims,
    SealFormatError,
    cose_verify,
    decode_cose,
    read_seal_bytes,
)
from kiosk.documents.trust import TrustEntry

__all__ = [
    "PDF_DPI",
    "DocumentInputError",
    "PageVerdict",
    "Verdict",
    "VerifyStatus",
    "load_pages",
    "verify_file",
    "verify_image",
    "verify_scans",
    "verify_seal",
]


class VerifyStatus(enum.StrEnum):
    VALID = "valid"
    INVALID_SIGNATURE = "invalid_signature"
    UNTRUSTED = "untrusted"
    EXPIRED_KEY = "expired_key"
    REVOKED_KEY = "revoked_key"
    NO_SEAL = "no_seal"
    UNREADABLE = "unreadable"


NOT_CHECKED = "not-checked"


@dataclass(frozen=True)
class PageVerdict:
    """The verdict on one page (1-based), from the symbols found on that page only."""

    page: int
    status: VerifyStatus
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"page": self.page, "status": self.status.value, "reason": self.reason}


@dataclass(frozen=True)
class Verdict:
    status: VerifyStatus
    reason: str
    fields: dict[str, str] = field(default_factory=dict)
    kid: str | None = None
    issuer_name: str | None = None
    content: str = NOT_CHECKED  # digest-match | digest-mismatch | not-checked
    pages: tuple[PageVerdict, ...] = ()

    @property
    def valid(self) -> bool:
        return self.status is VerifyStatus.VALID

    @property
    def sealed_title(self) -> str | None:
        """The title of the document type the seal names (what the page must be)."""
        return _title(self.fields.get("doc_type"))

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "status": self.status.value, "reason": self.reason,
                "fields": self.fields, "kid": self.kid, "issuer_name": self.issuer_name,
                "sealed_title": self.sealed_title, "content": self.content,
                "pages": [p.to_json() for p in self.pages]}


def _title(doc_type: str | None) -> str | None:
    if doc_type is None:
        return None
    try:
        return DOCUMENT_TITLES[DocumentType(doc_type)]
    except ValueError:
        return None


def _what(doc_type: str) -> str:
    title = _title(doc_type)
    return f"a {title} ({doc_type})" if title else f"a document of type {doc_type!r}"


def _not_read(doc_type: str) -> str:
    return (f"the page itself was not read: check that it is {_what(doc_type)} and shows the"
            " values below")


def verify_seal(seal: bytes, trust: list[TrustEntry], *, now: datetime | None = None,
                content: Document | None = None) -> Verdict:
    """Verify one seal's bytes against ``trust`` at ``now`` (default: the current time), and
    ``content``, if given, against its digest. Says nothing about any page."""
    now = now or datetime.now(UTC)
    try:
        msg = decode_cose(seal)
    except SealFormatError as e:
        return Verdict(VerifyStatus.UNREADABLE, str(e))
    kid = msg.kid.hex()
    # Only keys for seals: a municipality's credential key (kiosk.credentials) signs JWTs,
    # never a page.
    candidates = [t for t in trust if t.kid == msg.kid and t.use == "seal"]
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

    def verdict(status: VerifyStatus, reason: str, content_state: str = NOT_CHECKED
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
        if content.doc_type.value != claims.doc_type:
            return verdict(VerifyStatus.INVALID_SIGNATURE,
                           f"the document given as content is {_what(content.doc_type.value)};"
                           f" the seal is for {_what(claims.doc_type)}", "digest-mismatch")
        if hashlib.sha256(content.canonical_bytes()).digest() != claims.digest:
            return verdict(VerifyStatus.INVALID_SIGNATURE,
                           "the document given as content differs from what the seal signs",
                           "digest-mismatch")
        return verdict(VerifyStatus.VALID,
                       "seal verified; the document given as content is the sealed one (its"
                       f" digest matches); {_not_read(claims.doc_type)}", "digest-match")
    return verdict(VerifyStatus.VALID, f"seal verified; {_not_read(claims.doc_type)}")


def _pages_list(pages: Sequence[int]) -> str:
    return ("page " if len(pages) == 1 else "pages ") + ", ".join(map(str, pages))


def _document(v: Verdict) -> tuple[str | None, str | None]:
    return v.fields.get("municipality"), v.fields.get("content_digest")


def _page_verdict(scan: PageScan, seals: list[Verdict]) -> PageVerdict:
    if not seals:
        if scan.unreadable:
            return PageVerdict(scan.page, VerifyStatus.UNREADABLE,
                               "a 2D code on this page cannot be decoded")
        return PageVerdict(scan.page, VerifyStatus.NO_SEAL, "no seal on this page")
    bad = next((v for v in seals if not v.valid), None)
    if bad is not None:
        return PageVerdict(scan.page, bad.status, bad.reason)
    if len({_document(v) for v in seals}) > 1:
        return PageVerdict(scan.page, VerifyStatus.INVALID_SIGNATURE,
                           "this page carries seals of different documents")
    f = seals[0].fields
    return PageVerdict(scan.page, VerifyStatus.VALID,
                       f"seal of {_what(f['doc_type'])} {f['issue_number']} verified")


def verify_scans(scans: Sequence[PageScan], trust: list[TrustEntry], *,
                 now: datetime | None = None, content: Document | None = None) -> Verdict:
    """The verdict on an input whose pages were read into ``scans``: each page judged from
    its own symbols, the input ``valid`` only if every page is (see the module's doc)."""
    cache: dict[bytes, Verdict] = {}  # the same seal on every page is verified once
    per_page: list[tuple[PageVerdict, list[Verdict]]] = []
    for scan in scans:
        seals = []
        for s in scan.seals:
            if s not in cache:
                cache[s] = verify_seal(s, trust, now=now, content=content)
            seals.append(cache[s])
        per_page.append((_page_verdict(scan, seals), seals))
    pages = tuple(pv for pv, _ in per_page)
    n = len(pages)

    # 1. A seal that fails (forged, untrusted, expired, revoked, other content) decides.
    for pv, seals in per_page:
        if pv.status in (VerifyStatus.VALID, VerifyStatus.NO_SEAL, VerifyStatus.UNREADABLE):
            continue
        first = next((v for v in seals if not v.valid), seals[0])
        where = "" if n == 1 else f"page {pv.page} of {n}: "
        return Verdict(pv.status, where + pv.reason, first.fields, first.kid,
                       first.issuer_name, first.content, pages)
    good = [(pv.page, seals[0]) for pv, seals in per_page if pv.status is VerifyStatus.VALID]
    unsealed = [pv for pv in pages if pv.status is not VerifyStatus.VALID]
    # 2. No seal anywhere.
    if not good:
        pv = next((p for p in pages if p.status is VerifyStatus.UNREADABLE), pages[0])
        if pv.status is VerifyStatus.UNREADABLE:
            reason = "a 2D code was found but cannot be decoded"
        else:
            reason = "no seal found in the input" if n == 1 else f"none of the {n} pages" \
                " carries a seal"
        return Verdict(pv.status, reason, pages=pages)
    # 3. The pages must carry seals of one document.
    seal = good[0][1]
    sealed = [page for page, _ in good]
    if len({_document(v) for _, v in good}) > 1:
        return Verdict(VerifyStatus.INVALID_SIGNATURE,
                       f"{_pages_list(sealed)} carry seals of different documents",
                       seal.fields, seal.kid, seal.issuer_name, NOT_CHECKED, pages)
    matched = all(v.content == "digest-match" for _, v in good)
    content_state = "digest-match" if matched else NOT_CHECKED
    # 4. A page without a seal is vouched for by nothing, whatever the others carry.
    if unsealed:
        missing = [pv.page for pv in unsealed]
        it, verb = ("it", "carries") if len(missing) == 1 else ("them", "carry")
        if any(pv.status is VerifyStatus.UNREADABLE for pv in unsealed):
            verb += " no readable seal"
        else:
            verb += " no seal"
        scope = "that page" if len(sealed) == 1 else "those pages"
        return Verdict(unsealed[0].status,
                       f"{_pages_list(missing)} of {n} {verb}, so nothing vouches for"
                       f" {it}; the seal verified on {_pages_list(sealed)}, of"
                       f" {_what(seal.fields['doc_type'])}, covers {scope} only",
                       seal.fields, seal.kid, seal.issuer_name, content_state, pages)
    where = "" if n == 1 else f" on every page ({n} of {n})"
    tail = seal.reason.split("; ", 1)[1]  # what the seal is for, and what was not checked
    return Verdict(VerifyStatus.VALID, f"seal verified{where}; {tail}", seal.fields, seal.kid,
                   seal.issuer_name, content_state, pages)


def verify_image(images: Iterable[np.ndarray], trust: list[TrustEntry], *,
                 now: datetime | None = None, content: Document | None = None) -> Verdict:
    """Verify page images already in this process (each image is one page): for our own
    renders and the tests; a file from outside goes through :func:`verify_file`."""
    scans = []
    for i, img in enumerate(images, 1):
        found, bad = read_seal_bytes(img)
        scans.append(PageScan(i, tuple(found), bad))
    return verify_scans(scans, trust, now=now, content=content)


@dataclass
class _Input:
    images: list[np.ndarray]


def load_pages(data: bytes, source: str = "<input>",
               limits: InputLimits = DEFAULT_LIMITS) -> _Input:
    """Greyscale images of every page (a PDF at 300 dpi, or an image's frames), decoded in
    this process under the static limits: for input that is not hostile (our renders, the
    tests, the bench). A file from outside goes through :func:`verify_file`."""
    try:
        return _Input(list(iter_images(data, limits)))
    except DocumentInputError as e:
        raise DocumentInputError(f"{source}: {e}") from None


def verify_file(path: Path, trust: list[TrustEntry], *, now: datetime | None = None,
                content: Document | None = None,
                limits: InputLimits = DEFAULT_LIMITS) -> Verdict:
    """Verify the PDF, scan or photo at ``path``: read within ``limits`` (a regular file
    only), its pages rendered and searched for seals in a bounded child process."""
    data = read_input(path, limits)
    return verify_scans(scan_pages(data, str(path), limits), trust, now=now, content=content)
