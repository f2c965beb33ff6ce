"""The simulated kiosk helpers, from :mod:`emulators.issuance.fleet`."""

from emulators.issuance.fleet import (
    Card,
    Issued,
    issue,
    new_request_id,
    open_and_authenticate,
)

__all__ = ["Card", "Issued", "issue", "new_request_id", "open_and_authenticate"]
