"""RSA helpers shared by the client and the software card.

The card signs whatever bytes it is handed with PKCS#1 v1.5 type-1 padding, and J-LIS
signs some records with a DigestInfo whose payload is not a single hash (the card face's
96 bytes). ``cryptography`` verifies those through ``recover_data_from_signature``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cardio.apdu import tlv
from cardio.apdu.errors import TlvError
from cardio.errors import CardioError

DIGEST_INFO_PREFIXES: dict[str, bytes] = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


class SignatureError(CardioError):
    """A signature that does not verify, or a key/certificate that cannot be used."""


def digest_info(hash_name: str, digest: bytes) -> bytes:
    """DER DigestInfo for a digest (the payload the JPKI key signs under P1=00)."""
    try:
        prefix = DIGEST_INFO_PREFIXES[hash_name]
    except KeyError as exc:
        raise SignatureError(f"unsupported hash {hash_name!r}") from exc
    return prefix + digest


def digest_info_of(hash_name: str, message: bytes) -> bytes:
    return digest_info(hash_name, hashlib.new(hash_name, message).digest())


def sha256_digest_info_payload(payload: bytes) -> bytes:
    """A SHA-256 DigestInfo around an arbitrary payload, which J-LIS uses for the card
    face (three concatenated digests, 96 bytes): the length byte follows the payload."""
    prefix = DIGEST_INFO_PREFIXES["sha256"][:-1]
    body = prefix[2:] + bytes((len(payload),)) + payload
    return bytes((0x30, len(body))) + body


def recover_payload(public_key: rsa.RSAPublicKey, signature: bytes) -> bytes:
    """The bytes inside a PKCS#1 v1.5 signature; :class:`SignatureError` if it is bad."""
    try:
        return public_key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("the RSA signature does not verify") from exc


def verify_payload(public_key: rsa.RSAPublicKey, signature: bytes, payload: bytes) -> None:
    """Check that ``signature`` is PKCS#1 v1.5 over exactly ``payload``."""
    if recover_payload(public_key, signature) != payload:
        raise SignatureError("the signature is valid RSA but over different data")


def verify_sha256(public_key: rsa.RSAPublicKey, signature: bytes, message: bytes) -> None:
    verify_payload(public_key, signature, digest_info_of("sha256", message))


def encode_rsa_public_key(public_key: rsa.RSAPublicKey) -> bytes:
    """The card's public-key encoding: ``90 03 <e> 91 82 01 00 <n>`` (265 bytes for
    RSA-2048 with e=65537)."""
    numbers = public_key.public_numbers()
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    n = numbers.n.to_bytes(public_key.key_size // 8, "big")
    return tlv.build(0x90, e).encode() + tlv.build(0x91, n, length_octets=2).encode()


def decode_rsa_public_key(data: bytes) -> rsa.RSAPublicKey:
    """Parse ``90 e 91 n`` into a public key."""
    e = n = None
    try:
        for obj in tlv.iter_tlv(data):
            if obj.tag == 0x90:
                e = int.from_bytes(obj.value, "big")
            elif obj.tag == 0x91:
                n = int.from_bytes(obj.value, "big")
    except TlvError as exc:
        raise SignatureError(f"malformed public key: {exc}") from exc
    if e is None or n is None:
        raise SignatureError("public key without exponent (90) or modulus (91)")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise SignatureError(f"invalid RSA public key: {exc}") from exc


@dataclass(frozen=True)
class CvCertificate:
    """A card-verifiable certificate ``7F21 { 5F4E body, 5F37 signature }`` (reference §9).

    The body is a 16-byte issuer key ID (証明者鍵ID), a 16-byte subject key ID
    (被証明者鍵ID) and the subject's RSA public key; the signature is PKCS#1 v1.5 SHA-256
    over the body by the issuer's key.
    """

    issuer_key_id: bytes
    subject_key_id: bytes
    public_key: rsa.RSAPublicKey
    body: bytes
    signature: bytes
    raw: bytes

    @classmethod
    def parse(cls, data: bytes) -> CvCertificate:
        try:
            outer = tlv.parse(data)
            if outer.tag != 0x7F21:
                raise SignatureError(f"not a CV certificate (tag {outer.tag:X})")
            body = outer.get(0x5F4E).value
            signature = outer.get(0x5F37).value
        except TlvError as exc:
            raise SignatureError(f"malformed CV certificate: {exc}") from exc
        if len(body) < 33:
            raise SignatureError("CV certificate body too short")
        return cls(body[:16], body[16:32], decode_rsa_public_key(body[32:]), body, signature,
                   outer.encode())

    def verify(self, issuer_key: rsa.RSAPublicKey) -> None:
        verify_sha256(issuer_key, self.signature, self.body)
