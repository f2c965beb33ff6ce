"""The real PC/SC stack around software cards: ``pcscd`` with vpcd readers and a vpcd
bridge per card, inside a private network and mount namespace
(``shared/reference/pcsc-vpcd.md`` §7).

Why a namespace: vpcd binds 0.0.0.0, so on the host anyone could "insert" a card; and only
one pcscd can run per mount namespace. Inside ``unshare --mount --net`` nothing listens on
the host and parallel runs cannot collide.

How clients outside reach it: pcscd's socket directory (hard-coded ``/run/pcscd``) is a
bind mount of a host directory, and the client library honours ``PCSCLITE_CSOCK_NAME``. A
Unix socket on the filesystem crosses network namespaces, so pyscard, OpenSC and our CLI
on the host talk to the namespaced pcscd by that one variable.

Cards are inserted, removed and given faults over a small control socket (one JSON
object per line) served by the process inside the namespace.

Host side: :class:`PcscStack`. Inside: ``python -m emulators.pcsc_stack inside ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cardio.constants import VPCD_PORT
from cardio.errors import CardioError

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
BASE_PORT = VPCD_PORT


class StackUnavailable(CardioError, RuntimeError):
    """This machine cannot run pcscd + vpcd in a namespace; the reason says what is
    missing."""


class StackControlError(CardioError, RuntimeError):
    """The running stack refused a control command (insert, remove, pull)."""


def unavailable_reason() -> str | None:
    """None when the stack can run here, else why not."""
    for tool in ("unshare", "pcscd", "ip", "mount"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed"
    if not VPCD_DRIVER.exists():
        return "vsmartcard-vpcd is not installed (no libifdvpcd.so)"
    try:
        import smartcard  # noqa: F401
    except ImportError:
        return "pyscard is not installed"
    probe = subprocess.run([*_unshare_prefix(), "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        return "cannot create namespaces here: " + probe.stderr.decode(errors="replace").strip()
    return None


def _unshare_prefix() -> list[str]:
    # A PID namespace too: when the process inside exits, the kernel kills everything
    # left in it (pcscd included), so nothing outlives the stack, whatever went wrong.
    cmd = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child=SIGTERM"]
    if os.geteuid() != 0:
        cmd[1:1] = ["--user", "--map-root-user"]
    return cmd


def reader_conf(workdir: Path, slots: int) -> Path:
    """A reader.conf.d with one vpcd stanza per two slots. Stanzas after the first load a
    private copy of the driver: pcscd reuses an already-loaded .so, and vpcd keeps its
    slot state in globals, so two stanzas on one .so alias each other (§6)."""
    conf = workdir / "reader.conf.d"
    drivers = workdir / "drivers"
    conf.mkdir(parents=True, exist_ok=True)
    drivers.mkdir(exist_ok=True)
    for i in range((slots + 1) // 2):
        if i == 0:
            lib = VPCD_DRIVER
            name = "Virtual PCD"
        else:
            lib = drivers / f"libifdvpcd-{i}.so"
            shutil.copyfile(VPCD_DRIVER.resolve(), lib)
            name = f"Virtual PCD {chr(ord('A') + i)}"
        port = BASE_PORT + 2 * i
        (conf / f"vpcd-{i}").write_text(
            f'FRIENDLYNAME "{name}"\nDEVICENAME   /dev/null:0x{port:04X}\n'
            f"LIBPATH      {lib}\nCHANNELID    0x{port:04X}\n"
        )
    return conf


class PcscStack:
    """pcscd + vpcd + software cards in a private namespace, controlled from the host."""

    def __init__(self, cards: Sequence[Path | str], workdir: Path, *,
                 apdu_log: bool = False, quickack: bool = True) -> None:
        """``cards``: card directories, or ``"trivial"`` for a card answering 9000."""
        self.cards = [c if str(c) == "trivial" else Path(c).resolve() for c in cards]
        self.workdir = Path(workdir).resolve()
        self.apdu_log = apdu_log
        self.quickack = quickack
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "run" / "pcscd.comm"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs to reach this pcscd."""
        return {"PCSCLITE_CSOCK_NAME": str(self.socket_path)}

    def start(self, timeout: float = 20.0) -> PcscStack:
        reason = unavailable_reason()
        if reason:
            raise StackUnavailable(reason)
        (self.workdir / "run").mkdir(parents=True, exist_ok=True)
        ready = self.workdir / "ready"
        ready.unlink(missing_ok=True)
        cmd = [
            *_unshare_prefix(),
            sys.executable,
            "-m",
            "emulators.pcsc_stack",
            "inside",
            "--workdir",
            str(self.workdir),
        ]
        if self.apdu_log:
            cmd.append("--apdu-log")
        if not self.quickack:
            cmd.append("--no-quickack")
        for card in self.cards:
            cmd += ["--card", str(card)]
        log = open(self.workdir / "stack.log", "ab")  # noqa: SIM115 - owned by the child
        # Inside, clients must reach this pcscd, not one a parent process points at.
        env = {**os.environ, "PCSCLITE_CSOCK_NAME": "/run/pcscd/pcscd.comm"}
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise StackUnavailable("the PC/SC stack exited: " + self.log_tail())
            if time.monotonic() > deadline:
                self.stop()
                raise StackUnavailable("the PC/SC stack did not start in time: " + self.log_tail())
            time.sleep(0.02)
        return self

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.workdir / "stack.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def control(self, **command: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(15)
            s.connect(str(self.workdir / "control.sock"))
            s.sendall(json.dumps(command).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        reply: dict[str, Any] = json.loads(data)
        if not reply.get("ok"):
            raise StackControlError(f"stack control {command}: {reply.get('error')}")
        return reply

    def insert(self, slot: int = 0) -> None:
        self.control(op="insert", slot=slot)

    def remove(self, slot: int = 0) -> None:
        self.control(op="remove", slot=slot)

    def load(self, card: Path, slot: int = 0) -> None:
        """Swap the card in a slot for another card directory (remove, then insert)."""
        self.control(op="load", slot=slot, card=str(Path(card).resolve()))

    def stats(self) -> dict[str, Any]:
        return self.control(op="stats")

    def link(self, apdu_ms: float = 0.0, byte_us: float = 0.0, slot: int = 0) -> None:
        """Model a slower reader-card link in ``slot`` (:class:`emulators.vpcd.LinkModel`):
        ``apdu_ms`` per APDU plus ``byte_us`` per byte; 0, 0 is a contact reader again."""
        self.control(op="link", slot=slot, apdu_ms=apdu_ms, byte_us=byte_us)

    def remove_after(self, n: int, slot: int = 0) -> None:
        """Pull the card out after ``n`` more APDUs (the next one is never answered)."""
        self.control(op="remove_after", slot=slot, n=n)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, json.JSONDecodeError):
                self.control(op="stop")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.proc = None

    def __enter__(self) -> PcscStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- inside the namespace --------------------------------------------------------------------
