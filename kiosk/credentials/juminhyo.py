"""The 住民票 credential type (``vct`` :data:`VCT`, our definition): its claims, their
labels, which are selectively disclosable, and the typical requests.

The content is the printed 住民票の写し's, item by item, each individually disclosable:

==================  ==========================  =======================================
claim               住民票 item                  value
==================  ==========================  =======================================
name                氏名                         as registered (full width space kept)
name_kana           フリガナ                      katakana
birthdate           生年月日                      ``YYYY-MM-DD`` (OpenID Connect's claim)
sex                 性別                          1 男, 2 女 (ISO/IEC 5218)
address             住所                          ``{"formatted": …}`` (OIDC's address)
resident_since      住民となった日                 ``YYYY-MM-DD``
household_head      世帯主                        name (option ``relationship``)
relationship        続柄                          as registered (option ``relationship``)
honseki             本籍                          (option ``honseki``)
hittousha           筆頭者                        (option ``honseki``)
household           世帯員                        array, each member and each of the
                                                 member's items disclosable on its own
                                                 (option ``scope=household``)
age_over_18         18歳以上                      boolean, derived at issuance
age_over_20         20歳以上                      boolean (飲酒・喫煙), derived at issuance
==================  ==========================  =======================================

**Never** 個人番号 or 住民票コード: :func:`credential_claims` builds from an allow-list and
refuses those names outright, as the seal does (``kiosk.documents.seal``).

Validity and the age claims. ``exp`` is not selectively disclosable, so it must say
nothing about the birth date: it is the end of the calendar month in which the 90th day
after issuance falls (:func:`validity_end`), the same for every resident issued on that
day. The age claims are then issued only when they hold for the *whole* validity:
``age_over_N: true`` when the holder is N or over at issuance (it stays true),
``age_over_N: false`` when the holder is still under N on the last valid day, and no
claim at all when the N-th birthday falls inside the validity (the holder obtains a new
credential after the birthday). A verifier thus learns from an age claim exactly what it
states, and from ``exp`` only the month of issuance (which ``iat`` shows anyway).

Not disclosable (the verifier needs them to judge the credential, per SD-JWT VC §3.2.2):
``iss`` (the municipality's 全国地方公共団体コード), ``iat``, ``exp``, ``vct``, ``cnf``,
``status``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kiosk.credentials.errors import CredentialError
from kiosk.credentials.sdjwt import SD, Path

__all__ = [
    "CLAIM_LABELS",
    "FORBIDDEN_CLAIMS",
    "PRESETS",
    "TECHNICAL_CLAIMS",
    "VCT",
    "JuminhyoRecord",
    "Person",
    "age_claim",
    "credential_claims",
    "label_of",
    "validity_end",
]

VCT = "urn:cardio:vct:juminhyo:1"
"""Ours. A deployment would register a name under デジタル庁's or J-LIS's namespace; the
``:1`` is the version of this claim set (a change of meaning is a new ``vct``)."""

CLAIM_LABELS: dict[str, tuple[str, str]] = {
    "name": ("氏名", "name"),
    "name_kana": ("フリガナ", "name (kana)"),
    "birthdate": ("生年月日", "date of birth"),
    "sex": ("性別", "sex"),
    "address": ("住所", "address"),
    "resident_since": ("住民となった日", "resident since"),
    "household_head": ("世帯主", "head of household"),
    "relationship": ("続柄", "relationship to the head"),
    "honseki": ("本籍", "registered domicile (本籍)"),
    "hittousha": ("筆頭者", "head of the family register"),
    "household": ("世帯員", "household members"),
    "age_over_18": ("18歳以上", "aged 18 or over"),
    "age_over_20": ("20歳以上", "aged 20 or over"),
}
MEMBER_CLAIMS = ("name", "name_kana", "birthdate", "sex", "relationship")
FORBIDDEN_CLAIMS = frozenset({"my_number", "juminhyo_code", "individual_number",
                              "kojin_bango"})
TECHNICAL_CLAIMS = frozenset({"iss", "iat", "exp", "nbf", "vct", "cnf", "status", "_sd_alg"})

PRESETS: dict[str, tuple[Path, ...]] = {
    "age_over_18": (("age_over_18",),),
    "name_address": (("name",), ("address",)),
    "4jouhou": (("name",), ("birthdate",), ("sex",), ("address",)),  # 基本4情報
}
"""Typical requests: an age check (酒類・成人向けサービス), name and address (a delivery, a
membership), the 基本4情報 (本人確認 under 犯罪収益移転防止法 for an account opening)."""

VALIDITY_DAYS = 90
MEMBER_PAD = 8
"""Digests in each household member's object after decoys: a member holds 4 items, or 5
with 続柄, and a disclosed member must not tell which."""


def label_of(path: Path, lang: str = "ja") -> str:
    """``世帯員[*].氏名`` for ``("household", None, "name")``."""
    out: list[str] = []
    for p in path:
        if p is None:
            out[-1] += "[*]"
        elif isinstance(p, int):
            out[-1] += f"[{p}]"
        else:
            ja, en = CLAIM_LABELS.get(p, (p, p))
            out.append(ja if lang == "ja" else en)
    return ".".join(out)


@dataclass(frozen=True)
class Person:
    name: str
    kana: str
    birthdate: dt.date
    sex: str  # the register's code: "1" 男, "2" 女
    relationship: str


@dataclass(frozen=True)
class JuminhyoRecord:
    """What the municipality's register says about the holder (and, with the household
    scope, the other members), as the printed 住民票 would show it."""

    holder: Person
    address: str
    resident_since: dt.date
    household_head: str | None = None  # with the option relationship=yes
    honseki: str | None = None  # with the option honseki=yes
    hittousha: str | None = None
    household: tuple[Person, ...] | None = None  # with scope=household: the other members
    show_relationship: bool = False


def _age(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _birthday(birth: dt.date, years: int) -> dt.date:
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:  # 29 February: the age is reached on 1 March in common years
        return dt.date(birth.year + years, 3, 1)


def validity_end(today: dt.date, days: int = VALIDITY_DAYS) -> dt.date:
    """The last day the credential is valid: the end of the month that holds the ``days``-th
    day after ``today``. A grid of issuance dates only — never a birthday — because
    ``exp`` is shown with every presentation."""
    end = today + dt.timedelta(days=days)
    first_next = dt.date(end.year + end.month // 12, end.month % 12 + 1, 1)
    return first_next - dt.timedelta(days=1)


def age_claim(birth: dt.date, years: int, today: dt.date, last_day: dt.date) -> bool | None:
    """``age_over_<years>`` as it holds for the whole validity ``today``…``last_day``:
    True (reached by today: stays true), False (not reached even on the last day), or None
    (reached inside the validity: not issued, so no claim is ever wrong and no claim or
    ``exp`` pins down a birthday)."""
    if _age(birth, today) >= years:
        return True
    if _age(birth, last_day) < years:
        return False
    return None


def _sex(code: str) -> int:
    return {"1": 1, "2": 2}.get(code, 0)  # 0: not known (ISO/IEC 5218)


def _member(p: Person, relationship: bool) -> dict[str, Any]:
    """A member's items, each disclosable; the object is padded to :data:`MEMBER_PAD`
    digests by the caller's :class:`SD` (``pad_to``)."""
    m = {"name": SD(p.name), "name_kana": SD(p.kana),
         "birthdate": SD(p.birthdate.isoformat()), "sex": SD(_sex(p.sex))}
    if relationship:
        m["relationship"] = SD(p.relationship)
    return m


