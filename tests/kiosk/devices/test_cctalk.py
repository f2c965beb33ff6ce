"""ccTalk: checksums, known packets, round trips, the credit counter rules, and fuzzing."""

from __future__ import annotations

import os
import random

from hypothesis import given
from hypothesis import strategies as st

from emulators.devices.coin import CoinAcceptor
from kiosk.devices.cctalk import (
    CreditBuffer,
    CreditTracker,
    Header,
    Packet,
    PacketDecoder,
    checksum,
    counter_distance,
    encode_packet,
    next_counter,
)
from kiosk.devices.model import Fault, ItemSettled

FUZZ_FRAMES = 100_000 if os.environ.get("CARDIO_FUZZ_FULL") else 20_000


def test_known_packets_and_checksums() -> None:
    # Simple poll from the host (1) to a coin acceptor (2), and its ACK: the classic
    # example of every ccTalk description.
    assert encode_packet(2, 1, Header.SIMPLE_POLL) == bytes.fromhex("02 00 01 FE FF")
    assert encode_packet(1, 2, Header.REPLY) == bytes.fromhex("01 00 02 00 FD")
    assert checksum(bytes.fromhex("02 00 01 FE")) == 0xFF
    # Read buffered credit (229 = 0xE5) to address 2.
    assert encode_packet(2, 1, Header.READ_BUFFERED_CREDIT) == bytes.fromhex("02 00 01 E5 18")
    for packet in (encode_packet(2, 1, 231, b"\xff\xff"), encode_packet(3, 1, 167, b"\x05")):
        assert sum(packet) % 256 == 0


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
       st.binary(max_size=254), st.lists(st.integers(1, 40), max_size=4))
def test_round_trip_with_splits(dest: int, src: int, header: int, data: bytes,
                                cuts: list[int]) -> None:
    stream = encode_packet(dest, src, header, data)
    decoder = PacketDecoder()
    out: list[Packet] = []
    pos = 0
    for cut in cuts:
        out += decoder.feed(stream[pos:pos + cut])
        pos += cut
    out += decoder.feed(stream[pos:])
    assert out == [Packet(dest, src, header, data)]


def test_counter_wraps_from_255_to_1_never_0() -> None:
    assert next_counter(0) == 1 and next_counter(254) == 255 and next_counter(255) == 1
    assert counter_distance(254, 2) == 3  # 255, 1, 2


def _buf(acceptor: CoinAcceptor) -> CreditBuffer:
    data = bytes([acceptor.counter, *(x for pair in acceptor.results for x in pair)])
    parsed = CreditBuffer.parse(data)
    assert parsed is not None
    return parsed


def _accept(acceptor: CoinAcceptor, yen: int) -> None:
    acceptor.master_enabled, acceptor.inhibit_mask = True, 0xFFFF
    acceptor.queue.append(yen)
    acceptor._since = acceptor.coin_polls
    acceptor.poll_tick()


def _credits(events: list[object]) -> list[int]:
    return [e.yen for e in events if isinstance(e, ItemSettled)]


def test_repeated_polls_and_a_reconnect_never_credit_twice() -> None:
    acc = CoinAcceptor()
    tracker = CreditTracker()
    assert tracker.on_buffer(_buf(acc)) == []  # baseline
    _accept(acc, 100)
    got = tracker.on_buffer(_buf(acc)) + tracker.on_buffer(_buf(acc))  # read twice: believed
    assert _credits(got) == [100]
    for _ in range(5):
        assert tracker.on_buffer(_buf(acc)) == []
    # A new driver on the same line (reconnect) starts from a baseline: nothing credited.
    fresh = CreditTracker()
    assert fresh.on_buffer(_buf(acc)) == [] and fresh.on_buffer(_buf(acc)) == []


def test_wrap_is_followed_and_lost_events_are_reported() -> None:
    acc = CoinAcceptor(counter=253)
    tracker = CreditTracker()
    tracker.on_buffer(_buf(acc))
    for yen in (10, 50, 100):
        _accept(acc, yen)
    assert acc.counter == 1
    got = tracker.on_buffer(_buf(acc)) + tracker.on_buffer(_buf(acc))
    assert _credits(got) == [10, 50, 100]
    for _ in range(8):
        _accept(acc, 500)
    got = tracker.on_buffer(_buf(acc)) + tracker.on_buffer(_buf(acc))
    assert _credits(got) == [500] * 5
    assert [e.kind for e in got if isinstance(e, Fault)] == ["events-lost"] and tracker.lost == 3


def test_restart_is_reported() -> None:
    acc = CoinAcceptor()
    tracker = CreditTracker()
    _accept(acc, 100)
    tracker.on_buffer(_buf(acc))
    acc.power_cycle()
    assert tracker.on_buffer(_buf(acc)) == []  # one reading is not enough
    got = tracker.on_buffer(_buf(acc))
    assert [e.kind for e in got if isinstance(e, Fault)] == ["counter-reset"]


def test_fuzz_parser_never_crashes() -> None:
    rng = random.Random(21)
    decoder = PacketDecoder()
    genuine = [encode_packet(1, 2, 0, rng.randbytes(11)) for _ in range(50)]
    for _ in range(FUZZ_FRAMES):
        if rng.random() < 0.5:
            chunk = rng.randbytes(rng.randint(0, 16))
        else:
            frame = bytearray(rng.choice(genuine))
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
            chunk = bytes(frame)
        for packet in decoder.feed(chunk):
            assert sum(packet.encode()) % 256 == 0


def test_fuzz_garbled_buffers_never_make_phantom_or_double_credits() -> None:
    """Genuine buffers from an emulated acceptor, each reading replaced at random by a
    mutated one — including mutations whose checksum was recomputed, which an 8-bit checksum
    would let through: what is credited is exactly what the acceptor took, in order."""
    rng = random.Random(22)
    acc = CoinAcceptor()
    tracker = CreditTracker()
    taken: list[int] = []
    credited: list[int] = []
    for i in range(FUZZ_FRAMES):
        if i % 7 == 0 and rng.random() < 0.8:
            yen = rng.choice((10, 50, 100, 500))
            _accept(acc, yen)
            taken.append(yen)
        buf = _buf(acc)
        if rng.random() < 0.3:
            raw = bytearray([buf.counter, *(x for p in buf.results for x in p)])
            for _ in range(rng.randint(1, 3)):
                raw[rng.randrange(11)] = rng.randrange(256)
            packet = encode_packet(1, 2, 0, bytes(raw))  # checksum made valid on purpose
            decoded = PacketDecoder().feed(packet)
            mutated = CreditBuffer.parse(decoded[0].data)
            assert mutated is not None
            buf = mutated
        credited += _credits(tracker.on_buffer(buf))
        assert len(credited) <= len(taken) and credited == taken[:len(credited)]
    for _ in range(3):
        credited += _credits(tracker.on_buffer(_buf(acc)))
    assert credited == taken and tracker.lost == 0
