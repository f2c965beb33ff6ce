from __future__ import annotations

import pytest

from cardio.apdu import errors as e


@pytest.mark.parametrize(("sw", "cls"), [
    (0x63C2, e.VerificationFailed), (0x63C0, e.VerificationFailed), (0x6984, e.PinBlocked),
    (0x6982, e.SecurityStatusNotSatisfied), (0x6A82, e.FileNotFound),
    (0x6B00, e.OffsetOutOfRange), (0x6A86, e.IncorrectParameters), (0x6700, e.WrongLength),
    (0x6985, e.ConditionsNotSatisfied), (0x6D00, e.InstructionNotSupported),
    (0x6881, e.ClassNotSupported), (0x6A88, e.DataObjectNotFound), (0x6F00, e.CardError),
])
def test_status_maps_to_type(sw: int, cls: type[e.CardError]) -> None:
    err = e.error_for_status(sw, "ctx")
    assert type(err) is cls
    assert err.sw == sw
    assert f"({sw:04X})" in str(err)
    assert str(err).startswith("ctx: ")


def test_tries_left_and_advice() -> None:
    err = e.error_for_status(0x63C1, "JPKI auth PIN")
    assert isinstance(err, e.VerificationFailed)
    assert err.tries_left == 1
    assert "1 try left" in str(err)
    blocked = e.error_for_status(0x6984, "JPKI signature password")
    assert "municipal office" in str(blocked) and "6984" in str(blocked)


def test_check_status() -> None:
    e.check_status(0x9000)
    with pytest.raises(e.FileNotFound):
        e.check_status(0x6A82)
