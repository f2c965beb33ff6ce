"""The card is its spec: a toy applet declared here runs through the unchanged engine,
the card directory and the generic client; and the My Number card's spec is what the
personaliser wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from cardio import constants as c
from cardio.apdu import builders as commands
from cardio.apdu import tlv
from cardio.apdu.errors import (
    FileNotFound,
    PinBlocked,
    SecurityStatusNotSatisfied,
    VerificationFailed,
)
from cardio.card import MyNumberCard
from cardio.transport import InProcessTransport
from emulators.card import SoftwareCard
from emulators.card.personalise import check_declared, credential_states
from emulators.card.spec import (
    FOUR_DIGITS,
    MY_NUMBER_CARD,
    AppletSpec,
    CardSpec,
    CredentialSpec,
    FileSpec,
    SpecMismatch,
    any_of,
)
from emulators.card.store import CardImage, CardStore

TOY_AID = bytes.fromhex("F0000000C0FFEE")
TOY_NOTE, TOY_PIN, TOY_BOARD = 0x0001, 0x0011, 0x0101
TOY = AppletSpec(
    TOY_AID, "toy applet",
    files=(FileSpec(TOY_NOTE, "a note only the PIN opens", any_of(TOY_PIN)),
           FileSpec(TOY_BOARD, "a free notice board, also reachable as SFI 5", sfi=0x05)),
    credentials=(CredentialSpec(TOY_PIN, "toy PIN", FOUR_DIGITS, max_tries=2),),
)
TOY_CARD = CardSpec((TOY,))
NOTE = tlv.build(0xDF01, "秘密のメモ".encode()).encode()
BOARD = tlv.build(0xDF02, b"open to all").encode()


@dataclass(frozen=True)
class ToyCredential:
    """The toy's client side: what the generic client needs to address a credential."""

    aid: bytes
    fid: int
    label: str


TOY_CRED = ToyCredential(TOY_AID, TOY_PIN, "toy PIN")


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    image = CardImage(meta={"atr": "3B00", "serial": "toy-1", "jlis_dir": ""})
    image.files[(TOY_AID, TOY_NOTE)] = NOTE
    image.files[(TOY_AID, TOY_BOARD)] = BOARD
    image.secrets.update(credential_states(TOY_CARD, {(TOY_AID, TOY_PIN): b"2468"}))
    check_declared(TOY_CARD, image)
    CardStore(tmp_path / "toy").write(image)
    return tmp_path / "toy"


def _client(path: Path) -> MyNumberCard:
    return MyNumberCard(InProcessTransport(SoftwareCard.open(path, spec=TOY_CARD)))


def test_toy_applet_end_to_end(toy_dir: Path) -> None:
    card = _client(toy_dir)
    with pytest.raises(SecurityStatusNotSatisfied):
        card.read_tlv_ef(TOY_AID, TOY_NOTE, "the note")
    assert card.tries_left(TOY_CRED) == 2  # type: ignore[arg-type]
    card.verify(TOY_CRED, b"2468")  # type: ignore[arg-type]
    assert card.read_tlv_ef(TOY_AID, TOY_NOTE, "the note") == NOTE
    card.select(TOY_AID, force=True)  # a new selection forgets the PIN
    with pytest.raises(SecurityStatusNotSatisfied):
        card.read_tlv_ef(TOY_AID, TOY_NOTE, "the note")

    with pytest.raises(VerificationFailed) as wrong:
        card.verify(TOY_CRED, b"0000")  # type: ignore[arg-type]
    assert wrong.value.tries_left == 1
    # The spent try is on disk: another process sees it.
    assert _client(toy_dir).tries_left(TOY_CRED) == 1  # type: ignore[arg-type]
    with pytest.raises(PinBlocked):  # the last try blocks it
        card.verify(TOY_CRED, b"0000")  # type: ignore[arg-type]
    with pytest.raises(PinBlocked):  # and the right value no longer helps
        card.verify(TOY_CRED, b"2468")  # type: ignore[arg-type]
    assert _client(toy_dir).tries_left(TOY_CRED) == 0  # type: ignore[arg-type]
    with pytest.raises(SecurityStatusNotSatisfied):
        card.read_tlv_ef(TOY_AID, TOY_NOTE, "the note")


def test_toy_files_by_fid_and_by_declared_sfi(toy_dir: Path) -> None:
    card = _client(toy_dir)
    assert card.read_tlv_ef(TOY_AID, TOY_BOARD, "the board") == BOARD   # SELECT EF 0101
    assert card.send_checked(commands.read_binary_sfi(0x05, 0, len(BOARD))) == BOARD
    with pytest.raises(FileNotFound):   # SFI 6 names nothing
        card.send_checked(commands.read_binary_sfi(0x06, 0, 1))


def test_a_spec_refuses_an_sfi_used_twice() -> None:
    with pytest.raises(SpecMismatch, match="SFI 5"):
        AppletSpec(TOY_AID, "bad", files=(FileSpec(0x0101, "a", sfi=5), FileSpec(0x0005, "b")))


def test_toy_card_holds_only_its_applet(toy_dir: Path) -> None:
    card = _client(toy_dir)
    with pytest.raises(FileNotFound):
        card.select(c.AID_JPKI)


def test_personaliser_refuses_an_undeclared_file() -> None:
    image = CardImage(meta={})
    image.files[(TOY_AID, 0x0002)] = b"\x00"
    with pytest.raises(SpecMismatch, match="0002 is not in the spec"):
        check_declared(TOY_CARD, image)
    with pytest.raises(SpecMismatch, match="no value for toy PIN"):
        credential_states(TOY_CARD, {})


def test_my_number_card_limits_come_from_the_credentials(soft_card: SoftwareCard) -> None:
    """Every declared credential is on the card with the limit ``Credential`` states
    (the 照合番号 limit is the profile's, 10 by default)."""
    for applet in MY_NUMBER_CARD.applets:
        for cred in applet.credentials:
            st = soft_card.image.secrets[(applet.aid, cred.fid)]
            assert st.value_rule == cred.rule.name
            if cred.credential is not None:
                assert st.max_tries == cred.credential.default_tries
    assert soft_card.image.secrets[(c.AID_TEXT, c.TEXT_BLOCKED_0012)].tries == 0
    declared = {(a.aid, f.fid) for a in MY_NUMBER_CARD.applets for f in a.files}
    assert set(soft_card.image.files) | set(soft_card.image.records) <= declared
