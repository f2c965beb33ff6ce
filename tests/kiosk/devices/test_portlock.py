"""One controller per device port (issue 22, item 8), on real ptys behind the emulated
devices: a second opener — another process, or this one — is refused with the holder's PID
before it touches the line; the UUCP lock file has the conventional form; the lock goes
with ``close()`` and with the holder's death; TIOCEXCL keeps out openers that ignore lock
files (checked without CAP_SYS_ADMIN, which bypasses it)."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import stat
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.devices.bill import BillValidator
from emulators.devices.ptyline import PtyLine
from kiosk.devices import portlock
from kiosk.devices.cctalk import CcTalkBus
from kiosk.devices.errors import DeviceConfigError
from kiosk.devices.id003 import Id003Driver
from kiosk.devices.portlock import LOCK_DIR_ENV, PortInUse, lock_dirs, lock_name

#: A controller in a process of its own: opens the port with the kiosk's real driver, says
#: "ready", closes it on "close", then waits to be killed.
HOLDER = """
import sys
from kiosk.devices.id003 import Id003Driver
driver = Id003Driver(sys.argv[1], timeout=0.05)
print("ready", flush=True)
if sys.stdin.readline().strip() == "close":
    driver.close()
    print("closed", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PtyLine]:
    """An emulated bill validator on a real pty, and a lock directory of this test's own
    (inherited by the processes it starts)."""
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    pty_line = PtyLine(BillValidator().receive, "bill").start()
    try:
        yield pty_line
    finally:
        pty_line.close()


def _hold(port: str, *, prefix: tuple[str, ...] = (),
          env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*prefix, sys.executable, "-c", HOLDER, port],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    if ready.strip() != "ready":
        proc.kill()
        raise AssertionError(f"holder did not start: {proc.communicate()[1][-2000:]}")
    return proc


def _reconfigurable(line: PtyLine) -> None:
    """Wait until the emulator's pty takes 8E1 again: it drops parity, so an open right
    after another controller's (within its 50 ms reset, see ``ptyline``) fails EINVAL."""
    deadline = time.monotonic() + 2
    while termios.tcgetattr(line._slave)[4] != termios.B38400 and time.monotonic() < deadline:
        time.sleep(0.01)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


def test_a_second_controller_is_refused_naming_the_holder(line: PtyLine,
                                                          tmp_path: Path) -> None:
    proc = _hold(line.path)
    try:
        with pytest.raises(PortInUse, match=rf"in use by process {proc.pid} ") as info:
            Id003Driver(line.path, timeout=0.05)
        assert info.value.exit_code == 22 and "\n" not in str(info.value)
        with pytest.raises(PortInUse, match=rf"process {proc.pid} "):
            CcTalkBus(line.path)  # every opener goes through the same lock
        # FHS/UUCP: the PID as ten ASCII characters, right-aligned, and a newline.
        lock = tmp_path / lock_name(line.path)
        assert lock.read_bytes() == f"{proc.pid:>10}\n".encode()
        assert line.bytes_in == 0  # nobody sent the unit a byte
    finally:
        _stop(proc)


