"""Software card benchmarks: APDU round trips per second in-process, and what the client
spends (APDUs, bytes) for the common reads.

Baselines measured in the same process:
* the floor: a trivial card that answers 9000 to everything, through the same transport;
* a naive client strategy (SELECT EF, 7-byte header read, then re-read from offset 0 in
  ≤256-byte chunks, as several public clients do) for the same reads.

Prints figures; never fails for being slow.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from _setup import fresh_card

from cardio import constants as c
from cardio.apdu import builders, tlv
from cardio.card import MyNumberCard
from cardio.jpki import JpkiApplication
from cardio.text import TextApplication
from cardio.transport import CountingTransport, InProcessTransport
from cardio.trust import TrustStore
from cardio.visual import VisualApplication
from emulators.card import SoftwareCard


class NineThousand:
    def transmit(self, raw: bytes) -> bytes:
        return b"\x90\x00"


def rate(transport: InProcessTransport, apdu: bytes, seconds: float = 1.0) -> tuple[float, float]:
    """(APDUs per second, median µs) over about ``seconds``."""
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter_ns()
        for _ in range(100):
            transport.transmit(apdu)
        samples.append((time.perf_counter_ns() - t0) / 100)
    med = statistics.median(samples)
    return 1e9 / med, med / 1000


def naive_read(card: MyNumberCard, aid: bytes, fid: int) -> bytes:
    card.select(aid)
    card.select_ef(fid)
    head = card.send_checked(builders.read_binary(0, 7))
    total = tlv.total_size(head)
    out = b""
    while len(out) < total:
        out += card.send_checked(builders.read_binary(len(out), min(256, total - len(out))))
    return out


def cost(card_dir: Path, action: Callable[[MyNumberCard], object], extended: bool = False
         ) -> tuple[int, int]:
    t = CountingTransport(InProcessTransport(SoftwareCard.open(card_dir),
                                             supports_extended=extended))
    action(MyNumberCard(t))
    return t.stats.apdus, t.stats.bytes_sent + t.stats.bytes_received


def main() -> None:
    with fresh_card() as bench:
        base, jlis, profile = bench.base, bench.jlis, bench.profile
        trust = TrustStore.from_dir(jlis.path)
        card = SoftwareCard.open(base / "card")
        tr = InProcessTransport(card)
        tr.transmit(builders.select_aid(c.AID_JPKI).encode())
        tr.transmit(builders.select_ef(c.JPKI_AUTH_CERT).encode())

        print("In-process APDU round trips (median of 100-APDU batches, ~1 s each)")
        floor, floor_us = rate(InProcessTransport(NineThousand()), b"\x00\xa4\x04\x0c")
        rows = [("trivial 9000 card (floor)", floor, floor_us)]
        for label, apdu in (
            ("READ BINARY 256 B (auth cert)", builders.read_binary(0, 256).encode()),
            ("empty VERIFY (counter, reads state.json)", builders.verify(None, 0x18).encode()),
            ("SELECT by AID", builders.select_aid(c.AID_JPKI).encode()),
        ):
            if label.startswith("SELECT"):
                r, us = rate(tr, apdu)
            else:
                tr.transmit(builders.select_aid(c.AID_JPKI).encode())
                tr.transmit(builders.select_ef(c.JPKI_AUTH_CERT).encode())
                r, us = rate(tr, apdu)
            rows.append((label, r, us))
        for label, r, us in rows:
            print(f"  {label:<44} {r:>10,.0f} /s  {us:>8.1f} µs  x{floor / r:,.1f} floor")

        def sign(m: MyNumberCard) -> object:
            j = JpkiApplication(m)
            j.verify_pin("auth", profile.auth_pin)
            return j.sign("auth", b"x")

        t0 = time.perf_counter()
        n = 20
        for _ in range(n):
            cost(base / "card", sign)
        print(f"  auth PIN + RSA-2048 signature, new session: "
              f"{(time.perf_counter() - t0) / n * 1000:.1f} ms each")

        def four_digit(m: MyNumberCard) -> object:
            t = TextApplication(m)
            t.verify_pin(profile.text_pin)
            return t.read_all(trust)

        def face(m: MyNumberCard) -> object:
            v = VisualApplication(m)
            v.verify_code_b(profile.code_b)
            return v.read_verified(trust)

        def naive_face(m: MyNumberCard) -> object:
            m.verify(c.Credential.VISUAL_B, profile.code_b.encode())
            naive_read(m, c.AID_VISUAL, c.VISUAL_FACE)
            return naive_read(m, c.AID_VISUAL, c.VISUAL_CV_CERT)

        def naive_four(m: MyNumberCard) -> object:
            m.verify(c.Credential.TEXT, profile.text_pin.encode())
            for fid in (1, 2, 3, 4):
                naive_read(m, c.AID_TEXT, fid)
            return None

        print("\nClient cost per task (short APDUs; extended in brackets; naive baseline)")
        tasks = [
            ("read the auth certificate",
             lambda m: JpkiApplication(m).certificate_der("auth"),
             lambda m: naive_read(m, c.AID_JPKI, c.JPKI_AUTH_CERT)),
            ("read everything the 4-digit PINs open", four_digit, naive_four),
            ("read the card face (+CV cert)", face, naive_face),
        ]
        for label, ours, naive in tasks:
            a, b = cost(base / "card", ours)
            ae, be = cost(base / "card", ours, extended=True)
            na, nb = cost(base / "card", naive)
            print(f"  {label:<40} {a:>3} APDUs {b:>6} B   [{ae} APDUs {be} B]"
                  f"   naive {na} APDUs {nb} B  ({na / a:.2f}x APDUs)")


if __name__ == "__main__":
    main()
