"""Kiosk credentials as the operator leaves them for the kiosk software: a directory with
``kiosk.json`` (kiosk id, center URL), ``kiosk.key`` (its ECDSA P-256 key, mode 0600) and
``municipality-keys.json`` (the document-signing public keys the kiosk trusts, by
municipality code). Shared by the kiosk and the emulated operator that enrols kiosks."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cardio.errors import CardioError

__all__ = ["KioskCredentials"]


@dataclass
class KioskCredentials:
    kiosk_id: str
    key: ec.EllipticCurvePrivateKey
    center_url: str
    municipality_keys: dict[str, ec.EllipticCurvePublicKey]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        key_path = directory / "kiosk.key"
        pem = self.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        (directory / "kiosk.json").write_text(json.dumps(
            {"kiosk_id": self.kiosk_id, "center": self.center_url}, indent=1))
        (directory / "municipality-keys.json").write_text(json.dumps({
            code: k.public_bytes(serialization.Encoding.PEM,
                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            for code, k in self.municipality_keys.items()}, indent=1))

    @classmethod
    def load(cls, directory: Path) -> KioskCredentials:
        try:
            meta = json.loads((directory / "kiosk.json").read_text())
            key = serialization.load_pem_private_key((directory / "kiosk.key").read_bytes(),
                                                     None)
            raw = json.loads((directory / "municipality-keys.json").read_text())
        except (OSError, ValueError) as e:
            raise CardioError(f"no usable kiosk credentials in {directory}: {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CardioError(f"{directory}/kiosk.key is not an ECDSA key")
        keys = {}
        for code, pem in raw.items():
            pub = serialization.load_pem_public_key(pem.encode())
            if isinstance(pub, ec.EllipticCurvePublicKey):
                keys[code] = pub
        return cls(meta["kiosk_id"], key, meta["center"], keys)
