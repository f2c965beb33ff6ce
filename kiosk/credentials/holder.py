"""The holder's side: a wallet that stores credentials with their holder keys, shows what a
verifier asks for, and presents only the items the resident approves, bound to the
verifier's nonce and identity by a key-binding JWT.

Storage (our layout, a directory, ``$CARDIO_WALLET_DIR`` by default
``~/.local/share/cardio/wallet``): one ``<id>.json`` per credential, mode 0600, holding the
SD-JWT as issued (every disclosure) and its own P-256 holder key (PKCS#8 PEM). One key per
credential, so two credentials cannot be linked by their ``cnf``. This is the resident's own
device: unlike the kiosk, it is meant to keep the personal data — and so guards it by file
mode; a phone wallet would keep the key in its secure element instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.credentials.errors import PresentationRefused, WalletError
from kiosk.credentials.jose import key_from_jwk, key_to_jwk
from kiosk.credentials.juminhyo import TECHNICAL_CLAIMS, label_of
from kiosk.credentials.request import PresentationRequest
from kiosk.credentials.sdjwt import (
    Disclosure,
    Path,
    SdJwt,
    make_kb_jwt,
    parse,
    path_matches,
    resolve,
    select,
)

__all__ = ["PlannedItem", "StoredCredential", "Wallet", "default_wallet_dir", "new_holder_key"]

WALLET_FORMAT = "cardio-wallet-credential/1"
_ID = re.compile(r"[a-z0-9]{8,32}")


def default_wallet_dir() -> FsPath:
    env = os.environ.get("CARDIO_WALLET_DIR")
    if env:
        return FsPath(env)
    base = os.environ.get("XDG_DATA_HOME") or str(FsPath.home() / ".local" / "share")
    return FsPath(base) / "cardio" / "wallet"


def new_holder_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class PlannedItem:
    """One requested item as the holder sees it before approving."""

    path: Path
    label: str
    available: bool
    values: tuple[Any, ...]


@dataclass(frozen=True)
class StoredCredential:
    id: str
    sd_jwt: str  # issuance form: <JWT>~<every disclosure>~
    key: ec.EllipticCurvePrivateKey
    obtained_at: int

    @property
    def parsed(self) -> SdJwt:
        return parse(self.sd_jwt)

    def contents(self) -> tuple[dict[str, Any], dict[str, Path]]:
        sd = self.parsed
        return resolve(sd.payload, sd.disclosures)

    @property
    def issuer(self) -> str:
        return str(self.parsed.payload.get("iss", ""))

    @property
    def expires_at(self) -> int:
        return int(self.parsed.payload.get("exp", 0))

    def check_binding(self) -> None:
        """The credential's ``cnf`` is this wallet entry's key, and it parses and resolves
        (the issuer's signature is the verifier's business; the holder may lack the list)."""
        sd = self.parsed
        if sd.kb_jwt is not None:
            raise WalletError("a credential to store carries no key-binding JWT")
        cnf = sd.payload.get("cnf")
        jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
        if jwk is None or key_from_jwk(jwk).public_numbers() != \
                self.key.public_key().public_numbers():
            raise WalletError("the credential is bound to another key than the wallet's")
        resolve(sd.payload, sd.disclosures)

    def plan(self, request: PresentationRequest, lang: str = "ja") -> list[PlannedItem]:
        """What the verifier asks for, item by item, with what this credential holds."""
        claims, _paths = self.contents()
        out = []
        for want in request.claims:
            values = tuple(_values(claims, want))
            out.append(PlannedItem(want, label_of(want, lang), bool(values), values))
        return out

    def present(self, request: PresentationRequest, approved: Iterable[Path], *,
                now: float | None = None) -> str:
        """The SD-JWT+KB revealing the approved items that were requested — nothing else,
        never an item the holder did not approve — signed over the request's nonce and
        client_id (the ``aud``)."""
        when = int(time.time() if now is None else now)
        if request.expires_at < when:
            raise WalletError("the verifier's request has expired: ask it for a new one")
        # Only what was asked for: an approved path that is a requested one or lies
        # within one (a member's name inside "all members").
        approved = [a for a in approved
                    if any(path_matches(a, w) and len(a) >= len(w) for w in request.claims)]
        sd = self.parsed
        _claims, paths = resolve(sd.payload, sd.disclosures)
        chosen = select(sd.disclosures, paths, approved)
        part = "~".join([sd.jwt, *(d.encoded for d in chosen), ""])
        return part + make_kb_jwt(part, self.key, aud=request.client_id, nonce=request.nonce,
                                  iat=when)


def _values(claims: Any, path: Path) -> list[Any]:
    if not path:
        return [claims]
    head, rest = path[0], path[1:]
    if head is None:
        return [v for x in claims for v in _values(x, rest)] if isinstance(claims, list) else []
    if isinstance(head, int):
        return _values(claims[head], rest) if isinstance(claims, list) and \
            head < len(claims) else []
    return _values(claims[head], rest) if isinstance(claims, dict) and head in claims else []


class Wallet:
    """A directory of stored credentials."""

    def __init__(self, path: FsPath | None = None) -> None:
        self.path = path or default_wallet_dir()

    def store(self, sd_jwt: str, key: ec.EllipticCurvePrivateKey) -> StoredCredential:
        cred = StoredCredential(secrets.token_hex(8), sd_jwt.strip(), key, int(time.time()))
        try:
            cred.check_binding()
        except PresentationRefused as e:
            raise WalletError(f"the issued credential is not usable: {e}") from None
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
        body = json.dumps({"format": WALLET_FORMAT, "id": cred.id, "sd_jwt": cred.sd_jwt,
                           "holder_key": pem, "holder_jwk": key_to_jwk(key.public_key()),
                           "obtained_at": cred.obtained_at}, indent=1).encode("utf-8")
        target = self.path / f"{cred.id}.json"
        tmp = self.path / f".{cred.id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        return cred

    def load(self, cred_id: str) -> StoredCredential:
        if not _ID.fullmatch(cred_id):
            raise WalletError("a credential id is 8-32 lower-case letters and digits")
        path = self.path / f"{cred_id}.json"
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            if obj.get("format") != WALLET_FORMAT:
                raise WalletError(f"{path}: not a wallet entry")
            key = serialization.load_pem_private_key(obj["holder_key"].encode("ascii"), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise WalletError(f"{path}: the holder key is not an EC key")
            return StoredCredential(obj["id"], obj["sd_jwt"], key, int(obj["obtained_at"]))
        except WalletError:
            raise
        except FileNotFoundError:
            raise WalletError(f"no credential {cred_id} in {self.path}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise WalletError(f"{path}: unreadable wallet entry ({type(e).__name__})") from None

    def ids(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.stem for p in self.path.glob("*.json") if _ID.fullmatch(p.stem))

    def all(self) -> list[StoredCredential]:
        return [self.load(i) for i in self.ids()]

    def delete(self, cred_id: str) -> None:
        self.load(cred_id)
        with contextlib.suppress(FileNotFoundError):
            (self.path / f"{cred_id}.json").unlink()

    def choose(self, request: PresentationRequest, cred_id: str | None = None
               ) -> StoredCredential:
        """The credential to answer ``request`` with: the one named, else the newest of the
        requested type that has not expired."""
        if cred_id:
            return self.load(cred_id)
        now = int(time.time())
        fit = [c for c in self.all() if c.parsed.payload.get("vct") in request.vct_values
               and c.expires_at > now]
        if not fit:
            raise WalletError("no unexpired credential of the requested type in the wallet:"
                              " obtain one with 'cardio credential obtain'")
        return max(fit, key=lambda c: c.obtained_at)


def personal(claims: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k not in TECHNICAL_CLAIMS}


def disclosures_of(cred: StoredCredential) -> list[Disclosure]:
    return list(cred.parsed.disclosures)
