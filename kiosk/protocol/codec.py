"""Strict JSON encoding of the issuance protocol's dataclass messages.

Every message is a frozen dataclass whose fields are plain JSON types (``str``, ``int``,
``bool``, ``float``), optionals of them, lists of them or of other messages, ``dict[str,
str]``, or a raw JSON object (``dict[str, Any]``, for the document body that the document
model validates itself). Decoding refuses anything it was not told about — unknown keys,
missing keys, a bool where an int belongs, a foreign protocol version, input over the size
limit — with a typed :class:`ProtocolError`, because a lenient parser is where crossed or
smuggled data would get in. Pure: bytes in, objects out.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

from cardio.errors import CardioError

__all__ = [
    "MAX_MESSAGE",
    "PROTOCOL_VERSION",
    "MalformedMessage",
    "Message",
    "MessageTooLarge",
    "ProtocolError",
    "UnsupportedVersion",
    "decode",
    "encode",
]

PROTOCOL_VERSION = "cardio-issuance/1"
"""The one version this module speaks; every message carries it as ``v``."""

MAX_MESSAGE = 64 * 1024
"""Largest request message a service accepts (a certificate is ~1.5 KB; nothing a kiosk
sends comes near). Documents travel in responses, bounded by :data:`MAX_DOCUMENT`."""

MAX_DOCUMENT = 512 * 1024
MAX_STRING = 16 * 1024
MAX_LIST = 256
MAX_DEPTH = 8


class ProtocolError(CardioError):
    """A protocol message that cannot be accepted."""

    exit_code = 1
    code = "protocol_error"


class MalformedMessage(ProtocolError):
    """Not JSON, wrong shape, wrong types, unknown or missing keys."""

    code = "malformed"


class MessageTooLarge(ProtocolError):
    """Input over the size limit, refused before it is parsed."""

    code = "too_large"


class UnsupportedVersion(ProtocolError):
    """A message of another protocol version."""

    code = "unsupported_version"


class Message:
    """Mixin of every protocol message: ``v`` is the protocol version."""

    v: str
    __dataclass_fields__: ClassVar[dict[str, Any]]


M = TypeVar("M", bound=Message)


_FIELDS: dict[type, tuple[str, ...] | None] = {}
"""Field names per dataclass type (``None``: not a dataclass), looked up once per type."""


def _to_json(value: Any) -> Any:
    tp = type(value)
    if tp not in _FIELDS:
        _FIELDS[tp] = (tuple(f.name for f in dataclasses.fields(value))
                       if dataclasses.is_dataclass(value) and not isinstance(value, type)
                       else None)
    names = _FIELDS[tp]
    if names is not None:
        return {n: _to_json(getattr(value, n)) for n in names}
    if tp is str or tp is int or tp is bool or tp is float or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


def encode(msg: Message) -> bytes:
    """Compact UTF-8 JSON with sorted keys (deterministic, so it can be digested)."""
    return json.dumps(_to_json(msg), ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def decode(cls: type[M], data: bytes, *, limit: int = MAX_MESSAGE) -> M:
    """Parse ``data`` as a ``cls`` message, strictly."""
    if len(data) > limit:
        raise MessageTooLarge(f"{cls.__name__} of {len(data)} bytes exceeds {limit}")
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constant,
                         object_pairs_hook=_unique_keys)
    except MalformedMessage as e:
        raise MalformedMessage(f"{cls.__name__}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MalformedMessage(f"{cls.__name__}: not UTF-8 JSON ({type(e).__name__})"
                               ) from None
    return from_obj(cls, obj)


def from_obj(cls: type[M], obj: Any) -> M:
    try:
        msg = _converter(cls)(obj, 0)
    except _Refusal as e:
        raise e.kind(f"{cls.__name__}{''.join(reversed(e.path))}: {e.message}") from None
    if getattr(msg, "v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"{cls.__name__}: version {msg.v!r} is not "
                                 f"{PROTOCOL_VERSION!r}")
    return typing.cast(M, msg)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with a key twice is refused: JSON leaves it to the reader which one
    counts, so a signed body could mean one thing to us and another to a second parser."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        dup = next(k for k in keys if keys.count(k) > 1)
        raise MalformedMessage(f"the key {dup!r} appears twice")
    return obj


def _no_constant(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON (RFC 8259): refused while parsing."""
    raise MalformedMessage(f"{name} is not JSON")


class _Refusal(Exception):
    """Raised inside the converters; the path to the offending value is collected while
    it unwinds (so no path string is built for input that is fine)."""

    def __init__(self, kind: type[ProtocolError], message: str) -> None:
        self.kind, self.message = kind, message
        self.path: list[str] = []


