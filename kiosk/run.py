"""``cardio kiosk run --config FILE``: the kiosk as a long-running process.

One TOML file configures it — the device sections of ``kiosk devices check`` plus
``[kiosk]`` and, optionally, ``[ui]`` (``docs/kiosk-session.md``, "Running the kiosk")::

    [kiosk]
    journal = "/var/lib/cardio-kiosk/journal.db"
    center = "https://center.example"
    reader = "0"                           # PC/SC reader name, or emu:DIR
    credentials = "/etc/cardio-kiosk"      # optional with the emulated operator's kiosks
    tick = 1.0                             # the core's clock, seconds per Tick
    facepin = "https://pin-reset.example"  # optional: offer PIN reset (facepin reservations)
    # tray = "/tmp/lab-tray"               # device lab only: an emulated output tray
    #                                      # instead of [printer] (it keeps certificates!)

    [printer]                              # the IPP printer (kiosk devices check checks it)
    url = "ipp://127.0.0.1:631/ipp/print"

    [ui]                                   # optional: a scripted customer (demos, tests)
    pin_env = "KIOSK_PIN"
    document = "juminhyo"
    insert = [1000]

    [web]                                  # or the touch screen (kiosk/ui), not both
    listen = "127.0.0.1:0"
    lang = "ja"

What it does: recovery first (the journal's unfinished sessions, before any new card is
served; with a card in the slot it releases nothing and waits for the removal, see
:func:`recover_at_start`) and the finalizes the journal owes the center (again after every
session), then one JSON line ``{"event": "ready", …}`` on stdout (with ``[web]``, its
``"ui"`` URL); then it watches the card slot and runs one session per inserted card, the
cash devices polled all along on their own thread. The screens go to stdout as
``{"event": "screen", …}`` lines (with ``[web]`` also to the browser page,
``docs/kiosk-ui.md``) and each session ends with ``{"event": "session", …}``. The card
slot, not the UI, reports the card's removal.

SIGTERM or SIGINT: no new session starts; a session in progress runs to its end (bounded by
its deadline — money and paper are never abandoned halfway), the journal is closed and the
process exits 0 after ``{"event": "stopped"}``. A harder kill is what recovery is for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from cardio.hardening import no_core_dumps
from kiosk.devices.errors import DeviceConfigError
from kiosk.runner import HeadlessUi, Ui
from kiosk.session import commands as C

__all__ = ["load_run_config", "recover_at_start", "register", "timeouts_of"]


def load_run_config(path: Path) -> dict[str, Any]:
    from kiosk.devices.cli import read_toml, validate_config

    config = read_toml(path, "kiosk configuration")
    validate_config(config, path, extra=frozenset({"kiosk", "ui", "web"}))
    k = config.get("kiosk")
    if not isinstance(k, dict):
        raise DeviceConfigError(f"{path}: a [kiosk] section is needed (journal, center,"
                                " reader)")
    missing = [n for n in ("journal", "center", "reader") if not isinstance(k.get(n), str)]
    if missing:
        raise DeviceConfigError(f"{path}: [kiosk] needs {', '.join(missing)} (strings)")
    _check_output(path, config)
    if "facepin" in k and not isinstance(k["facepin"], str):
        raise DeviceConfigError(f"{path}: [kiosk] facepin is the reservation service's URL")
    _check_values(path, config)
    ui = config.get("ui", {})
    if ui and not (isinstance(ui.get("pin_env"), str) and isinstance(ui.get("document"), str)):
        raise DeviceConfigError(f"{path}: [ui] needs pin_env and document")
    web = config.get("web")
    if web is not None:
        _check_web(path, web, scripted="ui" in config)
    timeouts_of(config, path)
    return config


def _check_output(path: Path, config: dict[str, Any]) -> None:
    """Where pages go: the IPP printer (``[printer] url``), or — device lab, tests, demos —
    an emulated output tray (``[kiosk] tray``), which keeps every certificate as a file and
    so is never a kiosk's default. Exactly one."""
    k = config["kiosk"]
    if "out" in k:
        raise DeviceConfigError(f"{path}: [kiosk] out is gone: a kiosk prints to its [printer]"
                                " and keeps no certificate on disk; for an emulated output"
                                " tray (device lab, tests) write [kiosk] tray = DIR instead")
    url = config.get("printer", {}).get("url") if isinstance(config.get("printer"), dict) \
        else None
    tray = k.get("tray")
    if tray is not None and not isinstance(tray, str):
        raise DeviceConfigError(f"{path}: [kiosk] tray is a directory (a string)")
    if url and tray:
        raise DeviceConfigError(f"{path}: [printer] url and [kiosk] tray exclude each other:"
                                " the tray stands in for a printer in the device lab; drop"
                                " the tray")
    if not url and not tray:
        raise DeviceConfigError(f"{path}: no output: give [printer] url = \"ipp://…\" (or, in"
                                " the device lab, [kiosk] tray = DIR for an emulated tray)")


