from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardio.apdu import tlv
from cardio.apdu.errors import TlvError

# Text AP EF 0002 from the reference (§13, myna-card test vector, first bytes).
ATTR_HEAD = bytes.fromhex("ff2065df2108000e002000590064df22")


def test_card_forms_round_trip_byte_for_byte() -> None:
    # FF 40 82 00 9F: a long-form tag for a small number and a non-minimal length.
    inner = tlv.build(0xDF41, bytes.fromhex("01030E01")).encode()
    inner += tlv.build(0xDF42, b"K" * 16).encode()
    inner += tlv.build(0xDF43, b"\xff" * 128, length_octets=2).encode()
    raw = tlv.build(0xFF40, inner, length_octets=2).encode()
    assert raw[:5] == bytes.fromhex("FF4082009F")
    obj = tlv.parse(raw)
    assert (obj.tag, obj.length_octets, len(obj.value)) == (0xFF40, 2, 0x9F)
    assert obj.encode() == raw
    assert [c.tag for c in obj.children] == [0xDF41, 0xDF42, 0xDF43]
    assert obj.get(0xDF43).length_octets == 2
    assert obj.get(0xDF43).encode()[:5] == bytes.fromhex("DF43820080")


def test_header_of_reference_attribute_file() -> None:
    tag, length, octets, hsize = tlv.parse_header(ATTR_HEAD)
    assert (tag, length, octets, hsize) == (0xFF20, 0x65, 0, 3)
    assert tlv.total_size(ATTR_HEAD) == 0x68


def test_filler_and_offsets() -> None:
    my_number = bytes.fromhex("FF100C") + b"537686677188" + b"\xff\xff"
    objs = list(tlv.iter_tlv(my_number))
    assert len(objs) == 1 and objs[0].value == b"537686677188"
    outer = tlv.build(0xFF30, [tlv.build(0xDF31, b"a"), tlv.build(0xDF32, b"bc")]).encode()
    parsed = tlv.parse(outer)
    assert [c.offset for c in parsed.children] == [3, 7]


@pytest.mark.parametrize("raw", [
    "", "DF", "DF21", "DF2182", "DF21820100", "FF20 05 DF2101".replace(" ", ""),
    "DF2180", "DF21850000000001", "9F818181818101",
])
def test_malformed(raw: str) -> None:
    with pytest.raises(TlvError):
        tlv.parse(bytes.fromhex(raw))


def test_encode_length_forms() -> None:
    assert tlv.encode_length(5) == b"\x05"
    assert tlv.encode_length(0x9F) == b"\x81\x9f"
    assert tlv.encode_length(0x9F, 2) == b"\x82\x00\x9f"
    assert tlv.encode_length(5, 0) == b"\x05"
    with pytest.raises(TlvError):
        tlv.encode_length(300, 1)
    with pytest.raises(TlvError):
        tlv.encode_length(200, 0)


tags = st.sampled_from([0x04, 0x90, 0xDF21, 0xDF33, 0x5F37, 0x9F1F])
cons_tags = st.sampled_from([0xFF20, 0x7F21, 0x30, 0xA1])


@given(tag=tags, value=st.binary(max_size=700), octets=st.sampled_from([None, 1, 2, 3, 4]))
def test_property_primitive_round_trip(tag: int, value: bytes, octets: int | None) -> None:
    obj = tlv.build(tag, value, octets)
    raw = obj.encode()
    back = tlv.parse(raw + b"\xff\xff")
    assert back.value == value and back.encode() == raw
    assert tlv.total_size(raw[:8]) == len(raw)


@given(st.binary(max_size=64))
def test_property_parser_never_crashes(raw: bytes) -> None:
    try:
        for obj in tlv.iter_tlv(raw):
            if obj.constructed:
                _ = obj.children
    except TlvError:
        pass
