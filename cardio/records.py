"""The records the 券面 APs hold, parsed from the card's exact bytes, and the checks of
J-LIS's signatures over them (reference §5.2, §5.3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from cardio.apdu import tlv
from cardio.apdu.errors import TlvError
from cardio.crypto import (
    SignatureError,
    decode_rsa_public_key,
    sha256_digest_info_payload,
    verify_payload,
    verify_sha256,
)
from cardio.errors import CardioError

TAG_MY_NUMBER = 0xFF10
TAG_ATTRIBUTES = 0xFF20
TAG_INTEGRITY = 0xFF30
TAG_SIGNED_PUBKEY = 0xFF50
TAG_FACE = 0xFF20
TAG_VISUAL_INFO = 0xFF30


class RecordError(CardioError):
    """A file whose content is not what the card writes there."""


def _parse(data: bytes, tag: int, what: str, *, nested: bool = True) -> tlv.Tlv:
    """Parse the record's outer object (and its children, when ``nested``)."""
    try:
        obj = tlv.parse(data)
        if obj.tag != tag:
            raise RecordError(f"{what}: expected tag {tag:X}, found {obj.tag:X}")
        if nested:
            _ = obj.children
        return obj
    except TlvError as exc:
        raise RecordError(f"{what}: {exc}") from exc


def _child(obj: tlv.Tlv, tag: int, what: str) -> tlv.Tlv:
    try:
        return obj.get(tag)
    except TlvError as exc:
        raise RecordError(f"{what}: {exc}") from exc


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{what} is not UTF-8") from exc


@dataclass(frozen=True)
class MyNumberRecord:
    """Text AP EF 0001: ``FF 10 0C`` + 12 ASCII digits, stored in 17 bytes with FF filler."""

    my_number: str = field(repr=False)
    physical: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> MyNumberRecord:
        # FF 10 has the constructed bit set, yet its value is the bare digits.
        obj = _parse(data, TAG_MY_NUMBER, "個人番号 record", nested=False)
        value = obj.value
        if len(value) != 12 or not value.isdigit():
            raise RecordError("個人番号 record does not hold 12 digits")
        return cls(value.decode("ascii"), bytes(data))


def _parse_flat(data: bytes, tag: int, what: str) -> tuple[tlv.Tlv, list[tlv.Tlv]]:
    """Parse an outer object whose children are TLV (the 0002/0003/... records)."""
    obj = _parse(data, tag, what)
    return obj, obj.children


@dataclass(frozen=True)
class Attributes:
    """Text AP EF 0002, 基本4情報: ``FF 20 { DF21 offsets, DF22 氏名, DF23 住所,
    DF24 生年月日 YYYYMMDD, DF25 性別 }``. ``signed_part`` is what DF32 hashes: the
    encoded bytes from DF22 to the end of the object."""

    name: str = field(repr=False)
    address: str = field(repr=False)
    birth: str = field(repr=False)
    sex: str = field(repr=False)
    offsets: tuple[int, ...]
    signed_part: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> Attributes:
        obj, children = _parse_flat(data, TAG_ATTRIBUTES, "基本4情報 record")
        by_tag = {c.tag: c for c in children}
        try:
            off_raw = by_tag[0xDF21].value
            name = _text(by_tag[0xDF22].value, "氏名")
            address = _text(by_tag[0xDF23].value, "住所")
            birth = by_tag[0xDF24].value.decode("ascii")
            sex = by_tag[0xDF25].value.decode("ascii")
        except KeyError as exc:
            raise RecordError(f"基本4情報 record lacks tag {exc.args[0]:X}") from exc
        except UnicodeDecodeError as exc:
            raise RecordError("基本4情報 birth date or sex is not ASCII") from exc
        offsets = tuple(int.from_bytes(off_raw[i : i + 2], "big")
                        for i in range(0, len(off_raw), 2))
        start = by_tag[0xDF22].offset
        end = obj.offset + obj.size
        return cls(name, address, birth, sex, offsets, bytes(data[start:end]))


