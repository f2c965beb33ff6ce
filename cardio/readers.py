"""Opening a reader by name: ``SCHEME:LOCATION`` for a registered reader scheme (``emu:DIR``
is the software card, registered by ``emulators``), otherwise a PC/SC reader.

Schemes come from the entry-point group ``cardio.readers``: the entry's name is the scheme
and its value a :data:`ReaderFactory`. ``cardio`` therefore knows nothing of the packages
above it (DESIGN.md, layer rules); a third party adds a scheme the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from cardio.errors import CardioError
from cardio.transport import Transport
from cardio.trust import TrustStore

READERS_GROUP = "cardio.readers"


class ReaderError(CardioError):
    """No reader named, or the named reader cannot be opened."""


@dataclass
class OpenReader:
    name: str
    transport: Transport
    trust: TrustStore | None


ReaderFactory = Callable[[str, TrustStore | None], OpenReader]
"""Opens ``LOCATION`` (what follows ``SCHEME:``); ``trust`` is the anchors the user gave,
or ``None`` — a factory may then supply the ones that come with its reader."""


def default_reader() -> str | None:
    return os.environ.get("CARDIO_READER")


def reader_scheme(spec: str) -> ReaderFactory | None:
    """The factory registered for ``spec``'s scheme, or ``None`` when ``spec`` names no
    registered scheme (it is then a PC/SC reader name, which may itself hold a colon)."""
    scheme, sep, _rest = spec.partition(":")
    if not sep or not scheme:
        return None
    for ep in entry_points(group=READERS_GROUP, name=scheme):
        try:
            factory: ReaderFactory = ep.load()
        except Exception as exc:  # a broken plug-in: say so instead of a traceback
            raise ReaderError(f"the reader scheme {scheme}: ({ep.value}) could not be loaded:"
                              f" {type(exc).__name__}: {exc}") from exc
        return factory
    return None


def open_reader(spec: str | None, trust_dir: Path | None = None, *,
                exclusive: bool = False) -> OpenReader:
    """Open ``spec``; trust anchors come from ``trust_dir`` or, for a software card, from
    the emulated J-LIS hierarchy that personalised it. A PC/SC reader is shared with
    other programs: :class:`~cardio.card.MyNumberCard` runs its sequences in PC/SC
    transactions and resets the card after a session that verified a PIN (see
    :class:`~cardio.pcsc.PcscTransport`). ``exclusive`` connects with
    SCARD_SHARE_EXCLUSIVE instead, so no other program can even connect."""
    spec = spec or default_reader()
    if not spec:
        raise ReaderError("no reader given: use --reader emu:DIR (a software card) or"
                          " set CARDIO_READER")
    trust = TrustStore.from_dir(trust_dir) if trust_dir is not None else None
    factory = reader_scheme(spec)
    if factory is not None:
        return factory(spec.partition(":")[2], trust)
    from cardio.pcsc import PcscTransport  # pyscard is an optional extra

    transport = PcscTransport.open(spec, exclusive=exclusive)
    return OpenReader(transport.reader, transport, trust)
