"""Emulated municipal document issuers: each municipality's seal-signing key (ECDSA P-256,
with a kid), its credential-signing key (the SD-JWT VC form of the 住民票 and its status
list, ``kiosk.credentials``; a separate key so each signs one kind of message) and its
スクランブル画像 key, kept in the emulated J-LIS directory.

Real municipalities hold these in their 証明発行サーバ's HSM and publish the public keys
through J-LIS; here they live under ``$CARDIO_JLIS_DIR/document-issuers/<code>/`` so that a
render in one process and a verify in another agree, and ``doc trust --out DIR`` can export
the public half as a trust list (``kiosk.documents.trust``). Test keys only.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cardio.errors import CardioError
from emulators.card.jlis import default_jlis_dir
from emulators.card.store import atomic_write
from kiosk.documents.model import Municipality
from kiosk.documents.seal import key_id
from kiosk.documents.trust import TrustEntry, write_entry

__all__ = ["DocumentIssuer", "export_trust_list", "issuers_dir"]

JST = timezone(timedelta(hours=9))
# The emulated signing period: wide enough that samples issued "now" verify for years.
_NOT_BEFORE = datetime(2026, 1, 1, tzinfo=JST)
_NOT_AFTER = datetime(2036, 1, 1, tzinfo=JST)


def issuers_dir(jlis_dir: Path | None = None) -> Path:
    return (jlis_dir or default_jlis_dir()) / "document-issuers"


class IssuerKeyError(CardioError):
    """An emulated issuer's key file that holds no EC private key."""


@dataclass(frozen=True)
class DocumentIssuer:
    """One municipality's emulated document-signing identity."""

    municipality: Municipality
    signing_key: ec.EllipticCurvePrivateKey
    scramble_key: bytes
    not_before: datetime
    not_after: datetime
    credential_key: ec.EllipticCurvePrivateKey

    @property
    def kid(self) -> bytes:
        return key_id(self.signing_key.public_key())

    @property
    def credential_kid(self) -> bytes:
        return key_id(self.credential_key.public_key())

    def trust_entry(self) -> TrustEntry:
        """The seal key's entry (``use: seal``)."""
        return TrustEntry(self.kid, self.municipality.code, self.municipality.name,
                          self.signing_key.public_key(), self.not_before, self.not_after)

    def credential_trust_entry(self) -> TrustEntry:
        """The credential key's entry (``use: credential``), in the same trust list."""
        return TrustEntry(self.credential_kid, self.municipality.code, self.municipality.name,
                          self.credential_key.public_key(), self.not_before, self.not_after,
                          use="credential")

    @classmethod
    def load_or_create(cls, municipality: Municipality,
                       jlis_dir: Path | None = None) -> DocumentIssuer:
        d = issuers_dir(jlis_dir) / municipality.code
        key_path, meta_path, scr_path = d / "seal-key.pem", d / "issuer.json", d / "scramble.key"
        if not key_path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            atomic_write(scr_path, secrets.token_bytes(32), private=True)
            meta = {"code": municipality.code, "name": municipality.name,
                    "mayor": municipality.mayor, "seal_text": municipality.seal_text,
                    "not_before": _NOT_BEFORE.isoformat(), "not_after": _NOT_AFTER.isoformat()}
            atomic_write(meta_path, json.dumps(meta, ensure_ascii=False).encode("utf-8"))
            # The key is written last: its presence means the issuer is complete.
            atomic_write(key_path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()), private=True)
        cred_path = d / "credential-key.pem"
        if not cred_path.exists():  # issuers made before credentials existed get one too
            atomic_write(cred_path, ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()), private=True)
        loaded = _load_key(key_path)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return cls(municipality, loaded, scr_path.read_bytes(),
                   datetime.fromisoformat(meta["not_before"]),
                   datetime.fromisoformat(meta["not_after"]), _load_key(cred_path))

    @classmethod
    def all(cls, jlis_dir: Path | None = None) -> list[DocumentIssuer]:
        out = []
        base = issuers_dir(jlis_dir)
        for meta_path in sorted(base.glob("*/issuer.json")):
            if not (meta_path.parent / "seal-key.pem").exists():
                continue
            m = json.loads(meta_path.read_text(encoding="utf-8"))
            muni = Municipality(m["code"], m["name"], m["mayor"], m["seal_text"])
            out.append(cls.load_or_create(muni, jlis_dir))
        return out


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise IssuerKeyError(f"{path} is not an EC private key")
    return loaded


def export_trust_list(out: Path, jlis_dir: Path | None = None,
                      ensure: tuple[Municipality, ...] = ()) -> list[TrustEntry]:
    """Write every emulated issuer's public keys — seal and credential — to ``out``
    (creating ``ensure``'s first)."""
    for m in ensure:
        DocumentIssuer.load_or_create(m, jlis_dir)
    entries = [e for i in DocumentIssuer.all(jlis_dir)
               for e in (i.trust_entry(), i.credential_trust_entry())]
    for e in entries:
        write_entry(out, e)
    return entries
