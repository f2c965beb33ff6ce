"""The verifier's trust list: a directory of issuer public keys with validity and revocation.

Format (ours; ``docs/document-security.md``): one UTF-8 JSON file per key, named
``<kid-hex>.json``::

    {"format": "cardio-seal-trust/1",
     "kid": "1f2e…" (16 hex digits), "issuer": "999997" (団体コード), "name": "見本市",
     "public_key": "-----BEGIN PUBLIC KEY-----…" (SPKI PEM, P-256),
     "not_before": "2026-04-01T00:00:00+09:00", "not_after": "2027-05-31T23:59:59+09:00",
     "revoked": null | {"at": "…", "reason": "keyCompromise"},
     "use": "seal" | "credential"}

``use`` says what the key may sign: ``seal`` (the printed page's 2D seal; also when the
member is absent, as in lists written before it existed) or ``credential`` (the SD-JWT VC
form of the certificate and its status list, ``kiosk.credentials``). A verifier of one never
accepts a key of the other, so each key signs one kind of message (key separation) and one
can be rotated or revoked without the other.

``not_before``/``not_after`` bound when seals from this key are accepted: a seal issued
outside the window, or checked after ``not_after``, is ``expired_key`` (like the ICAO signer's
usage period, the issuer rotates keys yearly and publishes the new one ahead). Any revocation
rejects every seal of the key — a compromised key can back-date ``iat``, so a revocation date
cannot be trusted to split good seals from bad. The directory is plain files so it can be
shipped, diffed and signed as a whole by whoever distributes it (as the DCC's DSC list).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cardio.errors import CardioError
from kiosk.documents.seal import key_id

__all__ = ["TRUST_FORMAT", "USES", "TrustEntry", "TrustListError", "load_trust_list",
           "write_entry"]

TRUST_FORMAT = "cardio-seal-trust/1"
USES = ("seal", "credential")


class TrustListError(CardioError):
    """The trust directory is missing or one of its files is malformed (file named)."""

    exit_code = 2


@dataclass(frozen=True)
class TrustEntry:
    """One trusted issuer key."""

    kid: bytes
    issuer: str
    name: str
    public_key: ec.EllipticCurvePublicKey
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    use: str = "seal"

    def to_json(self) -> dict[str, Any]:
        pem = self.public_key.public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        revoked = None
        if self.revoked_at is not None:
            revoked = {"at": self.revoked_at.isoformat(),
                       "reason": self.revocation_reason or "unspecified"}
        return {"format": TRUST_FORMAT, "kid": self.kid.hex(), "issuer": self.issuer,
                "name": self.name, "public_key": pem.decode("ascii"),
                "not_before": self.not_before.isoformat(),
                "not_after": self.not_after.isoformat(), "revoked": revoked, "use": self.use}

    @classmethod
    def from_json(cls, obj: Any, source: str = "<trust entry>") -> TrustEntry:
        try:
            if not isinstance(obj, dict) or obj.get("format") != TRUST_FORMAT:
                raise TrustListError(f"{source}: malformed trust entry: not a {TRUST_FORMAT} entry")
            key = serialization.load_pem_public_key(obj["public_key"].encode("ascii"))
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                    key.curve, ec.SECP256R1):
                raise TrustListError(f"{source}: malformed trust entry: public key is not"
                                     " ECDSA P-256")
            kid = bytes.fromhex(obj["kid"])
            if kid != key_id(key):
                raise TrustListError(f"{source}: malformed trust entry: kid does not match"
                                     " the public key")
            nb = datetime.fromisoformat(obj["not_before"])
            na = datetime.fromisoformat(obj["not_after"])
            if nb.tzinfo is None or na.tzinfo is None:
                raise TrustListError(f"{source}: malformed trust entry: validity times must"
                                     " carry a UTC offset")
            rev = obj.get("revoked")
            rev_at = datetime.fromisoformat(rev["at"]) if rev else None
            reason = str(rev.get("reason", "unspecified")) if rev else None
            use = obj.get("use", "seal")
            if use not in USES:
                raise TrustListError(f"{source}: malformed trust entry: use is one of"
                                     f" {', '.join(USES)}")
            return cls(kid, str(obj["issuer"]), str(obj.get("name", "")), key, nb, na,
                       rev_at, reason, use)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TrustListError(f"{source}: malformed trust entry: {e}") from None


def write_entry(directory: Path, entry: TrustEntry) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{entry.kid.hex()}.json"
    path.write_text(json.dumps(entry.to_json(), ensure_ascii=False, indent=2) + "\n",
                    encoding="utf-8")
    return path


def load_trust_list(directory: Path) -> list[TrustEntry]:
    """Every ``*.json`` entry in ``directory`` (sorted by name, so results are stable)."""
    if not directory.is_dir():
        raise TrustListError(f"trust list {directory} is not a directory "
                             "(create one with `doc trust --out DIR`)")
    entries = []
    for path in sorted(directory.glob("*.json")):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise TrustListError(f"{path}: unreadable trust entry: {e}") from None
        entries.append(TrustEntry.from_json(obj, str(path)))
    return entries
