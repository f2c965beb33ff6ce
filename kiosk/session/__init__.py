"""The kiosk's issuance session: a sans-IO state table (``core``), the events in and
commands out that the runner's adapters implement (``events``, ``commands``), and a
deterministic simulated world for tests and benches (``sim``)."""

from kiosk.session.core import (
    TABLE,
    BindingCheck,
    ExpectedBinding,
    InvariantViolation,
    IssuanceSession,
    Outcome,
    SessionProtocolError,
    Snapshot,
    State,
    Timeouts,
)

__all__ = [
    "TABLE",
    "BindingCheck",
    "ExpectedBinding",
    "InvariantViolation",
    "IssuanceSession",
    "Outcome",
    "SessionProtocolError",
    "Snapshot",
    "State",
    "Timeouts",
]
