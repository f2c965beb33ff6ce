"""The municipal 証明発行サーバ: resolves a certificate serial to its resident, answers
what the resident may get now (eligibility table, hours, fees, options), and builds the six
document types from its registers, signed (ECDSA P-256) over content and binding.

Each call reads the registers afresh inside one transaction and builds the document in
local variables that end with the call: there is no buffer, file, cache entry or "current
job" slot that a second request could overwrite (Kawasaki's 1-second overwrite, Yokohama's
released print lock). Only immutable things are cached per process: the municipality's
name, 公印 identity, settings and signing key.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from emulators.issuance.db import Database, Tx
from emulators.issuance.errors import Refused
from emulators.issuance.rules import JST, REASONS, Resident, Settings, refusal_for
from kiosk.documents.model import (
    DOCUMENT_TITLES,
    Document,
    DocumentType,
    Field,
    Municipality,
    Section,
)
from kiosk.protocol.binding import sign_document
from kiosk.protocol.messages import (
    BuildDocument,
    EligibilityQuery,
    MenuItem,
    MenuRefusal,
    ResidentRef,
    ResolveResident,
    SignedDocument,
)

__all__ = ["MunicipalityServer", "municipality_public_keys"]

CERTIFICATIONS = {
    DocumentType.JUMINHYO: "この写しは、住民票の原本と相違ないことを証明する。",
    DocumentType.KISAI_JIKO: "上記のとおり住民票に記載されていることを証明する。",
    DocumentType.INKAN: "この写しは、登録された印影と相違ないことを証明する。",
    DocumentType.TAX: "上記のとおり相違ないことを証明する。",
    DocumentType.KOSEKI: "これは、戸籍に記録されている事項の全部を証明した書面である。",
    DocumentType.FUHYO: "この写しは、戸籍の附票の原本と相違ないことを証明する。",
}
SEX = {"1": "男", "2": "女"}


@dataclass(frozen=True)
class _Muni:
    model: Municipality
    settings: Settings
    key: ec.EllipticCurvePrivateKey


def _date(d: dt.date | str) -> str:
    d = dt.date.fromisoformat(d) if isinstance(d, str) else d
    return f"{d.year}年{d.month}月{d.day}日"


def municipality_public_keys(db: Database) -> dict[str, ec.EllipticCurvePublicKey]:
    """Every municipality's document-signing public key (what an operator distributes to
    its kiosks)."""
    out = {}
    with db.tx() as t:
        for code, pem in t.all("SELECT code, signing_key FROM municipalities"):
            key = serialization.load_pem_private_key(str(pem).encode(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            out[str(code)] = key.public_key()
    return out


class MunicipalityServer:
    """All emulated municipalities of one database (each answers for its own residents)."""

    def __init__(self, db: Database, jlis_dir: Path | None = None) -> None:
        self.db = db
        self.jlis_dir = jlis_dir
        self._issuers: dict[str, Any] = {}
        self._munis: dict[str, _Muni] = {}
        self._lock = threading.Lock()

    def municipality(self, code: str, t: Tx | None = None) -> _Muni:
        m = self._munis.get(code)
        if m is not None:
            return m
        with self._lock:
            if t is None:
                with self.db.tx() as t2:
                    row = t2.one("SELECT code, name, mayor, seal_text, settings, signing_key"
                                 " FROM municipalities WHERE code=?", (code,))
            else:
                row = t.one("SELECT code, name, mayor, seal_text, settings, signing_key FROM"
                            " municipalities WHERE code=?", (code,))
            if row is None:
                raise Refused(404, "unknown_municipality", "no such municipality")
            key = serialization.load_pem_private_key(str(row[5]).encode(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            m = _Muni(Municipality(row[0], row[1], row[2], row[3]),
                      Settings.from_json(json.loads(row[4])), key)
            self._munis[code] = m
            return m

    # -- resolve ---------------------------------------------------------------------------
    def _tx(self, t: Tx | None) -> contextlib.AbstractContextManager[Tx]:
        """The caller's transaction (the center folds lookups into its own), or a new one."""
        return contextlib.nullcontext(t) if t is not None else self.db.tx()

    def resolve(self, msg: ResolveResident, t: Tx | None = None) -> ResidentRef | None:
        with self._tx(t) as t:
            row = t.one("SELECT c.resident_id, r.municipality FROM cert_serials c JOIN"
                        " residents r ON r.id = c.resident_id WHERE c.serial_hex=?",
                        (msg.serial_hex,))
        if row is None:
            return None
        return ResidentRef(request_id=msg.request_id, resident_id=row[0],
                           municipality_code=row[1])

    # -- eligibility -------------------------------------------------------------------------
    @staticmethod
    def _resident(t: Tx, resident_id: str, now: dt.datetime) -> tuple[Resident, bool, bool]:
        """The resident, whether a seal is registered, whether last year's tax record
        exists — one statement (the eligibility table needs all three)."""
        row = t.one(f"SELECT {Resident.COLUMNS},"
                    " EXISTS (SELECT 1 FROM inkan i WHERE i.resident_id = residents.id),"
                    " EXISTS (SELECT 1 FROM tax_records x WHERE x.resident_id = residents.id"
                    " AND x.year = ?) FROM residents WHERE id=?",
                    (now.astimezone(JST).year - 1, resident_id))
        if row is None:
            raise Refused(404, "unknown_resident", "no such resident")
        return Resident.from_row(row[:-2]), bool(row[-2]), bool(row[-1])

    def menu(self, q: EligibilityQuery, t: Tx | None = None
             ) -> tuple[list[MenuItem], list[MenuRefusal]]:
        now = dt.datetime.fromisoformat(q.at)
        with self._tx(t) as t:
            r, has_inkan, has_tax = self._resident(t, q.resident_id, now)
            m = self.municipality(r.municipality, t)
        items, refused = [], []
        for dtype in DocumentType:
            reason = refusal_for(r, m.settings, dtype, now, has_inkan=has_inkan,
                                 has_tax=has_tax)
            if reason is None:
                items.append(MenuItem(dtype.value, DOCUMENT_TITLES[dtype],
                                      m.settings.fees[dtype.value], m.settings.options(dtype),
                                      max_copies=m.settings.max_copies))
            else:
                ja, en = REASONS[reason]
                refused.append(MenuRefusal(dtype.value, reason, ja, en))
        return items, refused

    # -- build --------------------------------------------------------------------------------
    def fee(self, code: str, doc_type: str) -> int:
        return self.municipality(code).settings.fees.get(doc_type, 0)

    def build(self, req: BuildDocument) -> SignedDocument:
        """Check eligibility and options again (the menu may be minutes old), build the
        document and sign it over content and binding."""
        b = req.binding
        dtype = DocumentType(b.doc_type)
        now = dt.datetime.fromisoformat(b.issued_at)
        with self.db.tx() as t:
            r, has_inkan, has_tax = self._resident(t, req.resident_id, now)
            if r.municipality != b.municipality_code:
                raise Refused(409, "wrong_municipality", "the resident is registered in"
                              " another municipality")
            m = self.municipality(r.municipality, t)
            reason = refusal_for(r, m.settings, dtype, now, has_inkan=has_inkan,
                                 has_tax=has_tax)
            if reason is not None:
                raise Refused(403, reason)
            options = _options(m.settings, dtype, req.options)
            sections = _SECTIONS[dtype](t, r, m, options, now)
        doc = Document(
            doc_type=dtype, title=DOCUMENT_TITLES[dtype], municipality=m.model,
            issue_number=f"{m.model.code}-{secrets.token_hex(6)}",
            issued_at=now, sections=tuple(sections), certification=CERTIFICATIONS[dtype],
            notes=(f"{_date(now.date())}　{m.model.mayor}",))
        signed = sign_document(doc, b, m.key)
        if self.jlis_dir is None:
            return signed
        from emulators.document_issuers import DocumentIssuer
        from kiosk.documents import seal

        issuer = self._issuers.get(m.model.code)
        if issuer is None:  # read once per worker: the keys exist before workers start
            issuer = DocumentIssuer.load_or_create(m.model, self.jlis_dir)
            self._issuers[m.model.code] = issuer
        return dataclasses.replace(
            signed, seal=base64.b64encode(seal.sign_document(doc, issuer.signing_key)).decode(),
            scramble_key=issuer.scramble_key.hex())


