"""The card directory: a software card's memory on disk.

Layout::

    card.json            what the card is (format, ATR, J-LIS directory, created)
    ef/<AID>/<FID>.bin   transparent EF contents, byte for byte
    ef/<AID>/<FID>.rec   record EF: each record as a 2-byte length and the bytes
    keys/<AID>-<FID>.pem the card's private keys
    do/<TAG>.bin         MF-level data objects (GET DATA)
    state.json           retry counters and salted hashes of the PINs and 照合番号
    .lock                flock(2) target

The file images never change after personalisation; ``state.json`` does, and every change
is a locked read-modify-write with an atomic rename, so two processes using one card
cannot lose a decrement or leave half a file. The PINs themselves are not stored, only
HMAC-SHA-256 digests under a per-key salt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from emulators.card.keys import key_from_pem, key_to_pem

FORMAT = 1


class CardStoreError(Exception):
    """The card directory is missing, of another format, or damaged."""


KeyName = tuple[bytes, int]


def key_name(aid: bytes, fid: int) -> str:
    return f"{aid.hex().upper()}/{fid:04X}"


@dataclass
class SecretState:
    """One key reference's persistent state."""

    max_tries: int
    tries: int
    salt: bytes
    digest: bytes
    value_rule: str

    @classmethod
    def new(cls, secret: bytes | None, max_tries: int, value_rule: str) -> SecretState:
        salt = secrets.token_bytes(16)
        digest = _digest(salt, secret) if secret is not None else b""
        tries = max_tries if secret is not None else 0
        return cls(max_tries, tries, salt, digest, value_rule)

    def matches(self, candidate: bytes) -> bool:
        return bool(self.digest) and hmac.compare_digest(_digest(self.salt, candidate),
                                                         self.digest)

    def set_secret(self, secret: bytes) -> None:
        self.salt = secrets.token_bytes(16)
        self.digest = _digest(self.salt, secret)
        self.tries = self.max_tries

    def to_json(self) -> dict[str, Any]:
        return {"max": self.max_tries, "tries": self.tries, "salt": self.salt.hex(),
                "hash": self.digest.hex(), "rule": self.value_rule}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SecretState:
        return cls(int(data["max"]), int(data["tries"]), bytes.fromhex(data["salt"]),
                   bytes.fromhex(data["hash"]), str(data["rule"]))


def _digest(salt: bytes, secret: bytes) -> bytes:
    return hmac.new(salt, secret, hashlib.sha256).digest()


@dataclass
class CardImage:
    """Everything personalisation writes."""

    meta: dict[str, Any]
    files: dict[KeyName, bytes] = field(default_factory=dict)
    records: dict[KeyName, list[bytes]] = field(default_factory=dict)
    private_keys: dict[KeyName, rsa.RSAPrivateKey] = field(default_factory=dict)
    secrets: dict[KeyName, SecretState] = field(default_factory=dict)
    data_objects: dict[int, bytes] = field(default_factory=dict)


