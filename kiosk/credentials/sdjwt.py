"""SD-JWT (RFC 9901) — issuance, the holder's selection, key binding and the verifier's
processing of disclosures — written from the RFC, sans-IO.

Terms (RFC 9901 §4): the *Issuer-signed JWT* carries digests (``_sd`` in objects, ``{"...":
digest}`` in arrays) in place of the selectively disclosable values; each *Disclosure* is
``base64url(JSON [salt, name, value])`` (``[salt, value]`` for an array element) and its
digest is ``base64url(SHA-256(ASCII(disclosure)))``. The compact serialisation is
``<JWT>~<D1>~…~<Dn>~`` (an SD-JWT) or ``<JWT>~<D1>~…~<Dn>~<KB-JWT>`` (an SD-JWT+KB), where
the *Key Binding JWT* (``typ: kb+jwt``) is signed by the holder's key named in ``cnf`` over
the verifier's ``nonce`` and ``aud``, its ``iat``, and ``sd_hash`` — the digest of everything
before it, so no disclosure can be added or dropped after the holder signed.

The verifier's rules kept here (§7.1): each digest appears once; every disclosure is
referenced exactly once; a disclosure of the wrong shape, naming ``_sd`` or ``...``, or
naming a claim already in its object is refused; ``_sd_alg`` must be ``sha-256``. Salts are
128 bits from ``secrets`` (§9.3), digests are sorted (the order reveals nothing) and decoys
pad each object's ``_sd`` to a fixed count (§4.2.5) so the digests do not tell how many items
the credential holds.

A *path* names a claim as in DCQL / SD-JWT VC type metadata: keys (``str``), array indexes
(``int``), ``None`` for every element of an array.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.credentials.errors import (
    CredentialError,
    HolderBindingFailed,
    MalformedPresentation,
    TamperedDisclosure,
    UnapprovedDisclosure,
)
from kiosk.credentials.jose import (
    b64u_decode,
    b64u_encode,
    dumps_compact,
    jws_sign,
    jws_split,
    jws_verify,
    key_from_jwk,
    loads_strict,
)

__all__ = [
    "KB_TYP",
    "SD",
    "SD_ALG",
    "Disclosure",
    "Path",
    "SdJwt",
    "conceal",
    "digest_of",
    "make_kb_jwt",
    "parse",
    "path_matches",
    "resolve",
    "sd_hash",
    "verify_kb_jwt",
]

SD_ALG = "sha-256"
KB_TYP = "kb+jwt"
MAX_DISCLOSURES = 512
MAX_PRESENTATION = 256 * 1024
Path = tuple[str | int | None, ...]


@dataclass(frozen=True)
class SD:
    """Marks a value as selectively disclosable when building a payload (:func:`conceal`).
    ``pad_to``: when the value is an object with disclosable members, decoys pad its ``_sd``
    to this many digests, so that once it is disclosed its digest count does not tell
    which members it holds."""

    value: Any
    pad_to: int = 0


@dataclass(frozen=True)
class Disclosure:
    encoded: str
    salt: str
    name: str | None  # None: an array element
    value: Any

    @property
    def digest(self) -> str:
        return digest_of(self.encoded)

    @classmethod
    def make(cls, name: str | None, value: Any) -> Disclosure:
        salt = b64u_encode(secrets.token_bytes(16))
        arr = [salt, value] if name is None else [salt, name, value]
        return cls(b64u_encode(dumps_compact(arr)), salt, name, value)

    @classmethod
    def decode(cls, encoded: str) -> Disclosure:
        arr = loads_strict(b64u_decode(encoded, "disclosure"), "disclosure")
        if not isinstance(arr, list) or len(arr) not in (2, 3) or not isinstance(arr[0], str):
            raise TamperedDisclosure("a disclosure is not [salt, (name,) value]")
        if len(arr) == 2:
            return cls(encoded, arr[0], None, arr[1])
        if not isinstance(arr[1], str):
            raise TamperedDisclosure("a disclosure's claim name is not a string")
        if arr[1] in ("_sd", "..."):
            raise TamperedDisclosure("a disclosure names a reserved claim (_sd or ...)")
        return cls(encoded, arr[0], arr[1], arr[2])


def digest_of(encoded: str) -> str:
    return b64u_encode(hashlib.sha256(encoded.encode("ascii")).digest())


def _decoy() -> str:
    return b64u_encode(hashlib.sha256(secrets.token_bytes(32)).digest())


def conceal(obj: Any, out: list[Disclosure], *, pad_to: int = 0) -> Any:
    """The payload of ``obj`` with every :class:`SD` value replaced by a digest; the
    disclosures are appended to ``out``. The object ``obj`` gets decoys up to ``pad_to``
    digests; a nested object is padded when its :class:`SD` says so (it is seen only once
    disclosed, but then its digest count must not tell which members it holds)."""
    if isinstance(obj, SD):
        raise CredentialError("SD marks a member or an element, not a whole payload")
    if isinstance(obj, dict):
        if "_sd" in obj or "..." in obj:
            raise CredentialError("_sd and ... are reserved claim names")
        result: dict[str, Any] = {}
        digests: list[str] = []
        for k, v in obj.items():
            if isinstance(v, SD):
                d = Disclosure.make(k, conceal(v.value, out, pad_to=v.pad_to))
                out.append(d)
                digests.append(d.digest)
            else:
                result[k] = conceal(v, out)
        if digests:
            digests += [_decoy() for _ in range(max(0, pad_to - len(digests)))]
            result["_sd"] = sorted(digests)
        return result
    if isinstance(obj, list):
        items: list[Any] = []
        for v in obj:
            if isinstance(v, SD):
                d = Disclosure.make(None, conceal(v.value, out, pad_to=v.pad_to))
                out.append(d)
                items.append({"...": d.digest})
            else:
                items.append(conceal(v, out))
        return items
    return obj


def issue(header: dict[str, Any], claims: dict[str, Any], key: ec.EllipticCurvePrivateKey,
          *, pad_to: int = 0) -> str:
    """The SD-JWT in issuance form: ``<JWT>~<every disclosure>~``."""
    disclosures: list[Disclosure] = []
    payload = conceal(claims, disclosures, pad_to=pad_to)
    payload["_sd_alg"] = SD_ALG
    jwt = jws_sign(header, payload, key)
    return "~".join([jwt, *(d.encoded for d in disclosures), ""])


# -- parsing and processing ---------------------------------------------------------------
@dataclass(frozen=True)
class SdJwt:
    """A parsed SD-JWT or SD-JWT+KB (signatures not yet checked)."""

    jwt: str
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: str
    signature: bytes
    disclosures: tuple[Disclosure, ...]
    kb_jwt: str | None

    @property
    def without_kb(self) -> str:
        """The SD-JWT part (up to and including the last ``~``): what ``sd_hash`` covers."""
        return "~".join([self.jwt, *(d.encoded for d in self.disclosures), ""])

    def verify_signature(self, key: ec.EllipticCurvePublicKey) -> bool:
        return jws_verify(self.signing_input, self.signature, key)


def parse(text: str) -> SdJwt:
    """Split and decode an SD-JWT (``…~``) or SD-JWT+KB (``…~<KB-JWT>``)."""
    if not isinstance(text, str) or len(text) > MAX_PRESENTATION:
        raise MalformedPresentation(f"a presentation is at most {MAX_PRESENTATION} characters")
    text = text.strip()
    if not text.isascii() or "~" not in text:
        raise MalformedPresentation("not an SD-JWT (<JWT>~<disclosures>~[<KB-JWT>])")
    parts = text.split("~")
    if len(parts) - 2 > MAX_DISCLOSURES:
        raise MalformedPresentation(f"more than {MAX_DISCLOSURES} disclosures")
    jwt, middle, last = parts[0], parts[1:-1], parts[-1]
    if any(p == "" for p in middle):
        raise MalformedPresentation("an empty disclosure (two ~ in a row)")
    header, payload, signing_input, sig = jws_split(jwt, "issuer-signed JWT")
    disclosures = tuple(Disclosure.decode(d) for d in middle)
    seen: set[str] = set()
    for d in disclosures:
        if d.encoded in seen:
            raise TamperedDisclosure("the same disclosure is given twice")
        seen.add(d.encoded)
    return SdJwt(jwt, header, payload, signing_input, sig, disclosures, last or None)


def resolve(payload: dict[str, Any], disclosures: Iterable[Disclosure],
            withheld: set[Path] | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    """RFC 9901 §7.1 steps 3–5: the claims with every given disclosure put in its place,
    and the path of each disclosure (by digest). Refuses (:class:`TamperedDisclosure`) a
    digest seen twice, a disclosure that no digest references, a name clash, a wrong shape.
    ``_sd_alg`` must be sha-256.

    Array elements keep the issuer's positions: an integer in a path is the element's
    position in the issuer-signed array (digests included), never "the n-th disclosed one",
    and an undisclosed element stays in the list as ``None`` so that a holder cannot shift
    one member into another's place. The paths of undisclosed elements are added to
    ``withheld`` (when given): array digests carry no decoys, so whoever holds the payload
    sees how many elements there are and can tell a complete answer from a partial one."""
    alg = payload.get("_sd_alg", SD_ALG)
    if alg != SD_ALG:
        raise MalformedPresentation(f"_sd_alg {str(alg)[:20]!r} is not sha-256")
    by_digest = {d.digest: d for d in disclosures}
    used: dict[str, Path] = {}
    seen: set[str] = set()

    def walk(v: Any, path: Path) -> Any:
        if isinstance(v, dict):
            sd = v.get("_sd", [])
            if not isinstance(sd, list) or not all(isinstance(x, str) for x in sd):
                raise MalformedPresentation("_sd is not a list of digests")
            out = {k: walk(x, (*path, k)) for k, x in v.items()
                   if k != "_sd" and not (k == "_sd_alg" and not path)}
            for dg in sd:
                if dg in seen:
                    raise TamperedDisclosure("a digest appears twice in the credential")
                seen.add(dg)
                d = by_digest.get(dg)
                if d is None:
                    continue  # not disclosed, or a decoy
                if d.name is None:
                    raise TamperedDisclosure("an array-element disclosure sits in an object")
                if d.name in out:
                    raise TamperedDisclosure("a disclosure names a claim that is already there")
                used[dg] = (*path, d.name)
                out[d.name] = walk(d.value, (*path, d.name))
            return out
        if isinstance(v, list):
            items: list[Any] = []
            for x in v:
                pos = len(items)
                if isinstance(x, dict) and "..." in x:
                    dg = x["..."]
                    if len(x) != 1 or not isinstance(dg, str):
                        raise MalformedPresentation("an array digest is not {\"...\": digest}")
                    if dg in seen:
                        raise TamperedDisclosure("a digest appears twice in the credential")
                    seen.add(dg)
                    d = by_digest.get(dg)
                    if d is None:
                        if withheld is not None:
                            withheld.add((*path, pos))
                        items.append(None)  # keeps every later element at its position
                        continue
                    if d.name is not None:
                        raise TamperedDisclosure("an object-member disclosure sits in an array")
                    used[dg] = (*path, pos)
                    items.append(walk(d.value, (*path, pos)))
                else:
                    items.append(walk(x, (*path, pos)))
            return items
        return v

    claims = walk(payload, ())
    if len(used) != len(by_digest):
        raise TamperedDisclosure("a disclosure is not covered by the issuer's signature")
    return claims, used


def path_matches(have: Path, want: Path) -> bool:
    """``have`` lies on ``want``'s way (an ancestor, itself, or inside what it asks for):
    disclosing ``want`` needs every disclosure whose path matches it."""
    for a, b in zip(have, want, strict=False):
        if b is None and isinstance(a, int):
            continue
        if a != b:
            return False
    return True


# -- key binding ---------------------------------------------------------------------------
def sd_hash(sd_jwt_part: str) -> str:
    return b64u_encode(hashlib.sha256(sd_jwt_part.encode("ascii")).digest())


def make_kb_jwt(sd_jwt_part: str, key: ec.EllipticCurvePrivateKey, *, aud: str, nonce: str,
                iat: int) -> str:
    return jws_sign({"alg": "ES256", "typ": KB_TYP},
                    {"iat": iat, "aud": aud, "nonce": nonce, "sd_hash": sd_hash(sd_jwt_part)},
                    key)


def verify_kb_jwt(sd: SdJwt) -> dict[str, Any]:
    """The KB-JWT's claims once its signature by the ``cnf`` key and its ``sd_hash`` hold
    (RFC 9901 §7.3 steps 1–4; ``aud``, ``nonce`` and ``iat`` are the verifier's to judge)."""
    if sd.kb_jwt is None:
        raise HolderBindingFailed("the presentation has no key-binding JWT: the holder's"
                                  " device must sign it over this verifier's nonce")
    cnf = sd.payload.get("cnf")
    if not isinstance(cnf, dict) or "jwk" not in cnf:
        raise HolderBindingFailed("the credential names no holder key (cnf.jwk)")
    holder = key_from_jwk(cnf["jwk"])
    header, claims, signing_input, sig = jws_split(sd.kb_jwt, "key-binding JWT")
    if header.get("typ") != KB_TYP:
        raise HolderBindingFailed("the key-binding JWT's typ is not kb+jwt")
    if not jws_verify(signing_input, sig, holder):
        raise HolderBindingFailed("the key-binding JWT is not signed by the credential's"
                                  " holder key")
    for name, kind in (("iat", int), ("aud", str), ("nonce", str), ("sd_hash", str)):
        if not isinstance(claims.get(name), kind) or isinstance(claims.get(name), bool):
            raise HolderBindingFailed(f"the key-binding JWT lacks a valid {name}")
    if claims["sd_hash"] != sd_hash(sd.without_kb):
        raise UnapprovedDisclosure("the disclosures differ from those the holder signed"
                                   " (sd_hash): the presentation was altered after approval")
    return claims


def select(disclosures: Sequence[Disclosure], paths: dict[str, Path],
           wanted: Iterable[Path]) -> list[Disclosure]:
    """The disclosures needed to reveal ``wanted`` (and nothing else), in issuance order."""
    wanted = list(wanted)
    return [d for d in disclosures
            if any(path_matches(paths[d.digest], w) for w in wanted)]
