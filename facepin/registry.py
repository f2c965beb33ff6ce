"""The issuer's card registry read from a file named in configuration.

J-LIS knows which card it issued each JPKI authentication certificate to (the card serial
and the card-face key); the reservation service asks it, never the client. The file is
JSON, ``{"<SHA-256 of the auth certificate, hex>": {"serial": "...", "face_key": "..."}}``
— the format the emulated J-LIS writes (``cards.json`` in its directory) and the one a
deployment exports from the real registry. It is read again whenever it changes, so cards
registered while the service runs are seen; a file that cannot be read or parsed fails
closed (the lookup raises :class:`RegistryError`, the service refuses with 503).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from cardio.errors import CardioError


class RegistryError(CardioError):
    """The registry file is missing, unreadable or not in the registry format."""


class FileCardRegistry:
    """Callable ``(auth_cert_sha256) -> (serial, face_key) | None`` over a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._cards: dict[str, tuple[str, str]] = {}

    def check(self) -> None:
        """Read the file now: a service checks its configuration before it starts."""
        self._load()

    def _load(self) -> dict[str, tuple[str, str]]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise RegistryError(f"card registry {self.path}: {exc.strerror}") from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._cards = self._parse(self.path)
                self._stamp = stamp
            return self._cards

    @staticmethod
    def _parse(path: Path) -> dict[str, tuple[str, str]]:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"card registry {path}: not readable JSON ({exc})") from exc
        except RecursionError:  # the parser recurses per nested array or object
            raise RegistryError(f"card registry {path}: not a registry (JSON nested too"
                                " deeply)") from None
        if not isinstance(data, dict):
            raise RegistryError(f"card registry {path}: not a JSON object")
        cards = {}
        for fp, entry in data.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("serial"), str)
                    and isinstance(entry.get("face_key"), str)):
                raise RegistryError(f"card registry {path}: the entry for {fp[:16]}… is not"
                                    " {\"serial\": str, \"face_key\": str}")
            cards[fp.lower()] = (entry["serial"], entry["face_key"])
        return cards

    def __call__(self, auth_cert_sha256: str) -> tuple[str, str] | None:
        return self._load().get(auth_cert_sha256.lower())
