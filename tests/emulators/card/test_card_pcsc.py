"""The card side of a damaged store, through the real pcscd: a served card whose
``state.json`` goes bad answers ``6581`` to pcscd's client and keeps answering; once the
file is repaired it works again (issue 8, item 7)."""

from __future__ import annotations

import pytest

from cardio.apdu import builders as commands
from cardio.pcsc import PcscTransport
from emulators.pytest_plugin import CardHandle, PcscEnv

pytestmark = pytest.mark.pcsc

JPKI = bytes.fromhex("D392F000260100000001")


def _sw(raw: bytes) -> int:
    return int.from_bytes(raw[-2:], "big")


def test_damaged_store_answers_6581_through_pcscd(pcsc_stack: PcscEnv,
                                                  pcsc_card: CardHandle) -> None:
    state = pcsc_card.path / "state.json"
    good = state.read_bytes()
    pin = commands.verify(pcsc_card.profile.auth_pin.encode(), sfi=0x18).encode()
    transport = PcscTransport.open(pcsc_card.reader)
    try:
        assert _sw(transport.transmit(commands.select_aid(JPKI).encode())) == 0x9000
        for bad in (b"{}", b"null", b'{"keys": {'):
            state.write_bytes(bad)
            assert _sw(transport.transmit(pin)) == 0x6581
            assert _sw(transport.transmit(commands.verify(None, sfi=0x18).encode())) == 0x6581
            token = transport.transmit(commands.read_binary_sfi(0x06, 0, 16).encode())
            assert _sw(token) == 0x9000 and token[:15] == b"JPKIAPICCTOKEN2"
        state.write_bytes(good)
        assert _sw(transport.transmit(pin)) == 0x9000
        assert _sw(transport.transmit(commands.verify(None, sfi=0x18).encode())) == 0x63C3
    finally:
        transport.close()
