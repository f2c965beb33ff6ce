"""Opening a reader by name: ``emu:DIR`` for a software card in-process, otherwise a PC/SC
reader. The emulator is imported lazily here, the one place outside tests where
``cardio`` reaches into ``emulators`` (DESIGN.md, layer rules)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cardio.apdu.errors import CardioError
from cardio.transport import Transport
from cardio.trust import TrustStore

EMU_PREFIX = "emu:"


class ReaderError(CardioError):
    """No reader named, or the named reader cannot be opened."""


@dataclass
class OpenReader:
    name: str
    transport: Transport
    trust: TrustStore | None


def default_reader() -> str | None:
    return os.environ.get("CARDIO_READER")


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
    if spec.startswith(EMU_PREFIX):
        from cardio.transport import InProcessTransport
        from emulators.card.card import SoftwareCard
        from emulators.card.store import CardStoreError

        path = Path(spec[len(EMU_PREFIX):])
        try:
            card = SoftwareCard.open(path)
        except CardStoreError as exc:
            raise ReaderError(str(exc)) from exc
        if trust is None:
            jlis = card.image.meta.get("jlis_dir")
            if jlis and Path(jlis).is_dir():
                trust = TrustStore.from_dir(Path(jlis))
        return OpenReader(spec, InProcessTransport(card), trust)
    from cardio.pcsc import PcscTransport

    transport = PcscTransport.open(spec, exclusive=exclusive)
    return OpenReader(transport.reader, transport, trust)