_Converter = typing.Callable[[Any, int], Any]
_CONVERTERS: dict[Any, _Converter] = {}


def _converter(tp: Any) -> _Converter:
    """The strict converter for a field type, built once per type: decoding walks
    closures instead of inspecting type hints for every value."""
    conv = _CONVERTERS.get(tp)
    if conv is None:
        conv = _CONVERTERS[tp] = _build(tp)
    return conv


_SCALARS: dict[Any, tuple[tuple[type, ...], str]] = {
    str: ((str,), "expected a string"), bool: ((bool,), "expected true or false"),
    int: ((int,), "expected an integer"), float: ((int, float), "expected a number"),
}
"""Exact JSON types a scalar field takes (``True`` is not an integer) and the refusal."""


def _descend(conv: _Converter, value: Any, depth: int, key: str | int) -> Any:
    """Convert a member one level down (refused past :data:`MAX_DEPTH`); a refusal records
    where it happened (an ``int`` key is a list index)."""
    try:
        if depth >= MAX_DEPTH:
            raise _Refusal(MalformedMessage, "nested too deeply")
        return conv(value, depth + 1)
    except _Refusal as e:
        e.path.append(f"[{key}]" if isinstance(key, int) else f".{key}")
        raise


def _build(tp: Any) -> _Converter:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        optional = type(None) in args
        (inner,) = [_converter(a) for a in args if a is not type(None)]
        return lambda obj, depth: None if obj is None and optional else inner(obj, depth)
    if tp is Any:
        return lambda obj, depth: obj
    if tp in _SCALARS:
        accepted, expected = _SCALARS[tp]

        def scalar(obj: Any, depth: int) -> Any:
            if type(obj) not in accepted:
                raise _Refusal(MalformedMessage, expected)
            if type(obj) is str and len(obj) > MAX_STRING:
                raise _Refusal(MessageTooLarge, f"string longer than {MAX_STRING}")
            return float(obj) if tp is float else obj
        return scalar
    if origin in (list, tuple):
        item = _converter(get_args(tp)[0])
        as_tuple = origin is tuple

        def sequence(obj: Any, depth: int) -> Any:
            if type(obj) is not list:
                raise _Refusal(MalformedMessage, "expected a list")
            if len(obj) > MAX_LIST:
                raise _Refusal(MessageTooLarge, f"more than {MAX_LIST} items")
            out = [_descend(item, v, depth, i) for i, v in enumerate(obj)]
            return tuple(out) if as_tuple else out
        return sequence
    if origin is dict:
        value = _converter(get_args(tp)[1])

        def mapping(obj: Any, depth: int) -> Any:
            if type(obj) is not dict:
                raise _Refusal(MalformedMessage, "expected an object")
            if len(obj) > MAX_LIST:
                raise _Refusal(MessageTooLarge, f"more than {MAX_LIST} keys")
            return {k: _descend(value, v, depth, k) for k, v in obj.items()}
        return mapping
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        cls = tp
        fields = dataclasses.fields(cls)
        names = frozenset(f.name for f in fields)
        required = frozenset(f.name for f in fields if f.default is dataclasses.MISSING
                             and f.default_factory is dataclasses.MISSING)
        # Field converters are built on first use (a message type may contain itself),
        # all or nothing: a failed build is not cached.
        field_refs: list[tuple[str, _Converter]] = []

        def record(obj: Any, depth: int) -> Any:
            if type(obj) is not dict:
                raise _Refusal(MalformedMessage, "expected an object")
            if not field_refs:
                hints = typing.get_type_hints(cls)
                field_refs.extend([(f.name, _converter(hints[f.name])) for f in fields])
            if not names.issuperset(obj):
                unknown = set(obj) - names
                raise _Refusal(MalformedMessage, f"unknown keys {sorted(unknown)[:5]}")
            kwargs = {}
            for name, conv in field_refs:
                if name in obj:
                    kwargs[name] = _descend(conv, obj[name], depth, name)
                elif name in required:
                    raise _Refusal(MalformedMessage, f"missing key {name!r}")
            try:
                return cls(**kwargs)
            except (TypeError, ValueError) as e:
                raise _Refusal(MalformedMessage, str(e)) from None
        return record
    # A message class declares a field type the codec does not know: a bug in the
    # message definitions, not bad input — but still a typed error, never a crash.
    raise ProtocolError(f"unsupported field type {tp!r} in the message definitions")
