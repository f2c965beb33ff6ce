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

This is the card's persistence adapter: all file I/O, locking and fsync of the software
card happen here, none in the engine (:mod:`emulators.card.engine`). Everything read is
validated once, where it is read: a damaged or foreign directory is one typed error,
:class:`CardDirectoryDamaged`, that names the file and what is wrong with it.
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

from cardio.errors import CardioError
from emulators.card.keys import CardKeyError, key_from_pem, key_to_pem
from emulators.card.spec import VALUE_RULES

FORMAT = 1
MAX_TRIES = 15
"""A retry counter fits the four bits of ``63Cx``."""
STATE_FILE = "state.json"
CARD_FILE = "card.json"
SUBDIRS = ("ef", "keys", "do")


class CardStoreError(CardioError):
    """The card directory is missing or cannot be used."""


class CardDirectoryDamaged(CardStoreError):
    """A file of the card directory is unreadable, of another format, or holds values a
    card cannot have. The message names the file and what is wrong; never a value."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"card directory damaged: {path}: {what}")
        self.path = path
        self.what = what


KeyName = tuple[bytes, int]


def key_name(aid: bytes, fid: int) -> str:
    return f"{aid.hex().upper()}/{fid:04X}"


def parse_key_name(name: str) -> KeyName | None:
    """``AID/FID`` (hex) as ``state.json`` writes it; ``None`` when it is not one."""
    aid_hex, sep, fid_hex = name.partition("/")
    try:
        aid, fid = bytes.fromhex(aid_hex), int(fid_hex, 16)
    except ValueError:
        return None
    if not sep or len(fid_hex) != 4 or not 5 <= len(aid) <= 16:
        return None
    return aid, fid


def key_names(state: dict[str, SecretState]) -> dict[KeyName, SecretState]:
    """``state.json``'s entries keyed by (AID, FID); the names were checked on load."""
    out: dict[KeyName, SecretState] = {}
    for name, st in state.items():
        key = parse_key_name(name)
        if key is not None:
            out[key] = st
    return out


@dataclass(frozen=True)
class SecretState:
    """One key reference's persistent state (immutable: a change is a new state)."""

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

    def with_secret(self, secret: bytes) -> SecretState:
        """A new value under a new salt, with the counter restored."""
        salt = secrets.token_bytes(16)
        return SecretState(self.max_tries, self.max_tries, salt, _digest(salt, secret),
                           self.value_rule)

    def to_json(self) -> dict[str, Any]:
        return {"max": self.max_tries, "tries": self.tries, "salt": self.salt.hex(),
                "hash": self.digest.hex(), "rule": self.value_rule}

    @classmethod
    def from_json(cls, path: Path, name: str, data: object) -> SecretState:
        """Validate one entry of ``state.json`` (:class:`CardDirectoryDamaged` says what
        is wrong with it, never its value)."""
        def damaged(what: str) -> CardDirectoryDamaged:
            return CardDirectoryDamaged(path, f"{name}: {what}")

        if not isinstance(data, dict):
            raise damaged("an entry is not an object")
        missing = {"max", "tries", "salt", "hash", "rule"} - set(data)
        if missing:
            raise damaged(f"missing {', '.join(sorted(missing))}")
        max_tries, tries = data["max"], data["tries"]
        for label, n in (("max", max_tries), ("tries", tries)):
            if not isinstance(n, int) or isinstance(n, bool):
                raise damaged(f"{label} is not an integer")
        if not 1 <= max_tries <= MAX_TRIES:
            raise damaged(f"max is out of range 1..{MAX_TRIES}")
        if not 0 <= tries <= max_tries:
            raise damaged("tries is out of range 0..max")
        salt, digest, rule = data["salt"], data["hash"], data["rule"]
        if not isinstance(rule, str) or rule not in VALUE_RULES:
            raise damaged("unknown rule")
        salt_b, digest_b = _hex(salt), _hex(digest)
        if salt_b is None or digest_b is None:
            raise damaged("salt or hash is not hex")
        if len(salt_b) != 16 or len(digest_b) not in (0, 32):
            raise damaged("salt or hash has the wrong length")
        return cls(max_tries, tries, salt_b, digest_b, rule)


