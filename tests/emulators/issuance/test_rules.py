"""The eligibility table, hours, holidays, fees and options, case by case; the six
document types as the municipality builds them; the population generator."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest

from emulators.issuance.db import Database
from emulators.issuance.errors import Refused
from emulators.issuance.municipality import MunicipalityServer, municipality_public_keys
from emulators.issuance.population import municipality_code, seed
from emulators.issuance.rules import JST, REASONS, RULES, Resident, Settings, refusal_for
from kiosk.documents.model import DocumentType
from kiosk.protocol import ExpectedSession, check_binding
from kiosk.protocol.messages import Binding, BuildDocument, EligibilityQuery

WED = dt.datetime(2026, 11, 25, 10, 0, tzinfo=JST)  # a Wednesday, not a holiday
SETTINGS = Settings(fees={"juminhyo": 200, "kisai-jiko": 200, "inkan": 250, "tax": 300,
                          "koseki": 450}, holidays=("2026-11-23",),
                    maintenance_days=("2026-12-20",))


def person(**over: Any) -> Resident:
    base = dict(id="R1", municipality="141003", household_id="H1", name="見本　一郎",
                kana="ミホン　イチロウ", birth=dt.date(1980, 5, 1), sex="1", relationship="世帯主",
                address="神奈川県横浜市見本町一丁目１番１号", status="active",
                moved_in=dt.date(2010, 1, 1), support_measure=False, gaiji_pending=False,
                my_number="123456789018", juminhyo_code="12345678901",
                honseki="神奈川県横浜市見本町一番地",
                hittousha="見本　一郎", honseki_code="141003", koseki_registered=True,
                father="", mother="")
    base.update(over)
    return Resident(**base)  # type: ignore[arg-type]


def refusal(r: Resident, dtype: str = "juminhyo", now: dt.datetime = WED,
            settings: Settings = SETTINGS, inkan: bool = True, tax: bool = True) -> str | None:
    return refusal_for(r, settings, DocumentType(dtype), now, has_inkan=inkan, has_tax=tax)


@pytest.mark.parametrize("over, dtype, code", [
    ({}, "juminhyo", None),
    ({"birth": dt.date(2012, 1, 1)}, "juminhyo", "under_15"),
    ({"birth": dt.date(2011, 11, 25)}, "juminhyo", None),  # 15 today
    ({"birth": dt.date(2011, 11, 26)}, "juminhyo", "under_15"),  # 15 tomorrow
    ({"status": "moved_out"}, "juminhyo", "moved_out"),
    ({"status": "move_filed"}, "juminhyo", "move_filed"),
    ({"status": "deceased"}, "inkan", "deceased"),
    ({"support_measure": True}, "juminhyo", "support_measure"),
    ({"gaiji_pending": True}, "tax", "gaiji_pending"),
    ({"moved_in": dt.date(2026, 11, 25)}, "juminhyo", "moved_in_today"),
    ({"name": "見本　" + "寿" * 40}, "juminhyo", "name_too_long"),
    ({"address": "東京都" + "見本" * 40}, "kisai-jiko", "address_too_long"),
    ({}, "fuhyo", "type_not_offered"),
    ({"honseki_code": "131016", "koseki_registered": False}, "koseki",
     "honseki_not_registered"),
    ({"honseki_code": "131016", "koseki_registered": True}, "koseki", None),
    ({"honseki_code": "131016", "koseki_registered": False}, "juminhyo", None),
])
def test_eligibility_table_case_by_case(over: dict[str, Any], dtype: str, code: str | None
                                        ) -> None:
    assert refusal(person(**over), dtype) == code
    if code is not None:
        assert code in REASONS and all(REASONS[code])


def test_every_rule_has_words_for_the_kiosk() -> None:
    assert {r.code for r in RULES} <= set(REASONS)


def test_inkan_and_tax_need_a_record() -> None:
    assert refusal(person(), "inkan", inkan=False) == "no_inkan"
    assert refusal(person(), "tax", tax=False) == "no_tax_record"


@pytest.mark.parametrize("when, dtype, code", [
    (WED.replace(hour=6, minute=29), "juminhyo", "outside_hours"),
    (WED.replace(hour=6, minute=30), "juminhyo", None),
    (WED.replace(hour=22, minute=59), "juminhyo", None),
    (WED.replace(hour=23, minute=0), "juminhyo", "outside_hours"),
    (WED.replace(hour=8, minute=59), "koseki", "outside_hours"),
    (WED.replace(hour=9), "koseki", None),
    (WED.replace(hour=17), "koseki", "outside_hours"),
    (dt.datetime(2026, 11, 28, 10, 0, tzinfo=JST), "koseki", "weekdays_only"),  # Saturday
    (dt.datetime(2026, 11, 28, 10, 0, tzinfo=JST), "juminhyo", None),
    (dt.datetime(2026, 11, 23, 10, 0, tzinfo=JST), "koseki", "weekdays_only"),  # holiday
    (dt.datetime(2026, 11, 23, 10, 0, tzinfo=JST), "juminhyo", None),
    (dt.datetime(2026, 12, 29, 10, 0, tzinfo=JST), "juminhyo", "closed_year_end"),
    (dt.datetime(2027, 1, 3, 22, 0, tzinfo=JST), "juminhyo", "closed_year_end"),
    (dt.datetime(2027, 1, 4, 10, 0, tzinfo=JST), "juminhyo", None),
    (dt.datetime(2026, 12, 20, 10, 0, tzinfo=JST), "juminhyo", "maintenance"),
    # 01:30 UTC is 10:30 JST: the rules read Japan time whatever zone the clock is in
    (dt.datetime(2026, 11, 25, 1, 30, tzinfo=dt.UTC), "juminhyo", None),
    (dt.datetime(2026, 11, 25, 14, 30, tzinfo=dt.UTC), "juminhyo", "outside_hours"),
])
def test_hours_holidays_and_closures(when: dt.datetime, dtype: str, code: str | None) -> None:
    assert refusal(person(), dtype, when) == code


def test_koseki_every_day_where_the_municipality_allows_it() -> None:
    s = dataclasses.replace(SETTINGS, koseki_weekdays_only=False)
    assert refusal(person(), "koseki", dt.datetime(2026, 11, 28, 20, 0, tzinfo=JST), s) is None


def test_options_offered_depend_on_settings() -> None:
    assert "my_number" not in SETTINGS.options(DocumentType.JUMINHYO)
    allow = dataclasses.replace(SETTINGS, allow_my_number=True)
    assert allow.options(DocumentType.JUMINHYO)["my_number"] == ["no", "yes"]
    assert SETTINGS.options(DocumentType.KOSEKI) == {"kind": ["full", "individual"]}


def test_municipality_codes_have_their_check_digit() -> None:
    assert municipality_code("14100") == "141003"  # 横浜市
    assert municipality_code("13101") == "131016"  # 千代田区


# -- the municipality, in-process ---------------------------------------------------------------
@pytest.fixture(scope="module")
def registers(tmp_path_factory: pytest.TempPathFactory) -> Database:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('reg') / 'r.db'}")
    seed(db, 800, 4, today=WED.date())
    return db


def _eligible(db: Database, code: str) -> Resident:
    with db.tx() as t:
        rows = t.all(f"SELECT {Resident.COLUMNS} FROM residents WHERE municipality=? AND"
                     " status='active' AND support_measure=0 AND gaiji_pending=0 AND"
                     " koseki_registered=1 AND honseki_code=municipality AND birth < ?"
                     " ORDER BY id", (code, "1990-01-01"))
        for row in rows:
            r = Resident.from_row(row)
            if t.one("SELECT 1 FROM inkan WHERE resident_id=?", (r.id,)) and \
                    len(r.name) <= 30 and len(r.address) <= 60 and t.one(
                        "SELECT COUNT(*) FROM residents WHERE household_id=?",
                        (r.household_id,))[0] >= 2:
                return r
    raise AssertionError("no eligible resident")


def _build(db: Database, r: Resident, dtype: str, options: dict[str, str]) -> Any:
    server = MunicipalityServer(db)
    b = Binding(request_id="req-00000001", session_id="ses-00000001", kiosk_id="kiosk-0001",
                cert_sha256=hashlib.sha256(b"c").hexdigest(), municipality_code=r.municipality,
                doc_type=dtype, issued_at=WED.isoformat())
    signed = server.build(BuildDocument(resident_id=r.id, options=options, binding=b))
    exp = ExpectedSession(b.request_id, b.session_id, b.kiosk_id, b.cert_sha256,
                          r.municipality, dtype)
    return check_binding(exp, signed, municipality_public_keys(db))


@pytest.mark.parametrize("dtype, options", [
    ("juminhyo", {}), ("juminhyo", {"scope": "household", "relationship": "yes",
                                    "honseki": "yes"}),
    ("kisai-jiko", {}), ("inkan", {}), ("tax", {"year": "last"}),
    ("koseki", {"kind": "full"}), ("koseki", {"kind": "individual"}), ("fuhyo", {}),
])
def test_the_six_types_are_built_from_the_registers(registers: Database, dtype: str,
                                                    options: dict[str, str]) -> None:
    r = _eligible(registers, "141003")
    doc = _build(registers, r, dtype, options)
    assert doc.doc_type.value == dtype and doc.municipality.code == "141003"
    assert r.name in doc.find("name")
    assert doc.municipality.seal_text == "横浜市長之印"
    if options.get("scope") == "household":
        assert len(doc.find("name")) >= 2 and doc.find("relationship")
        assert doc.find("honseki") and doc.find("head")
    if dtype == "juminhyo":
        assert not doc.find("my_number") and not doc.find("juminhyo_code")
    if dtype == "tax":
        assert doc.find("year") == ["2025"]


def test_my_number_only_where_the_municipality_allows_it(registers: Database) -> None:
    yokohama = _eligible(registers, "141003")
    with pytest.raises(Refused) as e:
        _build(registers, yokohama, "juminhyo", {"my_number": "yes"})
    assert e.value.code == "bad_option"
    osaka = _eligible(registers, "271004")  # 大阪市 allows it in this emulation
    doc = _build(registers, osaka, "juminhyo", {"my_number": "yes"})
    assert doc.find("my_number") == [osaka.my_number]


def test_fees_per_municipality_in_the_menu(registers: Database) -> None:
    server = MunicipalityServer(registers)
    fees = {}
    for code in ("141003", "131016", "372013", "271004"):
        r = _eligible(registers, code)
        items, _refused = server.menu(EligibilityQuery(request_id="req-00000001",
                                                      session_id="ses-00000001",
                                                      resident_id=r.id, at=WED.isoformat()))
        fees[code] = {i.doc_type: i.fee for i in items}
        assert all(200 <= f <= 450 for f in fees[code].values())
    assert fees["131016"]["juminhyo"] == 300 and fees["141003"]["juminhyo"] == 200
    assert "fuhyo" not in fees["372013"]  # 高松市 does not offer 附票 here


def test_population_has_the_refusal_cases(registers: Database) -> None:
    with registers.tx() as t:
        statuses = {s for (s,) in t.all("SELECT DISTINCT status FROM residents")}
        (children,) = t.one("SELECT COUNT(*) FROM residents WHERE birth > ?", ("2012-01-01",))
        (elsewhere,) = t.one("SELECT COUNT(*) FROM residents WHERE honseki_code <>"
                             " municipality")
        (households,) = t.one("SELECT COUNT(*) FROM households")
    assert {"active", "moved_out", "move_filed", "deceased"} <= statuses
    assert children > 0 and elsewhere > 0 and households < 800


def test_population_is_deterministic(tmp_path: Path) -> None:
    names = []
    for i in range(2):
        db = Database(f"sqlite:///{tmp_path / f'{i}.db'}")
        seed(db, 50, 2, rng_seed=7, today=WED.date())
        with db.tx() as t:
            names.append([r[0] for r in t.all("SELECT name FROM residents ORDER BY id")])
    assert names[0] == names[1]


def test_a_refused_type_is_refused_at_build_time_too(registers: Database) -> None:
    """The menu may be minutes old: the municipality re-checks when it builds."""
    with registers.tx() as t:
        child = Resident.from_row(t.one(f"SELECT {Resident.COLUMNS} FROM residents WHERE"
                                        " birth > ? AND status='active' LIMIT 1",
                                        ("2013-01-01",)))
    with pytest.raises(Refused) as e:
        _build(registers, child, "juminhyo", {})
    assert e.value.code == "under_15" and e.value.status == 403
