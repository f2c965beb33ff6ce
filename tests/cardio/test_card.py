"""MyNumberCard's sessions in-process: which sequences share one transaction, when the
card is reset, and the one retry after a reset under us. The real pcscd behaviour is
tested in ``test_pcsc.py``; here a transport keeps the same contract over the software
card and *really* resets it when it reports a reset, so a retry that forgot to select
again would read the wrong thing."""

from __future__ import annotations

import pytest

from cardio import constants as c
from cardio.apdu.errors import SecurityStatusNotSatisfied, VerificationFailed
from cardio.card import MyNumberCard
from cardio.jpki import JpkiApplication
from cardio.pcsc import PcscTransport
from cardio.text import TextApplication
from cardio.transport import (
    CardResetError,
    InProcessTransport,
    SharedTransport,
    TransportError,
)
from emulators.card import Profile, SoftwareCard


class LockingTransport(InProcessTransport):
    """The shared-transport contract over a software card, with a log of the
    transaction calls and a fault: ``reset_before`` lists transmit numbers (1-based)
    before which the card is reset and :class:`CardResetError` raised instead."""

    def __init__(self, card: SoftwareCard) -> None:
        super().__init__(card)
        self.soft = card
        self.log: list[str] = []
        self.unlocked = False
        self.sent = 0
        self.reset_before: set[int] = set()
        self.lose_answer: set[int] = set()

    def begin_transaction(self) -> bool:
        self.log.append("begin")
        return True

    def end_transaction(self, *, reset: bool = False) -> None:
        self.log.append("end-reset" if reset else "end")
        if reset:
            self.soft.reset()
            self.unlocked = False

    def recover_from_reset(self) -> None:
        self.log.append("reconnect")

    def close(self) -> None:
        self.log.append("close")

    def transmit(self, apdu: bytes) -> bytes:
        self.sent += 1
        if self.sent in self.reset_before:
            self.soft.reset()
            raise CardResetError()
        self.log.append(apdu[:2].hex())
        answer = super().transmit(apdu)
        if self.sent in self.lose_answer:  # the card acted; its answer never came back
            raise TransportError("reader timed out waiting for the answer")
        return answer


@pytest.fixture
def locking(soft_card: SoftwareCard) -> LockingTransport:
    return LockingTransport(soft_card)


def test_the_test_transport_keeps_the_contract(locking: LockingTransport) -> None:
    assert isinstance(locking, SharedTransport)


def test_a_sequence_is_one_transaction_and_leaves_the_card(locking: LockingTransport,
                                                           soft_card: SoftwareCard) -> None:
    card = MyNumberCard(locking)
    der = JpkiApplication(card).certificate_der("auth")
    assert der == soft_card.image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)]
    assert locking.log[0] == "begin" and locking.log[-1] == "end"
    assert locking.log.count("begin") == 1 and "end-reset" not in locking.log


def test_outside_a_session_each_sequence_selects_afresh(locking: LockingTransport) -> None:
    """Between two transactions another program may have selected something else."""
    jpki = JpkiApplication(MyNumberCard(locking))
    jpki.token()
    jpki.availability()
    assert locking.log.count("begin") == 2
    assert locking.log.count("00a4") == 2          # SELECT JPKI AP in each


def test_inside_a_session_the_selection_is_kept(locking: LockingTransport) -> None:
    card = MyNumberCard(locking)
    jpki = JpkiApplication(card)
    with card.session():
        jpki.token()
        jpki.availability()
        assert "end" not in locking.log             # held for the whole session
    assert locking.log.count("begin") == 1 and locking.log.count("00a4") == 1
    assert locking.log[-1] == "end"


def test_a_pin_keeps_the_card_until_the_session_ends_then_resets_it(
        locking: LockingTransport, profile: Profile) -> None:
    card = MyNumberCard(locking)
    text = TextApplication(card)
    with card.session():
        text.verify_pin(profile.text_pin)
        assert card.unlocked and locking.unlocked
        assert text.my_number() == profile.my_number
    assert locking.log.count("begin") == 1 and locking.log[-1] == "end-reset"
    assert not card.unlocked
    with pytest.raises(SecurityStatusNotSatisfied):
        text.my_number()                            # the card was really reset


