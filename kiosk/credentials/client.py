"""The resident's device obtaining the 住民票 credential (:mod:`kiosk.credentials.messages`):
open a wallet session, have the card sign the challenge that names the session, the nonce and
the new holder key, prove possession of that key, receive the SD-JWT VC and store it.

The card is reached through a callable (``sign(challenge) -> (certificate DER, signature)``)
so the same code runs with a PC/SC reader, the software card, or a phone's NFC bridge; the
PIN goes to the card and nowhere else.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

import httpx

from kiosk.credentials.errors import IssuanceRefused, WalletError
from kiosk.credentials.holder import StoredCredential, Wallet, new_holder_key
from kiosk.credentials.jose import key_to_jwk
from kiosk.credentials.messages import (
    CredentialRequest,
    IssuedCredential,
    WalletSessionOpen,
    WalletSessionOpened,
    card_challenge,
    holder_proof,
)
from kiosk.protocol.codec import MAX_DOCUMENT, Message, ProtocolError, decode, encode
from kiosk.protocol.messages import ErrorReply

__all__ = ["CardSigner", "obtain_credential"]

CardSigner = Callable[[bytes], tuple[bytes, bytes]]


def _post(http: httpx.Client, path: str, msg: Message, cls: type[Message],
          limit: int = 64 * 1024) -> Message:
    try:
        resp = http.post(path, content=encode(msg),
                         headers={"content-type": "application/json"})
    except httpx.HTTPError as e:
        raise WalletError(f"the issuance service is unreachable: {type(e).__name__}") from None
    try:
        if resp.status_code != 200:
            err = decode(ErrorReply, resp.content)
            raise IssuanceRefused(resp.status_code, err.error, err.message)
        return decode(cls, resp.content, limit=limit)
    except ProtocolError as e:
        raise WalletError(f"the service's answer is not a {cls.__name__}: {e}") from None


def obtain_credential(center_url: str, sign: CardSigner, wallet: Wallet, *,
                      options: dict[str, str] | None = None,
                      http: httpx.Client | None = None) -> StoredCredential:
    """One issuance: a fresh holder key, the card's authentication, the stored credential."""
    own = http is None
    client = http or httpx.Client(base_url=center_url, timeout=httpx.Timeout(30.0, connect=5.0))
    try:
        rid = "wal-" + secrets.token_hex(8)
        opened = _post(client, "/v1/wallet/sessions", WalletSessionOpen(request_id=rid),
                       WalletSessionOpened)
        assert isinstance(opened, WalletSessionOpened)
        key = new_holder_key()
        jwk = key_to_jwk(key.public_key())
        cert, sig = sign(card_challenge(opened.session_id, opened.nonce, jwk))
        issued = _post(client, f"/v1/wallet/sessions/{opened.session_id}/credential",
                       CredentialRequest(
                           request_id=rid, session_id=opened.session_id,
                           certificate=base64.b64encode(cert).decode(),
                           signature=base64.b64encode(sig).decode(), holder_jwk=jwk,
                           holder_proof=holder_proof(key, opened.nonce),
                           options=dict(options or {})),
                       IssuedCredential, limit=MAX_DOCUMENT)
        assert isinstance(issued, IssuedCredential)
        return wallet.store(issued.credential, key)
    finally:
        if own:
            client.close()
