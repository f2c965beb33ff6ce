"""APDU round trips through the real pcscd + vpcd, beside the in-process figure and a
trivial card that answers 9000 to everything (the floor); and the APDUs our client
spends reading the four JPKI certificates — in short APDUs (as OpenSC reads, the like-for-
like comparison) and with extended length (one READ BINARY each, issue 28) — beside
OpenSC's tools on the same card.

Runs the stack in a private namespace (root, or unprivileged user namespaces). Prints
figures; never fails for being slow.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from _setup import fresh_card

from cardio.apdu import builders
from cardio.card import MyNumberCard
from cardio.common_ap import CommonApplication
from cardio.constants import AID_JPKI, JPKI_AUTH_CERT, Credential
from cardio.jpki import JpkiApplication
from cardio.pcsc import PcscTransport
from emulators.card import SoftwareCard
from emulators.pcsc_stack import PcscStack

N = 2000
NO_QUICKACK_PROBE = """
import statistics, time
from smartcard import scard
_, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
_, names = scard.SCardListReaders(ctx, [])
_, h, proto = scard.SCardConnect(ctx, names[0], scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T1)
xs = []
for _ in range(100):
    t = time.perf_counter()
    scard.SCardTransmit(h, proto, [0, 0xA4, 4, 0x0C, 2, 0x3F, 0])
    xs.append((time.perf_counter() - t) * 1000)
xs.sort()
print(statistics.median(xs), xs[98])
"""


def timings(transmit: object, apdu: bytes, n: int = N) -> tuple[float, float]:
    send = transmit  # type: ignore[assignment]
    for _ in range(50):
        send(apdu)  # type: ignore[operator]
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        send(apdu)  # type: ignore[operator]
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


class _NoTransactions:
    """The same connection with transactions bypassed: how the client ran before
    (the baseline for what the wrapping costs), measured in the same process."""

    supports_extended = False

    def __init__(self, inner: PcscTransport) -> None:
        self.inner = inner

    def transmit(self, apdu: bytes) -> bytes:
        return self.inner._transmit(apdu)


def _info_sequence(card: MyNumberCard) -> None:
    """What ``cardio info`` sends: token, every retry counter, availability, card info."""
    jpki = JpkiApplication(card)
    jpki.token()
    for cred in Credential:
        card.tries_left(cred)
    jpki.availability()
    CommonApplication(card).card_info()


def session_costs(transport: PcscTransport, n: int = 300) -> None:
    """The ``info`` sequence through pcscd: no transactions (the client before), one
    session (one transaction, as the CLI runs it), and each sequence in a transaction
    of its own (no session). Round-robin, so that the three share the machine's noise."""
    variants: list[tuple[str, Callable[[], MyNumberCard], bool]] = [
        ("no transactions (before)", lambda: MyNumberCard(_NoTransactions(transport)),
         False),
        ("one session = one transaction (the CLI)", lambda: MyNumberCard(transport), True),
        ("no session: a transaction per sequence", lambda: MyNumberCard(transport), False),
    ]
    samples: list[list[int]] = [[] for _ in variants]
    for i in range(n + 10):
        for k, (_label, make, session) in enumerate(variants):
            card = make()
            t0 = time.perf_counter_ns()
            if session:
                with card.session():
                    _info_sequence(card)
            else:
                _info_sequence(card)
            if i >= 10:
                samples[k].append(time.perf_counter_ns() - t0)
    medians = [statistics.median(xs) / 1e6 for xs in samples]
    print(f"\n'info' sequence via pcscd ({n} runs each, round-robin, median ms)")
    for (label, _make, _session), med in zip(variants, medians, strict=True):
        print(f"  {label:<46} {med:7.2f}  x{med / medians[0]:.2f}")


