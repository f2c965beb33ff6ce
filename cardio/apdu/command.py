"""ISO 7816-4 command and response APDUs, short and extended, cases 1-4.

Sans-IO: these objects turn values into bytes and bytes into values, and nothing else.
Both the client (which encodes commands and parses responses) and the software card
(which parses commands and encodes responses) use them, so the two sides cannot disagree
about framing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cardio.apdu.errors import MalformedApdu

SHORT_MAX_LC = 255
SHORT_MAX_LE = 256
EXTENDED_MAX_LC = 65535
EXTENDED_MAX_LE = 65536


@dataclass(frozen=True)
class CommandApdu:
    """A command APDU.

    ``le`` is the number of response bytes expected: ``None`` for no Le field, otherwise
    1..65536 (256 is coded ``00`` in short form and 65536 ``0000`` in extended form).
    ``extended`` forces extended-length coding; by default it is used only when Lc or Le
    do not fit the short form, because many readers and phones pass short APDUs only.
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    extended: bool = field(default=False)

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise MalformedApdu(f"{name.upper()} must be one byte, got {value!r}")
        if len(self.data) > EXTENDED_MAX_LC:
            raise MalformedApdu(f"command data of {len(self.data)} bytes exceeds 65535")
        if self.le is not None and not 1 <= self.le <= EXTENDED_MAX_LE:
            raise MalformedApdu(f"Le must be 1..65536, got {self.le}")

    @property
    def case(self) -> int:
        """The ISO 7816-3 case: 1 (no data, no Le) to 4 (data and Le)."""
        if self.data:
            return 4 if self.le is not None else 3
        return 2 if self.le is not None else 1

    @property
    def is_extended(self) -> bool:
        """True when this APDU is (or must be) coded with extended lengths."""
        if not self.data and self.le is None:
            return False  # case 1 has no length fields to extend
        return (
            self.extended
            or len(self.data) > SHORT_MAX_LC
            or (self.le is not None and self.le > SHORT_MAX_LE)
        )

    def encode(self) -> bytes:
        """The bytes on the wire."""
        header = bytes((self.cla, self.ins, self.p1, self.p2))
        if not self.is_extended:
            body = b""
            if self.data:
                body += bytes((len(self.data),)) + self.data
            if self.le is not None:
                body += bytes((self.le & 0xFF,))
            return header + body
        body = b"\x00"
        if self.data:
            body += len(self.data).to_bytes(2, "big") + self.data
        if self.le is not None:
            body += (self.le & 0xFFFF).to_bytes(2, "big")
        return header + body

    def __bytes__(self) -> bytes:
        return self.encode()

    @classmethod
    def parse(cls, raw: bytes) -> CommandApdu:
        """Parse and validate a command APDU; raise :class:`MalformedApdu` when its
        lengths do not add up (the card answers those with ``6700``)."""
        n = len(raw)
        if n < 4:
            raise MalformedApdu(f"a command APDU has at least 4 bytes, got {n}")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:
            return cls(cla, ins, p1, p2)
        b4 = raw[4]
        if n == 5:
            return cls(cla, ins, p1, p2, le=b4 or SHORT_MAX_LE)
        if b4 != 0:
            # Short case 3 or 4.
            if n == 5 + b4:
                return cls(cla, ins, p1, p2, data=bytes(raw[5:]))
            if n == 6 + b4:
                return cls(cla, ins, p1, p2, data=bytes(raw[5:-1]), le=raw[-1] or SHORT_MAX_LE)
            raise MalformedApdu(f"Lc={b4} does not match an APDU of {n} bytes")
        # b4 == 0 and more bytes follow: extended length.
        if n == 7:
            le = int.from_bytes(raw[5:7], "big") or EXTENDED_MAX_LE
            return cls(cla, ins, p1, p2, le=le, extended=True)
        if n < 7:
            raise MalformedApdu(f"truncated extended APDU of {n} bytes")
        lc = int.from_bytes(raw[5:7], "big")
        if lc == 0:
            raise MalformedApdu("extended Lc of zero")
        if n == 7 + lc:
            return cls(cla, ins, p1, p2, data=bytes(raw[7:]), extended=True)
        if n == 9 + lc:
            le = int.from_bytes(raw[-2:], "big") or EXTENDED_MAX_LE
            return cls(cla, ins, p1, p2, data=bytes(raw[7:-2]), le=le, extended=True)
        raise MalformedApdu(f"extended Lc={lc} does not match an APDU of {n} bytes")

    def __repr__(self) -> str:
        # Never show the data field: it may be a PIN.
        return (
            f"CommandApdu({self.cla:02X} {self.ins:02X} {self.p1:02X} {self.p2:02X},"
            f" Lc={len(self.data)}, Le={self.le}{', ext' if self.is_extended else ''})"
        )


@dataclass(frozen=True)
class ResponseApdu:
    """A response APDU: data and the two status bytes."""

    data: bytes
    sw1: int
    sw2: int

    @property
    def sw(self) -> int:
        """The status word as one number, e.g. ``0x9000``."""
        return (self.sw1 << 8) | self.sw2

    def encode(self) -> bytes:
        return self.data + bytes((self.sw1, self.sw2))

    def __bytes__(self) -> bytes:
        return self.encode()

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise MalformedApdu(f"a response APDU has at least 2 bytes, got {len(raw)}")
        return cls(bytes(raw[:-2]), raw[-2], raw[-1])

    @classmethod
    def status(cls, sw: int, data: bytes = b"") -> ResponseApdu:
        return cls(data, sw >> 8, sw & 0xFF)

    def __repr__(self) -> str:
        return f"ResponseApdu(len={len(self.data)}, SW={self.sw:04X})"