def _check_web(path: Path, web: object, *, scripted: bool) -> None:
    """``[web]``: the touch screen in a browser. The browser is then the customer, so a
    scripted ``[ui]`` customer at the same time is refused (two customers at one kiosk)."""
    if scripted:
        raise DeviceConfigError(f"{path}: [web] and [ui] exclude each other: with [web] the"
                                " person at the browser is the customer; drop [ui]")
    if not isinstance(web, dict):
        raise DeviceConfigError(f"{path}: web must be a [web] table")
    unknown = set(web) - {"listen", "lang", "pin_reset", "done_seconds"}  # pin_reset: below
    if unknown:
        raise DeviceConfigError(f"{path}: [web] does not know {', '.join(sorted(unknown))}")
    if not isinstance(web.get("listen", ""), str) or not isinstance(web.get("lang", ""), str):
        raise DeviceConfigError(f"{path}: [web] listen and lang are strings, e.g."
                                ' listen = "127.0.0.1:0", lang = "ja"')
    if "pin_reset" in web:
        raise DeviceConfigError(f"{path}: [web] pin_reset is gone: the screen offers the PIN"
                                " reset when [kiosk] facepin names the reservation service")
    done = web.get("done_seconds", 8)
    if isinstance(done, bool) or not isinstance(done, (int, float)) or not 0 < done <= 600:
        raise DeviceConfigError(f"{path}: [web] done_seconds must be a number of seconds"
                                " (0 < s <= 600)")


