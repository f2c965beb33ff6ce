"""Extended-length APDUs through the real pcscd + vpcd (issue 28, item 3): the bytes on
the wire for an extended READ BINARY by SFI, and the APDUs the client spends on the four
JPKI certificates and the kiosk's card phase, counted at the card."""

from __future__ import annotations

import pytest

from cardio import constants as c
from cardio.apdu import tlv
from cardio.card import MyNumberCard
from cardio.jpki import JpkiApplication
from cardio.pcsc import PcscTransport
from emulators.card import SoftwareCard
from emulators.pytest_plugin import CardHandle, PcscEnv

pytestmark = pytest.mark.pcsc


def apdus(env: PcscEnv) -> int:
    return int(env.stack.stats()["apdus"][0])


def test_extended_sfi_read_on_the_wire(pcsc_stack: PcscEnv, pcsc_card: CardHandle) -> None:
    auth = SoftwareCard.open(pcsc_card.path).image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)]
    assert len(auth) > 256
    t = PcscTransport.open(pcsc_card.reader)
    try:
        assert t.transmit(bytes.fromhex("00A4040C0A") + c.AID_JPKI) == b"\x90\x00"
        # 00 B0 8A 00 + extended Le 00 00 (65536): the whole EF, filler and all, and 9000.
        assert t.transmit(bytes.fromhex("00B08A00000000")) == auth + b"\x90\x00"
        # Extended Le 0100 at offset 0x100 of the current EF: 256 bytes.
        assert t.transmit(bytes.fromhex("00B00100000100")) == auth[256:512] + b"\x90\x00"
        # A short Le of 00 is 256 bytes, as before.
        assert t.transmit(bytes.fromhex("00B08A0000")) == auth[:256] + b"\x90\x00"
        # The card's ATR says nothing and vpcd does not give its input limit: unknown.
        assert t.supports_extended is None
        assert t.atr == bytes.fromhex("3BE000FF8131FE4514")
    finally:
        t.close()


def test_four_certificates_in_six_apdus(pcsc_stack: PcscEnv, pcsc_card: CardHandle) -> None:
    files = SoftwareCard.open(pcsc_card.path).image.files
    before = apdus(pcsc_stack)
    t = PcscTransport.open(pcsc_card.reader)
    card = MyNumberCard(t)
    j = JpkiApplication(card)
    with card.session():
        got = {w: j.certificate_der(w) for w in ("auth", "auth-ca", "sign-ca")}
        j.verify_pin("sign", pcsc_card.profile.sign_password)
        got["sign"] = j.certificate_der("sign")
    card.close()
    assert apdus(pcsc_stack) - before == 6     # SELECT, 3 reads, VERIFY, 1 read
    for w, fid in (("auth", c.JPKI_AUTH_CERT), ("auth-ca", c.JPKI_AUTH_CA_CERT),
                   ("sign-ca", c.JPKI_SIGN_CA_CERT), ("sign", c.JPKI_SIGN_CERT)):
        raw = files[(c.AID_JPKI, fid)]
        assert got[w] == raw[: tlv.total_size(raw)]
    assert card.extended is True