def _inside(args: argparse.Namespace) -> int:
    from emulators.card.card import SoftwareCard
    from emulators.vpcd import VpcdBridge

    workdir = Path(args.workdir)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    os.makedirs("/run/pcscd", exist_ok=True)
    subprocess.run(["mount", "--bind", str(workdir / "run"), "/run/pcscd"], check=True)
    conf = reader_conf(workdir, max(2, len(args.card)))
    pcscd_cmd = ["pcscd", "-f", "-c", str(conf)] + (["-a", "-d"] if args.apdu_log else [])
    pcscd = subprocess.Popen(pcscd_cmd, stdout=sys.stdout, stderr=sys.stderr)
    deadline = time.monotonic() + 10
    while not Path("/run/pcscd/pcscd.comm").exists():
        if pcscd.poll() is not None or time.monotonic() > deadline:
            print("pcscd did not start", flush=True)
            return 1
        time.sleep(0.01)

    from emulators.vpcd import TrivialCard

    bridges = [
        VpcdBridge(TrivialCard() if card == "trivial" else SoftwareCard.open(card),
                   BASE_PORT + i, quickack=not args.no_quickack).start()
        for i, card in enumerate(args.card)
    ]
    stop = threading.Event()

    def on_signal(_sig: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    control_path = workdir / "control.sock"
    control_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(control_path))
    server.listen(8)
    server.settimeout(0.2)
    from cardio.pcsc import list_readers, wait_for

    deadline = time.monotonic() + 10
    names = [r.name for r in list_readers()]
    while len(names) < len(bridges) and time.monotonic() < deadline:
        time.sleep(0.05)
        names = [r.name for r in list_readers()]
    if len(names) < len(bridges):
        print(f"pcscd shows {len(names)} readers for {len(bridges)} cards: {names}", flush=True)
        return 1
    for i, b in enumerate(bridges):
        b.connected.wait(10)
        b.reader_name = names[i]
        wait_for(names[i], present=True, timeout=10)
    (workdir / "ready").write_text(str(os.getpid()))
    print("stack ready", flush=True)
    status = 0
    try:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                if pcscd.poll() is not None:
                    print("pcscd exited", flush=True)
                    break
                dead = [b for b in bridges if b.failure is not None]
                if dead:
                    print(f"vpcd bridge on port {dead[0].port} died: {dead[0].failure!r};"
                          " stopping the stack", flush=True)
                    status = 1
                    break
                continue
            with conn:
                conn.settimeout(10)
                line = conn.makefile("rb").readline()
                reply = _handle(json.loads(line), bridges, stop)
                conn.sendall(json.dumps(reply).encode() + b"\n")
    finally:
        for b in bridges:
            b.stop()
        pcscd.terminate()
        try:
            pcscd.wait(5)
        except subprocess.TimeoutExpired:
            pcscd.kill()
        server.close()
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "/run/pcscd"], check=False)
    return status


