"""The municipality's side of the 住民票 credential: build the SD-JWT VC from the register
(the same entries the printed 住民票 shows, never 個人番号 or 住民票コード), bound to the
holder's key, with a Token Status List entry; and sign the municipality's Status List Token.

Pure functions over a resident record and keys; the HTTP endpoints and the database are in
:mod:`emulators.issuance.wallet`. Signed with the municipality's *credential* key
(``emulators.document_issuers``: ``credential-key.pem``), published in the same trust list
as the seal key with ``use: credential``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.credentials import sdjwt
from kiosk.credentials.jose import jws_sign, key_from_jwk
from kiosk.credentials.juminhyo import VCT, JuminhyoRecord, credential_claims, validity_end
from kiosk.credentials.statuslist import BITS, SIZE, STATUS_TYP, encode_list
from kiosk.credentials.verifier import CREDENTIAL_TYP

__all__ = ["PAD_TO", "STATUS_TOKEN_LIFETIME", "STATUS_TTL", "issue_credential",
           "status_list_token"]

PAD_TO = 16
"""Digests per object after decoys: the top level holds at most 13 items, so every
credential shows 16 whatever options it was issued with."""
STATUS_TOKEN_LIFETIME = 86400
STATUS_TTL = 3600
JST = dt.timezone(dt.timedelta(hours=9))


def issue_credential(rec: JuminhyoRecord, *, issuer_code: str, key: ec.EllipticCurvePrivateKey,
                     kid: str, holder_jwk: dict[str, str], status_uri: str, status_idx: int,
                     now: dt.datetime) -> tuple[str, int]:
    """(the SD-JWT in issuance form, its ``exp``). ``cnf`` carries the holder key's four
    public members only (``kty``, ``crv``, ``x``, ``y``): whatever else the wallet sent
    (a ``kid``, an ``x5u`` URL, padding) would ride along in every presentation, as a
    tracking handle or bulk."""
    key_from_jwk(holder_jwk)  # a P-256 public key, or MalformedPresentation
    holder_jwk = {k: holder_jwk[k] for k in ("kty", "crv", "x", "y")}
    today = now.astimezone(JST).date()
    end = validity_end(today)  # a grid of issuance dates, never a birthday (exp is public)
    exp = int(dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0, 0), JST).timestamp())
    claims: dict[str, Any] = {
        "iss": issuer_code, "iat": int(now.timestamp()), "exp": exp, "vct": VCT,
        "cnf": {"jwk": holder_jwk},
        "status": {"status_list": {"idx": status_idx, "uri": status_uri}},
        **credential_claims(rec, today, end),
    }
    header = {"alg": "ES256", "typ": CREDENTIAL_TYP, "kid": kid}
    return sdjwt.issue(header, claims, key, pad_to=PAD_TO), exp


def status_list_token(*, uri: str, invalid: list[int], key: ec.EllipticCurvePrivateKey,
                      kid: str, now: int, size: int = SIZE) -> str:
    return jws_sign({"alg": "ES256", "typ": STATUS_TYP, "kid": kid},
                    {"sub": uri, "iat": now, "exp": now + STATUS_TOKEN_LIFETIME,
                     "ttl": STATUS_TTL,
                     "status_list": {"bits": BITS, "lst": encode_list(invalid, size)}}, key)
