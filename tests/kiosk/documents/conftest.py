"""Fixtures for the document tests: one issuer key and trust list per session, and renders
of the samples (rendering at 600 dpi costs about a second, so each page is made once)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.model import Document, DocumentType
from kiosk.documents.render import RenderedPage, render_pages
from kiosk.documents.samples import SAMPLE_MUNICIPALITY, sample_document
from kiosk.documents.seal import key_id, sign_document
from kiosk.documents.trust import TrustEntry

JST = timezone(timedelta(hours=9))
SCRAMBLE_KEY = bytes(range(32))
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=JST)


def entry_for(key: ec.EllipticCurvePrivateKey, issuer: str = SAMPLE_MUNICIPALITY.code,
              not_before: datetime = datetime(2026, 1, 1, tzinfo=JST),
              not_after: datetime = datetime(2027, 12, 31, tzinfo=JST),
              revoked_at: datetime | None = None) -> TrustEntry:
    pub = key.public_key()
    return TrustEntry(key_id(pub), issuer, "見本市", pub, not_before, not_after, revoked_at,
                      "keyCompromise" if revoked_at else None)


@pytest.fixture(scope="session")
def issuer_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def trust(issuer_key: ec.EllipticCurvePrivateKey) -> list[TrustEntry]:
    return [entry_for(issuer_key)]


@pytest.fixture(scope="session")
def juminhyo() -> Document:
    return sample_document(DocumentType.JUMINHYO)


@pytest.fixture(scope="session")
def juminhyo_600(juminhyo: Document, issuer_key: ec.EllipticCurvePrivateKey
                 ) -> list[RenderedPage]:
    """Front and back of the 住民票 at the print engine's 600 dpi, with masks."""
    return render_pages(juminhyo, sign_document(juminhyo, issuer_key), SCRAMBLE_KEY, 600,
                        masks=True)
