"""The kiosk's card phase and the four JPKI certificates in APDUs and in time, on a contact
link and on a modelled contactless one, behind the real pcscd + vpcd (issue 28, item 3).

* card phase = what the kiosk sends between card-in and the center's answer: the retry
  counter and the 利用者証明用 certificate, VERIFY with the PIN, the signature over the
  center's nonce. "before" is the sequence the kiosk sent before issue 28 (counter, cert,
  VERIFY, counter again, cert again, SIGN) in short APDUs; "after" is ``kiosk.runner
  .CardAdapter`` as it is now, with a short-APDU reader and with extended length (probed).
* four certificates = auth, auth CA, sign CA, and sign after the signature password; beside
  OpenSC's pkcs15-tool on the same card (one process per certificate, as a user runs it).
* the contactless link is a model (``emulators.vpcd.LinkModel``): a fixed 20 ms per APDU
  (radio round trip, frame waiting time, reader turnaround), and the same plus 94 µs per
  byte (106 kbit/s, 10 etu a byte) because extended reads save round trips, not bytes.

Times are the fastest of a few runs on this machine (the card's own work — RSA signing, the
card directory — included). Prints figures and ratios; never fails for being slow.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable

from _setup import fresh_card

from cardio.card import MyNumberCard
from cardio.jpki import JpkiApplication
from cardio.pcsc import PcscTransport
from emulators.pcsc_stack import PcscStack
from kiosk.runner import CardAdapter, Keypad

NONCE = b"center nonce: 32 random bytes..."
LINKS = [("contact (no delay)", 0.0, 0.0), ("contactless 20 ms/APDU", 20.0, 0.0),
         ("contactless 20 ms/APDU + 106 kbit/s", 20.0, 94.0)]
RUNS = 5


def before_phase(reader: str, pin: str) -> None:
    """The card phase as the kiosk ran it before issue 28, in short APDUs."""
    card = MyNumberCard(PcscTransport.open(reader))
    card.extended = False
    j = JpkiApplication(card)
    with card.session():
        j.tries_left("auth")
        j.certificate_der("auth")
        j.verify_pin("auth", pin)
        j.tries_left("auth")
        j.certificate_der("auth")
        j.sign("auth", NONCE)
    card.close()


def after_phase(reader: str, pin: str, extended: bool) -> None:
    """``CardAdapter`` as the kiosk runs it: read, verify, cert_and_sign, close."""
    keypad = Keypad()
    adapter = CardAdapter(reader, keypad)

    async def run() -> None:
        if not extended:
            adapter._open()
            adapter._card.extended = False
        await adapter.read("r")
        keypad.enter(pin)
        keypad.submit()
        await adapter.verify("v")
        await adapter.cert_and_sign(NONCE)
        adapter.close()

    asyncio.run(run())


def four_certs(reader: str, password: str, extended: bool) -> None:
    card = MyNumberCard(PcscTransport.open(reader))
    if not extended:
        card.extended = False
    j = JpkiApplication(card)
    with card.session():
        for which in ("auth", "auth-ca", "sign-ca"):
            j.certificate_der(which)
        j.verify_pin("sign", password)
        j.certificate_der("sign")
    card.close()


def measure(stack: PcscStack, action: Callable[[], object]) -> tuple[int, float]:
    """(APDUs at the card, fastest seconds) over RUNS runs: the machine is shared, and
    the fastest run is the one least disturbed by others (the link's delays are fixed)."""
    counts, times = [], []
    for _ in range(RUNS):
        before = stack.stats()["apdus"][0]
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
        counts.append(stack.stats()["apdus"][0] - before)
    assert len(set(counts)) == 1, f"APDU counts vary between runs: {counts}"
    return counts[0], min(times)


def main() -> None:
    with fresh_card() as bench:
        profile = bench.profile
        stack = PcscStack([bench.path], bench.base / "stack").start()
        os.environ.update(stack.env)
        try:
            reader = stack.stats()["readers"][0]
            phases: list[tuple[str, Callable[[], object]]] = [
                ("before: short APDUs, cert read twice, counter twice",
                 lambda: before_phase(reader, profile.auth_pin)),
                ("after, short-APDU reader", lambda: after_phase(reader, profile.auth_pin,
                                                                 False)),
                ("after, extended length (probed)",
                 lambda: after_phase(reader, profile.auth_pin, True)),
            ]
            certs: list[tuple[str, Callable[[], object]]] = [
                ("cardio before: short APDUs",
                 lambda: four_certs(reader, profile.sign_password, False)),
                ("cardio after: extended, one READ BINARY each",
                 lambda: four_certs(reader, profile.sign_password, True)),
            ]
            for title, rows in (("Kiosk card phase (counter + auth cert, PIN, signature)",
                                 phases),
                                ("The four JPKI certificates (auth, auth CA, sign CA, sign)",
                                 certs)):
                print(f"\n{title}: APDUs, fastest of {RUNS} runs")
                header = "".join(f"{label:>38}" for label, _a, _b in LINKS)
                print(f"  {'':<52}{'APDUs':>6}{header}")
                results = []
                for label, action in rows:
                    times = []
                    n = 0
                    for _l, apdu_ms, byte_us in LINKS:
                        stack.link(apdu_ms, byte_us)
                        n, secs = measure(stack, action)
                        times.append(secs * 1000)
                    stack.link(0, 0)
                    results.append((label, n, times))
                base_n, base_t = results[0][1], results[0][2]
                for label, n, times in results:
                    cells = "".join(f"{t:>28.1f} ms (x{t / b:.2f})"
                                    for t, b in zip(times, base_t, strict=True))
                    print(f"  {label:<52}{n:>6}{cells}   APDUs x{n / base_n:.2f}")

            def opensc(args: list[str], env: dict[str, str] | None = None) -> int:
                b = stack.stats()["apdus"][0]
                subprocess.run(args, capture_output=True, timeout=120,
                               env={**os.environ, **(env or {})})
                return int(stack.stats()["apdus"][0] - b)

            reads = [["pkcs15-tool", "-r", "0", "--read-certificate", i] for i in ("1", "3", "4")]
            reads.append(["pkcs15-tool", "-r", "0", "--verify-pin", "--auth-id", "02", "--pin",
                          profile.sign_password, "--read-certificate", "2"])
            generic = sum(opensc(a) for a in reads)
            forced = sum(opensc(a, {"OPENSC_DRIVER": "jpki"}) for a in reads)
            stack.link(20.0, 0)
            t0 = time.perf_counter()
            forced_20 = sum(opensc(a, {"OPENSC_DRIVER": "jpki"}) for a in reads)
            forced_ms = (time.perf_counter() - t0) * 1000
            stack.link(0, 0)
            ours = results[-1][1]
            print("\nOpenSC pkcs15-tool on the same card (4 processes, one per certificate)")
            print(f"  probing every driver            {generic:>4} APDUs  (x{generic / ours:.1f}"
                  " cardio after)")
            print(f"  OPENSC_DRIVER=jpki              {forced:>4} APDUs  (x{forced / ours:.1f});"
                  f" at 20 ms/APDU {forced_ms:.0f} ms wall ({forced_20} APDUs,"
                  " process start-up included)")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
