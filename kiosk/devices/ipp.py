"""IPP Everywhere document printer: a small IPP/1.1–2.0 message codec (RFC 8010) and a client
that prints a PDF and follows the job to its end (RFC 8011), over the standard library's
``http.client``.

Why our own codec rather than a library: pyipp is asyncio/aiohttp-only and has no Print-Job
with a document; pycups needs a CUPS server between us and the printer (another spooler that
would hide the printer's own job states and reasons); ``ipptool`` means a subprocess and
parsing its text. IPP itself is small — a binary attribute list in an HTTP POST — and a
sans-IO codec of ~150 lines is testable byte by byte like the serial protocols, adds no
dependency, and lets the kiosk see exactly what the printer says.

Money-side rule (why :meth:`IppPrinter.print_document` is strict): a job counts as printed
only when the printer says ``completed``; aborted, canceled, a printer that stops answering,
or a deadline reached all raise :class:`~kiosk.devices.errors.PrintJobFailed`, so the kiosk
refunds instead of taking money for a certificate that never came out.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import itertools
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kiosk.devices.errors import (
    DeviceConfigError,
    DeviceTimeout,
    DeviceValueError,
    FrameError,
    PrintJobFailed,
)
from kiosk.devices.model import Fault

# -- codec ---------------------------------------------------------------------------------


class Tag(enum.IntEnum):
    OPERATION = 0x01
    JOB = 0x02
    END = 0x03
    PRINTER = 0x04
    UNSUPPORTED_GROUP = 0x05
    UNSUPPORTED = 0x10
    UNKNOWN = 0x12
    NO_VALUE = 0x13
    INTEGER = 0x21
    BOOLEAN = 0x22
    ENUM = 0x23
    OCTET_STRING = 0x30
    DATETIME = 0x31
    RESOLUTION = 0x32
    RANGE = 0x33
    BEG_COLLECTION = 0x34
    TEXT_LANG = 0x35
    NAME_LANG = 0x36
    END_COLLECTION = 0x37
    TEXT = 0x41
    NAME = 0x42
    KEYWORD = 0x44
    URI = 0x45
    URI_SCHEME = 0x46
    CHARSET = 0x47
    LANGUAGE = 0x48
    MIME = 0x49
    MEMBER_NAME = 0x4A


class Op(enum.IntEnum):
    PRINT_JOB = 0x0002
    CANCEL_JOB = 0x0008
    GET_JOB_ATTRIBUTES = 0x0009
    GET_JOBS = 0x000A
    GET_PRINTER_ATTRIBUTES = 0x000B


class JobState(enum.IntEnum):
    PENDING = 3
    PENDING_HELD = 4
    PROCESSING = 5
    PROCESSING_STOPPED = 6
    CANCELED = 7
    ABORTED = 8
    COMPLETED = 9


SERVER_ERROR_BUSY = 0x0507
#: A job in one of these states will not change any more.
_FINAL = frozenset({JobState.COMPLETED, JobState.ABORTED, JobState.CANCELED})


class IppDecodeError(FrameError):
    """A response that is not a well-formed IPP message (a device error, exit 21)."""


Value = int | bool | str | bytes | tuple[int, ...]


@dataclass
class IppMessage:
    """A request (``code`` = operation) or response (``code`` = status)."""

    code: int
    request_id: int
    groups: list[tuple[int, dict[str, list[Value]]]] = field(default_factory=list)
    version: tuple[int, int] = (2, 0)
    data: bytes = b""

    def get(self, group: int, name: str) -> list[Value]:
        for tag, attrs in self.groups:
            if tag == group and name in attrs:
                return attrs[name]
        return []

    @property
    def ok(self) -> bool:
        return self.code < 0x0100


_STRING_TAGS = {Tag.TEXT, Tag.NAME, Tag.KEYWORD, Tag.URI, Tag.URI_SCHEME, Tag.CHARSET,
                Tag.LANGUAGE, Tag.MIME, Tag.MEMBER_NAME}


def encode_value(tag: int, value: Value) -> bytes:
    if tag in (Tag.INTEGER, Tag.ENUM):
        assert isinstance(value, int)
        return struct.pack(">i", value)
    if tag == Tag.BOOLEAN:
        return b"\x01" if value else b"\x00"
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise DeviceValueError(f"cannot encode {value!r} with tag 0x{tag:02X}")


def encode(msg: IppMessage,
           attributes: list[tuple[int, list[tuple[int, str, list[Value]]]]]) -> bytes:
    """Encode a request: ``attributes`` is a list of (group tag, [(value tag, name,
    values)])."""
    out = bytearray(struct.pack(">BBHI", *msg.version, msg.code, msg.request_id))
    for group, attrs in attributes:
        out.append(group)
        for tag, name, values in attrs:
            for i, value in enumerate(values):
                raw = encode_value(tag, value)
                key = name.encode() if i == 0 else b""
                out += struct.pack(">BH", tag, len(key)) + key + struct.pack(">H", len(raw))
                out += raw
    out.append(Tag.END)
    return bytes(out) + msg.data


def _decode_value(tag: int, raw: bytes) -> Value:
    if tag in (Tag.INTEGER, Tag.ENUM) and len(raw) == 4:
        return int(struct.unpack(">i", raw)[0])
    if tag == Tag.BOOLEAN and len(raw) == 1:
        return bool(raw[0])
    if tag in _STRING_TAGS:
        return raw.decode("utf-8", errors="replace")
    return raw


def decode(data: bytes) -> IppMessage:
    """Decode a message; collections are kept as raw bytes (we never need their members)."""
    if len(data) < 9:
        raise IppDecodeError("IPP message shorter than its header")
    major, minor, code, request_id = struct.unpack(">BBHI", data[:8])
    msg = IppMessage(code, request_id, version=(major, minor))
    pos = 8
    attrs: dict[str, list[Value]] | None = None
    name = ""
    depth = 0
    while True:
        if pos >= len(data):
            raise IppDecodeError("IPP message without end-of-attributes")
        tag = data[pos]
        pos += 1
        if tag == Tag.END:
            break
        if tag < 0x10:
            attrs = {}
            msg.groups.append((tag, attrs))
            continue
        if attrs is None or pos + 2 > len(data):
            raise IppDecodeError("attribute outside a group")
        (nlen,) = struct.unpack(">H", data[pos:pos + 2])
        key = data[pos + 2:pos + 2 + nlen].decode("utf-8", errors="replace")
        pos += 2 + nlen
        if pos + 2 > len(data):
            raise IppDecodeError("truncated attribute")
        (vlen,) = struct.unpack(">H", data[pos:pos + 2])
        raw = data[pos + 2:pos + 2 + vlen]
        if len(raw) != vlen:
            raise IppDecodeError("truncated value")
        pos += 2 + vlen
        if depth:  # inside a collection: only track nesting
            if tag == Tag.BEG_COLLECTION:
                depth += 1
            elif tag == Tag.END_COLLECTION:
                depth -= 1
            continue
        if nlen:
            name = key
        if tag == Tag.BEG_COLLECTION:
            depth = 1
            attrs.setdefault(name, []).append(b"")  # present, members not kept
            continue
        attrs.setdefault(name, []).append(_decode_value(tag, raw))
    msg.data = data[pos:]
    return msg


# -- printer-state-reasons → device events -------------------------------------------------

#: Reason keyword (without -report/-warning/-error) → our fault kind; one place per fact.
REASON_FAULTS: dict[str, str] = {
    "media-empty": "out-of-paper",
    "media-needed": "out-of-paper",
    "media-jam": "jam",
    "toner-low": "toner-low",
    "toner-empty": "out-of-toner",
    "marker-supply-empty": "out-of-toner",
    "offline": "offline",
    "shutdown": "offline",
    "door-open": "door-open",
}
#: Fault kinds that stop printing (the others are warnings).
BLOCKING = frozenset({"out-of-paper", "jam", "out-of-toner", "offline", "door-open"})


def reason_faults(reasons: list[str], device: str = "printer") -> list[Fault]:
    """Map printer-state-reasons to faults; unknown and "none" reasons are ignored."""
    out: list[Fault] = []
    for reason in reasons:
        base = reason
        for suffix in ("-report", "-warning", "-error"):
            base = base.removesuffix(suffix)
        kind = REASON_FAULTS.get(base)
        if kind is not None:
            out.append(Fault(device, kind, reason))
    return out


# -- the client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PrinterStatus:
    state: int  # 3 idle, 4 processing, 5 stopped
    reasons: list[str]
    faults: list[Fault]


@dataclass(frozen=True)
class JobResult:
    job_id: int
    state: JobState
    reasons: list[str]
    events: list[Fault]


MAX_RESPONSE = 1024 * 1024
"""An IPP response the kiosk reads (status, job state: a few kB in practice)."""


class IppPrinter:
    """An IPP Everywhere printer at an ``ipp://host:port/path`` URL."""

    device = "printer"

    def __init__(self, url: str, *, timeout: float = 10.0, user: str = "cardio-kiosk") -> None:
        try:  # urlsplit and .port raise ValueError ("[::1", a port over 65535)
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise DeviceConfigError(f"not an ipp:// printer URL: {url!r} ({exc})") from None
        if parts.scheme not in ("ipp", "http") or not parts.hostname:
            raise DeviceConfigError(f"not an ipp:// printer URL: {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = port or 631
        self.path = parts.path or "/ipp/print"
        self.timeout = timeout
        self.user = user
        self._ids = itertools.count(1)

    def _op_attrs(self) -> list[tuple[int, str, list[Value]]]:
        return [(Tag.CHARSET, "attributes-charset", ["utf-8"]),
                (Tag.LANGUAGE, "attributes-natural-language", ["en"]),
                (Tag.URI, "printer-uri", [self.url])]

    def _call(self, op: Op, extra: list[tuple[int, str, list[Value]]],
              data: bytes = b"") -> IppMessage:
        body = encode(IppMessage(op, next(self._ids), data=data),
                      [(Tag.OPERATION, self._op_attrs() + extra)])
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", self.path, body, {"Content-Type": "application/ipp"})
            response = conn.getresponse()
            # Read one byte past the bound: a Content-Length of 10^12 made read() ask for
            # the whole buffer at once (MemoryError, exit 70).
            payload = response.read(MAX_RESPONSE + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise DeviceTimeout(f"printer {self.url} does not answer"
                                f" ({' '.join(repr(str(exc))[1:-1].split())})") from None
        finally:
            conn.close()
        if response.status != 200:
            raise DeviceTimeout(f"printer {self.url}: HTTP {response.status}")
        if len(payload) > MAX_RESPONSE:
            raise DeviceTimeout(f"printer {self.url}: an IPP response of more than"
                                f" {MAX_RESPONSE:,} bytes; not a printer's status")
        try:
            return decode(payload)
        except IppDecodeError as exc:
            raise DeviceTimeout(f"printer {self.url}: bad IPP response ({exc})") from None

    def status(self) -> PrinterStatus:
        msg = self._call(Op.GET_PRINTER_ATTRIBUTES, [
            (Tag.KEYWORD, "requested-attributes", ["printer-state", "printer-state-reasons"])])
        state = msg.get(Tag.PRINTER, "printer-state")
        reasons = [str(r) for r in msg.get(Tag.PRINTER, "printer-state-reasons")]
        return PrinterStatus(state[0] if state and isinstance(state[0], int) else 0, reasons,
                             reason_faults(reasons, self.device))

    def submit(self, document: bytes, *, name: str = "certificate",
               document_format: str = "application/pdf", busy_wait: float = 30.0) -> int:
        """Send the job; a printer busy with another job (server-error-busy) is asked again
        until ``busy_wait`` runs out."""
        deadline = time.monotonic() + busy_wait
        while True:
            msg = self._call(Op.PRINT_JOB, [
                (Tag.NAME, "requesting-user-name", [self.user]),
                (Tag.NAME, "job-name", [name]),
                (Tag.MIME, "document-format", [document_format]),
            ], data=document)
            if msg.code != SERVER_ERROR_BUSY or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not msg.ok:
            raise PrintJobFailed(f"printer refused the job (IPP status 0x{msg.code:04X})")
        job_id = msg.get(Tag.JOB, "job-id")
        if not job_id or not isinstance(job_id[0], int):
            raise PrintJobFailed("printer accepted the job without a job-id")
        return job_id[0]

    def job(self, job_id: int) -> tuple[JobState, list[str]]:
        msg = self._call(Op.GET_JOB_ATTRIBUTES, [
            (Tag.INTEGER, "job-id", [job_id]),
            (Tag.KEYWORD, "requested-attributes", ["job-state", "job-state-reasons"])])
        if not msg.ok:
            raise PrintJobFailed(f"job {job_id} unknown to the printer (0x{msg.code:04X})")
        state = msg.get(Tag.JOB, "job-state")
        reasons = [str(r) for r in msg.get(Tag.JOB, "job-state-reasons")]
        if not state or not isinstance(state[0], int) or state[0] not in set(JobState):
            raise DeviceTimeout(f"printer {self.url}: job {job_id} without a valid job-state")
        return JobState(state[0]), reasons

    def jobs(self, which: str = "all") -> list[tuple[int, str, JobState]]:
        """Get-Jobs: ``(job-id, job-name, job-state)`` of the jobs the printer still knows
        (``which``: ``all``, ``completed`` or ``not-completed``). Recovery uses it to learn
        what became of a job the kiosk sent before a crash: the runner names each job after
        the session's request id, so the name finds it without any job id journalled."""
        msg = self._call(Op.GET_JOBS, [
            (Tag.NAME, "requesting-user-name", [self.user]),
            (Tag.KEYWORD, "which-jobs", [which]),
            (Tag.KEYWORD, "requested-attributes", ["job-id", "job-name", "job-state"])])
        if not msg.ok:
            raise DeviceTimeout(f"printer {self.url}: Get-Jobs refused (0x{msg.code:04X})")
        out: list[tuple[int, str, JobState]] = []
        for tag, attrs in msg.groups:
            if tag != Tag.JOB:
                continue
            ids, names, states = (attrs.get("job-id", []), attrs.get("job-name", []),
                                  attrs.get("job-state", []))
            if not ids or not isinstance(ids[0], int) or not states or \
                    not isinstance(states[0], int) or states[0] not in set(JobState):
                raise DeviceTimeout(f"printer {self.url}: Get-Jobs answered a job without"
                                    " a valid job-id/job-state")
            out.append((ids[0], str(names[0]) if names else "", JobState(states[0])))
        return out

    def follow(self, job_id: int, *, bound: float = 120.0, poll: float = 0.2) -> JobState:
        """Wait for job ``job_id`` to end; one still pending or processing after ``bound``
        seconds is cancelled (a printer waiting for paper would otherwise print it once
        someone loads some) and its state read again — a job that completed meanwhile
        says so. Returns the last state seen."""
        deadline = time.monotonic() + bound
        state, _ = self.job(job_id)
        while state not in _FINAL and time.monotonic() < deadline:
            time.sleep(poll)
            state, _ = self.job(job_id)
        if state not in _FINAL:
            self.cancel(job_id)
            state, _ = self.job(job_id)
        return state

    def cancel(self, job_id: int) -> None:
        """Best-effort Cancel-Job: a job we gave up on must not print later (a printer
        waiting for paper would otherwise print it once someone loads some)."""
        with contextlib.suppress(DeviceTimeout):
            self._call(Op.CANCEL_JOB, [(Tag.INTEGER, "job-id", [job_id]),
                                       (Tag.NAME, "requesting-user-name", [self.user])])

    def print_document(self, document: bytes, *, name: str = "certificate",
                       timeout: float = 60.0, poll: float = 0.05,
                       offline_after: float = 5.0) -> JobResult:
        """Print and follow the job; return only when it completed, else raise
        :class:`PrintJobFailed` (with the printer's reasons in the message). A printer that
        does not answer for ``offline_after`` seconds mid-job counts as offline."""
        events: list[Fault] = []
        seen: set[str] = set()
        try:
            job_id = self.submit(document, name=name, busy_wait=timeout)
        except DeviceTimeout as exc:
            raise PrintJobFailed(f"printer offline, nothing sent ({exc}); not printed") from None
        deadline = time.monotonic() + timeout
        state, reasons = JobState.PENDING, list[str]()
        unreachable_since: float | None = None
        while True:
            try:
                state, reasons = self.job(job_id)
                printer = self.status()
                unreachable_since = None
            except DeviceTimeout as exc:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > offline_after or now > deadline:
                    self.cancel(job_id)
                    raise PrintJobFailed(f"job {job_id}: printer went offline mid-job "
                                         f"({exc}); not printed") from None
                time.sleep(poll)
                continue
            for fault in printer.faults:
                if fault.detail not in seen:
                    seen.add(fault.detail)
                    events.append(fault)
            if state == JobState.COMPLETED:
                return JobResult(job_id, state, reasons, events)
            if state in (JobState.ABORTED, JobState.CANCELED):
                why = ", ".join(f.kind for f in events if f.kind in BLOCKING) or ", ".join(
                    reasons)
                raise PrintJobFailed(f"job {job_id} {state.name.lower()}: {why}; not printed")
            if time.monotonic() > deadline:
                self.cancel(job_id)
                raise PrintJobFailed(f"job {job_id} still {state.name.lower()} after "
                                     f"{timeout:.0f} s; not printed")
            time.sleep(poll)
