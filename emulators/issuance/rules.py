"""Per-municipality settings (types, fees, hours, holidays, options) and the eligibility
table of the 証明発行サーバ.

Every refusal has a code (stable, used by the protocol and the kiosk's screens) and the
words a kiosk shows — one table, :data:`REASONS`, so a new reason is one line here and
one rule below. Facts from kiosk-domain.md §1.1: no service under 15, after a 転出届, for
支援措置 subjects, deceased persons, on the day of 転入, while 外字 is pending, or when the
name/address exceeds the printable limit; hours 6:30–23:00, closed 12/29–1/3 and on
maintenance days; 戸籍 and 附票 often weekdays 9:00–17:00 only; fees set by each
municipality (¥200–¥450 here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kiosk.documents.model import DocumentType

__all__ = ["JST", "REASONS", "RULES", "Resident", "Rule", "Settings", "age_on", "closed_reason",
           "refusal_for"]

JST = dt.timezone(dt.timedelta(hours=9), "JST")

REASONS: dict[str, tuple[str, str]] = {
    # code: (Japanese as the kiosk shows it, English)
    "under_15": ("15歳未満の方はコンビニ交付を利用できません。",
                 "Not available to people under 15."),
    "moved_out": ("転出された方は利用できません。", "Not available after moving out."),
    "move_filed": ("転出届を提出済みの方は利用できません。",
                   "Not available after filing a move-out notice."),
    "deceased": ("この方の証明書は交付できません。",
                 "No certificate can be issued for this person."),
    "support_measure": ("この証明書はコンビニでは交付できません。窓口へお越しください。",
                        "This certificate cannot be issued at a kiosk; please visit the office."),
    "gaiji_pending": ("外字の登録手続き中のため交付できません。",
                      "Not available while a non-standard character is being registered."),
    "moved_in_today": ("転入当日は利用できません。", "Not available on the day of moving in."),
    "name_too_long": ("氏名が印字できる文字数を超えるため交付できません。",
                      "The name exceeds what the certificate can print."),
    "address_too_long": ("住所が印字できる文字数を超えるため交付できません。",
                         "The address exceeds what the certificate can print."),
    "type_not_offered": ("この証明書はお住まいの市区町村ではコンビニ交付の対象外です。",
                         "Your municipality does not issue this certificate at kiosks."),
    "honseki_not_registered": ("本籍地の利用登録が必要です。",
                               "Register in advance with the municipality of your 本籍."),
    "no_inkan": ("印鑑登録がありません。", "No registered seal."),
    "no_tax_record": ("課税・所得の記録がありません。", "No tax record for that year."),
    "outside_hours": ("利用時間外です。", "Outside service hours."),
    "closed_year_end": ("年末年始（12月29日〜1月3日）は休止しています。",
                        "Closed over the year end (29 Dec – 3 Jan)."),
    "maintenance": ("保守点検のため休止しています。", "Closed for maintenance today."),
    "weekdays_only": ("この証明書は平日のみ交付しています。",
                      "This certificate is issued on weekdays only."),
    "municipality_stopped": ("現在、お住まいの市区町村の証明書交付を停止しています。",
                             "Issuance for your municipality is stopped at the moment."),
    "bad_option": ("選択された内容では交付できません。", "That option is not available."),
}


@dataclass(frozen=True)
class Settings:
    """One municipality's kiosk service (設定): fees (yen; absent = not offered), hours,
    closures, and the options it allows."""

    fees: dict[str, int]
    open: str = "06:30"
    close: str = "23:00"
    koseki_open: str = "09:00"
    koseki_close: str = "17:00"
    koseki_weekdays_only: bool = True
    maintenance_days: tuple[str, ...] = ()
    holidays: tuple[str, ...] = ()
    allow_my_number: bool = False  # 個人番号/住民票コード on a kiosk 住民票 (most: never)
    name_limit: int = 30
    address_limit: int = 60
    max_copies: int = 3  # 通数: the most copies of one certificate in one request

    def to_json(self) -> dict[str, Any]:
        return {"fees": self.fees, "open": self.open, "close": self.close,
                "koseki_open": self.koseki_open, "koseki_close": self.koseki_close,
                "koseki_weekdays_only": self.koseki_weekdays_only,
                "maintenance_days": list(self.maintenance_days),
                "holidays": list(self.holidays), "allow_my_number": self.allow_my_number,
                "name_limit": self.name_limit, "address_limit": self.address_limit,
                "max_copies": self.max_copies}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Settings:
        return cls(fees={str(k): int(v) for k, v in d["fees"].items()}, open=d["open"],
                   close=d["close"], koseki_open=d["koseki_open"],
                   koseki_close=d["koseki_close"],
                   koseki_weekdays_only=bool(d["koseki_weekdays_only"]),
                   maintenance_days=tuple(d["maintenance_days"]), holidays=tuple(d["holidays"]),
                   allow_my_number=bool(d["allow_my_number"]), name_limit=int(d["name_limit"]),
                   address_limit=int(d["address_limit"]),
                   max_copies=int(d.get("max_copies", 3)))

    def options(self, doc_type: DocumentType) -> dict[str, list[str]]:
        """What a resident may choose for a type (first value is the default)."""
        yn = ["no", "yes"]
        if doc_type is DocumentType.JUMINHYO:
            out = {"scope": ["self", "household"], "honseki": yn, "relationship": yn}
            if self.allow_my_number:
                out["my_number"] = yn
            return out
        if doc_type is DocumentType.KOSEKI:
            return {"kind": ["full", "individual"]}
        if doc_type is DocumentType.TAX:
            return {"year": ["last", "before_last"]}
        return {}


@dataclass(frozen=True)
class Resident:
    """The register entry the rules look at (a row of ``residents``)."""

    id: str
    municipality: str
    household_id: str
    name: str
    kana: str
    birth: dt.date
    sex: str
    relationship: str
    address: str
    status: str  # active | moved_out | move_filed | deceased
    moved_in: dt.date
    support_measure: bool
    gaiji_pending: bool
    my_number: str = field(repr=False)
    juminhyo_code: str = field(repr=False)
    honseki: str
    hittousha: str
    honseki_code: str
    koseki_registered: bool
    father: str
    mother: str

    COLUMNS = ("id, municipality, household_id, name, kana, birth, sex, relationship, address,"
               " status, moved_in, support_measure, gaiji_pending, my_number, juminhyo_code,"
               " honseki, hittousha, honseki_code, koseki_registered, father, mother")

    @classmethod
    def from_row(cls, r: Any) -> Resident:
        return cls(r[0], r[1], r[2], r[3], r[4], dt.date.fromisoformat(r[5]), r[6], r[7], r[8],
                   r[9], dt.date.fromisoformat(r[10]), bool(r[11]), bool(r[12]), r[13], r[14],
                   r[15], r[16], r[17], bool(r[18]), r[19], r[20])


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@dataclass(frozen=True)
class Context:
    resident: Resident
    settings: Settings
    doc_type: DocumentType
    today: dt.date
    has_inkan: bool
    has_tax: bool


@dataclass(frozen=True)
class Rule:
    code: str
    refuses: Callable[[Context], bool]
    types: frozenset[DocumentType] | None = None  # None: every type


_KOSEKI_TYPES = frozenset({DocumentType.KOSEKI, DocumentType.FUHYO})

RULES: tuple[Rule, ...] = (
    # The eligibility table, in the order a refusal is reported (the first that applies).
    Rule("type_not_offered", lambda c: c.doc_type.value not in c.settings.fees),
    Rule("deceased", lambda c: c.resident.status == "deceased"),
    Rule("moved_out", lambda c: c.resident.status == "moved_out"),
    Rule("move_filed", lambda c: c.resident.status == "move_filed"),
    Rule("under_15", lambda c: age_on(c.resident.birth, c.today) < 15),
    Rule("support_measure", lambda c: c.resident.support_measure),
    Rule("gaiji_pending", lambda c: c.resident.gaiji_pending),
    Rule("moved_in_today", lambda c: c.resident.moved_in == c.today),
    Rule("name_too_long", lambda c: len(c.resident.name) > c.settings.name_limit),
    Rule("address_too_long", lambda c: len(c.resident.address) > c.settings.address_limit),
    Rule("honseki_not_registered",
         lambda c: c.resident.honseki_code != c.resident.municipality
         and not c.resident.koseki_registered, _KOSEKI_TYPES),
    Rule("no_inkan", lambda c: not c.has_inkan, frozenset({DocumentType.INKAN})),
    Rule("no_tax_record", lambda c: not c.has_tax, frozenset({DocumentType.TAX})),
)


def _hm(value: str) -> dt.time:
    h, m = value.split(":")
    return dt.time(int(h), int(m))


def closed_reason(settings: Settings, doc_type: DocumentType, now: dt.datetime) -> str | None:
    """Why the service for ``doc_type`` is closed at ``now`` (JST), or None."""
    local = now.astimezone(JST)
    day, t = local.date(), local.time()
    if (day.month == 12 and day.day >= 29) or (day.month == 1 and day.day <= 3):
        return "closed_year_end"
    if day.isoformat() in settings.maintenance_days:
        return "maintenance"
    if doc_type in _KOSEKI_TYPES and settings.koseki_weekdays_only:
        if day.weekday() >= 5 or day.isoformat() in settings.holidays:
            return "weekdays_only"
        if not _hm(settings.koseki_open) <= t < _hm(settings.koseki_close):
            return "outside_hours"
    if not _hm(settings.open) <= t < _hm(settings.close):
        return "outside_hours"
    return None


def refusal_for(resident: Resident, settings: Settings, doc_type: DocumentType,
                now: dt.datetime, *, has_inkan: bool, has_tax: bool) -> str | None:
    """The first reason (code of :data:`REASONS`) this resident cannot have ``doc_type``
    now, or None."""
    ctx = Context(resident, settings, doc_type, now.astimezone(JST).date(), has_inkan,
                  has_tax)
    for rule in RULES:
        if (rule.types is None or doc_type in rule.types) and rule.refuses(ctx):
            return rule.code
    return closed_reason(settings, doc_type, now)