@dataclass(frozen=True)
class IntegrityRecord:
    """Text AP EF 0003: ``FF 30 { DF31 SHA-256(EF0001, 17 physical bytes),
    DF32 SHA-256(EF0002 from DF22 to the end), DF33 signature }``.

    The signature is PKCS#1 v1.5 SHA-256 over the encoded DF31 and DF32 objects by the
    AP key that EF 0004's CV certificate certifies.
    """

    my_number_digest: bytes
    attributes_digest: bytes
    signature: bytes
    signed_part: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> IntegrityRecord:
        _obj, children = _parse_flat(data, TAG_INTEGRITY, "integrity record")
        by_tag = {c.tag: c for c in children}
        try:
            d31, d32, d33 = by_tag[0xDF31], by_tag[0xDF32], by_tag[0xDF33]
        except KeyError as exc:
            raise RecordError(f"integrity record lacks tag {exc.args[0]:X}") from exc
        return cls(d31.value, d32.value, d33.value, d31.encode() + d32.encode())

    def verify(self, ap_key: rsa.RSAPublicKey, my_number_physical: bytes | None,
               attributes: Attributes | None) -> None:
        """Check J-LIS's signature and that the digests cover the given records."""
        verify_sha256(ap_key, self.signature, self.signed_part)
        if my_number_physical is not None and (
            hashlib.sha256(my_number_physical).digest() != self.my_number_digest
        ):
            raise SignatureError("the 個人番号 does not match the signed digest")
        if attributes is not None and (
            hashlib.sha256(attributes.signed_part).digest() != self.attributes_digest
        ):
            raise SignatureError("the 基本4情報 do not match the signed digest")


@dataclass(frozen=True)
class CardFace:
    """Visual AP EF 0002, the card face (reference §5.3)."""

    birth: str = field(repr=False)
    sex: str = field(repr=False)
    public_key: rsa.RSAPublicKey
    name_image: bytes = field(repr=False)
    address_image: bytes = field(repr=False)
    photo: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    expiry: str
    security_code_image: bytes = field(repr=False)
    groups: tuple[bytes, bytes, bytes] = field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> CardFace:
        _obj, children = _parse_flat(data, TAG_FACE, "card face record")
        by_tag = {c.tag: c for c in children}
        try:
            t = {k: by_tag[k] for k in range(0xDF22, 0xDF2B)}
        except KeyError as exc:
            raise RecordError(f"card face record lacks tag {exc.args[0]:X}") from exc
        groups = (
            t[0xDF22].encode() + t[0xDF23].encode() + t[0xDF24].encode(),
            t[0xDF25].encode() + t[0xDF26].encode(),
            t[0xDF27].encode(),
        )
        try:
            return cls(
                birth=t[0xDF22].value.decode("ascii"),
                sex=t[0xDF23].value.decode("ascii"),
                public_key=decode_rsa_public_key(t[0xDF24].value),
                name_image=t[0xDF25].value,
                address_image=t[0xDF26].value,
                photo=t[0xDF27].value,
                signature=t[0xDF28].value,
                expiry=t[0xDF29].value.decode("ascii"),
                security_code_image=t[0xDF2A].value,
                groups=groups,
            )
        except UnicodeDecodeError as exc:
            raise RecordError("card face date or sex is not ASCII") from exc

    @staticmethod
    def signed_payload(groups: tuple[bytes, bytes, bytes]) -> bytes:
        """The DigestInfo J-LIS signs: SHA-256 of each of the three groups, concatenated."""
        return sha256_digest_info_payload(b"".join(hashlib.sha256(g).digest() for g in groups))

    def verify(self, ap_key: rsa.RSAPublicKey) -> None:
        verify_payload(ap_key, self.signature, self.signed_payload(self.groups))


@dataclass(frozen=True)
class VisualBasicInfo:
    """Visual AP EF 0003: layout id, key ID, version, 全国地方公共団体コード."""

    layout: bytes
    key_id: bytes
    municipality: str

    @classmethod
    def parse(cls, data: bytes) -> VisualBasicInfo:
        _obj, children = _parse_flat(data, TAG_VISUAL_INFO, "visual AP basic info")
        by_tag = {c.tag: c for c in children}
        try:
            return cls(by_tag[0xDF31].value, by_tag[0xDF32].value,
                       by_tag[0xDF34].value.decode("ascii"))
        except (KeyError, UnicodeDecodeError) as exc:
            raise RecordError("visual AP basic info is incomplete") from exc


@dataclass(frozen=True)
class SignedPublicKey:
    """Text AP EF 0007 (``FF 50 { DF51 key, DF52 signature }``) and the similar visual
    records: an AP presence key certified by the AP key."""

    public_key: rsa.RSAPublicKey
    signature: bytes
    signed_part: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: bytes, outer: int = TAG_SIGNED_PUBKEY, key_tag: int = 0xDF51,
              sig_tag: int = 0xDF52) -> SignedPublicKey:
        obj, _children = _parse_flat(data, outer, "signed public key")
        key = _child(obj, key_tag, "signed public key")
        sig = _child(obj, sig_tag, "signed public key")
        return cls(decode_rsa_public_key(key.value), sig.value, key.encode())

    def verify(self, ap_key: rsa.RSAPublicKey) -> None:
        verify_sha256(ap_key, self.signature, self.signed_part)