class LazyKeys(dict[KeyName, rsa.RSAPrivateKey]):
    """Private keys parsed on first use: opening a card (a new process, a new CLI
    command) should not pay for eight RSA key loads when it signs with one."""

    def __init__(self) -> None:
        super().__init__()
        self._pem: dict[KeyName, bytes] = {}

    def add_pem(self, name: KeyName, pem: bytes) -> None:
        self._pem[name] = pem

    def __missing__(self, name: KeyName) -> rsa.RSAPrivateKey:
        pem = self._pem.get(name)
        if pem is None:
            raise KeyError(name)
        key = key_from_pem(pem, trusted=True)
        self[name] = key
        return key

    def get(self, name: KeyName, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return name in self._pem or super().__contains__(name)

    def keys(self) -> Any:
        return (set(self._pem) | set(super().keys()))

    def __iter__(self) -> Any:
        return iter(self.keys())


class CardStore:
    """A card directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- creation and loading -------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / "card.json").exists()

    def write(self, image: CardImage) -> None:
        if self.exists():
            raise CardStoreError(f"{self.path} already holds a card")
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        for (aid, fid), data in image.files.items():
            atomic_write(self.path / "ef" / aid.hex().upper() / f"{fid:04X}.bin", data)
        for (aid, fid), recs in image.records.items():
            blob = b"".join(len(r).to_bytes(2, "big") + r for r in recs)
            atomic_write(self.path / "ef" / aid.hex().upper() / f"{fid:04X}.rec", blob)
        for (aid, fid), key in image.private_keys.items():
            atomic_write(self.path / "keys" / f"{aid.hex().upper()}-{fid:04X}.pem",
                          key_to_pem(key), private=True)
        for tag, value in image.data_objects.items():
            atomic_write(self.path / "do" / f"{tag:04X}.bin", value)
        self._write_state({key_name(a, f): s for (a, f), s in image.secrets.items()})
        meta = dict(image.meta, format=FORMAT)
        # card.json carries the card's PIN-reset key: private, like the other secrets.
        atomic_write(self.path / "card.json",
                     json.dumps(meta, ensure_ascii=False, indent=2).encode(), private=True)

    def load(self) -> CardImage:
        try:
            meta = json.loads((self.path / "card.json").read_text())
        except FileNotFoundError as exc:
            raise CardStoreError(f"no software card in {self.path} (run 'cardio emu init')"
                                 ) from exc
        except json.JSONDecodeError as exc:
            raise CardStoreError(f"{self.path}/card.json is damaged") from exc
        if meta.get("format") != FORMAT:
            raise CardStoreError(f"{self.path} holds a card of format {meta.get('format')}")
        image = CardImage(meta)
        for ef in sorted((self.path / "ef").glob("*/*")):
            aid = bytes.fromhex(ef.parent.name)
            fid = int(ef.stem, 16)
            blob = ef.read_bytes()
            if ef.suffix == ".bin":
                image.files[(aid, fid)] = blob
            elif ef.suffix == ".rec":
                recs: list[bytes] = []
                pos = 0
                while pos < len(blob):
                    n = int.from_bytes(blob[pos : pos + 2], "big")
                    recs.append(blob[pos + 2 : pos + 2 + n])
                    pos += 2 + n
                image.records[(aid, fid)] = recs
        lazy = LazyKeys()
        for pem in sorted((self.path / "keys").glob("*.pem")):
            aid_hex, fid_hex = pem.stem.split("-")
            lazy.add_pem((bytes.fromhex(aid_hex), int(fid_hex, 16)), pem.read_bytes())
        image.private_keys = lazy
        for do in sorted((self.path / "do").glob("*.bin")):
            image.data_objects[int(do.stem, 16)] = do.read_bytes()
        for name, st in self.read_state().items():
            aid_hex, fid_hex = name.split("/")
            image.secrets[(bytes.fromhex(aid_hex), int(fid_hex, 16))] = st
        return image

    # -- mutable state ----------------------------------------------------------------
    def read_state(self) -> dict[str, SecretState]:
        try:
            raw = json.loads((self.path / "state.json").read_text())
        except FileNotFoundError as exc:
            raise CardStoreError(f"{self.path}/state.json is missing") from exc
        except json.JSONDecodeError as exc:
            raise CardStoreError(f"{self.path}/state.json is damaged") from exc
        return {k: SecretState.from_json(v) for k, v in raw["keys"].items()}

    def _write_state(self, state: dict[str, SecretState]) -> None:
        data = {"keys": {k: v.to_json() for k, v in sorted(state.items())}}
        atomic_write(self.path / "state.json", json.dumps(data, indent=1).encode(),
                      private=True)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, SecretState]]:
        """Lock the card, hand out its current state, and write it back when the block
        ends without an exception."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.read_state()
                yield state
                self._write_state(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def atomic_write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write a file so that readers see the old or the new content, never half, even
    across a crash (temporary file per process, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
