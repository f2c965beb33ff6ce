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


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
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
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except MalformedMessage as e:
        raise MalformedMessage(f"{cls.__name__}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MalformedMessage(f"{cls.__name__}: not UTF-8 JSON ({type(e).__name__})"
                               ) from None
    return from_obj(cls, obj)


def from_obj(cls: type[M], obj: Any) -> M:
    msg = _value(cls, obj, cls.__name__, 0)
    if getattr(msg, "v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"{cls.__name__}: version {msg.v!r} is not "
                                 f"{PROTOCOL_VERSION!r}")
    return typing.cast(M, msg)


def _no_constant(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON (RFC 8259): refused while parsing."""
    raise MalformedMessage(f"{name} is not JSON")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = _HINTS[cls] = typing.get_type_hints(cls)
    return h


def _value(tp: Any, obj: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise MalformedMessage(f"{where}: nested too deeply")
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if obj is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, obj, where, depth)
    if tp is Any:
        return obj
    if tp is str:
        if not isinstance(obj, str):
            raise MalformedMessage(f"{where}: expected a string")
        if len(obj) > MAX_STRING:
            raise MessageTooLarge(f"{where}: string longer than {MAX_STRING}")
        return obj
    if tp is bool:
        if not isinstance(obj, bool):
            raise MalformedMessage(f"{where}: expected true or false")
        return obj
    if tp is int:
        if isinstance(obj, bool) or not isinstance(obj, int):
            raise MalformedMessage(f"{where}: expected an integer")
        return obj
    if tp is float:
        if isinstance(obj, bool) or not isinstance(obj, (int, float)):
            raise MalformedMessage(f"{where}: expected a number")
        return float(obj)
    if origin in (list, tuple):
        if not isinstance(obj, list):
            raise MalformedMessage(f"{where}: expected a list")
        if len(obj) > MAX_LIST:
            raise MessageTooLarge(f"{where}: more than {MAX_LIST} items")
        (inner,) = get_args(tp)[:1]
        items = [_value(inner, v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(obj, dict):
            raise MalformedMessage(f"{where}: expected an object")
        _k, vt = get_args(tp)
        if len(obj) > MAX_LIST:
            raise MessageTooLarge(f"{where}: more than {MAX_LIST} keys")
        return {k: _value(vt, v, f"{where}.{k}", depth + 1) for k, v in obj.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(obj, dict):
            raise MalformedMessage(f"{where}: expected an object")
        hints = _hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = set(obj) - set(fields)
        if unknown:
            raise MalformedMessage(f"{where}: unknown keys {sorted(unknown)[:5]}")
        kwargs = {}
        for name, f in fields.items():
            if name not in obj:
                if f.default is dataclasses.MISSING and \
                        f.default_factory is dataclasses.MISSING:
                    raise MalformedMessage(f"{where}: missing key {name!r}")
                continue
            kwargs[name] = _value(hints[name], obj[name], f"{where}.{name}", depth + 1)
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as e:
            raise MalformedMessage(f"{where}: {e}") from None
    # A message class declares a field type the codec does not know: a bug in the
    # message definitions, not bad input — but still a typed error, never a crash.
    raise ProtocolError(f"unsupported field type {tp!r} in the message definitions")