def _handle(cmd: dict[str, Any], bridges: list[Any], stop: threading.Event) -> dict[str, Any]:
    from emulators.card.card import SoftwareCard

    try:
        op = cmd.get("op")
        if op == "stop":
            stop.set()
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "apdus": [b.stats.apdus for b in bridges],
                    "link_seconds": [b.stats.link_seconds for b in bridges],
                    "readers": [b.reader_name for b in bridges],
                    "card_errors": [b.card_errors for b in bridges]}
        bridge = bridges[int(cmd.get("slot", 0))]
        from cardio.pcsc import wait_for

        if op == "insert":
            bridge.insert()
            wait_for(bridge.reader_name, present=True, timeout=10)
        elif op == "remove":
            bridge.remove()
            wait_for(bridge.reader_name, present=False, timeout=10)
        elif op == "load":
            bridge.remove()
            wait_for(bridge.reader_name, present=False, timeout=10)
            bridge.card = SoftwareCard.open(cmd["card"])
            bridge.insert()
            wait_for(bridge.reader_name, present=True, timeout=10)
        elif op == "link":
            from emulators.vpcd import LinkModel

            bridge.link = LinkModel(float(cmd.get("apdu_ms", 0)) / 1000,
                                    float(cmd.get("byte_us", 0)) / 1e6)
        elif op == "remove_after":
            bridge.card.faults.remove_after = int(cmd["n"])
        else:
            return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True}
    except Exception as exc:  # reported to the controlling test, never swallowed
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.pcsc_stack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inside")
    p.add_argument("--workdir", required=True)
    p.add_argument("--card", action="append", default=[])
    p.add_argument("--apdu-log", action="store_true")
    p.add_argument("--no-quickack", action="store_true")
    args = parser.parse_args(argv)
    return _inside(args)


if __name__ == "__main__":
    sys.exit(main())
