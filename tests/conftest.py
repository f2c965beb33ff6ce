"""Shared fixtures: one emulated J-LIS hierarchy and a key pool per test session (RSA key
generation dominates otherwise), and fresh software cards per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cardio.card import MyNumberCard
from cardio.transport import CountingTransport, InProcessTransport
from cardio.trust import TrustStore
from emulators.card import JlisHierarchy, Profile, SoftwareCard, create_card
from emulators.card.images import photo_jp2
from emulators.card.keys import KeyPool

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def key_pool() -> KeyPool:
    return KeyPool(10)


@pytest.fixture(scope="session")
def jlis(tmp_path_factory: pytest.TempPathFactory, key_pool: KeyPool) -> JlisHierarchy:
    return JlisHierarchy.load_or_create(tmp_path_factory.mktemp("jlis"), keys=key_pool)


@pytest.fixture(scope="session")
def default_photo() -> bytes:
    return photo_jp2()


@pytest.fixture(scope="session")
def trust(jlis: JlisHierarchy) -> TrustStore:
    return TrustStore.from_dir(jlis.path)


CardFactory = Callable[..., tuple[Path, Profile]]


@pytest.fixture
def make_card(tmp_path: Path, jlis: JlisHierarchy, key_pool: KeyPool,
              default_photo: bytes) -> CardFactory:
    counter = iter(range(1000))

    def make(**profile_fields: object) -> tuple[Path, Profile]:
        profile = Profile(**profile_fields)  # type: ignore[arg-type]
        path = tmp_path / f"card{next(counter)}"
        create_card(path, profile, jlis, keys=key_pool, photo=default_photo)
        return path, profile

    return make


@pytest.fixture
def card_dir(make_card: CardFactory) -> tuple[Path, Profile]:
    return make_card()


@pytest.fixture
def soft_card(card_dir: tuple[Path, Profile]) -> SoftwareCard:
    return SoftwareCard.open(card_dir[0])


@pytest.fixture
def profile(card_dir: tuple[Path, Profile]) -> Profile:
    return card_dir[1]


@pytest.fixture
def counting(soft_card: SoftwareCard) -> CountingTransport:
    return CountingTransport(InProcessTransport(soft_card))


@pytest.fixture
def client(counting: CountingTransport) -> MyNumberCard:
    return MyNumberCard(counting)


class Apdu:
    """Send hex APDUs to a software card and get (data, SW) back."""

    def __init__(self, card: SoftwareCard) -> None:
        self.card = card

    def __call__(self, hex_apdu: str | bytes) -> tuple[bytes, int]:
        raw = bytes.fromhex(hex_apdu) if isinstance(hex_apdu, str) else hex_apdu
        resp = self.card.transmit(raw)
        return resp[:-2], int.from_bytes(resp[-2:], "big")


@pytest.fixture
def apdu(soft_card: SoftwareCard) -> Apdu:
    return Apdu(soft_card)
from tests.pki_env import pki  # noqa: E402, F401  (module-scoped fixture for PKI tests)


@pytest.fixture(scope="session", autouse=True)
def _pytest_itself_stays_dumpable() -> None:
    """``kiosk run``, ``kiosk issue`` and ``facepin serve`` harden their process (no core
    file, not dumpable: ``cardio.hardening``), which cannot be undone without privileges.
    Tests that call those commands in-process must not harden pytest itself: later tests
    start subprocesses that need the core limit (tests/kiosk/test_run_hardening.py's
    control) and read other processes' /proc entries (the port locks). The real commands,
    run as processes, are hardened — that test checks it."""
    import facepin.cli
    import kiosk.run
    import kiosk.runner_cli

    for module in (kiosk.run, kiosk.runner_cli, facepin.cli):
        module.no_core_dumps = lambda: None  # type: ignore[attr-defined]
