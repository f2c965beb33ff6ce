"""A synthetic population for the emulated municipalities: households with 世帯主 and
続柄, realistic (fictional) Japanese names and addresses, 本籍 in the municipality or
elsewhere (with or without 利用登録), 印鑑登録, 課税 records, 附票 address histories — and
the refusal cases of the eligibility table at fixed rates (転出, 転出届, 死亡, 支援措置,
外字 pending, 転入当日, names and addresses beyond the printable limit, children).

Deterministic for a seed; 100,000 residents take a few seconds (bulk inserts). Nothing
here is real: names are combined from common name parts, addresses from fictional 丁目.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cardio.identity import my_number_check_digit
from emulators.issuance.db import Database
from emulators.issuance.rules import Settings

__all__ = ["MUNICIPALITIES", "municipality_code", "seed"]


def municipality_code(five: str) -> str:
    """全国地方公共団体コード with its check digit (weights 6-2, modulus 11)."""
    total = sum(int(d) * w for d, w in zip(five, (6, 5, 4, 3, 2), strict=True))
    return five + str((11 - total % 11) % 10)


@dataclass(frozen=True)
class MunicipalitySpec:
    five: str
    prefecture: str
    name: str
    towns: tuple[str, ...]
    settings: Settings

    @property
    def code(self) -> str:
        return municipality_code(self.five)


ALL_FEES = {"juminhyo": 200, "kisai-jiko": 200, "inkan": 200, "tax": 250, "koseki": 350,
            "fuhyo": 200}
HOLIDAYS_2026 = ("2026-01-01", "2026-01-12", "2026-02-11", "2026-02-23", "2026-03-20",
                 "2026-04-29", "2026-05-03", "2026-05-04", "2026-05-05", "2026-05-06",
                 "2026-07-20", "2026-08-11", "2026-09-21", "2026-09-22", "2026-09-23",
                 "2026-10-12", "2026-11-03", "2026-11-23", "2027-01-01", "2027-01-11")

MUNICIPALITIES: tuple[MunicipalitySpec, ...] = (
    MunicipalitySpec("14100", "神奈川県", "横浜市", ("見本町", "港北見本", "青葉台見本"),
                     Settings(fees=ALL_FEES, holidays=HOLIDAYS_2026,
                              maintenance_days=("2026-12-20",))),
    MunicipalitySpec("13101", "東京都", "千代田区", ("見本町", "神田見本町", "麹町見本"),
                     Settings(fees={**ALL_FEES, "juminhyo": 300, "koseki": 450},
                              holidays=HOLIDAYS_2026, max_copies=5)),
    MunicipalitySpec("37201", "香川県", "高松市", ("見本町", "瓦町見本", "栗林見本"),
                     Settings(fees={k: v for k, v in ALL_FEES.items() if k != "fuhyo"},
                              holidays=HOLIDAYS_2026, koseki_weekdays_only=False,
                              max_copies=2)),
    MunicipalitySpec("27100", "大阪府", "大阪市", ("見本町", "中之島見本", "天満見本"),
                     Settings(fees={**ALL_FEES, "juminhyo": 250}, holidays=HOLIDAYS_2026,
                              allow_my_number=True)),
    MunicipalitySpec("01100", "北海道", "札幌市", ("見本町", "大通見本", "円山見本"),
                     Settings(fees={k: v for k, v in ALL_FEES.items()
                                    if k not in ("koseki", "fuhyo")},
                              holidays=HOLIDAYS_2026, open="07:00", close="22:00")),
    MunicipalitySpec("40130", "福岡県", "福岡市", ("見本町", "天神見本", "博多見本"),
                     Settings(fees={**ALL_FEES, "tax": 300}, holidays=HOLIDAYS_2026)),
    MunicipalitySpec("23100", "愛知県", "名古屋市", ("見本町", "栄見本", "千種見本"),
                     Settings(fees=ALL_FEES, holidays=HOLIDAYS_2026)),
    MunicipalitySpec("26100", "京都府", "京都市", ("見本町", "烏丸見本", "嵯峨見本"),
                     Settings(fees={**ALL_FEES, "inkan": 250}, holidays=HOLIDAYS_2026)),
)

SURNAMES = [("佐藤", "サトウ"), ("鈴木", "スズキ"), ("高橋", "タカハシ"), ("田中", "タナカ"),
            ("伊藤", "イトウ"), ("渡辺", "ワタナベ"), ("山本", "ヤマモト"), ("中村", "ナカムラ"),
            ("小林", "コバヤシ"), ("加藤", "カトウ"), ("吉田", "ヨシダ"), ("山田", "ヤマダ"),
            ("佐々木", "ササキ"), ("山口", "ヤマグチ"), ("松本", "マツモト"), ("井上", "イノウエ"),
            ("木村", "キムラ"), ("林", "ハヤシ"), ("斎藤", "サイトウ"), ("清水", "シミズ"),
            ("山崎", "ヤマザキ"), ("森", "モリ"), ("池田", "イケダ"), ("橋本", "ハシモト"),
            ("阿部", "アベ"), ("石川", "イシカワ"), ("前田", "マエダ"), ("藤田", "フジタ")]
MALE = [("太郎", "タロウ"), ("一郎", "イチロウ"), ("健太", "ケンタ"), ("翔", "ショウ"),
        ("大輔", "ダイスケ"), ("拓也", "タクヤ"), ("蓮", "レン"), ("悠真", "ユウマ"),
        ("浩", "ヒロシ"), ("誠", "マコト"), ("隆", "タカシ"), ("湊", "ミナト")]
FEMALE = [("花子", "ハナコ"), ("陽子", "ヨウコ"), ("美咲", "ミサキ"), ("葵", "アオイ"),
          ("結衣", "ユイ"), ("さくら", "サクラ"), ("恵子", "ケイコ"), ("真由美", "マユミ"),
          ("陽菜", "ヒナ"), ("凛", "リン"), ("智子", "トモコ"), ("芽依", "メイ")]
KANJI_DIGITS = "〇一二三四五六七八九"
LONG_GIVEN = "寿限無寿限無五劫の擦り切れ海砂利水魚の水行末雲来末風来末"


def _zen(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "０１２３４５６７８９"))


def _kanji(n: int) -> str:
    return "".join(KANJI_DIGITS[int(d)] for d in str(n))


def _my_number(rng: random.Random) -> str:
    first = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(10))
    return first + str(my_number_check_digit(first))


@dataclass
class _Rows:
    residents: list[tuple[object, ...]]
    households: list[tuple[object, ...]]
    inkan: list[tuple[object, ...]]
    tax: list[tuple[object, ...]]
    fuhyo: list[tuple[object, ...]]


def _households(rng: random.Random, spec: MunicipalitySpec, count: int, today: dt.date,
                start: int) -> Iterator[_Rows]:
    """Yield batches of rows for ``count`` residents of one municipality."""
    made = 0
    hh_no = 0
    rows = _Rows([], [], [], [], [])
    code = spec.code
    while made < count:
        hh_no += 1
        hid = f"H{code}{start + hh_no:07d}"
        surname, s_kana = rng.choice(SURNAMES)
        town = rng.choice(spec.towns)
        address = (f"{spec.prefecture}{spec.name}{town}{_kanji(rng.randint(1, 9))}丁目"
                   f"{_zen(rng.randint(1, 30))}番{_zen(rng.randint(1, 20))}号")
        if rng.random() < 0.003:  # beyond the printable limit
            address += "　" + "見本" * 30 + "マンション"
        honseki_elsewhere = rng.random() < 0.3
        other = rng.choice([m for m in MUNICIPALITIES if m.code != code])
        honseki_spec = other if honseki_elsewhere else spec
        honseki = (f"{honseki_spec.prefecture}{honseki_spec.name}"
                   f"{honseki_spec.towns[0]}{_kanji(rng.randint(1, 99))}番地")
        registered = int(not honseki_elsewhere or rng.random() < 0.5)
        head_age = rng.randint(22, 88)
        members: list[tuple[str, int, str]] = [("世帯主", head_age, rng.choice("12"))]
        size = rng.choices([1, 2, 3, 4, 5], [30, 28, 20, 16, 6])[0]
        if size >= 2:
            members.append(("妻" if members[0][2] == "1" else "夫",
                            max(20, head_age + rng.randint(-5, 5)),
                            "2" if members[0][2] == "1" else "1"))
        for _ in range(size - len(members)):
            child_age = rng.randint(0, max(0, min(35, head_age - 20)))
            members.append(("子", child_age, rng.choice("12")))
        head_name = ""
        head_id = f"R{code}{start + made:08d}"
        father = f"{surname}　{rng.choice(MALE)[0]}"
        mother = f"{surname}　{rng.choice(FEMALE)[0]}"
        for rel, age, sex in members:
            if made >= count:
                break
            rid = f"R{code}{start + made:08d}"
            made += 1
            given, g_kana = rng.choice(MALE if sex == "1" else FEMALE)
            if rng.random() < 0.002:
                given = LONG_GIVEN
            name = f"{surname}　{given}"
            if rel == "世帯主":
                head_name = name
            birth = today - dt.timedelta(days=age * 365 + rng.randint(0, 364))
            r = rng.random()
            status = ("moved_out" if r < 0.01 else "move_filed" if r < 0.02 else
                      "deceased" if r < 0.03 else "active")
            moved_in = today if rng.random() < 0.002 else \
                today - dt.timedelta(days=rng.randint(30, 365 * 20))
            rows.residents.append((
                rid, code, hid, name, f"{s_kana}　{g_kana}", birth.isoformat(), sex, rel,
                address, status, moved_in.isoformat(), int(rng.random() < 0.005),
                int(rng.random() < 0.005), _my_number(rng),
                f"{rng.randint(0, 10**11 - 1):011d}", honseki, head_name or name,
                honseki_spec.code, registered, father if rel == "子" else "",
                mother if rel == "子" else ""))
            if age >= 15 and rng.random() < 0.6:
                rows.inkan.append((rid, f"{rng.randint(1, 999999):06d}",
                                   f"〔印影：{surname}〕", (today - dt.timedelta(
                                       days=rng.randint(1, 3000))).isoformat()))
            if age >= 18:
                for year in (today.year - 1, today.year - 2):
                    income = rng.randint(0, 120) * 100_000
                    taxable = max(0, income - 1_500_000)
                    rows.tax.append((rid, year, income, taxable, taxable // 10))
            for seq in range(rng.randint(1, 3)):
                past = (f"{spec.prefecture}{spec.name}{rng.choice(spec.towns)}"
                        f"{_kanji(rng.randint(1, 9))}丁目{_zen(rng.randint(1, 30))}番")
                since = moved_in - dt.timedelta(days=365 * (seq + 1) * rng.randint(1, 5))
                rows.fuhyo.append((rid, seq, address if seq == 0 else past,
                                   (moved_in if seq == 0 else since).isoformat()))
        rows.households.append((hid, code, address, head_id))
        if len(rows.residents) >= 5000:
            yield rows
            rows = _Rows([], [], [], [], [])
    if rows.residents:
        yield rows


def seed(db: Database, residents: int = 1000, municipalities: int = 4, *, rng_seed: int = 1,
         today: dt.date | None = None) -> dict[str, int]:
    """Create ``municipalities`` municipalities (signing keys, settings) and spread
    ``residents`` over them. Adds to what is there; municipalities are created once."""
    import json

    if not 1 <= municipalities <= len(MUNICIPALITIES):
        from cardio.errors import UsageError

        raise UsageError(f"--municipalities is 1..{len(MUNICIPALITIES)}")
    rng = random.Random(rng_seed)
    today = today or dt.date.today()
    specs = MUNICIPALITIES[:municipalities]
    counts: dict[str, int] = {}
    with db.tx(write=True) as t:
        for spec in specs:
            if t.one("SELECT 1 FROM municipalities WHERE code=?", (spec.code,)):
                continue
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
            t.execute("INSERT INTO municipalities (code, name, mayor, seal_text, settings,"
                      " signing_key, stopped) VALUES (?, ?, ?, ?, ?, ?, 0)",
                      (spec.code, spec.name, f"{spec.name}長　見本　太郎", f"{spec.name}長之印",
                       json.dumps(spec.settings.to_json()), pem))
        existing = {str(r[0]): int(r[1]) for r in t.all(
            "SELECT municipality, COUNT(*) FROM residents GROUP BY municipality")}
    per = [residents // len(specs) + (1 if i < residents % len(specs) else 0)
           for i in range(len(specs))]
    for spec, n in zip(specs, per, strict=True):
        start = existing.get(spec.code, 0)
        for rows in _households(rng, spec, n, today, start):
            with db.tx(write=True) as t:
                t.executemany(f"INSERT INTO residents ({_RES_COLS}) VALUES "
                              f"({', '.join('?' * 21)})", rows.residents)
                t.executemany("INSERT INTO households (id, municipality, address, head_id)"
                              " VALUES (?, ?, ?, ?)", rows.households)
                if rows.inkan:
                    t.executemany("INSERT INTO inkan (resident_id, reg_number, impression,"
                                  " registered) VALUES (?, ?, ?, ?)", rows.inkan)
                if rows.tax:
                    t.executemany("INSERT INTO tax_records (resident_id, year, income,"
                                  " taxable, tax) VALUES (?, ?, ?, ?, ?)", rows.tax)
                t.executemany("INSERT INTO fuhyo (resident_id, seq, address, since) VALUES"
                              " (?, ?, ?, ?)", rows.fuhyo)
        counts[spec.code] = n
    return counts


_RES_COLS = ("id, municipality, household_id, name, kana, birth, sex, relationship, address,"
             " status, moved_in, support_measure, gaiji_pending, my_number, juminhyo_code,"
             " honseki, hittousha, honseki_code, koseki_registered, father, mother")
