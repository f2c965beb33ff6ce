"""``cardio kiosk devices check --config FILE``: open the kiosk's devices (real or emulated)
and print their status — the first thing an integrator runs after cabling a kiosk.

The configuration is TOML (read with the standard library's ``tomllib``); every section is
optional, and only the devices named are checked::

    [bill_validator]            # JCM ID-003, 9600 8E1
    port = "/dev/ttyUSB0"

    [coin_acceptor]             # the ccTalk bus (acceptor and hoppers share it)
    port = "/dev/ttyUSB1"
    address = 2                 # default 2

    [[hopper]]                  # one per coin value, on the same bus
    address = 3
    coin = 500

    [printer]
    url = "ipp://127.0.0.1:631/ipp/print"

    [card_slot]
    reader = "0"                # index, exact name, or unique substring of a PC/SC reader

The command exits 0 when every configured device answered, else 21; 22 when a serial port
is held by another controller (``kiosk run``, another check): it is refused before a byte
reaches any device, naming the holder's PID.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kiosk.devices.errors import DeviceConfigError, DeviceError


def register(kiosk_sub: Any) -> None:
    """Add ``devices check`` to the ``kiosk`` sub-commands."""
    devices = kiosk_sub.add_parser("devices", help="the kiosk's peripherals")
    dsub = devices.add_subparsers(dest="devices_command", required=True)
    p = dsub.add_parser("check", help="open each configured device and print its status")
    p.add_argument("--config", type=Path, required=True, help="devices TOML file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check)


def load_config(path: Path) -> dict[str, Any]:
    """Read and check the whole file before any device is opened: a value of the wrong
    type (``bill_validator = 3``, ``address = "x"``, ``timeout = "abc"``) is a one-line
    :class:`DeviceConfigError` (exit 22) naming the key, never a crash halfway through the
    checks."""
    return validate_config(read_toml(path, "device configuration"), path)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file the operator names, parsed — or one line (:class:`DeviceConfigError`,
    exit 22) saying why not: unreadable, not UTF-8, not TOML, or nested deeper than the
    parser's recursion goes (``tomllib`` recurses per array or inline table, so 100,000
    ``[`` raised RecursionError, an "internal error" exit 70). Read up to
    :data:`MAX_CONFIG_BYTES` only: ``--config /dev/zero`` would otherwise read for ever."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise DeviceConfigError(f"{path} is larger than a {what} can be"
                                    f" ({MAX_CONFIG_BYTES // 1024} KiB at most)")
        return tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise DeviceConfigError(f"cannot read {what} {path}: {exc.strerror or exc}"
                                ) from None
    except UnicodeDecodeError as exc:
        raise DeviceConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte"
                                f" {exc.start}): give a TOML {what}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeviceConfigError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise DeviceConfigError(f"{path}: arrays or tables nested too deeply to be a"
                                f" {what}") from None


#: A kiosk's configuration is a few hundred bytes; a file past this is not one.
MAX_CONFIG_BYTES = 1 << 20


def validate_config(config: dict[str, Any], path: Path, *,
                    extra: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Check the device sections of a parsed configuration (``extra``: sections the caller
    reads itself, e.g. ``kiosk run``'s ``[kiosk]`` and ``[ui]``)."""
    # [emulator] control = "…/control.sock": the emulated devices' control socket, through
    # which 'cardio kiosk issue' inserts money (ignored by the check).
    known = {"bill_validator", "coin_acceptor", "hopper", "printer", "card_slot", "emulator"}
    unknown = set(config) - known - extra
    if unknown:
        raise DeviceConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; "
                                f"known: {', '.join(sorted(known))}")
    for name in ("bill_validator", "coin_acceptor", "printer", "card_slot", "emulator"):
        if name in config and not isinstance(config[name], dict):
            raise DeviceConfigError(f"{path}: {name} must be a [{name}] table")
    if "emulator" in config and not isinstance(config["emulator"].get("control", ""), str):
        raise DeviceConfigError(f"{path}: [emulator] control is the emulated devices'"
                                " control socket (a path)")
    for name in ("bill_validator", "coin_acceptor"):
        if name in config and not isinstance(config[name].get("port"), str):
            raise DeviceConfigError(f"{path}: [{name}] needs port = \"/dev/tty…\"")
    if "hopper" in config:
        hoppers = config["hopper"]
        if not (isinstance(hoppers, list) and all(isinstance(h, dict) for h in hoppers)):
            raise DeviceConfigError(f"{path}: hopper must be [[hopper]] tables")
        if "coin_acceptor" not in config:
            raise DeviceConfigError(f"{path}: [[hopper]] needs the [coin_acceptor] bus port")
        for h in hoppers:
            _integer(path, "[[hopper]] address", h.get("address"), 1, 255)
            _integer(path, "[[hopper]] coin", h.get("coin"), 1, 100_000)
    if "coin_acceptor" in config and "address" in config["coin_acceptor"]:
        _integer(path, "[coin_acceptor] address", config["coin_acceptor"]["address"], 1, 255)
    if "printer" in config:
        url = config["printer"].get("url")
        if not isinstance(url, str):
            raise DeviceConfigError(f"{path}: [printer] needs url = \"ipp://host:631/…\"")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError on a port out of range
        except ValueError as exc:
            raise DeviceConfigError(f"{path}: [printer] url {url!r}: {exc}") from None
    if "card_slot" in config and not isinstance(config["card_slot"].get("reader", "0"),
                                                str | int):
        raise DeviceConfigError(f"{path}: [card_slot] reader is a reader index or name")
    for name in ("bill_validator", "printer"):
        if name in config and "timeout" in config[name]:
            t = config[name]["timeout"]
            if isinstance(t, bool) or not isinstance(t, int | float) \
                    or not 0 < t <= MAX_TIMEOUT:
                raise DeviceConfigError(f"{path}: [{name}] timeout is seconds, more than 0"
                                        f" and at most {MAX_TIMEOUT:g}")
    return config


