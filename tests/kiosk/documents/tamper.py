"""Tampered seals for the verifier's robustness tests: every way we know to forge or misuse
a seal, each with the verdict it must get. Deterministic per seed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import cbor2
import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.model import Document, DocumentType, Field, Section
from kiosk.documents.samples import sample_document
from kiosk.documents.seal import decode_cose, key_id, sign_document
from kiosk.documents.trust import TrustEntry
from kiosk.documents.verify import VerifyStatus
from tests.kiosk.documents.conftest import JST, NOW, entry_for

KINDS = ("payload-bitflip", "signature-bitflip", "raw-bitflip", "swapped", "content-changed",
         "untrusted", "forged-kid", "expired", "not-yet-valid", "revoked", "wrong-issuer")


@dataclass
class Case:
    kind: str
    seal: bytes
    trust: list[TrustEntry]
    content: Document | None
    expect: set[VerifyStatus]


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def _rebuild(seal: bytes, *, payload: bytes | None = None, sig: bytes | None = None) -> bytes:
    m = decode_cose(seal)
    return cbor2.dumps(cbor2.CBORTag(18, [m.protected, {}, payload or m.payload,
                                          sig or m.signature]))


def _changed(doc: Document, rng: np.random.Generator) -> Document:
    """The same document with one printed value altered (a forger's edit)."""
    si = int(rng.integers(len(doc.sections)))
    s = doc.sections[si]
    fi = int(rng.integers(len(s.fields)))
    f = s.fields[fi]
    new_f = Field(f.key, f.label, f.value + "一")
    fields = (*s.fields[:fi], new_f, *s.fields[fi + 1:])
    sections = (*doc.sections[:si], Section(s.title, fields), *doc.sections[si + 1:])
    return dataclasses.replace(doc, sections=sections)


def cases(n: int, key: ec.EllipticCurvePrivateKey, seed: int = 0) -> Iterator[Case]:
    rng = np.random.default_rng(seed)
    good = [entry_for(key)]
    attacker = ec.generate_private_key(ec.SECP256R1())
    types = list(DocumentType)
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        doc = sample_document(types[i % 6], serial=i + 1)
        seal = sign_document(doc, key)
        inv, untr = VerifyStatus.INVALID_SIGNATURE, VerifyStatus.UNTRUSTED
        unread = VerifyStatus.UNREADABLE
        if kind == "payload-bitflip":
            payload = decode_cose(seal).payload
            bad = _rebuild(seal, payload=_flip(payload, int(rng.integers(len(payload) * 8))))
            yield Case(kind, bad, good, None, {inv})
        elif kind == "signature-bitflip":
            bad = _rebuild(seal, sig=_flip(decode_cose(seal).signature, int(rng.integers(512))))
            yield Case(kind, bad, good, None, {inv})
        elif kind == "raw-bitflip":
            bad = _flip(seal, int(rng.integers(len(seal) * 8)))
            yield Case(kind, bad, good, None, {inv, untr, unread})
        elif kind == "swapped":
            other = sample_document(types[(i + 1 + int(rng.integers(5))) % 6], serial=i + 2)
            yield Case(kind, seal, good, other, {inv})
        elif kind == "content-changed":
            yield Case(kind, seal, good, _changed(doc, rng), {inv})
        elif kind == "untrusted":
            yield Case(kind, sign_document(doc, attacker), good, doc, {untr})
        elif kind == "forged-kid":
            # The attacker's signature under the trusted key's kid.
            protected = cbor2.dumps({1: -7, 4: key_id(key.public_key())})
            real = decode_cose(sign_document(_changed(doc, rng), attacker))
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

            from kiosk.documents.seal import _sig_structure
            r, s = decode_dss_signature(attacker.sign(_sig_structure(protected, real.payload),
                                                      ec.ECDSA(hashes.SHA256())))
            forged = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, real.payload,
                                                    r.to_bytes(32, "big") + s.to_bytes(32, "big")]))
            yield Case(kind, forged, good, None, {inv})
        elif kind == "expired":
            yield Case(kind, seal, [entry_for(key, not_after=datetime(2026, 11, 1, tzinfo=JST))],
                       doc, {VerifyStatus.EXPIRED_KEY})
        elif kind == "not-yet-valid":
            yield Case(kind, seal, [entry_for(key, not_before=datetime(2026, 12, 1, tzinfo=JST))],
                       doc, {VerifyStatus.EXPIRED_KEY})
        elif kind == "revoked":
            yield Case(kind, seal, [entry_for(key, revoked_at=NOW)], doc,
                       {VerifyStatus.REVOKED_KEY})
        else:
            yield Case(kind, seal, [entry_for(key, issuer="131016")], doc, {untr})