def timeouts_of(config: dict[str, Any], path: Path | None = None) -> Any:
    """``[kiosk.timeouts]`` (seconds, i.e. ticks): ``warn``, ``wipe``, ``card``, ``center``,
    ``cash``, ``printer`` and ``remind = [level 2, level 3]`` — the core's
    :class:`~kiosk.session.core.Timeouts`, for a kiosk that wants other limits (and for the
    tests of the time-out screens)."""
    import dataclasses

    from kiosk.session.core import Timeouts

    raw = config.get("kiosk", {}).get("timeouts", {})
    where = f"{path}: " if path else ""
    if not isinstance(raw, dict):
        raise DeviceConfigError(f"{where}[kiosk.timeouts] must be a table")
    names = {f.name for f in dataclasses.fields(Timeouts)}
    unknown = set(raw) - names
    if unknown:
        raise DeviceConfigError(f"{where}[kiosk.timeouts] does not know"
                                f" {', '.join(sorted(unknown))}"
                                f" (known: {', '.join(sorted(names))})")
    values: dict[str, Any] = {}
    for name, v in raw.items():
        if name == "remind":
            if not (isinstance(v, list) and len(v) == 2 and all(
                    isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
                raise DeviceConfigError(f"{where}[kiosk.timeouts] remind = [seconds, seconds]")
            values[name] = (v[0], v[1])
        elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
            values[name] = v
        else:
            raise DeviceConfigError(f"{where}[kiosk.timeouts] {name} must be whole seconds > 0")
    t = Timeouts(**values)
    if t.warn >= t.wipe:
        raise DeviceConfigError(f"{where}[kiosk.timeouts] warn must come before wipe")
    return t


def _check_values(path: Path, config: dict[str, Any]) -> None:
    """The values ``serve`` converts as it goes (``float(tick)``, ``Path(credentials)``,
    ``int(yen)``…): checked when the file is read, so a wrong type is one line now (exit
    22) — not an "internal error" at start, or at the first customer's card."""
    k = config["kiosk"]
    for name, high in (("tick", 60), ("deadline", 86_400)):
        v = k.get(name, 1)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= high:
            raise DeviceConfigError(f"{path}: [kiosk] {name} is seconds, more than 0 and at"
                                    f" most {high}")
    if not isinstance(k.get("credentials", ""), str):
        raise DeviceConfigError(f"{path}: [kiosk] credentials is a directory (a string)")
    ui = config.get("ui", {})
    if not isinstance(ui, dict):
        raise DeviceConfigError(f"{path}: ui must be a [ui] table")
    options, insert = ui.get("options", []), ui.get("insert", [])
    if not (isinstance(options, list) and all(isinstance(o, str) for o in options)):
        raise DeviceConfigError(f"{path}: [ui] options is a list of option names")
    if not (isinstance(insert, list) and all(
            isinstance(y, int) and not isinstance(y, bool) and y > 0 for y in insert)):
        raise DeviceConfigError(f"{path}: [ui] insert is a list of yen amounts, e.g."
                                " [1000, 100]")


class Slot:
    """Whether a card is in the reader: a PC/SC reader's state, or — for a reader scheme
    such as ``emu:DIR`` — whether its location exists (a software card is "inserted" while
    its directory is there)."""

    def __init__(self, spec: str) -> None:
        from cardio.readers import reader_scheme

        self.spec = spec
        self.location = Path(spec.partition(":")[2]) if reader_scheme(spec) else None

    def present(self) -> bool:
        if self.location is not None:
            return self.location.exists()
        from cardio import pcsc

        return any(r.name == self.spec and r.card_present for r in pcsc.list_readers())


def _line(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class StreamUi(HeadlessUi):
    """Screens as JSON lines on stdout (the UI's seam); with ``scripted``, the scripted
    customer of ``[ui]`` answers them, otherwise nobody does and the core's time-outs end
    the session (until the next issue's UI feeds the person's actions)."""

    def __init__(self, *args: Any, scripted: bool, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.scripted = scripted

    def show(self, cmd: C.Show) -> None:
        _line({"event": "screen", "screen": cmd.screen.value, "detail": cmd.detail,
               "amount": cmd.amount})
        if self.scripted:
            super().show(cmd)

    def remind(self, cmd: C.RemindCard) -> None:
        """The card reminder as a line too: a certificate prints only once the card is out,
        so whoever drives the kiosk from outside must see the request."""
        _line({"event": "remind", "level": cmd.level})
        if self.scripted:
            super().remind(cmd)

    def cash_in(self, fee: int) -> None:
        if self.scripted:
            super().cash_in(fee)


async def serve(config: dict[str, Any], stop: asyncio.Event) -> int:
    from kiosk.center_client import CenterClient
    from kiosk.runner import (
        CardAdapter,
        CashAdapter,
        Keypad,
        PrinterAdapter,
        Runner,
        find_credentials,
        flush_finalizes,
        lab_feeder,
    )
    from kiosk.session import events as E
    from kiosk.session.journal import Journal

    k = config["kiosk"]
    tray = Path(k["tray"]) if k.get("tray") else None
    tray_warning: str | None = None
    if tray is not None:
        from kiosk.tray import announce_tray, make_tray_dir

        tray_warning = announce_tray(tray)  # it keeps certificates: never by mistake
        make_tray_dir(tray)
    printer_url = config.get("printer", {}).get("url")
    creds = find_credentials(k["center"], Path(k["credentials"]) if k.get("credentials")
                             else None)
    creds.center_url = k["center"]
    slot = Slot(k["reader"])
    control = config.get("emulator", {}).get("control")
    ui_cfg = config.get("ui", {})
    web_cfg = config.get("web")
    timeouts = timeouts_of(config)
    hub: Any = None
    server: Any = None
    if web_cfg is not None:
        from kiosk.ui.app import UiServer
        from kiosk.ui.hub import WebHub

        hub = WebHub(lang=str(web_cfg.get("lang", "ja")),
                     pin_reset=bool(k.get("facepin")),
                     done_seconds=float(web_cfg.get("done_seconds", 8)))
        server = UiServer(hub, str(web_cfg.get("listen", "127.0.0.1:0")))
    journal = Journal(k["journal"])
    cash = CashAdapter(config, journal=k["journal"])
    try:
        recovered = await recover_at_start(journal, tray, cash, slot, stop,
                                           printer=printer_url)
        async with CenterClient(creds) as center:
            finalizes = await flush_finalizes(journal, center)
        await cash.start()
        ready: dict[str, Any] = {"event": "ready", "pid": os.getpid(),
                                 "journal": str(journal.path), "recovered": recovered,
                                 "finalizes": finalizes, "ledger": journal.ledger().as_dict()}
        if tray is not None:
            ready["tray"], ready["warning"] = str(tray), tray_warning
        if server is not None:
            await server.start()
            ready["ui"] = server.url
        _line(ready)
        while not stop.is_set():
            # With the touch screen a session starts only after 注意事項 and 同意 (the hub's
            # set-card screen); a card put in earlier waits for them.
            if not await asyncio.to_thread(slot.present) or (
                    hub is not None and not hub.accepting_card()):
                await _wait(stop, 0.2)
                continue
            keypad = Keypad()
            ui: Ui
            if hub is not None:
                from kiosk.ui.hub import WebUi

                ui = WebUi(hub, echo=_line)
            else:
                pin = os.environ.get(str(ui_cfg.get("pin_env", "")), "") if ui_cfg else ""
                ui = StreamUi(pin, str(ui_cfg.get("document", "")),
                              tuple(ui_cfg.get("options", ())),
                              [int(y) for y in ui_cfg.get("insert", [])],
                              lab_feeder(str(control)) if control else lambda _y: None,
                              take_card=False, scripted=bool(ui_cfg))
                del pin
            runner = Runner(journal, creds=creds, card=CardAdapter(k["reader"], keypad),
                            cash=cash, printer=PrinterAdapter(tray, printer_url), ui=ui,
                            keypad=keypad,
                            timeouts=timeouts, tick=float(k.get("tick", 1.0)),
                            facepin_url=k.get("facepin"),
                            # the touch screen has the real kiosks' interlock: once used,
                            # the card leaves before the choice (issue 24)
                            card_out_after_use=hub is not None)

            async def watch_removal(r: Runner = runner) -> None:
                """The slot, for the whole session: the card leaving, and a card put back
                after it left (review of issue 24: the watch ended at the first removal, so
                a card put back was ignored and left behind for the next customer)."""
                told = True  # the session starts with the card in (its CardInserted)
                while True:
                    await asyncio.sleep(0.2)
                    s = r.session
                    if s is None:
                        continue
                    present = await asyncio.to_thread(slot.present)
                    # Each change once: the session may not have handled the last yet.
                    if present != s.card_present and present != told:
                        r.put(E.CardInserted() if present else E.CardRemoved())
                        told = present

            watcher = asyncio.get_running_loop().create_task(watch_removal())
            try:
                result = await runner.run_session(deadline=float(k.get("deadline", 600)))
            finally:
                watcher.cancel()
                await runner.aclose()
                if hub is not None:
                    hub.end()
            async with CenterClient(creds) as center:
                await flush_finalizes(journal, center)
            _line({"event": "session", "txn": result.txn, "request_id": result.request_id,
                   "outcome": result.outcome, "reason": result.reason,
                   "document": result.document, "fee": result.fee, "paid": result.paid,
                   "change": result.change, "refund_due": result.refund,
                   "files": result.files})
            if hub is not None:
                # A card in the slot at the end, or put back while the done screen is up
                # (someone who thinks it is needed again): the last customer's, never the
                # next one's. 「カードが残っています」, and no start until it is taken.
                while not stop.is_set() and hub.screen == "done" and \
                        not await asyncio.to_thread(slot.present):
                    await _wait(stop, 0.2)
                if await asyncio.to_thread(slot.present):
                    hub.card_left(True)
            while not stop.is_set() and await asyncio.to_thread(slot.present):
                await _wait(stop, 0.2)  # the same card again is not a new session
            if hub is not None:
                hub.card_left(False)
        _line({"event": "stopped", "ledger": journal.ledger().as_dict()})
    finally:
        if server is not None:
            await server.stop()
        cash.stop()
        journal.close()
    return 0


async def recover_at_start(journal: Any, out: Path | None, cash: Any, slot: Any,
                           stop: asyncio.Event, *, poll: float = 0.2,
                           printer: str | None = None) -> list[dict[str, Any]]:
    """Recovery before any new card is served, with the card-removal interlock of a live
    session: a session left waiting for its card (or one whose pages or 未交付 slip
    recovery makes while a card is in the slot) is settled but releases nothing; the kiosk
    says ``{"event": "awaiting-card-removal", …}`` and waits — serving no one — until the
    slot reports the removal, then recovers again, which releases the held output and
    closes the sessions. A stop while waiting leaves them held for the next start. Returns
    each session's last report (a journal that cannot be recovered raises
    :class:`~kiosk.session.journal.JournalDamaged`, before any device is asked for it)."""
    from kiosk.runner import start_recovery

    recovered = start_recovery(journal, out, cash, card_present=slot.present,
                               printer=printer)
    while not stop.is_set():
        held = [r["txn"] for r in recovered if r["held_for_card"]]
        if not held:
            break
        _line({"event": "awaiting-card-removal", "txns": held})
        while not stop.is_set() and await asyncio.to_thread(slot.present):
            await _wait(stop, poll)
        if stop.is_set():
            break
        again = {r["txn"]: r for r in start_recovery(journal, out, cash,
                                                     card_present=slot.present,
                                                     printer=printer)}
        recovered = [{**again[r["txn"]], "actions": r["actions"] + again[r["txn"]]["actions"]}
                     if r["txn"] in again else r for r in recovered]
    return recovered


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def cmd_run(args: argparse.Namespace) -> int:
    no_core_dumps()  # certificates live in this process's memory: never in a core file
    config = load_run_config(args.config)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve(config, stop)

    return asyncio.run(main())


def register(ksub: Any) -> None:
    p = ksub.add_parser("run", help="run the kiosk on real or emulated devices")
    p.add_argument("--config", type=Path, required=True, help="kiosk TOML file")
    p.set_defaults(func=cmd_run)
