"""Rules for the values printed on and stored in the card: 個人番号 check digit, 和暦
dates, 照合番号B, and the formats of each PIN.

Kept apart from the applet clients because the software card personalises cards with the
same rules the client checks against.
"""

from __future__ import annotations

import datetime as dt
import re

from cardio.errors import CardioError


class InvalidValue(CardioError, ValueError):
    """A value that the card would refuse or that cannot be right (the message never
    repeats the value itself, since it may be a PIN or a 個人番号)."""


# (era name, romaji, first day)
ERAS: tuple[tuple[str, str, dt.date], ...] = (
    ("令和", "Reiwa", dt.date(2019, 5, 1)),
    ("平成", "Heisei", dt.date(1989, 1, 8)),
    ("昭和", "Showa", dt.date(1926, 12, 25)),
    ("大正", "Taisho", dt.date(1912, 7, 30)),
    ("明治", "Meiji", dt.date(1868, 1, 25)),
)


def my_number_check_digit(first11: str) -> int:
    """The check digit of a 個人番号 (番号法施行令 第八条): weights 2..7 then 2..6 from the
    right, remainder mod 11, 0 when the remainder is 0 or 1."""
    if len(first11) != 11 or not first11.isascii() or not first11.isdigit():
        raise InvalidValue("the first part of a 個人番号 is 11 ASCII digits")
    total = 0
    for n, ch in enumerate(reversed(first11), start=1):
        q = n + 1 if n <= 6 else n - 5
        total += int(ch) * q
    r = total % 11
    return 0 if r <= 1 else 11 - r


def is_valid_my_number(value: str) -> bool:
    return (
        len(value) == 12
        and value.isascii()
        and value.isdigit()
        and my_number_check_digit(value[:11]) == int(value[11])
    )


def wareki(date: dt.date) -> tuple[str, int]:
    """(era name, era year) of a date."""
    for name, _romaji, start in ERAS:
        if date >= start:
            return name, date.year - start.year + 1
    raise InvalidValue("dates before 明治 are not supported")


def wareki_yymmdd(date: dt.date) -> str:
    """和暦 YYMMDD, the form the 券面事項確認AP birth-date key and 照合番号B use
    (1980-02-17 → 昭和55 → ``550217``)."""
    _era, year = wareki(date)
    return f"{year % 100:02d}{date.month:02d}{date.day:02d}"


def code_b(birth: dt.date, expiry_year: int, security_code: str) -> str:
    """照合番号B: 和暦 YYMMDD of the birth date + the card's expiry year (YYYY) + the 4-digit
    セキュリティコード printed on the card face (reference §4.3)."""
    if len(security_code) != 4 or not security_code.isascii() or not security_code.isdigit():
        raise InvalidValue("the security code is 4 ASCII digits")
    if not 1000 <= expiry_year <= 9999:
        raise InvalidValue("the expiry year has 4 digits")
    return f"{wareki_yymmdd(birth)}{expiry_year:04d}{security_code}"


_DIGITS4 = re.compile(rb"[0-9]{4}")
_SIGN_PASSWORD = re.compile(rb"(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*[0-9])[A-Z0-9]{6,16}")


def is_four_digit_pin(value: bytes) -> bool:
    """The format rule of the 4-digit PINs (auth, text, 共通, 住基), as the card checks it."""
    return _DIGITS4.fullmatch(value) is not None


def is_sign_password(value: bytes) -> bool:
    """The format rule of the JPKI signature password, as the card checks it: 6-16 of
    A-Z and 0-9 with at least one letter and one digit. The one place this rule is
    written; the client, the profile and the software card all ask here."""
    return _SIGN_PASSWORD.fullmatch(value) is not None


def validate_four_digit_pin(pin: str) -> bytes:
    """A 4-digit PIN (auth, text, 共通, 住基) as the ASCII bytes VERIFY sends."""
    if not pin.isascii() or not is_four_digit_pin(pin.encode("ascii")):
        raise InvalidValue("this PIN is exactly 4 digits")
    return pin.encode("ascii")


def validate_sign_password(password: str) -> bytes:
    """The JPKI signature password (:func:`is_sign_password`) as VERIFY sends it. Lower
    case is folded to upper case, as the official apps do."""
    upper = password.upper()
    if not upper.isascii() or not is_sign_password(upper.encode("ascii")):
        raise InvalidValue(
            "the signature password is 6-16 characters of A-Z and 0-9,"
            " with at least one letter and one digit"
        )
    return upper.encode("ascii")


def validate_code_a(value: str) -> bytes:
    if not is_valid_my_number(value):
        raise InvalidValue("照合番号A is the 12-digit 個人番号 with a valid check digit")
    return value.encode("ascii")


def validate_code_b(value: str) -> bytes:
    if len(value) != 14 or not value.isascii() or not value.isdigit():
        raise InvalidValue("照合番号B is 14 digits (和暦 YYMMDD + expiry YYYY + security code)")
    return value.encode("ascii")


def validate_birth_key(value: str) -> bytes:
    if len(value) != 6 or not value.isascii() or not value.isdigit():
        raise InvalidValue("the birth-date key is 6 digits, 和暦 YYMMDD")
    return value.encode("ascii")


#: 性別 codes as the card stores them (ISO/IEC 5218), labelled for people.
SEX_LABELS = {"1": "男 (male)", "2": "女 (female)", "9": "適用不能 (n/a)", "0": "不明 (unknown)"}


def sex_label(code: str) -> str:
    """The label of a 性別 code, or the code itself when the card holds another value."""
    return SEX_LABELS.get(code, code)
