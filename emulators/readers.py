"""The ``emu:DIR`` reader scheme: a software card opened in-process.

Registered under the entry-point group ``cardio.readers`` (pyproject), so ``cardio``'s
``open_reader`` reaches the emulator without importing it.
"""

from __future__ import annotations

from pathlib import Path

from cardio.readers import OpenReader, ReaderError
from cardio.transport import InProcessTransport
from cardio.trust import TrustStore
from emulators.card.card import SoftwareCard
from emulators.card.store import CardStoreError


def open_emu_reader(location: str, trust: TrustStore | None) -> OpenReader:
    """The software card in directory ``location``; without ``--trust`` its anchors are
    the emulated J-LIS hierarchy that personalised it (recorded in ``card.json``)."""
    try:
        card = SoftwareCard.open(Path(location))
    except CardStoreError as exc:
        raise ReaderError(str(exc)) from exc
    if trust is None:
        jlis = card.image.meta.get("jlis_dir")
        if isinstance(jlis, str) and jlis and Path(jlis).is_dir():
            trust = TrustStore.from_dir(Path(jlis))
    # No reader in between: extended-length APDUs pass, and the card's own answer
    # decides whether they are used (cardio.card's probe).
    return OpenReader(f"emu:{location}", InProcessTransport(card, supports_extended=True),
                      trust)