def test_the_lock_goes_with_close(line: PtyLine, tmp_path: Path) -> None:
    proc = _hold(line.path)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("close\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
        assert not (tmp_path / lock_name(line.path)).exists()
        _reconfigurable(line)
        with Id003Driver(line.path, timeout=0.05) as driver:
            assert (tmp_path / lock_name(line.path)).read_bytes() == f"{os.getpid():>10}\n" \
                .encode()
            assert driver.version().startswith("cardio-emu")
        assert not (tmp_path / lock_name(line.path)).exists()
    finally:
        _stop(proc)


def test_the_lock_of_a_dead_controller_is_stale(line: PtyLine, tmp_path: Path) -> None:
    proc = _hold(line.path)
    proc.send_signal(signal.SIGKILL)  # no close, no clean-up: the lock file stays
    _stop(proc)
    lock = tmp_path / lock_name(line.path)
    assert lock.read_bytes() == f"{proc.pid:>10}\n".encode()
    _reconfigurable(line)
    with Id003Driver(line.path, timeout=0.05) as driver:
        assert lock.read_bytes() == f"{os.getpid():>10}\n".encode()
        assert driver.version().startswith("cardio-emu")


def test_two_openers_in_one_process(line: PtyLine) -> None:
    first = Id003Driver(line.path, timeout=0.05)
    with pytest.raises(PortInUse, match=rf"this process \(PID {os.getpid()}\)"):
        Id003Driver(line.path, timeout=0.05)
    first.close()
    second = CcTalkBus(line.path)
    del second  # dropped without close(): collected, the port is free again
    gc.collect()
    _reconfigurable(line)
    Id003Driver(line.path, timeout=0.05).close()


def test_a_symlink_to_the_port_is_the_same_port(line: PtyLine, tmp_path: Path) -> None:
    link = tmp_path / "by-id-bill"
    link.symlink_to(line.path)
    assert lock_name(str(link)) == lock_name(line.path) == \
        "LCK.." + os.path.relpath(line.path, "/dev").replace("/", "_")
    assert lock_name("/dev/ttyUSB0") == "LCK..ttyUSB0"
    with Id003Driver(line.path, timeout=0.05), pytest.raises(PortInUse):
        Id003Driver(str(link), timeout=0.05)


def test_a_reused_pid_or_a_garbled_lock_is_stale_once_old(line: PtyLine, tmp_path: Path
                                                          ) -> None:
    lock = tmp_path / lock_name(line.path)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        lock.write_text(f"{sleeper.pid:>10}\n")  # alive, but without the port open
        with pytest.raises(PortInUse, match=rf"process {sleeper.pid} "):
            Id003Driver(line.path, timeout=0.05)  # might still be opening it
        old = time.time() - portlock.OPEN_GRACE - 1
        os.utime(lock, (old, old))
        Id003Driver(line.path, timeout=0.05).close()  # a reused PID: stale
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.write_bytes(b"\x00garbage")
    with pytest.raises(PortInUse, match="another program"):
        Id003Driver(line.path, timeout=0.05)
    os.utime(lock, (old, old))
    _reconfigurable(line)
    Id003Driver(line.path, timeout=0.05).close()


def test_lock_directory_override_and_fallback(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(DeviceConfigError, match=LOCK_DIR_ENV) as info:
        lock_dirs()
    assert info.value.exit_code == 22
    monkeypatch.delenv(LOCK_DIR_ENV)
    standard, tmp = tmp_path / "run-lock", tmp_path / "tmp"
    standard.mkdir()
    tmp.mkdir()
    monkeypatch.setattr(portlock, "STANDARD_LOCK_DIRS", (str(standard),
                                                         str(tmp_path / "absent")))
    monkeypatch.setattr(portlock.tempfile, "tempdir", str(tmp))
    assert lock_dirs() == (standard, [standard, tmp])
    # /run/lock not writable for this user (root may write anywhere: pretend)
    monkeypatch.setattr(portlock, "_usable", lambda d: Path(d) != standard)
    assert lock_dirs() == (tmp, [standard, tmp])
    # ... and a holder that could write there is still seen by one that fell back.
    pty_line = PtyLine(BillValidator().receive, "bill").start()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (standard / lock_name(pty_line.path)).write_text(f"{sleeper.pid:>10}\n")
        with pytest.raises(PortInUse, match=rf"process {sleeper.pid} .*{standard}"):
            Id003Driver(pty_line.path, timeout=0.05)
    finally:
        sleeper.kill()
        sleeper.wait()
        pty_line.close()


def _without_sys_admin() -> tuple[str, ...]:
    """A prefix that runs a command without CAP_SYS_ADMIN (which bypasses TIOCEXCL), or a
    skip where this machine cannot drop it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_SYS_ADMIN")
    prefix = (setpriv, "--inh-caps=-sys_admin", "--bounding-set=-sys_admin")
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"setpriv cannot drop CAP_SYS_ADMIN here: {probe.stderr!r}")
    return prefix


OPEN_RAW = """
import os, sys
try:
    os.close(os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
    print("opened")
except OSError as e:
    print(e.errno)
"""


def test_tiocexcl_keeps_out_openers_that_ignore_lock_files(line: PtyLine,
                                                           tmp_path: Path) -> None:
    prefix = _without_sys_admin()

    def raw_open() -> str:
        return subprocess.run([*prefix, sys.executable, "-c", OPEN_RAW, line.path],
                              capture_output=True, text=True, timeout=30).stdout.strip()

    assert raw_open() == "opened"
    proc = _hold(line.path, prefix=prefix)
    try:
        assert raw_open() == "16"  # EBUSY: the tty is held exclusively
        # Another cardio controller that looks in another lock directory: the kernel
        # refuses it, and it still names the process that has the port open.
        other = tmp_path / "elsewhere"
        other.mkdir()
        res = subprocess.run([*prefix, sys.executable, "-c", HOLDER, line.path],
                             capture_output=True, text=True, timeout=30, input="",
                             env={**os.environ, LOCK_DIR_ENV: str(other)})
        assert res.returncode == 1
        assert "opened exclusively by process" in res.stderr
        assert str(proc.pid) in res.stderr.splitlines()[-1]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("close\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
        # The emulator keeps the pty's slave open, so the flag would outlive the holder's
        # descriptor: close() clears it.
        assert raw_open() == "opened"
    finally:
        _stop(proc)


# -- review of issue 22, finding 3 ----------------------------------------------------------


def test_an_override_still_sees_a_holder_in_the_standard_directories(
        line: PtyLine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$CARDIO_LOCK_DIR`` says where to create the lock, not where to look: a controller
    with another override than the holder's (or none) is still refused."""
    standard, override = tmp_path / "run-lock", tmp_path / "override"
    standard.mkdir()
    override.mkdir()
    monkeypatch.setattr(portlock, "STANDARD_LOCK_DIRS", (str(standard),))
    monkeypatch.setenv(LOCK_DIR_ENV, str(override))
    assert lock_dirs()[0] == override and standard in lock_dirs()[1]
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (standard / lock_name(line.path)).write_text(f"{sleeper.pid:>10}\n")
        with pytest.raises(PortInUse, match=rf"process {sleeper.pid} .*{standard}"):
            Id003Driver(line.path, timeout=0.05)
        assert line.bytes_in == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    # The override is where this process creates its lock; nothing lands in /run/lock.
    _reconfigurable(line)
    with Id003Driver(line.path, timeout=0.05):
        assert (override / lock_name(line.path)).read_bytes() == \
            f"{os.getpid():>10}\n".encode()
        assert not (standard / lock_name(line.path)).exists()


def test_a_second_node_of_the_same_tty_is_the_same_lock(line: PtyLine,
                                                        tmp_path: Path) -> None:
    """A node made with mknod has another name but the same device number: the
    ``LCK.<major>.<minor>`` lock (liblockdev's second name) refuses it."""
    rdev = os.stat(line.path).st_rdev
    node = tmp_path / "bill-again"
    try:
        os.mknod(node, 0o600 | stat.S_IFCHR, rdev)
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    number = f"LCK.{os.major(rdev):03d}.{os.minor(rdev):03d}"
    assert portlock.lock_names(str(node)) == ["LCK..bill-again", number]
    assert portlock.lock_names(line.path) == [lock_name(line.path), number]
    proc = _hold(line.path)
    try:
        with pytest.raises(PortInUse, match=rf"in use by process {proc.pid} .*{number}"):
            Id003Driver(str(node), timeout=0.05)
        assert (tmp_path / number).read_bytes() == f"{proc.pid:>10}\n".encode()
        assert not (tmp_path / "LCK..bill-again").exists()
        assert line.bytes_in == 0
    finally:
        _stop(proc)  # killed: its locks stay, stale, and the next acquire removes them
    # ... and the other way round (at the lock: a pty's slave opened through a node
    # outside its devpts gives EIO, so the second node itself cannot be driven here).
    first = portlock.PortLock(str(node), "bill validator")
    first.acquire()
    assert (tmp_path / number).read_bytes() == f"{os.getpid():>10}\n".encode()
    with pytest.raises(PortInUse, match=rf"this process .*{number}"):
        Id003Driver(line.path, timeout=0.05)
    first.release()
    assert not (tmp_path / number).exists() and not (tmp_path / "LCK..bill-again").exists()
    _reconfigurable(line)
    Id003Driver(line.path, timeout=0.05).close()


def test_a_lock_directory_that_cannot_hold_files_is_configuration(
        line: PtyLine, monkeypatch: pytest.MonkeyPatch) -> None:
    """``CARDIO_LOCK_DIR=/proc`` (writable for root by ``access()``, yet no file can be
    created): exit 22 with one line, not a device fault (21)."""
    monkeypatch.setenv(LOCK_DIR_ENV, "/proc")
    with pytest.raises(DeviceConfigError, match=LOCK_DIR_ENV) as info:
        Id003Driver(line.path, timeout=0.05)
    assert info.value.exit_code == 22 and "\n" not in str(info.value)
    assert line.bytes_in == 0


def test_devices_check_with_an_unusable_lock_directory_exits_22(
        line: PtyLine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command: one line, exit 22 (configuration), not a device FAIL (21)."""
    from cardio.cli import main

    config = tmp_path / "devices.toml"
    config.write_text(f'[bill_validator]\nport = "{line.path}"\n')
    monkeypatch.setenv(LOCK_DIR_ENV, "/proc")
    assert main(["kiosk", "devices", "check", "--config", str(config)]) == 22
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and LOCK_DIR_ENV in err, err
