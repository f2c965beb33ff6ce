"""Kiosk credentials as the operator leaves them for the kiosk software: a directory with
``kiosk.json`` (kiosk id, center URL), ``kiosk.key`` (its ECDSA P-256 key, mode 0600) and
``municipality-keys.json`` (the document-signing public keys the kiosk trusts, by
municipality code). Shared by the kiosk and the emulated operator that enrols kiosks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        """Read the directory the operator left. Whatever is wrong with it — a file
        missing, not JSON, nested past the parser's recursion, of the wrong shape, a key
        that is not a key — is one :class:`CardioError` line naming the directory (a
        list in ``kiosk.json`` or a number for a PEM was an AttributeError, exit 70)."""
        def bad(why: str) -> CardioError:
            return CardioError(f"no usable kiosk credentials in {directory}: {why}")

        meta = _json_file(directory / "kiosk.json", bad)
        raw = _json_file(directory / "municipality-keys.json", bad)
        if not (isinstance(meta.get("kiosk_id"), str) and isinstance(meta.get("center"), str)):
            raise bad('kiosk.json is not {"kiosk_id": str, "center": str}')
        if not all(isinstance(pem, str) for pem in raw.values()):
            raise bad("municipality-keys.json is not {code: PEM public key}")
        try:
            key = serialization.load_pem_private_key((directory / "kiosk.key").read_bytes(),
                                                     None)
        except (OSError, ValueError, TypeError) as e:
            raise bad(f"kiosk.key: {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CardioError(f"{directory}/kiosk.key is not an ECDSA key")
        keys = {}
        for code, pem in raw.items():
            try:
                pub = serialization.load_pem_public_key(pem.encode())
            except (ValueError, UnicodeEncodeError):
                raise bad(f"municipality-keys.json: the key for {code[:16]!r} is not a PEM"
                          " public key") from None
            if isinstance(pub, ec.EllipticCurvePublicKey):
                keys[code] = pub
        return cls(meta["kiosk_id"], key, meta["center"], keys)


def _json_file(path: Path, bad: Callable[[str], CardioError]) -> dict[str, Any]:
    """One JSON object from ``path``, or ``bad(why)`` raised."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        raise bad(f"{path.name}: {e.strerror or e}") from None
    except ValueError as e:  # not JSON, not UTF-8
        raise bad(f"{path.name} is not JSON ({e})") from None
    except RecursionError:
        raise bad(f"{path.name} is not JSON of the expected shape (nested too deeply)"
                  ) from None
    if not isinstance(data, dict):
        raise bad(f"{path.name} holds {type(data).__name__}, not an object")
    return data
