"""Extended-length READ BINARY, decided from the ATR or a probe (issue 28, item 3): one
READ BINARY per certificate where the reader and the card allow it, short APDUs where
either does not, and never an extended APDU to a card whose ATR says it takes none."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardio import constants as c
from cardio.card import MyNumberCard
from cardio.jpki import JpkiApplication
from cardio.readers import open_reader
from cardio.transport import CountingTransport, InProcessTransport, TransportError
from emulators.card import Profile, SoftwareCard

EXTENDED_SFI_READ_AUTH = bytes.fromhex("00B08A00000000")
"""``00 B0 (80|SFI 0A) 00`` with extended Le 0000 (65536): the whole auth certificate EF."""

ATR_NO_EXTENDED = bytes.fromhex("3BC5FF8131FB458073C6010000")   # "JPKI (03)"
ATR_EXTENDED = bytes.fromhex("3BDA13FF8131FB468012392F31C173C601C03B")  # "JPKI (02)"


class Wire:
    """A transport that records every APDU (tests only: PINs stay in the test) and can
    play a card or reader that refuses extended APDUs."""

    def __init__(self, card: SoftwareCard, *, reader: bool | None, atr: bytes | None = None,
                 card_refuses: bool = False, reader_fails: bool = False) -> None:
        self.card = card
        self.supports_extended = reader
        self.atr = atr if atr is not None else card.atr
        self.card_refuses = card_refuses
        self.reader_fails = reader_fails
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        extended = len(apdu) >= 7 and apdu[4] == 0
        if extended and self.reader_fails:
            raise TransportError("the reader cannot pass an extended APDU")
        if extended and self.card_refuses:
            return b"\x67\x00"
        return self.card.transmit(apdu)

    def extended_sent(self) -> int:
        return sum(1 for a in self.sent if len(a) >= 7 and a[4] == 0)


def four_certificates(card: MyNumberCard, profile: Profile) -> dict[str, bytes]:
    j = JpkiApplication(card)
    out = {w: j.certificate_der(w) for w in ("auth", "auth-ca", "sign-ca")}
    j.verify_pin("sign", profile.sign_password)
    out["sign"] = j.certificate_der("sign")
    return out


def expected(soft: SoftwareCard) -> dict[str, bytes]:
    fids = {"auth": c.JPKI_AUTH_CERT, "auth-ca": c.JPKI_AUTH_CA_CERT,
            "sign-ca": c.JPKI_SIGN_CA_CERT, "sign": c.JPKI_SIGN_CERT}
    from cardio.apdu import tlv
    out = {}
    for w, fid in fids.items():
        raw = soft.image.files[(c.AID_JPKI, fid)]
        out[w] = raw[: tlv.total_size(raw)]
    return out


SHORT_FOUR = 23
"""The four certificates in short APDUs: SELECT, 4 x (1 SFI read + chunks), VERIFY."""


def test_emulated_reader_reads_each_certificate_in_one_apdu(
        card_dir: tuple[Path, Profile]) -> None:
    path, profile = card_dir
    reader = open_reader(f"emu:{path}")
    counting = CountingTransport(reader.transport)
    certs = four_certificates(MyNumberCard(counting), profile)
    assert certs == expected(SoftwareCard.open(path))
    # SELECT JPKI, three extended SFI reads, VERIFY, one extended SFI read.
    assert counting.stats.apdus == 6


def test_unknown_reader_probes_once_and_reads_whole_files(soft_card: SoftwareCard,
                                                          profile: Profile) -> None:
    wire = Wire(soft_card, reader=None)
    certs = four_certificates(MyNumberCard(wire), profile)
    assert certs == expected(soft_card)
    assert wire.sent[1] == EXTENDED_SFI_READ_AUTH
    assert [a[:4].hex().upper() for a in wire.sent] == [
        "00A4040C", "00B08A00", "00B08B00", "00B08200", "0020009B", "00B08100"]


def test_card_refusing_extended_costs_one_probe(soft_card: SoftwareCard,
                                               profile: Profile) -> None:
    wire = Wire(soft_card, reader=True, card_refuses=True)
    certs = four_certificates(MyNumberCard(wire), profile)
    assert certs == expected(soft_card)
    assert wire.extended_sent() == 1                 # the probe, never again
    assert len(wire.sent) == SHORT_FOUR + 1


def test_reader_failing_extended_falls_back_to_short(soft_card: SoftwareCard,
                                                     profile: Profile) -> None:
    wire = Wire(soft_card, reader=None, reader_fails=True)
    certs = four_certificates(MyNumberCard(wire), profile)
    assert certs == expected(soft_card)
    assert wire.extended_sent() == 1
    assert len(wire.sent) == SHORT_FOUR + 1


@pytest.mark.parametrize("reader", [True, None])
def test_atr_without_extended_length_is_never_sent_one(soft_card: SoftwareCard,
                                                       profile: Profile,
                                                       reader: bool | None) -> None:
    wire = Wire(soft_card, reader=reader, atr=ATR_NO_EXTENDED)
    assert four_certificates(MyNumberCard(wire), profile) == expected(soft_card)
    assert wire.extended_sent() == 0 and len(wire.sent) == SHORT_FOUR


def test_short_only_reader_is_never_sent_one(soft_card: SoftwareCard, profile: Profile) -> None:
    wire = Wire(soft_card, reader=False, atr=ATR_EXTENDED)
    assert four_certificates(MyNumberCard(wire), profile) == expected(soft_card)
    assert wire.extended_sent() == 0 and len(wire.sent) == SHORT_FOUR


def test_atr_with_extended_length_and_a_capable_reader(soft_card: SoftwareCard,
                                                       profile: Profile) -> None:
    wire = Wire(soft_card, reader=True, atr=ATR_EXTENDED)
    assert four_certificates(MyNumberCard(wire), profile) == expected(soft_card)
    assert len(wire.sent) == 6


def test_small_fixed_reads_ask_for_what_they_need(soft_card: SoftwareCard) -> None:
    wire = Wire(soft_card, reader=True)
    assert JpkiApplication(MyNumberCard(wire)).availability() == {"sign": True, "auth": True}
    assert wire.sent[-1] == bytes.fromhex("00B0880003")   # SFI 08, Le=3: no probe needed


def test_in_process_transport_exposes_the_card_atr(soft_card: SoftwareCard) -> None:
    assert InProcessTransport(soft_card).atr == soft_card.atr


class RefusingWire(Wire):
    """A card that answers an extended APDU with ``sw`` of its own choosing (a card that
    does not parse an extended Le may say anything: wrong length, conditions, P1-P2,
    instruction)."""

    def __init__(self, card: SoftwareCard, sw: int) -> None:
        super().__init__(card, reader=None)
        self.refusal = sw.to_bytes(2, "big")

    def transmit(self, apdu: bytes) -> bytes:
        if len(apdu) >= 7 and apdu[4] == 0:
            self.sent.append(apdu)
            return self.refusal
        return super().transmit(apdu)


@pytest.mark.parametrize("sw", [0x6985, 0x6A86, 0x6D00, 0x6E00, 0x6A81, 0x6700],
                         ids=lambda sw: f"{sw:04X}")
def test_any_refusal_of_the_probe_retries_short_once(soft_card: SoftwareCard,
                                                     profile: Profile, sw: int) -> None:
    """Only 6700/6F00/6Cxx led to the short retry: a card refusing the extended probe with
    6985, 6A86, 6D00, ... could not be read at all."""
    wire = RefusingWire(soft_card, sw)
    card = MyNumberCard(wire)
    assert four_certificates(card, profile) == expected(soft_card)
    assert card.extended is False
    assert wire.extended_sent() == 1 and len(wire.sent) == SHORT_FOUR + 1


def test_a_probe_failing_in_short_form_too_decides_nothing(soft_card: SoftwareCard,
                                                           profile: Profile) -> None:
    """The sign certificate before its PIN: refused in both forms, so the refusal is the
    file's (raised as such), not the card's view of extended length — that stays open and
    the next whole-file read probes again (and reads in one APDU)."""
    from cardio.apdu.errors import SecurityStatusNotSatisfied

    wire = Wire(soft_card, reader=None)
    card = MyNumberCard(wire)
    with pytest.raises(SecurityStatusNotSatisfied):
        JpkiApplication(card).certificate_der("sign")
    assert card.extended is None
    assert JpkiApplication(card).certificate_der("auth") == expected(soft_card)["auth"]
    assert card.extended is True