def main() -> None:
    with fresh_card() as bench:
        base, profile = bench.base, bench.profile
        stack = PcscStack([base / "card", "trivial"], base / "stack").start()
        os.environ.update(stack.env)
        try:
            readers = stack.stats()["readers"]
            card_t = PcscTransport.open(readers[0])
            floor_t = PcscTransport.open(readers[1])
            select = builders.select_aid(AID_JPKI).encode()
            card_t.transmit(select)
            card_t.transmit(builders.select_ef(JPKI_AUTH_CERT).encode())
            read = builders.read_binary(0, 256).encode()
            inproc = SoftwareCard.open(base / "card")
            inproc.transmit(select)
            inproc.transmit(builders.select_ef(JPKI_AUTH_CERT).encode())

            # The APDU round trip itself: inside one held PC/SC transaction, as every
            # APDU of a session goes (and as every APDU went before transactions).
            before = timings(card_t._transmit, select)   # no transaction: as before
            floor_t.begin_transaction()
            card_t.begin_transaction()
            rows = [
                ("trivial 9000 card via pcscd+vpcd (floor)", timings(floor_t.transmit, select)),
                ("software card SELECT via pcscd+vpcd", timings(card_t.transmit, select)),
                ("software card READ BINARY 256 via pcscd+vpcd", timings(card_t.transmit, read)),
                ("software card READ BINARY 256 in-process", timings(inproc.transmit, read)),
            ]
            card_t.end_transaction()
            # A bare APDU outside any session gets a transaction of its own.
            rows.append(("SELECT, no transaction (the client before)", before))
            rows.append(("SELECT, own transaction (Begin+APDU+End)",
                         timings(card_t.transmit, select)))
            floor = rows[0][1][0]
            print(f"APDU round trip, {N} APDUs after 50 warm-up (µs)")
            for label, (med, p99) in rows:
                print(f"  {label:<48} median {med:8.1f}  p99 {p99:8.1f}  x{med / floor:.2f} floor")
            session_costs(card_t)
            card_t.close()
            floor_t.close()

            # APDUs for the four certificates: ours (short APDUs, as OpenSC sends them, and
            # extended length, one READ BINARY per certificate) vs OpenSC on the same card.
            def four_certificates(extended: bool) -> int:
                before = stack.stats()["apdus"][0]
                one = MyNumberCard(PcscTransport.open(readers[0]))
                if not extended:
                    one.extended = False
                j = JpkiApplication(one)
                with one.session():
                    for which in ("auth", "auth-ca", "sign-ca"):
                        j.certificate_der(which)
                    j.verify_pin("sign", profile.sign_password)
                    j.certificate_der("sign")
                one.close()
                return int(stack.stats()["apdus"][0] - before)

            short = four_certificates(extended=False)
            ours = four_certificates(extended=True)

            def opensc(args: list[str], extra_env: dict[str, str] | None = None) -> int:
                b = stack.stats()["apdus"][0]
                subprocess.run(args, capture_output=True, timeout=60,
                               env={**os.environ, **(extra_env or {})})
                return int(stack.stats()["apdus"][0] - b)

            reads = [["pkcs15-tool", "-r", "0", "--read-certificate", i] for i in ("1", "3", "4")]
            reads.append(["pkcs15-tool", "-r", "0", "--verify-pin", "--auth-id", "02", "--pin",
                          profile.sign_password, "--read-certificate", "2"])
            generic = sum(opensc(a) for a in reads)
            jpki_only = sum(opensc(a, {"OPENSC_DRIVER": "jpki"}) for a in reads)
            listing = opensc(["pkcs15-tool", "-r", "0", "--list-certificates"],
                             {"OPENSC_DRIVER": "jpki"})
            print("\nAPDUs to read the four JPKI certificates (auth, auth CA, sign CA, sign)")
            print(f"  cardio client, one session, short APDUs         {short:>4}"
                  "  (READ BINARY of at most 256 bytes, as OpenSC reads)")
            print(f"  cardio client, one session, extended length     {ours:>4}"
                  "  (one READ BINARY by SFI per certificate)")
            print(f"  OpenSC pkcs15-tool --read-certificate x4        {generic:>4}"
                  f"  ({generic / short:.1f}x our short APDUs; includes driver probing per"
                  " process)")
            print(f"  same with OPENSC_DRIVER=jpki                    {jpki_only:>4}"
                  f"  ({jpki_only / short:.1f}x our short APDUs)")
            print(f"  OpenSC --list-certificates (3 certs readable)   {listing:>4}"
                  f"  (OPENSC_DRIVER=jpki)")
        finally:
            stack.stop()
        # What TCP_QUICKACK saves with Debian's vpcd (length and APDU in two segments).
        # A second pcscd needs a fresh process: libpcsclite caches the socket path.
        slow = PcscStack(["trivial"], base / "slow", quickack=False).start()
        try:
            out = subprocess.run([sys.executable, "-c", NO_QUICKACK_PROBE], capture_output=True,
                                 text=True, timeout=300, env={**os.environ, **slow.env})
            med_ms, p99_ms = (float(x) for x in out.stdout.split())
            print(f"\nwithout TCP_QUICKACK (trivial card, 100 APDUs): median {med_ms:.1f} ms,"
                  f" p99 {p99_ms:.1f} ms — x{med_ms * 1000 / floor:.0f} the floor with it")
        finally:
            slow.stop()

if __name__ == "__main__":
    main()
