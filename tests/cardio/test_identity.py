from __future__ import annotations

import datetime as dt

import pytest

from cardio import identity as i


def test_reference_my_number_is_valid() -> None:
    # The JPKI test card's 個人番号 (mynumber-card.md §13).
    assert i.is_valid_my_number("537686677188")
    assert not i.is_valid_my_number("537686677187")
    assert not i.is_valid_my_number("53768667718")
    assert not i.is_valid_my_number("５３７６８６６７７１８８")


def test_code_b_reference_example() -> None:
    # 1980-02-17 (昭和55), expiry 2035, security code 2285 → 55021720352285 (§4.3).
    assert i.code_b(dt.date(1980, 2, 17), 2035, "2285") == "55021720352285"


@pytest.mark.parametrize(("date", "era", "year"), [
    (dt.date(2019, 4, 30), "平成", 31), (dt.date(2019, 5, 1), "令和", 1),
    (dt.date(1989, 1, 7), "昭和", 64), (dt.date(1989, 1, 8), "平成", 1),
    (dt.date(1926, 12, 25), "昭和", 1), (dt.date(1926, 12, 24), "大正", 15),
])
def test_wareki_boundaries(date: dt.date, era: str, year: int) -> None:
    assert i.wareki(date) == (era, year)


def test_pin_rules() -> None:
    assert i.validate_four_digit_pin("0123") == b"0123"
    assert i.validate_sign_password("abc123") == b"ABC123"
    for bad in ("123", "12345", "12a4", "１２３４"):
        with pytest.raises(i.InvalidValue):
            i.validate_four_digit_pin(bad)
    for bad in ("ABCDEF", "123456", "AB12", "A" * 16 + "1", "ABC12!"):
        with pytest.raises(i.InvalidValue) as exc:
            i.validate_sign_password(bad)
        assert bad not in str(exc.value)
