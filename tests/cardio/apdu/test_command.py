from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardio.apdu import builders
from cardio.apdu.command import CommandApdu, ResponseApdu
from cardio.apdu.errors import MalformedApdu


@pytest.mark.parametrize(("cmd", "wire"), [
    (CommandApdu(0x00, 0x20, 0x00, 0x80), "00200080"),                         # case 1
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=256), "00B0000000"),               # case 2S
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=17), "00B0000011"),
    (CommandApdu(0x00, 0xA4, 0x02, 0x0C, b"\x00\x01"), "00A4020C020001"),      # case 3S
    (CommandApdu(0x80, 0x2A, 0x00, 0x97, b"\x01\x02", le=256), "802A0097020102" + "00"),
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=65536), "00B00000000000"),         # case 2E
    (CommandApdu(0x00, 0xB0, 0x00, 0x00, le=300), "00B0000000012C"),
    (CommandApdu(0x80, 0xAE, 0x00, 0x00, b"\xaa" * 256), "80AE0000000100" + "AA" * 256),
    (CommandApdu(0x80, 0x2A, 0x00, 0x80, b"\xaa" * 256, le=256),
     "802A0080000100" + "AA" * 256 + "0100"),                                  # case 4E
])
def test_encode_and_parse_round_trip(cmd: CommandApdu, wire: str) -> None:
    assert cmd.encode().hex().upper() == wire.upper()
    parsed = CommandApdu.parse(bytes.fromhex(wire))
    assert parsed.encode() == cmd.encode()
    assert (parsed.data, parsed.le) == (cmd.data, cmd.le)


def test_reference_vectors() -> None:
    # mynumber-card.md §13: myna-card's exact APDUs.
    assert builders.verify(b"1234", sfi=0x18).encode().hex() == "0020009804" + b"1234".hex()
    assert builders.compute_signature(b"\x01\x02", key_sfi=0x17).encode().hex() == \
        "802a009702010200"
    assert builders.change_reference_data(b"5678").encode().hex() == "0024018004" + \
        b"5678".hex()
    assert builders.read_binary_sfi(0x0A, 0, 256).encode().hex() == "00b08a0000"
    assert builders.select_aid(bytes.fromhex("D392F000260100000001")).encode().hex().upper() \
        == "00A4040C0AD392F000260100000001"
    assert builders.verify(None, sfi=0x18).encode().hex() == "00200098"
    assert builders.read_record(1, 1).encode().hex() == "00b2010c00"


@pytest.mark.parametrize("wire", [
    "", "00", "00A404", "00A4040C05D392",           # too short / Lc larger than data
    "00A4040C02AABBCCDD",                           # Lc=2 but 4 data bytes (not case 4)
    "00B0000000",  # valid case 2S - excluded below
    "00B000000001",                                 # extended marker but truncated
    "80AE00000000",                                 # extended Lc of 0
    "80AE0000000003AABB",                           # extended Lc=3 but 2 bytes
])
def test_malformed_apdus_are_rejected(wire: str) -> None:
    if wire == "00B0000000":
        assert CommandApdu.parse(bytes.fromhex(wire)).le == 256
        return
    with pytest.raises(MalformedApdu):
        CommandApdu.parse(bytes.fromhex(wire))


def test_invalid_fields() -> None:
    with pytest.raises(MalformedApdu):
        CommandApdu(0x100, 0, 0, 0)
    with pytest.raises(MalformedApdu):
        CommandApdu(0, 0, 0, 0, le=0)
    with pytest.raises(MalformedApdu):
        CommandApdu(0, 0, 0, 0, b"x" * 65536)
    with pytest.raises(MalformedApdu):
        builders.read_binary(0x8000)
    with pytest.raises(MalformedApdu):
        builders.read_binary_sfi(31)
    with pytest.raises(MalformedApdu):
        builders.verify(b"")


def test_repr_never_shows_data() -> None:
    cmd = builders.verify(b"9876", sfi=0x18)
    assert "9876" not in repr(cmd) and "39383736" not in repr(cmd)


def test_response() -> None:
    r = ResponseApdu.parse(bytes.fromhex("0102639C"))
    assert (r.data, r.sw1, r.sw2, r.sw) == (b"\x01\x02", 0x63, 0x9C, 0x639C)
    assert r.encode().hex() == "0102639c"
    with pytest.raises(MalformedApdu):
        ResponseApdu.parse(b"\x90")


@given(cla=st.integers(0, 255), ins=st.integers(0, 255), p1=st.integers(0, 255),
       p2=st.integers(0, 255), data=st.binary(max_size=600),
       le=st.none() | st.integers(1, 65536), ext=st.booleans())
def test_property_round_trip(cla: int, ins: int, p1: int, p2: int, data: bytes,
                             le: int | None, ext: bool) -> None:
    cmd = CommandApdu(cla, ins, p1, p2, data, le, ext)
    parsed = CommandApdu.parse(cmd.encode())
    assert (parsed.cla, parsed.ins, parsed.p1, parsed.p2, parsed.data, parsed.le) == \
        (cla, ins, p1, p2, data, le)
    assert parsed.case == cmd.case


@given(st.binary(max_size=300))
def test_property_parse_never_crashes(raw: bytes) -> None:
    try:
        cmd = CommandApdu.parse(raw)
    except MalformedApdu:
        return
    assert cmd.encode() == raw or len(raw) >= 5