def test_a_pin_outside_a_session_holds_the_card_until_close(locking: LockingTransport,
                                                            profile: Profile) -> None:
    card = MyNumberCard(locking)
    text = TextApplication(card)
    text.verify_pin(profile.text_pin)
    assert "end" not in locking.log                 # nobody else may use the unlocked card
    assert text.my_number() == profile.my_number
    card.close()
    assert locking.log[-2:] == ["end-reset", "close"]


def test_a_wrong_pin_does_not_reset(locking: LockingTransport, profile: Profile) -> None:
    card = MyNumberCard(locking)
    with card.session(), pytest.raises(VerificationFailed):
        TextApplication(card).verify_pin("0000" if profile.text_pin != "0000" else "1111")
    assert locking.log[-1] == "end"


def test_a_reset_mid_sequence_is_retried_once_with_the_selection_restored(
        locking: LockingTransport, soft_card: SoftwareCard) -> None:
    card = MyNumberCard(locking)
    jpki = JpkiApplication(card)
    # SELECT AP, SFI read of the first 256 bytes, then the card is reset before the next
    # READ BINARY (an offset read in the current EF: without the replayed selection it
    # would fail).
    locking.reset_before = {3}
    der = jpki.certificate_der("auth")
    assert der == soft_card.image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)]
    assert locking.log.count("reconnect") == 1
    i = locking.log.index("reconnect")
    assert locking.log[i + 1: i + 4] == ["00a4", "00a4", "00b0"]   # AP, EF, the read again


def test_a_second_reset_in_a_row_is_an_error(locking: LockingTransport) -> None:
    locking.reset_before = {3, 6}
    with pytest.raises(CardResetError):
        JpkiApplication(MyNumberCard(locking)).certificate_der("auth")


def test_a_reset_after_a_pin_is_not_retried(locking: LockingTransport, profile: Profile,
                                            soft_card: SoftwareCard) -> None:
    card = MyNumberCard(locking)
    text = TextApplication(card)
    with card.session():
        text.verify_pin(profile.text_pin)
        locking.reset_before = {locking.sent + 1}
        with pytest.raises(CardResetError, match="PIN must be verified again"):
            text.my_number()
        assert not card.unlocked
    assert locking.log.count("reconnect") == 1
    tries = MyNumberCard(InProcessTransport(soft_card)).tries_left(c.Credential.TEXT)
    assert tries == 3                               # no VERIFY replayed, none spent


def test_emulated_pyscard_reader_is_reset_after_a_pin_session(software_card: object) -> None:
    """Through pyscard's own Reader/CardConnection API (no pcscd, so no PC/SC lock):
    the session still ends with a reset."""
    from emulators.pytest_plugin import InProcessCard

    assert isinstance(software_card, InProcessCard)
    conn = software_card.pyscard_reader.createConnection()
    conn.connect()
    card = MyNumberCard(PcscTransport(conn))
    text = TextApplication(card)
    with card.session():
        text.verify_pin(software_card.profile.text_pin)
        assert text.my_number() == software_card.profile.my_number
    with pytest.raises(SecurityStatusNotSatisfied):
        text.my_number()
    card.close()


def test_a_verify_whose_answer_is_lost_still_resets_the_card(locking: LockingTransport,
                                                             profile: Profile) -> None:
    """The card may have accepted the PIN even though its answer never arrived (a reader
    timeout, a cut USB cable that comes back): the session must end with a reset, or the
    next program inherits an unlocked card."""
    card = MyNumberCard(locking)
    text = TextApplication(card)
    locking.lose_answer = {2}  # 1: SELECT, 2: VERIFY
    with card.session(), pytest.raises(TransportError):
        text.verify_pin(profile.text_pin)
    assert locking.log[-1] == "end-reset"
    with pytest.raises(SecurityStatusNotSatisfied):
        text.my_number()  # really reset: nobody inherits the verified PIN


def test_a_wrong_pin_outside_a_session_lets_the_card_go(locking: LockingTransport,
                                                        profile: Profile) -> None:
    card = MyNumberCard(locking)
    with pytest.raises(VerificationFailed):
        TextApplication(card).verify_pin("0000" if profile.text_pin != "0000" else "1111")
    assert locking.log[-1] == "end" and not card.unlocked  # not held, not reset