def credential_claims(rec: JuminhyoRecord, today: dt.date,
                      last_day: dt.date | None = None) -> dict[str, Any]:
    """The subject's claims, every personal item wrapped in :class:`SD`; the age claims as
    they hold until ``last_day`` (default :func:`validity_end`), see :func:`age_claim`."""
    h = rec.holder
    last = validity_end(today) if last_day is None else last_day
    claims: dict[str, Any] = {
        "name": SD(h.name), "name_kana": SD(h.kana), "birthdate": SD(h.birthdate.isoformat()),
        "sex": SD(_sex(h.sex)), "address": SD({"formatted": rec.address}),
        "resident_since": SD(rec.resident_since.isoformat()),
    }
    for years in (18, 20):
        value = age_claim(h.birthdate, years, today, last)
        if value is not None:
            claims[f"age_over_{years}"] = SD(value)
    if rec.show_relationship:
        claims["household_head"] = SD(rec.household_head or "")
        claims["relationship"] = SD(h.relationship)
    if rec.honseki is not None:
        claims["honseki"] = SD(rec.honseki)
        claims["hittousha"] = SD(rec.hittousha or "")
    if rec.household is not None:
        claims["household"] = SD([SD(_member(m, rec.show_relationship), pad_to=MEMBER_PAD)
                                  for m in rec.household])
    bad = FORBIDDEN_CLAIMS & set(claims)
    if bad or set(claims) - set(CLAIM_LABELS):
        raise CredentialError("a 住民票 credential holds only the allow-listed items")
    return claims
