"""The vpcd bridge against a stand-in for vpcd's side of the socket: framing, control
codes, QUICKACK, removal; and ``cardio emu serve`` as a process."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emulators.card import Profile, SoftwareCard
from emulators.vpcd import (
    SW_NO_DIAGNOSIS,
    BridgeError,
    BridgeFailed,
    TrivialCard,
    VpcdBridge,
    serve_forever,
)
from tests.conftest import CardFactory

SELECT_TEXT = bytes.fromhex("00A4040C0AD3921000310001010408")


class FakeVpcd:
    """Listens like vpcd and speaks its framing."""

    def __init__(self, port: int = 0) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(10)

    def send(self, payload: bytes) -> None:
        assert self.conn is not None
        # Two writes, as Debian's vpcd 3.3 does (length, then payload).
        self.conn.sendall(struct.pack(">H", len(payload)))
        self.conn.sendall(payload)

    def recv(self) -> bytes:
        assert self.conn is not None
        head = self._exact(2)
        return self._exact(struct.unpack(">H", head)[0])

    def _exact(self, n: int) -> bytes:
        assert self.conn is not None
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("card closed the connection")
            buf += chunk
        return buf

    def apdu(self, hex_or_bytes: str | bytes) -> bytes:
        raw = bytes.fromhex(hex_or_bytes) if isinstance(hex_or_bytes, str) else hex_or_bytes
        self.send(raw)
        return self.recv()

    def close(self) -> None:
        if self.conn:
            self.conn.close()
        self.server.close()


@pytest.fixture
def vpcd() -> FakeVpcd:
    v = FakeVpcd()
    yield v  # type: ignore[misc]
    v.close()


def test_framing_and_controls(vpcd: FakeVpcd, soft_card: SoftwareCard, profile: Profile) -> None:
    bridge = VpcdBridge(soft_card, vpcd.port).start()
    try:
        vpcd.accept()
        vpcd.send(b"\x04")
        assert vpcd.recv() == bytes.fromhex("3BE000FF8131FE4514")
        vpcd.send(b"\x01")                       # power on: no reply
        assert vpcd.apdu(SELECT_TEXT) == b"\x90\x00"
        pin = profile.text_pin.encode()
        assert vpcd.apdu(b"\x00\x20\x00\x91\x04" + pin) == b"\x90\x00"
        assert vpcd.apdu("00B0810000")[-2:] == b"\x90\x00"
        vpcd.send(b"\x00")                       # power off clears the security state
        vpcd.send(b"\x01")
        assert vpcd.apdu(SELECT_TEXT) == b"\x90\x00"
        assert vpcd.apdu("00B0810000") == b"\x69\x82"
        for _ in range(50):
            assert len(vpcd.apdu("0084000008")) == 10
        assert bridge.stats.apdus == 55 and bridge.stats.controls[4] == 1
    finally:
        bridge.stop()


def test_fault_pulls_the_card(vpcd: FakeVpcd, soft_card: SoftwareCard) -> None:
    bridge = VpcdBridge(soft_card, vpcd.port).start()
    try:
        vpcd.accept()
        soft_card.faults.remove_after = 1
        assert vpcd.apdu(SELECT_TEXT) == b"\x90\x00"
        with pytest.raises(ConnectionError):
            vpcd.apdu(SELECT_TEXT)                # no answer: the card is gone
        assert not bridge.connected.is_set()
        bridge.insert()                           # insert again: a new connection
        vpcd.accept()
        assert vpcd.apdu(SELECT_TEXT) == b"\x90\x00"
        bridge.remove()
        with pytest.raises(ConnectionError):
            vpcd.recv()
    finally:
        bridge.stop()


def test_trivial_card(vpcd: FakeVpcd) -> None:
    bridge = VpcdBridge(TrivialCard(), vpcd.port).start()
    try:
        vpcd.accept()
        assert vpcd.apdu("00B0000010") == b"\x90\x00"
    finally:
        bridge.stop()


def test_emu_serve_process(vpcd: FakeVpcd, card_dir: tuple[Path, Profile]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cardio.cli", "emu", "serve", str(card_dir[0]), "--port",
         str(vpcd.port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ.copy())
    try:
        vpcd.accept()
        vpcd.send(b"\x04")
        assert vpcd.recv()[:1] == b"\x3b"
        assert vpcd.apdu(SELECT_TEXT) == b"\x90\x00"
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "serving 1 card" in out and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()


# -- failures (issue 8, item 7) ------------------------------------------------------------------
def _verify_text_pin(vpcd: FakeVpcd, pin: str) -> bytes:
    assert vpcd.apdu(SELECT_TEXT) == b"\x90\x00"
    return vpcd.apdu(b"\x00\x20\x00\x91\x04" + pin.encode())


def test_a_damaged_card_store_gets_an_error_sw_and_the_bridge_keeps_serving(
        vpcd: FakeVpcd, card_dir: tuple[Path, Profile], caplog: pytest.LogCaptureFixture
) -> None:
    path, profile = card_dir
    bridge = VpcdBridge(SoftwareCard.open(path), vpcd.port).start()
    state = path / "state.json"
    good = state.read_bytes()
    try:
        vpcd.accept()
        state.write_bytes(b'{"damaged": ')
        with caplog.at_level("ERROR", logger="emulators.vpcd"):
            resp = _verify_text_pin(vpcd, profile.text_pin)
        # 6F00 from the bridge, or a store-error SW if the card engine maps it itself.
        assert resp[-2:] in (SW_NO_DIAGNOSIS, b"\x65\x81"), resp.hex()
        assert bridge.connected.is_set() and bridge.failure is None
        if resp == SW_NO_DIAGNOSIS:
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 1 and "0020" in lines[0] and "state.json" in lines[0]
            assert profile.text_pin not in lines[0]
        state.write_bytes(good)                       # repaired: the same bridge answers
        assert _verify_text_pin(vpcd, profile.text_pin) == b"\x90\x00"
    finally:
        state.write_bytes(good)
        bridge.stop()


def test_the_bridge_reconnects_when_vpcd_comes_back(vpcd: FakeVpcd) -> None:
    """pcscd restarted: vpcd's socket closes and later listens again on the same port."""
    port = vpcd.port
    bridge = VpcdBridge(TrivialCard(), port).start()
    try:
        vpcd.accept()
        assert vpcd.apdu("00B0000010") == b"\x90\x00"
        vpcd.close()
        again = FakeVpcd(port)
        try:
            again.accept()
            assert again.apdu("00B0000010") == b"\x90\x00"
            assert bridge.failure is None
        finally:
            again.close()
    finally:
        bridge.stop()