def _options(settings: Settings, dtype: DocumentType, given: dict[str, str]) -> dict[str, str]:
    allowed = settings.options(dtype)
    unknown = set(given) - set(allowed)
    if unknown:
        raise Refused(400, "bad_option", f"unknown option for {dtype.value}: "
                      f"{sorted(unknown)[0][:30]}")
    out = {}
    for name, values in allowed.items():
        value = given.get(name, values[0])
        if value not in values:
            raise Refused(400, "bad_option", f"option {name} is one of {', '.join(values)}")
        out[name] = value
    return out


def _person(r: Resident, m: _Muni, opts: dict[str, str], *, head: str) -> list[Field]:
    f = [Field("name", "氏名", r.name), Field("kana", "フリガナ", r.kana),
         Field("birth", "生年月日", _date(r.birth)), Field("sex", "性別", SEX.get(r.sex, "")),
         Field("address", "住所", r.address), Field("moved_in", "住民となった日",
                                                   _date(r.moved_in))]
    if opts.get("relationship") == "yes":
        f += [Field("head", "世帯主", head), Field("relationship", "続柄", r.relationship)]
    if opts.get("honseki") == "yes":
        f += [Field("honseki", "本籍", r.honseki), Field("hittousha", "筆頭者", r.hittousha)]
    if opts.get("my_number") == "yes" and m.settings.allow_my_number:
        f += [Field("my_number", "個人番号", r.my_number),
              Field("juminhyo_code", "住民票コード", r.juminhyo_code)]
    return f


