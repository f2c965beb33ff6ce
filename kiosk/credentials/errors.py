"""Why a presentation or a credential is refused, as types (rooted in
:class:`cardio.errors.CardioError`).

A relying party branches on the class or on its stable ``reason`` code (the same words in
``cardio credential verify --json``); the message is one line that says what to do and never
quotes a claim value. Every refusal of a presentation exits 6 ("checked but not valid"), as
a certificate or seal that does not verify does elsewhere in cardio.
"""

from __future__ import annotations

from cardio.errors import EXIT_ERROR, EXIT_NOT_VALID, EXIT_USAGE, CardioError

__all__ = [
    "BadIssuerSignature",
    "CredentialError",
    "CredentialExpired",
    "CredentialNotYetValid",
    "CredentialRevoked",
    "HolderBindingFailed",
    "IssuanceRefused",
    "MalformedPresentation",
    "MissingClaims",
    "PresentationRefused",
    "ReplayedPresentation",
    "StalePresentation",
    "StatusUnavailable",
    "TamperedDisclosure",
    "UnapprovedDisclosure",
    "UnrequestedDisclosure",
    "UntrustedIssuer",
    "WalletError",
    "WrongAudience",
    "WrongCredentialType",
]


class CredentialError(CardioError):
    """Base of the credential errors that are not a verifier's verdict."""

    exit_code = EXIT_ERROR


class WalletError(CredentialError):
    """The holder's wallet directory, a stored credential or a request file is unusable."""


class IssuanceRefused(CredentialError):
    """The issuance service refused (``code`` is the protocol's stable reason)."""

    exit_code = EXIT_NOT_VALID

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code = status, code


class PresentationRefused(CardioError):
    """A presentation that the verifier does not accept; ``reason`` is the stable code."""

    exit_code = EXIT_NOT_VALID
    reason = "refused"


class MalformedPresentation(PresentationRefused):
    """Not an SD-JWT VC presentation of ours (syntax, JSON, encoding, structure)."""

    reason = "malformed"


class UntrustedIssuer(PresentationRefused):
    """No key of the trust list signed it for this issuer (unknown kid, another
    municipality's key, a key for seals only, a revoked or expired key)."""

    reason = "untrusted_issuer"


class BadIssuerSignature(PresentationRefused):
    """The issuer's signature does not verify: the credential was altered or forged."""

    reason = "bad_signature"


class CredentialExpired(PresentationRefused):
    reason = "expired"


class CredentialNotYetValid(PresentationRefused):
    reason = "not_yet_valid"


class CredentialRevoked(PresentationRefused):
    """The municipality's status list marks the credential invalid (revoked)."""

    reason = "revoked"


class StatusUnavailable(PresentationRefused):
    """No usable status list token (missing, not the issuer's, expired, too old, index out
    of range): no statement about revocation can be made, so the credential is refused."""

    reason = "status_unknown"


class TamperedDisclosure(PresentationRefused):
    """A disclosure that the issuer's signature does not cover (altered, invented,
    duplicated, or naming a reserved claim)."""

    reason = "bad_disclosure"


class HolderBindingFailed(PresentationRefused):
    """No key-binding JWT, or one not signed by the credential's holder key."""

    reason = "holder_binding"


class UnapprovedDisclosure(PresentationRefused):
    """The disclosures are not those the holder signed over (``sd_hash``): something was
    added to or removed from the presentation after the holder approved it."""

    reason = "not_approved_by_holder"


class ReplayedPresentation(PresentationRefused):
    """The nonce is not one this verifier issued and has not yet seen (an old, foreign or
    reused presentation)."""

    reason = "replayed"


class WrongAudience(PresentationRefused):
    """The presentation was made for another verifier (``aud``)."""

    reason = "wrong_audience"


class StalePresentation(PresentationRefused):
    """The key-binding JWT's ``iat`` is outside the verifier's freshness window."""

    reason = "stale"


class WrongCredentialType(PresentationRefused):
    """Not the credential type (``vct``) or ``typ`` the request asked for."""

    reason = "wrong_type"


class UnrequestedDisclosure(PresentationRefused):
    """Items the verifier did not ask for: it refuses rather than receive data it has no
    purpose for (data minimisation: 個人情報保護法 §18, GDPR art. 5(1)(c))."""

    reason = "not_requested"


class MissingClaims(PresentationRefused):
    """The holder withheld items the verifier requires."""

    reason = "missing_claims"


class CredentialUsageError(CardioError):
    """A credential command given the wrong arguments."""

    exit_code = EXIT_USAGE
