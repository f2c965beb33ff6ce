"""The IPP codec: RFC 8010 bytes, round trips, collections skipped, truncation refused; and
printer-state-reasons mapped to device faults."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiosk.devices.errors import DeviceConfigError
from kiosk.devices.ipp import (
    IppDecodeError,
    IppMessage,
    IppPrinter,
    Op,
    Tag,
    decode,
    encode,
    reason_faults,
)


def test_get_printer_attributes_bytes() -> None:
    raw = encode(IppMessage(Op.GET_PRINTER_ATTRIBUTES, 7),
                 [(Tag.OPERATION, [(Tag.CHARSET, "attributes-charset", ["utf-8"])])])
    assert raw == (bytes.fromhex("0200 000B 00000007 01")
                   + bytes([Tag.CHARSET]) + struct.pack(">H", 18) + b"attributes-charset"
                   + struct.pack(">H", 5) + b"utf-8" + b"\x03")


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)


@given(st.lists(st.tuples(names, st.lists(st.text(max_size=30), min_size=1, max_size=3)),
                max_size=6, unique_by=lambda t: t[0]),
       st.lists(st.tuples(names, st.integers(-2**31, 2**31 - 1)), max_size=4,
                unique_by=lambda t: t[0]),
       st.binary(max_size=64))
def test_round_trip(texts: list[tuple[str, list[str]]], ints: list[tuple[str, int]],
                    data: bytes) -> None:
    ints = [(n, v) for n, v in ints if n not in dict(texts)]
    attrs = [(Tag.TEXT, n, list(vs)) for n, vs in texts] + [(Tag.INTEGER, n, [v])
                                                             for n, v in ints]
    raw = encode(IppMessage(0x0002, 42, data=data), [(Tag.JOB, attrs)])  # type: ignore[list-item]
    msg = decode(raw)
    assert (msg.code, msg.request_id, msg.data) == (2, 42, data)
    for n, vs in texts:
        assert msg.get(Tag.JOB, n) == vs
    for n, v in ints:
        assert msg.get(Tag.JOB, n) == [v]


def test_collections_are_skipped_and_truncation_refused() -> None:
    def attr(tag: int, name: str, value: bytes) -> bytes:
        return bytes([tag]) + struct.pack(">H", len(name)) + name.encode() + struct.pack(
            ">H", len(value)) + value

    body = (bytes.fromhex("0200 0000 00000001 04")
            + attr(Tag.BEG_COLLECTION, "media-col", b"")
            + attr(Tag.MEMBER_NAME, "", b"media-size")
            + attr(Tag.BEG_COLLECTION, "", b"")
            + attr(Tag.MEMBER_NAME, "", b"x-dimension")
            + attr(Tag.INTEGER, "", struct.pack(">i", 21000))
            + attr(Tag.END_COLLECTION, "", b"")
            + attr(Tag.END_COLLECTION, "", b"")
            + attr(Tag.ENUM, "printer-state", struct.pack(">i", 3)) + b"\x03")
    msg = decode(body)
    assert msg.get(Tag.PRINTER, "printer-state") == [3]
    assert msg.get(Tag.PRINTER, "media-col") == [b""]
    for cut in (5, 12, len(body) - 3):
        with pytest.raises(IppDecodeError):
            decode(body[:cut])


def test_reasons_become_faults() -> None:
    kinds = [f.kind for f in reason_faults(["none", "media-empty-error", "media-jam-report",
                                            "toner-low-warning", "offline-report", "foo"])]
    assert kinds == ["out-of-paper", "jam", "toner-low", "offline"]


def test_a_bad_url_is_a_typed_error() -> None:
    with pytest.raises(DeviceConfigError):
        IppPrinter("lpd://printer/queue")


@pytest.mark.parametrize("answer", [
    # A length of 10^12 made read() allocate it at once: MemoryError, exit 70.
    b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: 999999999999\r\n"
    b"\r\n" + b"\x00" * 100_000,
    # Not HTTP at all, with a line break in it: still one line in the report.
    b"\x00\xff garbage\r\n\r\n",
])
def test_a_hostile_http_answer_is_a_device_timeout(answer: bytes) -> None:
    import socket
    import threading

    from kiosk.devices.errors import DeviceTimeout
    from kiosk.devices.ipp import IppPrinter

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve_once() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    try:
        with pytest.raises(DeviceTimeout) as info:
            IppPrinter(f"ipp://127.0.0.1:{port}/ipp/print", timeout=5).status()
        assert "\n" not in str(info.value) and "\r" not in str(info.value)
    finally:
        thread.join(5)
        server.close()