class _BrokenBridgeCard(TrivialCard):
    """A card whose ATR cannot be had: an error in the bridge's own path, not an APDU."""

    @property  # type: ignore[override]
    def atr(self) -> bytes:
        raise RuntimeError("no ATR")


def test_a_dead_bridge_thread_stops_serve_forever_with_a_clear_error(vpcd: FakeVpcd) -> None:
    bridge = VpcdBridge(_BrokenBridgeCard(), vpcd.port)

    def poke() -> None:
        vpcd.accept()
        vpcd.send(b"\x04")

    t = threading.Thread(target=poke)
    t.start()
    start = time.monotonic()
    with pytest.raises(BridgeFailed, match=f"port {vpcd.port} died.*no ATR"):
        serve_forever([bridge], threading.Event(), poll=0.05)
    t.join(5)
    assert time.monotonic() - start < 30      # it did not hang (generous on a busy box)
    assert bridge._thread is not None and not bridge._thread.is_alive()


@pytest.mark.parametrize("port", ["99999", "-1", "0", "abc"])
def test_emu_serve_rejects_a_bad_port(card_dir: tuple[Path, Profile], port: str) -> None:
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "emu", "serve", str(card_dir[0]),
                          f"--port={port}"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "--port" in res.stderr and ("out of range" in res.stderr
                                       or "not a port number" in res.stderr)


def test_bridge_rejects_a_port_out_of_range(make_card: CardFactory) -> None:
    with pytest.raises(BridgeError, match="out of range"):
        VpcdBridge(TrivialCard(), 65536)
    # Two cards from 65535: the second would need port 65536.
    a, b = make_card()[0], make_card()[0]
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "emu", "serve", str(a), str(b),
                          "--port", "65535"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "65536 is out of range" in res.stderr
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "emu", "serve", str(a) + "-none"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr


