"""BER-TLV as the My Number card writes it, read and written byte for byte.

The card does not write DER: it uses long-form tags for small tag numbers (``FF 10``),
non-minimal long lengths (``82 00 9F`` where ``81 9F`` would do) and pads files with
``FF``. The digests in the text AP's integrity record cover encoded bytes, so a parser
that normalises would break signature checks, and an emulator that normalises would not
be faithful. A :class:`Tlv` therefore keeps the exact tag and length octets it came with
and re-encodes to the same bytes.

Tags are handled as integers of their raw octets (``0xFF10``, ``0xDF21``, ``0x7F21``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cardio.apdu.errors import TlvError

FILLER = 0xFF
MAX_LENGTH_OCTETS = 4


def tag_is_constructed(tag: int) -> bool:
    """Bit 6 of the first tag octet marks a constructed object."""
    first = tag.to_bytes(tag_size(tag), "big")[0]
    return bool(first & 0x20)


def tag_size(tag: int) -> int:
    return max(1, (tag.bit_length() + 7) // 8)


def encode_length(length: int, octets: int | None = None) -> bytes:
    """Encode a length; ``octets`` forces the long form with that many length bytes
    (1..4), as the card does with ``82 00 9F``. ``octets=0`` forces the short form."""
    if length < 0:
        raise TlvError("negative length")
    if octets is None:
        if length < 0x80:
            return bytes((length,))
        octets = (length.bit_length() + 7) // 8
    if octets == 0:
        if length >= 0x80:
            raise TlvError(f"length {length} does not fit the short form")
        return bytes((length,))
    if not 1 <= octets <= MAX_LENGTH_OCTETS or length >= 1 << (8 * octets):
        raise TlvError(f"length {length} does not fit {octets} length octets")
    return bytes((0x80 | octets,)) + length.to_bytes(octets, "big")


@dataclass
class Tlv:
    """One BER-TLV object with its exact encoding.

    ``length_octets`` is ``0`` for the short form, or the number of bytes after the
    ``8x`` byte in the long form. ``offset`` is where the object started in the buffer it
    was parsed from (used for the card's offset tables and digest ranges).
    """

    tag: int
    value: bytes
    length_octets: int | None = None
    offset: int = 0
    _children: list[Tlv] | None = field(default=None, repr=False, compare=False)

    @property
    def constructed(self) -> bool:
        return tag_is_constructed(self.tag)

    @property
    def tag_bytes(self) -> bytes:
        return self.tag.to_bytes(tag_size(self.tag), "big")

    @property
    def header(self) -> bytes:
        return self.tag_bytes + encode_length(len(self.value), self.length_octets)

    def encode(self) -> bytes:
        return self.header + self.value

    def __bytes__(self) -> bytes:
        return self.encode()

    @property
    def size(self) -> int:
        return len(self.header) + len(self.value)

    @property
    def children(self) -> list[Tlv]:
        """The objects inside a constructed object, parsed lazily, with offsets relative
        to the start of the outermost buffer."""
        if not self.constructed:
            raise TlvError(f"tag {self.tag:X} is primitive and has no children")
        if self._children is None:
            base = self.offset + len(self.header)
            self._children = list(iter_tlv(self.value, base=base, allow_filler=True))
        return self._children

    def find(self, tag: int) -> Tlv | None:
        """The first direct child with this tag."""
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def get(self, tag: int) -> Tlv:
        """The first direct child with this tag; :class:`TlvError` when it is missing."""
        child = self.find(tag)
        if child is None:
            raise TlvError(f"tag {tag:X} missing inside {self.tag:X}")
        return child


def build(tag: int, value: bytes | Iterable[Tlv], length_octets: int | None = None) -> Tlv:
    """Build an object; ``value`` may be bytes or child objects (encoded in order)."""
    raw = value if isinstance(value, bytes | bytearray) else b"".join(c.encode() for c in value)
    return Tlv(tag, bytes(raw), length_octets)


def parse_header(data: bytes, pos: int = 0) -> tuple[int, int, int, int]:
    """Parse a tag and a length at ``pos``.

    Returns ``(tag, length, length_octets, header_size)``. Raises :class:`TlvError` when
    the header itself is truncated; the value may extend past ``data`` (the caller decides
    whether that is an error or a reason to read more from the card).
    """
    n = len(data)
    if pos >= n:
        raise TlvError("no data for a tag")
    start = pos
    first = data[pos]
    pos += 1
    tag = first
    if first & 0x1F == 0x1F:
        while True:
            if pos >= n:
                raise TlvError("truncated multi-byte tag")
            b = data[pos]
            pos += 1
            tag = (tag << 8) | b
            if not b & 0x80:
                break
            if pos - start > 4:
                raise TlvError("tag longer than 4 bytes")
    if pos >= n:
        raise TlvError("truncated: no length after the tag")
    lb = data[pos]
    pos += 1
    if lb < 0x80:
        return tag, lb, 0, pos - start
    octets = lb & 0x7F
    if octets == 0:
        raise TlvError("indefinite length is not used by this card")
    if octets > MAX_LENGTH_OCTETS:
        raise TlvError(f"length of {octets} octets is not supported")
    if pos + octets > n:
        raise TlvError("truncated long-form length")
    length = int.from_bytes(data[pos : pos + octets], "big")
    pos += octets
    return tag, length, octets, pos - start


def parse(data: bytes, pos: int = 0, *, base: int = 0) -> Tlv:
    """Parse one complete object at ``pos``; a value that runs past the data is an error."""
    tag, length, octets, hsize = parse_header(data, pos)
    start = pos + hsize
    end = start + length
    if end > len(data):
        raise TlvError(
            f"tag {tag:X} declares {length} bytes but only {len(data) - start} follow"
        )
    return Tlv(tag, bytes(data[start:end]), octets, offset=base + pos)


def iter_tlv(data: bytes, *, base: int = 0, allow_filler: bool = True) -> Iterator[Tlv]:
    """Iterate the objects in ``data`` one after another; stop at ``FF`` filler that runs
    to the end (the card pads files and some values that way)."""
    pos = 0
    n = len(data)
    while pos < n:
        if allow_filler and data[pos] == FILLER and all(b == FILLER for b in data[pos:]):
            return
        obj = parse(data, pos, base=base)
        yield obj
        pos += obj.size


def total_size(header: bytes) -> int:
    """The full size of the object whose first bytes are ``header``: what a reader needs
    to know after the first READ BINARY to fetch the rest."""
    _tag, length, _octets, hsize = parse_header(header, 0)
    return hsize + length
