"""ID-003: byte vectors, round trips, the host's money rules, and a fuzzed line."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulators.devices.bill import BillValidator
from kiosk.devices.cash import CashSession
from kiosk.devices.errors import DeviceError
from kiosk.devices.id003 import (
    Cmd,
    Expect,
    Frame,
    FrameDecoder,
    Id003Driver,
    Id003Host,
    Request,
    Status,
    crc16_kermit,
    encode_frame,
)
from kiosk.devices.model import DeviceEvent, Fault, ItemRejected, ItemSettled, Outcome

FUZZ_FRAMES = 100_000 if os.environ.get("CARDIO_FUZZ_FULL") else 20_000


def test_crc16_kermit_check_value() -> None:
    assert crc16_kermit(b"123456789") == 0x2189
    assert crc16_kermit(b"") == 0


def test_known_frames() -> None:
    # From the public descriptions of the protocol: status request, ACK, reset.
    assert encode_frame(Cmd.STATUS_REQUEST) == bytes.fromhex("FC 05 11 27 56")
    assert encode_frame(Cmd.ACK) == bytes.fromhex("FC 05 50 AA 05")
    assert encode_frame(Cmd.RESET) == bytes.fromhex("FC 05 40 2B 15")
    escrow = encode_frame(Status.ESCROW, b"\x61")
    assert escrow[:4] == bytes.fromhex("FC 06 13 61") and len(escrow) == 6
    crc = crc16_kermit(escrow[:4])
    assert escrow[4:] == bytes([crc & 0xFF, crc >> 8])  # low byte first


@given(st.integers(0, 255), st.binary(max_size=40), st.binary(max_size=20),
       st.lists(st.integers(1, 60), max_size=5))
def test_round_trip_through_garbage_and_splits(cmd: int, data: bytes, junk: bytes,
                                               cuts: list[int]) -> None:
    junk = junk.replace(b"\xfc", b"")  # garbage that cannot start a frame
    stream = junk + encode_frame(cmd, data) + encode_frame(Cmd.ACK)
    decoder = FrameDecoder()
    frames: list[Frame] = []
    pos = 0
    for cut in cuts:
        frames += decoder.feed(stream[pos:pos + cut])
        pos += cut
    frames += decoder.feed(stream[pos:])
    assert frames == [Frame(cmd, data), Frame(Cmd.ACK)]


def test_bad_crc_is_skipped_and_the_next_frame_still_decodes() -> None:
    good = encode_frame(Status.IDLING)
    bad = bytearray(encode_frame(Status.ESCROW, b"\x64"))
    bad[-1] ^= 1
    decoder = FrameDecoder()
    assert decoder.feed(bytes(bad) + good) == [Frame(Status.IDLING)]
    assert decoder.errors >= 1


def _drive(host: Id003Host, replies: list[Frame | None]) -> list[DeviceEvent]:
    events: list[DeviceEvent] = []
    for reply in replies:
        req = host.next_request()
        while req.expect is not Expect.STATUS:  # settings/ops: answer them as the unit would
            ans = None if req.expect is Expect.NOTHING else (
                req.frame if req.expect is Expect.ECHO else Frame(Status.ACK))
            events += host.on_reply(req, ans)
            req = host.next_request()
        events += host.on_reply(req, reply)
    return events


def test_vend_valid_repeated_credits_once() -> None:
    host = Id003Host()
    host.set_enabled(True)
    events = _drive(host, [Frame(Status.IDLING), Frame(Status.ACCEPTING),
                           Frame(Status.ESCROW, b"\x61"), Frame(Status.STACKING),
                           Frame(Status.VEND_VALID), Frame(Status.VEND_VALID),
                           Frame(Status.STACKED), Frame(Status.IDLING)])
    credits = [e for e in events if isinstance(e, ItemSettled)]
    assert credits == [ItemSettled("bill_validator", 1, 1000, Outcome.STACKED)]


def test_vend_valid_without_escrow_is_a_fault_not_credit() -> None:
    host = Id003Host()
    events = _drive(host, [Frame(Status.VEND_VALID), Frame(Status.STACKED)])
    assert not [e for e in events if isinstance(e, ItemSettled)]
    assert any(isinstance(e, Fault) and e.kind == "vend-valid-unknown" for e in events)


def test_power_up_with_note_in_acceptor_returns_it() -> None:
    host = Id003Host()
    host.set_enabled(True)
    events = _drive(host, [Frame(Status.ESCROW, b"\x63"),
                           Frame(Status.POWER_UP_BILL_IN_ACCEPTOR)])
    settled = [e for e in events if isinstance(e, ItemSettled)]
    assert [(s.yen, s.outcome) for s in settled] == [(5000, Outcome.RETURNED)]
    assert host.next_request() == Request(Frame(Cmd.RESET), Expect.ACK)


def test_a_rejection_is_reported_once_however_many_polls_it_takes() -> None:
    """A unit stays in REJECTING for several polls (its transport takes about a second);
    one note is one refusal — a count of refusals (the kiosk journals the ones between
    sessions) must not grow with the polling rate."""
    host = Id003Host()
    events = _drive(host, [Frame(Status.DISABLED)] + [Frame(Status.REJECTING, b"\x79")] * 3
                    + [Frame(Status.DISABLED), Frame(Status.REJECTING, b"\x79"),
                       Frame(Status.DISABLED)])
    assert [e for e in events if isinstance(e, ItemRejected)] == [
        ItemRejected("bill_validator", "return by inhibit")] * 2


def test_disabled_denomination_is_returned_not_stacked() -> None:
    host = Id003Host(denominations=(1000,))
    _drive(host, [Frame(Status.ESCROW, b"\x64")])
    assert host.next_request() == Request(Frame(Cmd.RETURN), Expect.ACK)


def _noise(rng: random.Random, genuine: list[bytes]) -> bytes:
    """Random bytes or a mutated genuine frame — never a genuine frame."""
    if rng.random() < 0.4:
        return rng.randbytes(rng.randint(0, 12))
    frame = bytearray(rng.choice(genuine))
    for _ in range(rng.randint(1, 3)):
        frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
    if rng.random() < 0.2:
        del frame[rng.randrange(len(frame)):]
    return bytes(frame)


GENUINE = [encode_frame(s) for s in Status] + [
    encode_frame(Status.ESCROW, bytes([c])) for c in (0x61, 0x62, 0x63, 0x64)] + [
    encode_frame(Status.REJECTING, b"\x71")]


def test_fuzz_parser_never_crashes_and_only_yields_crc_valid_frames() -> None:
    rng = random.Random(11)
    decoder = FrameDecoder()
    frames = 0
    for _ in range(FUZZ_FRAMES):
        for frame in decoder.feed(_noise(rng, GENUINE)):
            frames += 1
            raw = frame.encode()
            assert crc16_kermit(raw[:-2]) == raw[-2] | raw[-1] << 8
    assert decoder.errors > FUZZ_FRAMES // 2


def test_fuzz_noise_alone_never_credits() -> None:
    rng = random.Random(12)
    host = Id003Host()
    host.set_enabled(True)
    decoder = FrameDecoder()
    credited = 0
    for _ in range(FUZZ_FRAMES):
        req = host.next_request()
        decoder.clear()
        frames = decoder.feed(_noise(rng, GENUINE))
        reply = frames[0] if frames and frames[0].encode() not in GENUINE else None
        for e in host.on_reply(req, reply):
            if isinstance(e, ItemSettled) and e.outcome is Outcome.STACKED:
                credited += e.yen
    assert credited == 0


def test_fuzz_lost_and_garbled_replies_keep_every_yen() -> None:
    """The host against the emulated unit with a quarter of all replies replaced by noise:
    the host's books equal where the notes physically are, yen for yen."""
    rng = random.Random(13)
    unit = BillValidator(capacity=10**6)
    host = Id003Host()
    host.set_enabled(True)
    cash = CashSession(0)
    decoder = FrameDecoder()
    inserted = 0
    for i in range(FUZZ_FRAMES):
        if i % 40 == 0:
            yen = rng.choice((1000, 2000, 5000, 10000, 500))
            unit.insert(yen)
            inserted += yen
        if i % 997 == 0:
            unit.arm(rng.choice(("jam", "stuck", "cheat", "reject")))
        req = host.next_request()
        genuine = unit.receive(req.encode())
        answer = _noise(rng, GENUINE) if rng.random() < 0.25 else genuine
        decoder.clear()
        frames = decoder.feed(answer)
        reply = frames[0] if frames else None
        if reply is not None and reply.encode() != genuine:
            # Noise that passes the CRC as some other frame (p ≈ 2⁻¹⁶) is a forgery no
            # protocol can see; the line model here is "garbled ⇒ CRC fails".
            reply = None
        for e in host.on_reply(req, reply if req.expect is not Expect.NOTHING else None):
            cash.apply(e)
    for _ in range(400):  # let the line settle
        req = host.next_request()
        frames = FrameDecoder().feed(unit.receive(req.encode()))
        for e in host.on_reply(req, frames[0] if frames else None):
            cash.apply(e)
    assert not host.bill_in_flight and unit.bill is None and not unit.queue
    assert cash.total(Outcome.STACKED) == sum(unit.cassette)
    assert cash.total(Outcome.RETURNED) == sum(unit.returned)
    assert cash.total(Outcome.REFUND_DUE) == sum(unit.held)
    assert inserted == sum(unit.cassette) + sum(unit.returned) + sum(unit.held) + sum(
        unit.rejected)
    assert sum(unit.cassette) > 0


