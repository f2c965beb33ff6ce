"""One controller per device port: the UUCP lock file and ``TIOCEXCL``, in the one place
every serial opener of the kiosk goes through (:func:`open_serial`).

Why (issue 22): a ``cardio kiosk issue`` started against the devices a running
``cardio kiosk run`` was driving interleaved its polls with the other controller's, the bill
validator kept ¥2,000 that neither journal recorded, and each controller reported balanced
books. A port must be held by one controller, and a second one must be refused *before* it
sends a byte, with one line that names the holder.

Two locks, because each covers what the other does not:

* **The lock file** ``/run/lock/LCK..<name>`` (FHS 3.0 §5.9, the UUCP convention serial
  tools share): the holder's PID as ten ASCII characters, right-aligned, and a newline. It
  is taken *before* the device is opened, so a refused controller never touches the line
  (opening a real port raises DTR, and some units reset on that), and it names the holder.
  A lock whose PID is dead is stale and is removed; so is one whose PID now belongs to a
  process that does not have the port open (the PID was reused after a crash), once the
  lock is older than :data:`OPEN_GRACE`. It is advisory: a program that ignores lock files
  is stopped only by the next lock.
* **TIOCEXCL** on the open tty: the kernel refuses every further ``open()`` of it with
  ``EBUSY``, whatever convention the other program follows — except for a process with
  ``CAP_SYS_ADMIN`` (root), which is why the lock file is not optional. The flag belongs to
  the tty, not to our descriptor: the kernel clears it only when the tty's *last*
  descriptor closes. A real port's last descriptor is usually ours, but an emulator's pty
  keeps its slave end open, so :meth:`HeldPort.close` clears it (``TIOCNXCL``) before
  closing; after a crash (no close) a non-root controller of an emulated pty gets ``EBUSY``
  until the emulator is restarted.

pyserial's ``exclusive=True`` is not used: it is ``flock(LOCK_EX)``, honoured only by
programs that also flock, and it names nobody.

The lock directory: ``$CARDIO_LOCK_DIR`` (or ``lock_dir=``) when set — tests, or a kiosk
whose lock directory lives elsewhere — is where this process *creates* its locks; otherwise
``/run/lock`` (``/var/lock`` on older systems), and when neither is writable for this user,
the temporary directory. A holder is looked for in every one of them *and* the override
(review of issue 22, finding 3: a controller with another ``$CARDIO_LOCK_DIR`` looked only
there and drove the ports of one that locked in ``/run/lock``). A directory that cannot hold
the lock file (``CARDIO_LOCK_DIR=/proc``) is a configuration error (exit 22), not a device
fault.

The lock's names: ``LCK..<name>`` (the UUCP convention, what minicom, cu and ModemManager
look for) and, for a character device, also ``LCK.<major>.<minor>`` of its device number
(``LCK.004.064``, three digits each, the second name liblockdev writes beside the first).
Both are created (hard links of one file) and both are looked for: the name-based one keeps
serial tools that know only the UUCP name out, the number-based one makes a second node of
the same tty (``mknod``, a bind mount, a container's ``/dev``) the same lock, which no name
can.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import sys
import tempfile
import termios
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kiosk.devices.errors import DeviceConfigError, DeviceError

__all__ = ["LOCK_DIR_ENV", "HeldPort", "PortInUse", "PortLock", "lock_dirs", "lock_name",
           "lock_names", "open_serial"]

#: Environment variable naming the directory this process creates its locks in.
LOCK_DIR_ENV = "CARDIO_LOCK_DIR"
#: The FHS lock directories, in order of preference.
STANDARD_LOCK_DIRS: tuple[str, ...] = ("/run/lock", "/var/lock")
#: Seconds a live process may hold a lock before having the port open: beyond that, a live
#: PID without the port open is a reused PID, not a holder.
OPEN_GRACE = 5.0
#: Seconds to wait for another cardio process's check-and-create of a lock.
GUARD_WAIT = 2.0


class PortInUse(DeviceConfigError):
    """Another controller holds the port (exit 22). Not a device fault — nothing was sent,
    the device is fine — but an installation with two controllers configured on one set of
    devices: the operator stops one of them or points it at other devices."""


def lock_name(port: str) -> str:
    """``LCK..ttyUSB0`` for ``/dev/ttyUSB0`` and for any symlink to it
    (``/dev/serial/by-id/…``): the name of the device the port resolves to, relative to
    ``/dev`` with ``/`` written as ``_`` (``/dev/pts/3`` → ``LCK..pts_3``, so that it cannot
    collide with another directory's ``3``); a path outside ``/dev`` gives its file name."""
    real = os.path.realpath(port)
    rel = os.path.relpath(real, "/dev")
    if rel.startswith(".."):
        rel = os.path.basename(real)
    return "LCK.." + rel.replace("/", "_")


def lock_names(port: str) -> list[str]:
    """Every name the lock of ``port`` goes by: :func:`lock_name`, then, for a character
    device, ``LCK.<major>.<minor>`` of its device number (the same for every node of it)."""
    names = [lock_name(port)]
    with contextlib.suppress(OSError):
        st = os.stat(port)
        if stat.S_ISCHR(st.st_mode):
            names.append(f"LCK.{os.major(st.st_rdev):03d}.{os.minor(st.st_rdev):03d}")
    return names


def _usable(directory: Path) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


def lock_dirs(override: str | Path | None = None) -> tuple[Path, list[Path]]:
    """``(where this process writes its locks, where it looks for a holder's)``: the
    override (when set) or the first usable standard directory; the search covers the
    override and every standard directory, whatever this process writes to."""
    chosen = override if override is not None else os.environ.get(LOCK_DIR_ENV) or None
    look: list[Path] = []
    seen: set[str] = set()
    for d in ((chosen,) if chosen is not None else ()) + (*STANDARD_LOCK_DIRS,
                                                          tempfile.gettempdir()):
        path = Path(d)
        real = os.path.realpath(path)
        if real not in seen and path.is_dir():
            seen.add(real)
            look.append(path)
    if chosen is not None:
        path = Path(chosen)
        if not _usable(path):
            raise DeviceConfigError(f"lock directory {path} (${LOCK_DIR_ENV}) is not a "
                                    "writable directory: create it or unset the variable")
        return path, look
    for path in look:
        if _usable(path):
            return path, look
    raise DeviceConfigError(f"no writable lock directory ({', '.join(STANDARD_LOCK_DIRS)} "
                            f"or the temporary directory): set ${LOCK_DIR_ENV}")


# -- this process's holds -------------------------------------------------------------------

_held: dict[str, weakref.ref[PortLock]] = {}
_held_guard = threading.Lock()


def _held_here(path: Path) -> bool:
    with _held_guard:
        ref = _held.get(str(path))
        lock = ref() if ref is not None else None
        return lock is not None and lock.held


@contextlib.contextmanager
def _directory_guard(directory: Path) -> Iterator[None]:
    """Serialise the check-remove-create of lock files among cardio processes (flock on the
    directory): without it, two controllers that both find one stale lock could each remove
    it and the second would remove the first's fresh one. Programs that do not flock are
    still kept out by the atomic ``link()`` and by TIOCEXCL."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        # Bounded: a holder that hangs inside the guard (or this very thread, if a
        # dropped lock is collected mid-acquire) must not wedge the kiosk's start.
        deadline = time.monotonic() + GUARD_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int | None:
    """The PID in a lock file: ten ASCII digits (HDB UUCP), or the old binary ``int``;
    ``None`` when the file says nothing readable."""
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except OSError:
        return None
    text = data.strip()
    if text.isdigit():
        return int(text)
    if len(data) == 4:
        return int.from_bytes(data, sys.byteorder)
    return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _has_open(pid: int, device: str) -> bool | None:
    """Whether process ``pid`` has ``device`` open (``None``: not ours to look at)."""
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    except OSError:
        return None
    for entry in entries:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{entry}") == device:
                return True
    return False


def openers(device: str) -> list[int]:
    """Other processes with ``device`` open, as far as this user may see (``/proc``): who
    holds a port exclusively without a lock file."""
    real = os.path.realpath(device)
    found = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != os.getpid() and _has_open(int(name), real):
                found.append(int(name))
    return sorted(found)


class PortLock:
    """The UUCP lock file of one port, for this process."""

    def __init__(self, port: str, what: str, *, lock_dir: str | Path | None = None) -> None:
        self.port = port
        self.what = what
        self.device = os.path.realpath(port)
        self.names = lock_names(port)
        self.name = self.names[0]
        self.directory, self._look = lock_dirs(lock_dir)
        #: The lock files this process creates: the UUCP name first, then the number's.
        self.paths = [self.directory / name for name in self.names]
        self.path = self.paths[0]
        self.held = False

    def _refuse(self, pid: int | None, path: Path) -> PortInUse:
        who = (f"this process (PID {pid})" if pid == os.getpid()
               else f"process {pid}" if pid is not None else "another program")
        return PortInUse(f"{self.what} port {self.port} is in use by {who} (lock {path}):"
                         " one controller per device; stop that one first or point this one"
                         " at other devices")

    def _holder(self, path: Path) -> int | None:
        """The live holder of the lock at ``path`` (``None``: no lock, or a stale one,
        removed here). Raises :class:`PortInUse` for a lock whose holder cannot be read."""
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        except OSError:
            return None  # a directory we may not read: nothing we can honour
        pid = _read_pid(path)
        age = time.time() - info.st_mtime
        if pid is None:
            if age < OPEN_GRACE:  # another program is writing it right now
                raise self._refuse(None, path)
            stale = True
        elif pid == os.getpid():
            stale = not _held_here(path)  # a dropped object's, or a dead namesake's
        elif not _alive(pid):
            stale = True
        else:
            stale = _has_open(pid, self.device) is False and age > OPEN_GRACE
        if not stale:
            return pid
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`PortInUse` naming the holder's PID."""
        if self.held:
            return
        me = os.getpid()
        with _directory_guard(self.directory):
            for path in [d / name for d in self._look for name in self.names]:
                try:
                    holder = self._holder(path)
                except OSError as exc:  # a stale lock this user may not remove
                    raise PortInUse(f"{self.what} port {self.port}: the stale lock {path}"
                                    f" cannot be removed by this user ({exc.strerror});"
                                    " remove it, then start again") from None
                if holder is not None:
                    raise self._refuse(holder, path)
            tmp = self.directory / f".{self.name}.{me}.{secrets.token_hex(4)}"
            linked: list[Path] = []
            try:
                try:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    try:
                        os.write(fd, f"{me:>10}\n".encode("ascii"))
                    finally:
                        os.close(fd)
                    for path in self.paths:
                        try:
                            os.link(tmp, path)  # atomic: never a half-written lock in place
                        except FileExistsError:
                            raise self._refuse(_read_pid(path), path) from None
                        linked.append(path)
                except OSError as exc:
                    # The directory, not the device: one that cannot hold files
                    # (CARDIO_LOCK_DIR=/proc, a full or read-only file system) is
                    # configuration (22), never a device fault (21).
                    raise DeviceConfigError(
                        f"cannot write the lock {self.path} for {self.what} port"
                        f" {self.port}: {exc.strerror}; set ${LOCK_DIR_ENV} to a writable"
                        " directory") from None
            except BaseException:
                for path in linked:  # never half a lock: the other name stays free
                    with contextlib.suppress(OSError):
                        path.unlink()
                raise
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            self.held = True
            with _held_guard:
                for path in self.paths:
                    _held[str(path)] = weakref.ref(self)

    def release(self, *, guard: bool = True) -> None:
        """Remove the lock file if it is still ours (never another process's)."""
        if not self.held:
            return
        self.held = False
        with _held_guard:
            for path in self.paths:
                ref = _held.get(str(path))
                if ref is not None and ref() in (self, None):
                    del _held[str(path)]
        with _directory_guard(self.directory) if guard else contextlib.nullcontext():
            for path in self.paths:
                if _read_pid(path) == os.getpid():
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

    def __del__(self) -> None:
        # No directory guard here: the collector may run this inside an acquire's guard.
        with contextlib.suppress(Exception):
            self.release(guard=False)


class HeldPort:
    """A serial port opened by one controller: ``serial`` is the pyserial object; closing
    releases TIOCEXCL and the lock file."""

    def __init__(self, serial: Any, lock: PortLock) -> None:
        self.serial = serial
        self.lock = lock
        self.closed = False

    def close(self, *, guard: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            # The flag outlives our descriptor while another one is open (an emulator's
            # pty): clear it, or the next controller of this port is refused for ever.
            with contextlib.suppress(Exception):
                fcntl.ioctl(self.serial.fileno(), termios.TIOCNXCL)
            self.serial.close()
        finally:
            self.lock.release(guard=guard)

    def __del__(self) -> None:
        # A driver dropped without close() still gives its port back.
        with contextlib.suppress(Exception):
            self.close(guard=False)


def open_serial(port: str, what: str, *, lock_dir: str | Path | None = None,
                **settings: Any) -> HeldPort:
    """Open ``port`` with pyserial ``settings`` for this controller alone: the lock file
    first (a held port is refused before it is touched), then the open, then TIOCEXCL.
    :class:`PortInUse` (exit 22) when another controller holds it; :class:`DeviceError`
    (exit 21) when the port cannot be opened at all."""
    import serial

    lock = PortLock(port, what, lock_dir=lock_dir)
    lock.acquire()
    try:
        try:
            ser = serial.Serial(port, **settings)
        except (OSError, ValueError, termios.error) as exc:  # SerialException: OSError
            if getattr(exc, "errno", None) == errno.EBUSY:
                pids = openers(port)
                who = (f"process {', '.join(map(str, pids))}" if pids
                       else "another program (not visible to this user)")
                raise PortInUse(f"{what} port {port} is opened exclusively by {who} without"
                                " a lock file: one controller per device; stop it first"
                                ) from None
            raise DeviceError(f"cannot open the {what} on {port}: {exc}") from None
        try:
            fcntl.ioctl(ser.fileno(), termios.TIOCEXCL)
        except OSError as exc:
            ser.close()
            raise DeviceError(f"cannot take {what} port {port} for this controller alone"
                              f" (TIOCEXCL): {exc.strerror}") from None
    except BaseException:
        lock.release()
        raise
    return HeldPort(ser, lock)
