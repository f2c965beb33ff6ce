"""The vpcd bridge against a stand-in for vpcd's side of the socket: framing, control
codes, QUICKACK, removal; and ``cardio emu serve`` as a process."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from emulators.card import Profile, SoftwareCard
from emulators.vpcd import TrivialCard, VpcdBridge

SELECT_TEXT = bytes.fromhex("00A4040C0AD3921000310001010408")


class FakeVpcd:
    """Listens like vpcd and speaks its framing."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
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