def _hex(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


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
        self._pem: dict[KeyName, tuple[Path, bytes]] = {}

    def add_pem(self, name: KeyName, path: Path, pem: bytes) -> None:
        self._pem[name] = (path, pem)

    def __missing__(self, name: KeyName) -> rsa.RSAPrivateKey:
        path, pem = self._pem[name]  # KeyError: the card has no such key
        try:
            key = key_from_pem(pem, trusted=True)
        except (CardKeyError, ValueError, TypeError) as exc:
            raise CardDirectoryDamaged(path, "not an RSA private key in PEM") from exc
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


def _read(path: Path) -> bytes:
    """A file of the card directory, or :class:`CardDirectoryDamaged` saying why not."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CardDirectoryDamaged(path, "missing") from None
    except OSError as exc:
        raise CardDirectoryDamaged(path, f"unreadable ({exc.strerror or exc})") from None


def _json_object(path: Path) -> dict[str, Any]:
    raw = _read(path)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardDirectoryDamaged(path, f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CardDirectoryDamaged(path, f"holds {type(data).__name__}, not an object")
    return data


def _hex_name(path: Path, text: str, size: int | None = None) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise CardDirectoryDamaged(path, "the file name is not a hex identifier") from None
    if size is not None and len(text) != size:
        raise CardDirectoryDamaged(path, "the file name is not a hex identifier")
    return value


def _hex_aid(path: Path, text: str) -> bytes:
    try:
        aid = bytes.fromhex(text)
    except ValueError:
        aid = b""
    if not 5 <= len(aid) <= 16:
        raise CardDirectoryDamaged(path, "the directory name is not an AID")
    return aid


def _records(path: Path, blob: bytes) -> list[bytes]:
    recs: list[bytes] = []
    pos = 0
    while pos < len(blob):
        n = int.from_bytes(blob[pos : pos + 2], "big")
        if pos + 2 + n > len(blob):
            raise CardDirectoryDamaged(path, "a record runs past the end of the file")
        recs.append(blob[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return recs


_META_TYPES: dict[str, type] = {"format": int, "atr": str, "serial": str, "jlis_dir": str}
_META_HEX = ("atr", "reset_key")


def validate_meta(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``card.json``: a card of our format with the fields every card has."""
    if meta.get("format") != FORMAT:
        raise CardDirectoryDamaged(path, f"not a card of format {FORMAT}"
                                         f" (format {meta.get('format')!r})")
    for key, kind in _META_TYPES.items():
        if key not in meta:
            raise CardDirectoryDamaged(path, f"missing {key}")
        if not isinstance(meta[key], kind):
            raise CardDirectoryDamaged(path, f"{key} is not a {kind.__name__}")
    for key in _META_HEX:
        value = meta.get(key)
        if value is None and key != "atr":
            continue
        if not _hex(value):
            raise CardDirectoryDamaged(path, f"{key} is not hex")
    return meta


def parse_state(path: Path, data: dict[str, Any]) -> dict[str, SecretState]:
    """``state.json``: ``{"keys": {AID/FID: entry}}`` with every entry valid."""
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise CardDirectoryDamaged(path, "keys is missing or not an object")
    out: dict[str, SecretState] = {}
    for name, entry in keys.items():
        if parse_key_name(name) is None:
            raise CardDirectoryDamaged(path, f"{name!r} is not an AID/FID key name")
        out[name] = SecretState.from_json(path, name, entry)
    return out


class CardStore:
    """A card directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._state_cache: tuple[tuple[int, int, int, int], dict[str, SecretState]] | None = None

    # -- creation and loading -------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / CARD_FILE).exists()

    def write(self, image: CardImage) -> None:
        if self.exists():
            raise CardStoreError(f"{self.path} already holds a card")
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        for sub in SUBDIRS:  # present even when empty: load() checks they are there
            (self.path / sub).mkdir(exist_ok=True)
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
        atomic_write(self.path / CARD_FILE,
                     json.dumps(meta, ensure_ascii=False, indent=2).encode(), private=True)

    def load_meta(self) -> dict[str, Any]:
        """``card.json``, validated: what the card is (for commands that need only that,
        such as revoking its certificates)."""
        if not self.path.is_dir() or not (self.path / CARD_FILE).exists():
            if self.path.is_dir() and any(self.path.iterdir()):
                raise CardDirectoryDamaged(self.path / CARD_FILE, "missing")
            raise CardStoreError(f"no software card in {self.path} (run 'cardio emu init')")
        return validate_meta(self.path / CARD_FILE, _json_object(self.path / CARD_FILE))

    def load(self) -> CardImage:
        meta = self.load_meta()
        self.clean_orphans()
        image = CardImage(meta)
        for ef in sorted(self._glob("ef", "*/*")):
            if ef.suffix not in (".bin", ".rec") or ef.name.startswith("."):
                continue  # a temporary file of an interrupted personalisation
            aid = _hex_aid(ef, ef.parent.name)
            fid = _hex_name(ef, ef.stem, 4)
            blob = _read(ef)
            if ef.suffix == ".bin":
                image.files[(aid, fid)] = blob
            else:
                image.records[(aid, fid)] = _records(ef, blob)
        lazy = LazyKeys()
        for pem in sorted(self._glob("keys", "*.pem")):
            aid_hex, _, fid_hex = pem.stem.partition("-")
            lazy.add_pem((_hex_aid(pem, aid_hex), _hex_name(pem, fid_hex, 4)), pem, _read(pem))
        image.private_keys = lazy
        for do in sorted(self._glob("do", "*.bin")):
            image.data_objects[_hex_name(do, do.stem, 4)] = _read(do)
        image.secrets.update(key_names(self.read_state()))
        return image

    def _glob(self, sub: str, pattern: str) -> list[Path]:
        base = self.path / sub
        if not base.is_dir():
            raise CardDirectoryDamaged(base, "missing")
        try:
            return list(base.glob(pattern))
        except OSError as exc:
            raise CardDirectoryDamaged(base, f"unreadable ({exc.strerror or exc})") from None

    def clean_orphans(self) -> int:
        """Delete the temporary files of ``state.json`` writes that never finished (the
        writer was killed between create and rename). Under the card lock, since every
        ``state.json`` write holds it, a temporary file seen there is nobody's — whatever
        PID namespace its writer ran in. Returns how many were removed."""
        pattern = f".{STATE_FILE}.*.tmp"
        if not any(self.path.glob(pattern)):
            return 0
        removed = 0
        with self._locked():
            for tmp in self.path.glob(pattern):
                if tmp.is_file() and not tmp.is_symlink():
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
                        removed += 1
        return removed

    # -- mutable state ----------------------------------------------------------------
    def read_state(self) -> dict[str, SecretState]:
        """The current ``state.json``, validated, for reading counters without the lock.
        Parsed again only when the file changed: every write replaces it (a new inode),
        and an edit in place changes its size or times, so the stat is a fresh enough
        look at what other processes did. (:meth:`transaction` never uses this cache.)"""
        path = self.path / STATE_FILE
        try:
            st = os.stat(path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            stamp = None
        if stamp is not None and self._state_cache is not None \
                and self._state_cache[0] == stamp:
            return dict(self._state_cache[1])
        state = parse_state(path, _json_object(path))
        self._state_cache = (stamp, state) if stamp is not None else None
        return dict(state)

    def read_secrets(self) -> dict[KeyName, SecretState]:
        """:meth:`read_state` keyed by (AID, FID)."""
        return key_names(self.read_state())

    def _write_state(self, state: dict[str, SecretState]) -> None:
        data = {"keys": {k: v.to_json() for k, v in sorted(state.items())}}
        try:
            atomic_write(self.path / STATE_FILE, json.dumps(data, indent=1).encode(),
                         private=True)
        except OSError as exc:
            raise CardDirectoryDamaged(self.path / STATE_FILE,
                                       f"cannot be written ({exc.strerror or exc})") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            lock = open(self.path / ".lock", "a+")  # noqa: SIM115 (held across the yield)
        except OSError as exc:
            raise CardDirectoryDamaged(self.path / ".lock",
                                       f"cannot be opened ({exc.strerror or exc})") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, SecretState]]:
        """Lock the card, hand out its current state, and write it back (fsync, atomic
        rename) when the block ends without an exception and changed it."""
        with self._locked():
            # Always parsed afresh under the lock: a read-modify-write must never start
            # from the stat-cached copy (an inode reused within one timestamp tick would
            # hide another process's write, and lose a spent try).
            path = self.path / STATE_FILE
            state = parse_state(path, _json_object(path))
            before = dict(state)
            yield state
            if state != before:
                self._write_state(state)


def atomic_write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write a file so that readers see the old or the new content, never half, even
    across a crash (temporary file per process, fsync, rename). A writer killed between
    the create and the rename leaves ``.<name>.<pid>.tmp``; :meth:`CardStore.clean_orphans`
    removes those of ``state.json``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