def test_a_missing_port_is_a_typed_error() -> None:
    with pytest.raises(DeviceError, match="cannot open the bill validator") as info:
        Id003Driver("/dev/nonexistent-cardio-tty")
    assert info.value.exit_code == 21


def test_a_held_note_is_kept_with_hold_and_settles_once_the_unit_gives_it_back() -> None:
    host = Id003Host(accept=lambda yen: None)  # hold every note
    host.set_enabled(True)
    _drive(host, [Frame(Status.ESCROW, b"\x64")] * 19)
    assert host.held_yen == 10000
    events = _drive(host, [Frame(Status.ESCROW, b"\x64")])
    assert host.next_request() == Request(Frame(Cmd.HOLD), Expect.ACK)
    assert not [e for e in events if isinstance(e, ItemSettled)]
    # The unit's escrow timer ran out anyway: back at rest, the note went back.
    events = _drive(host, [Frame(Status.IDLING)])
    assert [(e.yen, e.outcome) for e in events if isinstance(e, ItemSettled)] == [
        (10000, Outcome.RETURNED)]
    assert host.held_yen == 0


def test_a_line_that_echoes_is_not_a_bill_validator() -> None:
    """On a loop-back (or the ccTalk bus, which echoes by design) the status request comes
    back byte for byte as IDLING — both are 0x11 — and the settings as their own
    acknowledgement, so ``kiosk devices check`` said "OK idling" with no unit there. The
    version request comes back without a version: that is refused."""
    import select
    import threading
    import tty

    from kiosk.devices.id003 import Id003Driver

    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def loop_back() -> None:
        while not stop.is_set():
            if select.select([master], [], [], 0.05)[0]:
                os.write(master, os.read(master, 4096))

    thread = threading.Thread(target=loop_back, daemon=True)
    thread.start()
    try:
        with Id003Driver(os.ttyname(slave)) as driver:
            driver.run_until(lambda: driver.host.status is not None and driver.host.configured,
                             timeout=5)
            assert driver.host.status == Status.IDLING  # the echo fools the status poll
            with pytest.raises(DeviceError, match="the line echoes what is sent"):
                driver.version()
    finally:
        stop.set()
        thread.join(2)
        os.close(master)
        os.close(slave)