def _household(t: Tx, r: Resident) -> tuple[str, list[Resident]]:
    rows = t.all(f"SELECT {Resident.COLUMNS} FROM residents WHERE household_id=? ORDER BY id",
                 (r.household_id,))
    members = [Resident.from_row(x) for x in rows]
    head = next((x.name for x in members if x.relationship == "世帯主"), r.name)
    return head, members


def _juminhyo(t: Tx, r: Resident, m: _Muni, opts: dict[str, str], now: dt.datetime
              ) -> list[Section]:
    head, members = _household(t, r)
    people = [r] if opts["scope"] == "self" else \
        [x for x in members if x.status in ("active", "move_filed")]
    return [Section(f"{i + 1}", tuple(_person(p, m, opts, head=head)))
            for i, p in enumerate(people)]


def _kisai(t: Tx, r: Resident, m: _Muni, opts: dict[str, str], now: dt.datetime
           ) -> list[Section]:
    return [Section("記載事項", (Field("name", "氏名", r.name),
                                 Field("birth", "生年月日", _date(r.birth)),
                                 Field("sex", "性別", SEX.get(r.sex, "")),
                                 Field("address", "住所", r.address)))]


def _inkan(t: Tx, r: Resident, m: _Muni, opts: dict[str, str], now: dt.datetime
           ) -> list[Section]:
    row = t.one("SELECT reg_number, impression, registered FROM inkan WHERE resident_id=?",
                (r.id,))
    return [Section("印鑑登録", (Field("impression", "印影", row[1]),
                                Field("inkan_number", "登録番号", row[0]),
                                Field("name", "氏名", r.name),
                                Field("birth", "生年月日", _date(r.birth)),
                                Field("address", "住所", r.address)))]


def _tax(t: Tx, r: Resident, m: _Muni, opts: dict[str, str], now: dt.datetime
         ) -> list[Section]:
    year = now.astimezone(JST).year - (1 if opts["year"] == "last" else 2)
    row = t.one("SELECT income, taxable, tax FROM tax_records WHERE resident_id=? AND year=?",
                (r.id, year))
    if row is None:
        raise Refused(403, "no_tax_record")
    return [Section(f"{year}年分", (Field("name", "氏名", r.name),
                                   Field("address", "住所", r.address),
                                   Field("year", "年度", str(year)),
                                   Field("income", "総所得金額", f"{row[0]:,}円"),
                                   Field("taxable", "課税標準額", f"{row[1]:,}円"),
                                   Field("tax", "税額", f"{row[2]:,}円")))]


def _koseki(t: Tx, r: Resident, m: _Muni, opts: dict[str, str], now: dt.datetime
            ) -> list[Section]:
    _head, members = _household(t, r)
    people = [r] if opts["kind"] == "individual" else \
        [x for x in members if x.honseki == r.honseki and x.hittousha == r.hittousha]
    out = [Section("戸籍事項", (Field("honseki", "本籍", r.honseki),
                               Field("hittousha", "筆頭者", r.hittousha)))]
    for p in people:
        out.append(Section("戸籍に記録されている者", (
            Field("name", "氏名", p.name), Field("birth", "生年月日", _date(p.birth)),
            Field("father", "父", p.father), Field("mother", "母", p.mother),
            Field("relationship", "続柄", p.relationship))))
    return out


def _fuhyo(t: Tx, r: Resident, m: _Muni, opts: dict[str, str], now: dt.datetime
           ) -> list[Section]:
    rows = t.all("SELECT address, since FROM fuhyo WHERE resident_id=? ORDER BY seq DESC",
                 (r.id,))
    out = [Section("附票", (Field("honseki", "本籍", r.honseki),
                            Field("hittousha", "筆頭者", r.hittousha),
                            Field("name", "氏名", r.name)))]
    for addr, since in rows:
        out.append(Section("住所", (Field("history_address", "住所", addr),
                                    Field("since", "住所を定めた日", _date(since)))))
    return out


_SECTIONS: dict[DocumentType, Any] = {
    DocumentType.JUMINHYO: _juminhyo, DocumentType.KISAI_JIKO: _kisai,
    DocumentType.INKAN: _inkan, DocumentType.TAX: _tax, DocumentType.KOSEKI: _koseki,
    DocumentType.FUHYO: _fuhyo,
}


def ensure_document_issuers(db: Database, jlis_dir: Path) -> None:
    """Create each municipality's document-sealing identity (``emulators.document_issuers``)
    once, before the workers start, so concurrent workers never race to create two keys;
    ``cardio doc trust --out`` exports them and ``cardio doc verify`` accepts the pages."""
    from emulators.document_issuers import DocumentIssuer

    with db.tx() as t:
        rows = t.all("SELECT code, name, mayor, seal_text FROM municipalities")
    for row in rows:
        DocumentIssuer.load_or_create(Municipality(row[0], row[1], row[2], row[3]), jlis_dir)
