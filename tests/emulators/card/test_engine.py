"""The card engine is pure: a command, a session and the persistent state in; a response,
a new session and the changed state out — inputs untouched, nothing on disk."""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

import pytest

from cardio import constants as c
from cardio.apdu import builders as commands
from cardio.apdu.command import CommandApdu
from emulators.card import SoftwareCard
from emulators.card import engine as engine_module
from emulators.card.engine import COMMANDS, CardEngine, ClaClass, Session, StateUse
from emulators.card.profile import Profile
from emulators.card.spec import MY_NUMBER_CARD

AUTH = (c.AID_JPKI, c.JPKI_AUTH_PIN)


@pytest.fixture
def engine(soft_card: SoftwareCard) -> CardEngine:
    return CardEngine(MY_NUMBER_CARD, soft_card.image, rng=lambda n: bytes(range(n)))


def test_verify_returns_the_change_and_touches_nothing(
        engine: CardEngine, soft_card: SoftwareCard, profile: Profile,
        card_dir: tuple[Path, Profile]) -> None:
    secrets = MappingProxyType(dict(soft_card.image.secrets))  # read-only: a write fails
    state_before = (card_dir[0] / "state.json").read_bytes()
    session = Session(df=c.AID_JPKI)
    wrong = b"0000" if profile.auth_pin != "0000" else b"1111"
    out = engine.process(commands.verify(wrong, sfi=c.JPKI_AUTH_PIN), session, secrets)
    assert out.response == bytes.fromhex("63C2")
    assert out.changes[AUTH].tries == 2 and secrets[AUTH].tries == 3
    assert session == Session(df=c.AID_JPKI)
    # The same command on the same inputs: the same outcome (nothing was kept).
    assert engine.process(commands.verify(wrong, sfi=c.JPKI_AUTH_PIN), session, secrets) == out
    ok = engine.process(commands.verify(profile.auth_pin.encode(), sfi=c.JPKI_AUTH_PIN),
                        out.session, {**secrets, **out.changes})
    assert ok.response == bytes.fromhex("9000") and ok.changes[AUTH].tries == 3
    assert c.JPKI_AUTH_PIN in ok.session.verified
    assert (card_dir[0] / "state.json").read_bytes() == state_before  # the adapter's job


def test_randomness_is_injected(engine: CardEngine) -> None:
    out = engine.process(commands.get_challenge(8), Session(), {})
    assert out.response == bytes(range(8)) + b"\x90\x00"
    assert out.session.challenge == bytes(range(8))


def test_what_each_command_needs_of_the_state(engine: CardEngine) -> None:
    assert engine.state_use(commands.read_binary(0)) is StateUse.NONE
    assert engine.state_use(commands.verify(None, sfi=0x18)) is StateUse.READ
    assert engine.state_use(commands.verify(b"1234", sfi=0x18)) is StateUse.WRITE
    assert engine.state_use(commands.change_key(b"1234")) is StateUse.WRITE
    assert engine.state_use(CommandApdu(0x01, 0x20, 0, 0x98, b"1234")) is StateUse.NONE


def test_dispatch_is_one_table(engine: CardEngine) -> None:
    """Unknown instructions answer by CLA class; every entry is named."""
    assert all(cmd.name for cmd in COMMANDS.values())
    assert {kind for kind, _ins in COMMANDS} == set(ClaClass)
    for cla, ins, sw in ((0x00, 0xFE, "6D00"), (0x80, 0xA4, "6D00"), (0x0C, 0xA4, "6882"),
                         (0x04, 0xA4, "6882"), (0x10, 0xA4, "6E00"), (0x03, 0xA4, "6881")):
        assert engine.process(CommandApdu(cla, ins, 0, 0), Session(), {}).response.hex(
        ).upper() == sw


def test_no_raw_status_words_in_the_engine() -> None:
    """Status words are named (cardio.apdu.status): none is spelled as a number here."""
    source = Path(engine_module.__file__).read_text()
    code = re.sub(r'""".*?"""|#[^\n]*', "", source, flags=re.S)
    assert re.findall(r"0x(?:6[0-9A-F]{3}|9000)\b", code, flags=re.I) == []
