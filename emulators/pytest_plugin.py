"""pytest plugin for downstream CI (registered as the ``cardio`` pytest11 entry point).

Fixtures:

* ``cardio_jlis`` — an emulated J-LIS hierarchy for the session (the trust anchors);
* ``software_card`` — a fresh software card, in-process: its directory, profile (with the
  PINs), a :class:`~cardio.transport.Transport`, and a pyscard ``Reader`` for code
  written against pyscard;
* ``pcsc_stack`` — the real ``pcscd`` + vpcd in a private network and mount namespace
  for the session, with ``PCSCLITE_CSOCK_NAME`` set so pyscard, OpenSC and the ``cardio``
  CLI reach it;
* ``pcsc_card`` — a fresh software card loaded into slot 0 of that stack
  (``pcsc_card2`` into slot 1).

Where the machine cannot run the stack (no pcscd, no vpcd, no namespaces) the PC/SC
fixtures skip with the reason; ``--cardio-require-pcsc`` (or ``CARDIO_REQUIRE_PCSC=1``)
turns that into a failure, for CI that must run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cardio.transport import InProcessTransport


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cardio-require-pcsc", action="store_true",
                     help="fail (not skip) when the pcscd + vpcd stack cannot run")
    parser.addoption("--cardio-pcsc-slots", type=int, default=2,
                     help="vpcd readers in the session's PC/SC stack (default 2)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pcsc: needs the real pcscd + vpcd stack")


@dataclass
class CardHandle:
    """A software card and what a test needs to use it."""

    path: Path
    profile: Any
    reader: str = ""

    @property
    def spec(self) -> str:
        """The ``--reader`` value for the CLI."""
        return self.reader or f"emu:{self.path}"


@dataclass
class InProcessCard(CardHandle):
    card: Any = None
    transport: InProcessTransport | None = None
    pyscard_reader: Any = None


@pytest.fixture(scope="session")
def cardio_jlis(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from emulators.card import JlisHierarchy

    return JlisHierarchy.load_or_create(tmp_path_factory.mktemp("cardio-jlis"))


def _new_card(base: Path, jlis: Any, **profile: Any) -> tuple[Path, Any]:
    from emulators.card import Profile, create_card

    prof = Profile(**profile)
    base.mkdir(parents=True, exist_ok=True)
    path = Path(os.path.join(base, f"card-{len(list(base.iterdir()))}"))
    create_card(path, prof, jlis)
    return path, prof


@pytest.fixture
def software_card(tmp_path: Path, cardio_jlis: Any) -> InProcessCard:
    from emulators.card import SoftwareCard

    path, profile = _new_card(tmp_path / "cards", cardio_jlis)
    card = SoftwareCard.open(path)
    handle = InProcessCard(path, profile, card=card, transport=InProcessTransport(card))
    try:
        from emulators.pyscard_reader import EmulatedReader

        handle.pyscard_reader = EmulatedReader(card)
    except ImportError:  # pyscard not installed: the Transport still works
        pass
    return handle


@dataclass
class PcscEnv:
    stack: Any
    env: dict[str, str]
    readers: list[str]
    cards_dir: Path
    jlis: Any

    def new_card(self, slot: int = 0, **profile: Any) -> CardHandle:
        """Personalise a fresh card and put it in ``slot``."""
        path, prof = _new_card(self.cards_dir, self.jlis, **profile)
        self.stack.load(path, slot)
        return CardHandle(path, prof, self.readers[slot])


@pytest.fixture(scope="session")
def pcsc_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               cardio_jlis: Any) -> Iterator[PcscEnv]:
    from emulators.pcsc_stack import PcscStack, StackUnavailable

    require = (request.config.getoption("--cardio-require-pcsc")
               or os.environ.get("CARDIO_REQUIRE_PCSC") == "1")
    slots = max(1, int(request.config.getoption("--cardio-pcsc-slots")))
    base = tmp_path_factory.mktemp("cardio-pcsc")
    cards = [_new_card(base / "cards", cardio_jlis)[0] for _ in range(slots)]
    stack = PcscStack(cards, base / "stack")
    try:
        stack.start()
    except StackUnavailable as exc:
        if require:
            pytest.fail(f"the PC/SC stack is required but cannot run: {exc}")
        pytest.skip(f"the PC/SC stack cannot run here: {exc}")
    previous = os.environ.get("PCSCLITE_CSOCK_NAME")
    os.environ.update(stack.env)
    try:
        readers = stack.stats()["readers"]
        yield PcscEnv(stack, dict(stack.env), readers, base / "cards", cardio_jlis)
    finally:
        stack.stop()
        if previous is None:
            os.environ.pop("PCSCLITE_CSOCK_NAME", None)
        else:
            os.environ["PCSCLITE_CSOCK_NAME"] = previous


@pytest.fixture
def pcsc_card(pcsc_stack: PcscEnv) -> CardHandle:
    return pcsc_stack.new_card(0)


@pytest.fixture
def pcsc_card2(pcsc_stack: PcscEnv) -> CardHandle:
    return pcsc_stack.new_card(1)
