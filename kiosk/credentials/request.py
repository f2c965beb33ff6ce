"""What a verifier asks for: a presentation request (ours, ``cardio-presentation-request/1``)
whose query is a subset of OpenID4VP's DCQL, so that moving to OpenID4VP later is a change of
transport, not of meaning::

    {"type": "cardio-presentation-request/1",
     "client_id": "https://shop.example",        # the verifier; the KB-JWT's aud
     "nonce": "<base64url of 32 random bytes>",   # single use
     "purpose": "年齢確認のため",                    # shown to the holder
     "expires_at": 1767225600,
     "dcql_query": {"credentials": [{"id": "juminhyo", "format": "dc+sd-jwt",
                                     "meta": {"vct_values": ["urn:cardio:vct:juminhyo:1"]},
                                     "claims": [{"path": ["age_over_18"]}]}]}}

Every listed claim is required (no ``claim_sets``); a path is keys, array indexes and
``null`` for every element (``["household", null, "name"]``). Parsing is strict.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kiosk.credentials.errors import WalletError
from kiosk.credentials.juminhyo import VCT
from kiosk.credentials.sdjwt import Path

__all__ = ["REQUEST_TYPE", "PresentationRequest", "parse_path", "printable"]

REQUEST_TYPE = "cardio-presentation-request/1"
FORMAT = "dc+sd-jwt"
_CLIENT = re.compile(r"[\x21-\x7e]{1,200}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,86}")
MAX_CLAIMS = 32
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def printable(text: str) -> bool:
    """No control, format (bidi overrides, zero-width), surrogate, private-use, unassigned
    or line/paragraph-separator characters: the request's words reach the holder's screen,
    and an escape sequence or a right-to-left override there could hide or fake what is
    asked for."""
    return not any(unicodedata.category(c) in _UNPRINTABLE for c in text)


def parse_path(value: Any) -> Path:
    if not isinstance(value, list) or not 1 <= len(value) <= 4:
        raise WalletError("a claim path is a list of 1 to 4 elements")
    out: list[str | int | None] = []
    for p in value:
        if p is None or (isinstance(p, str) and 0 < len(p) <= 64 and printable(p)) or \
                (isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 256):
            out.append(p)
        else:
            raise WalletError("a claim path element is a name (printable, 1-64 characters),"
                              " an index or null")
    if not isinstance(out[0], str):
        raise WalletError("a claim path starts with a claim name")
    return tuple(out)


@dataclass(frozen=True)
class PresentationRequest:
    client_id: str
    nonce: str
    claims: tuple[Path, ...]
    expires_at: int
    purpose: str = ""
    vct_values: tuple[str, ...] = field(default=(VCT,))

    def __post_init__(self) -> None:
        if not _CLIENT.fullmatch(self.client_id):
            raise WalletError("client_id is 1-200 printable ASCII characters")
        if not _NONCE.fullmatch(self.nonce):
            raise WalletError("the nonce is 22-86 base64url characters")
        if not 1 <= len(self.claims) <= MAX_CLAIMS:
            raise WalletError(f"a request asks for 1 to {MAX_CLAIMS} claims")
        if len(self.purpose) > 200:
            raise WalletError("the purpose is at most 200 characters")
        if not printable(self.purpose):
            raise WalletError("the purpose holds control or formatting characters: the"
                              " verifier must send plain text")

    def to_json(self) -> dict[str, Any]:
        return {"type": REQUEST_TYPE, "client_id": self.client_id, "nonce": self.nonce,
                "purpose": self.purpose, "expires_at": self.expires_at,
                "dcql_query": {"credentials": [{
                    "id": "juminhyo", "format": FORMAT,
                    "meta": {"vct_values": list(self.vct_values)},
                    "claims": [{"path": list(p)} for p in self.claims]}]}}

    @classmethod
    def from_json(cls, obj: Any) -> PresentationRequest:
        try:
            if not isinstance(obj, dict) or obj.get("type") != REQUEST_TYPE:
                raise WalletError(f"not a {REQUEST_TYPE} request")
            extra = set(obj) - {"type", "client_id", "nonce", "purpose", "expires_at",
                                "dcql_query"}
            if extra:
                raise WalletError(f"unknown request member {sorted(extra)[0][:30]!r}")
            creds = obj["dcql_query"]["credentials"]
            if not isinstance(creds, list) or len(creds) != 1:
                raise WalletError("the request asks for exactly one credential")
            c = creds[0]
            if c.get("format") != FORMAT:
                raise WalletError("the request asks for another format than dc+sd-jwt")
            vcts = c["meta"]["vct_values"]
            if not isinstance(vcts, list) or not vcts or \
                    not all(isinstance(v, str) for v in vcts):
                raise WalletError("vct_values is a list of strings")
            claims = c["claims"]
            if not isinstance(claims, list):
                raise WalletError("claims is a list")
            paths = tuple(parse_path(x["path"]) for x in claims)
            exp = obj["expires_at"]
            if not isinstance(exp, int) or isinstance(exp, bool):
                raise WalletError("expires_at is an integer")
            purpose = obj.get("purpose", "")
            if not isinstance(purpose, str) or not isinstance(obj["client_id"], str) or \
                    not isinstance(obj["nonce"], str):
                raise WalletError("client_id, nonce and purpose are strings")
            return cls(obj["client_id"], obj["nonce"], paths, exp, purpose, tuple(vcts))
        except (KeyError, TypeError, AttributeError) as e:
            raise WalletError(f"malformed presentation request: {type(e).__name__}") from None

    def asks_for(self, names: Sequence[str]) -> bool:
        return all((n,) in self.claims for n in names)
