"""The holder and card a software card is personalised from.

The default is a fictional holder with random credentials; a profile file (JSON or TOML)
can describe another. Nothing here is real personal data.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import string
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cardio.identity import (
    InvalidValue,
    code_b,
    is_sign_password,
    is_valid_my_number,
    my_number_check_digit,
    validate_four_digit_pin,
    validate_sign_password,
)

DEFAULT_ADDRESS = "東京都千代田区見本町一丁目２番３号　カーディオ荘１０１"
"""A fictional address (見本町 = "sample town")."""


def random_my_number() -> str:
    first = str(secrets.randbelow(9) + 1) + "".join(
        secrets.choice(string.digits) for _ in range(10))
    return first + str(my_number_check_digit(first))


def random_pin() -> str:
    return f"{secrets.randbelow(10_000):04d}"


def random_sign_password() -> str:
    alphabet = string.ascii_uppercase + string.digits
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(10))
        if is_sign_password(pw.encode("ascii")):
            return pw


def nth_birthday_after(birth: dt.date, after: dt.date, n: int) -> dt.date:
    """The n-th birthday strictly after ``after`` (29 February falls on 28 February)."""
    year = after.year
    count = 0
    while True:
        try:
            day = birth.replace(year=year)
        except ValueError:
            day = dt.date(year, 2, 28)
        if day > after:
            count += 1
            if count == n:
                return day
        year += 1


@dataclass
class Profile:
    """A card holder and the card's printed and secret values."""

    name: str = field(default="番号　花子", repr=False)
    address: str = field(default=DEFAULT_ADDRESS, repr=False)
    birth: dt.date = field(default=dt.date(1990, 4, 1), repr=False)
    sex: str = "2"
    my_number: str = field(default_factory=random_my_number, repr=False)
    issued: dt.date = field(default_factory=dt.date.today)
    expiry: dt.date | None = None
    security_code: str = field(default_factory=random_pin, repr=False)
    municipality: str = "13101"
    auth_pin: str = field(default_factory=random_pin, repr=False)
    sign_password: str = field(default_factory=random_sign_password, repr=False)
    text_pin: str = field(default_factory=random_pin, repr=False)
    common_pin: str | None = field(default=None, repr=False)
    juki_pin: str | None = field(default=None, repr=False)
    code_tries: int = 10
    with_sign_certificate: bool = True

    def __post_init__(self) -> None:
        if self.expiry is None:
            # Adults' cards expire on the 10th birthday after issue.
            self.expiry = nth_birthday_after(self.birth, self.issued, 10)
        # The 共通/住基 PINs are set to the same 4 digits as the auth PIN at issue, as
        # municipalities usually do.
        if self.common_pin is None:
            self.common_pin = self.auth_pin
        if self.juki_pin is None:
            self.juki_pin = self.auth_pin
        self.validate()

    @property
    def card_expiry(self) -> dt.date:
        assert self.expiry is not None
        return self.expiry

    @property
    def code_b(self) -> str:
        return code_b(self.birth, self.card_expiry.year, self.security_code)

    def validate(self) -> None:
        if not is_valid_my_number(self.my_number):
            raise InvalidValue("my_number must be 12 digits with a valid check digit")
        if self.sex not in {"0", "1", "2", "9"}:
            raise InvalidValue("sex is 1 (male), 2 (female), 9 (n/a) or 0 (unknown)")
        for pin in (self.auth_pin, self.text_pin, self.common_pin or "", self.juki_pin or ""):
            validate_four_digit_pin(pin)
        if validate_sign_password(self.sign_password).decode() != self.sign_password:
            raise InvalidValue("the signature password is stored in upper case")
        if not (len(self.municipality) == 5 and self.municipality.isdigit()):
            raise InvalidValue("municipality is a 5-digit 全国地方公共団体コード")
        if not self.name or not self.address:
            raise InvalidValue("name and address must not be empty")
        if not 1 <= self.code_tries <= 15:
            raise InvalidValue("code_tries is 1..15")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Profile:
        """A profile from parsed JSON/TOML; :class:`InvalidValue` names the first key
        that is unknown or of the wrong type (never its value: it may be a PIN)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidValue(f"unknown profile keys: {', '.join(sorted(unknown))}")
        values = dict(data)
        for key in _DATE_KEYS:
            value = values.get(key)
            if isinstance(value, str):
                try:
                    values[key] = dt.date.fromisoformat(value)
                except ValueError:
                    raise InvalidValue(f"profile key {key} is not an ISO date") from None
            elif isinstance(value, dt.datetime):  # TOML datetimes are dates too
                values[key] = value.date()
        for key, value in values.items():
            kind = _FIELD_TYPES[key]
            if value is None and key in _OPTIONAL_KEYS:
                continue
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise InvalidValue(f"profile key {key} must be a {kind.__name__}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path) -> Profile:
        """Read a JSON or TOML profile (a file the user names: anything may be in it)."""
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            kind = "TOML" if path.suffix == ".toml" else "JSON"
            raise InvalidValue(f"{path} is not a {kind} profile ({exc})") from None
        except RecursionError:  # both parsers recurse per nested array or table
            raise InvalidValue(f"{path} is not a profile (nested too deeply)") from None
        if not isinstance(data, dict):
            raise InvalidValue("a profile file holds one object")
        return cls.from_mapping(data)


_DATE_KEYS = ("birth", "issued", "expiry")
_OPTIONAL_KEYS = {"expiry", "common_pin", "juki_pin"}
_FIELD_TYPES: dict[str, type] = {
    "name": str, "address": str, "birth": dt.date, "sex": str, "my_number": str,
    "issued": dt.date, "expiry": dt.date, "security_code": str, "municipality": str,
    "auth_pin": str, "sign_password": str, "text_pin": str, "common_pin": str,
    "juki_pin": str, "code_tries": int, "with_sign_certificate": bool,
}
"""What each profile key holds once dates are parsed (checked before the dataclass sees
them, so a foreign file gives a one-line error instead of a TypeError deep inside)."""