def _inside_pid(stack_proc_pid: int) -> int:
    """The process unshare forked into the stack's namespaces."""
    children = Path(f"/proc/{stack_proc_pid}/task/{stack_proc_pid}/children").read_text()
    return int(children.split()[0])


@pytest.mark.pcsc
@pytest.mark.slow
def test_emu_serve_survives_a_damaged_store_through_pcscd(card_dir: tuple[Path, Profile],
                                                         tmp_path: Path) -> None:
    """``cardio emu serve`` behind the real pcscd (inside the stack's network namespace,
    where vpcd listens): a VERIFY on a damaged ``state.json`` gets an error status, the
    bridge stays up, and once the file is repaired the same process serves a VERIFY."""
    from emulators.pcsc_stack import PcscStack, StackUnavailable

    path, profile = card_dir
    stack = PcscStack([], tmp_path / "stack")
    try:
        stack.start()
    except StackUnavailable as exc:
        if os.environ.get("CARDIO_REQUIRE_PCSC") == "1":
            pytest.fail(f"the PC/SC stack is required but cannot run: {exc}")
        pytest.skip(f"the PC/SC stack cannot run here: {exc}")
    env = {**os.environ, **stack.env}
    assert stack.proc is not None
    nsenter = ["nsenter", "--target", str(_inside_pid(stack.proc.pid)), "--net"]
    if os.geteuid() != 0:
        nsenter[1:1] = ["--user", "--preserve-credentials"]
    serve = subprocess.Popen([*nsenter, sys.executable, "-m", "cardio.cli", "emu", "serve",
                              str(path), "--port", "35963"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=os.environ.copy())

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cardio.cli", *args], input=stdin,
                              capture_output=True, text=True, timeout=60, env=env)

    state = path / "state.json"
    good = state.read_bytes()
    answered_6f00 = False
    read = ("--reader", "0", "text", "read", "--json", "--pin-stdin")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            res = cli("readers", "--json")
            if res.returncode == 0 and '"card_present": true' in res.stdout:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the card never appeared: {res.stdout} {res.stderr}")
        res = cli(*read, stdin=profile.text_pin + "\n")
        assert res.returncode == 0, res.stderr
        state.write_bytes(b'{"damaged": ')
        res = cli(*read, stdin=profile.text_pin + "\n")
        assert res.returncode == 1, res.stderr
        assert "6F00" in res.stderr or "6581" in res.stderr, res.stderr
        answered_6f00 = "6F00" in res.stderr
        assert profile.text_pin not in res.stderr
        assert serve.poll() is None, "the serving process died"
        state.write_bytes(good)
        res = cli(*read, stdin=profile.text_pin + "\n")
        assert res.returncode == 0, res.stderr
        assert profile.my_number in res.stdout
    finally:
        state.write_bytes(good)
        serve.send_signal(signal.SIGTERM)
        try:
            _out, err = serve.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
            _out, err = serve.communicate()
        stack.stop()
    assert serve.returncode == 0, err
    assert profile.text_pin not in err
    failed = [line for line in err.splitlines() if "failed on" in line]
    # One line for the one failed APDU (none if the card engine answered 6581 itself).
    assert len(failed) == (1 if answered_6f00 else 0), err
    assert not answered_6f00 or ("APDU 0020" in failed[0] and "state.json" in failed[0])


def test_link_model_delays_each_apdu_by_its_cost(vpcd: FakeVpcd) -> None:
    """The contactless link model (issue 28): a fixed cost per APDU plus a cost per byte,
    added to APDUs only (controls are free); the stats sum the modelled costs."""
    from emulators.vpcd import LinkModel

    link = LinkModel(apdu_seconds=0.002, byte_seconds=0.0001)
    assert link.cost(5, 258) == pytest.approx(0.002 + 0.0263)
    bridge = VpcdBridge(TrivialCard(), vpcd.port)
    bridge.link = LinkModel(apdu_seconds=0.002)
    bridge.start()
    try:
        vpcd.accept()
        vpcd.send(b"\x04")
        vpcd.recv()
        for _ in range(5):
            assert vpcd.apdu("00A4040C") == b"\x90\x00"
        assert bridge.stats.apdus == 5
        assert bridge.stats.link_seconds == pytest.approx(5 * 0.002)
    finally:
        bridge.stop()