MAX_TIMEOUT = 300.0
"""Seconds; a device that has not answered by then is not going to."""


def _integer(path: Path, what: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DeviceConfigError(f"{path}: {what} must be a whole number from {low} to {high},"
                                f" not {value!r}")
    return value


def _open_ports(config: dict[str, Any]) -> dict[str, Any]:
    """Open every configured serial device before talking to any: a port another controller
    holds refuses the whole check at once (:class:`~kiosk.devices.portlock.PortInUse`,
    exit 22, one line with its PID) before a byte reaches either device. A port that cannot
    be opened at all is that device's FAIL line (the error stands in for the driver)."""
    from kiosk.devices.cctalk import CcTalkBus
    from kiosk.devices.id003 import Id003Driver

    opened: dict[str, Any] = {}
    openers: list[tuple[str, Callable[[str], Any]]] = [
        ("bill_validator", Id003Driver), ("coin_acceptor", CcTalkBus)]
    try:
        for name, opener in openers:
            if name in config:
                try:
                    opened[name] = opener(config[name]["port"])
                except DeviceConfigError:  # held by another controller; bad lock dir
                    raise
                except DeviceError as exc:
                    opened[name] = exc
    except BaseException:
        _close_ports(opened)
        raise
    return opened


def _close_ports(opened: dict[str, Any]) -> None:
    for port in opened.values():
        if not isinstance(port, BaseException):
            port.close()


def _check_bill(cfg: dict[str, Any], driver: Any) -> dict[str, Any]:
    from kiosk.devices.id003 import Status

    if isinstance(driver, BaseException):
        raise driver
    driver.run_until(lambda: driver.host.status is not None and driver.host.configured,
                     timeout=float(cfg.get("timeout", 3.0)))
    status = driver.host.status
    version = driver.version()  # an echoing line passes the status poll, not this
    return {"status": Status(status).name.lower() if status is not None else None,
            "version": version}


def _check_coins(cfg: dict[str, Any], hoppers: list[dict[str, Any]], bus: Any
                 ) -> dict[str, Any]:
    from kiosk.devices.cctalk import Header, HopperDriver

    if isinstance(bus, BaseException):
        raise bus
    address = int(cfg.get("address", 2))
    bus.call(address, Header.SIMPLE_POLL)
    category = bus.call(address, Header.REQUEST_EQUIPMENT_CATEGORY).data.decode(
        "ascii", errors="replace")
    out: dict[str, Any] = {"status": "ok", "category": category, "hoppers": []}
    for h in hoppers:
        st = HopperDriver(bus, int(h["address"]), int(h["coin"])).status()
        out["hoppers"].append({"coin": int(h["coin"]), "address": int(h["address"]),
                               "event_counter": st.counter, "busy": bool(st.remaining)})
    return out


def _check_printer(cfg: dict[str, Any]) -> dict[str, Any]:
    from kiosk.devices.ipp import IppPrinter

    st = IppPrinter(str(cfg["url"]), timeout=float(cfg.get("timeout", 5.0))).status()
    states = {3: "idle", 4: "processing", 5: "stopped"}
    return {"status": states.get(st.state, str(st.state)), "reasons": st.reasons,
            "faults": [f.kind for f in st.faults]}


def _check_card_slot(cfg: dict[str, Any]) -> dict[str, Any]:
    from cardio import pcsc

    reader = pcsc.resolve_reader(str(cfg.get("reader", "0")))
    info = next(r for r in pcsc.list_readers() if r.name == reader)
    return {"status": "ok", "reader": reader, "card_present": info.card_present}


def cmd_check(args: argparse.Namespace) -> int:
    from cardio.cli import emit
    from cardio.errors import CardioError

    config = load_config(args.config)
    results: dict[str, Any] = {}
    ports = _open_ports(config)
    checks: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("bill_validator", lambda: _check_bill(config["bill_validator"],
                                               ports["bill_validator"])),
        ("coin_acceptor", lambda: _check_coins(config["coin_acceptor"],
                                               list(config.get("hopper", [])),
                                               ports["coin_acceptor"])),
        ("printer", lambda: _check_printer(config["printer"])),
        ("card_slot", lambda: _check_card_slot(config["card_slot"])),
    ]
    try:
        for name, check in checks:
            if name not in config:
                continue
            try:
                results[name] = {"ok": True, **check()}
            except (CardioError, OSError) as exc:
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        _close_ports(ports)
    lines = []
    for name, r in results.items():
        detail = r.get("error") or ", ".join(f"{k}={v}" for k, v in r.items() if k != "ok")
        lines.append(f"{name:15} {'OK  ' if r['ok'] else 'FAIL'} {detail}")
    emit(args, {"devices": results}, lines)
    return 0 if all(r["ok"] for r in results.values()) else DeviceError.exit_code
