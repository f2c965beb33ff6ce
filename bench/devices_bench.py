"""Kiosk peripherals on the emulators over real ptys: bill validator poll → credited-event
latency, and hopper payout rate, each beside a baseline measured in the same process (one
bare request/answer round trip on the same line).

The emulated mechanism moves one step per status request (with the dwell a moving note has
in each state), so the credited latency is "round trips a note needs" × "round-trip time";
the ratio printed says how many. Prints figures; never fails for being slow.

    .venv/bin/python bench/devices_bench.py [notes] [coins]
"""

from __future__ import annotations

import statistics
import sys
import time

from emulators.devices.bill import BillValidator
from emulators.devices.coin import CcTalkBusEmulator
from emulators.devices.ptyline import PtyLine
from kiosk.devices.cctalk import CcTalkBus, Header, HopperDriver
from kiosk.devices.id003 import Cmd, Expect, Frame, Id003Driver, Request, Status
from kiosk.devices.model import ItemSettled


def _pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(p * len(values)))]


def bench_validator(notes: int) -> None:
    unit = BillValidator(capacity=10**6)
    line = PtyLine(unit.receive, "bill").start()
    driver = Id003Driver(line.path, timeout=0.2)
    try:
        driver.host.set_enabled(True)
        driver.run_until(lambda: driver.host.idle and driver.host.status == Status.IDLING)
        # Baseline: bare status-request round trips on the same pty.
        rtts = []
        status = Request(Frame(Cmd.STATUS_REQUEST), Expect.STATUS)
        for _ in range(500):
            t0 = time.perf_counter()
            driver._serial.write(status.encode())
            assert driver._read_frame() is not None
            rtts.append(time.perf_counter() - t0)
        rtt = statistics.median(rtts)
        latencies, polls = [], []
        for _ in range(notes):
            credited: list[ItemSettled] = []
            p0 = unit.polls
            t0 = time.perf_counter()
            unit.insert(1000)
            driver.run_until(lambda c=credited: bool(c), timeout=10,
                             sink=lambda e, c=credited: c.append(e) if isinstance(
                                 e, ItemSettled) else None)
            latencies.append(time.perf_counter() - t0)
            polls.append(unit.polls - p0)
            driver.run_until(lambda: driver.host.idle and driver.host.status == Status.IDLING)
        med = statistics.median(latencies)
        print(f"ID-003 status round trip (pty, baseline): median {rtt * 1e3:.3f} ms")
        print(f"ID-003 insert → credited event ({notes} notes): median {med * 1e3:.2f} ms, "
              f"p95 {_pct(latencies, 0.95) * 1e3:.2f} ms, "
              f"{statistics.median(polls):.0f} status polls; "
              f"ratio to one round trip {med / rtt:.1f}×")
        print("  (a real unit takes ~1–2 s to transport a note; at a 100 ms poll interval the "
              "driver adds < 1 poll, i.e. ≤ 100 ms, to that)")
    finally:
        driver.close()
        line.close()


def bench_hopper(coins: int) -> None:
    # A real hopper pays 5–10 coins/s; the emulated one is set to 500/s so that what is
    # measured is whether the driver's exactly-once loop keeps up (ratio to nominal).
    for period, label in ((0.002, "500 coins/s hopper"),):
        emu = CcTalkBusEmulator(stock=10**6, coin_period=period)
        line = PtyLine(emu.receive, "coin").start()
        bus = CcTalkBus(line.path, timeout=0.2)
        try:
            hopper = HopperDriver(bus, 4, 100)
            rtts = []
            for _ in range(300):
                t0 = time.perf_counter()
                bus.call(4, Header.REQUEST_HOPPER_STATUS)
                rtts.append(time.perf_counter() - t0)
            rtt = statistics.median(rtts)
            paid = 0
            t0 = time.perf_counter()
            while paid < coins:
                result = hopper.dispense(min(255, coins - paid), poll=0.0)
                paid += result.paid
            elapsed = time.perf_counter() - t0
            rate = paid / elapsed
            nominal = f", {rate * period:.2f} of nominal"
            print(f"ccTalk hopper status round trip (pty, baseline): median "
                  f"{rtt * 1e3:.3f} ms")
            print(f"hopper payout, {label}: {paid} coins in {elapsed:.3f} s = {rate:.0f} "
                  f"coins/s ({rate * rtt:.2f} coins per status round trip{nominal})")
        finally:
            bus.close()
            line.close()


def main() -> None:
    notes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    coins = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    bench_validator(notes)
    bench_hopper(coins)


if __name__ == "__main__":
    main()
