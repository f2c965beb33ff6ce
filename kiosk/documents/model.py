"""The structured certificate document: what a municipality's 証明発行サーバ builds and signs,
what the kiosk checks against its session, and what the renderer lays out on A4.

It is deliberately generic — a titled document of sections of labelled fields, as printed —
so one model carries all six kiosk certificate types (住民票の写し, 住民票記載事項証明書,
印鑑登録証明書, 税証明書, 戸籍証明書, 戸籍の附票の写し). Each field also has a machine key
(``name``, ``address``, ``birth``...) so a seal or a test can find a value without parsing
labels. The canonical encoding (:meth:`Document.canonical_bytes`) is what gets signed and
digested: deterministic JSON (sorted keys, no whitespace, UTF-8), so every party that holds
the same document computes the same bytes.

The model holds personal data; it lives in memory for one issuance and is never journalled.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cardio.errors import CardioError

__all__ = [
    "DOCUMENT_TITLES",
    "Document",
    "DocumentFormatError",
    "DocumentType",
    "Field",
    "Municipality",
    "Section",
]


class DocumentFormatError(CardioError):
    """A serialised document is malformed (wrong types, missing keys, unknown type)."""

    exit_code = 1


class DocumentType(enum.StrEnum):
    """The six document types a kiosk issues; the values are the identifiers used on the
    command line and in the issuance protocol."""

    JUMINHYO = "juminhyo"  # 住民票の写し
    KISAI_JIKO = "kisai-jiko"  # 住民票記載事項証明書
    INKAN = "inkan"  # 印鑑登録証明書
    TAX = "tax"  # 各種税証明書 (所得・課税)
    KOSEKI = "koseki"  # 戸籍証明書 (全部事項/個人事項)
    FUHYO = "fuhyo"  # 戸籍の附票の写し


DOCUMENT_TITLES: dict[DocumentType, str] = {
    DocumentType.JUMINHYO: "住民票の写し",
    DocumentType.KISAI_JIKO: "住民票記載事項証明書",
    DocumentType.INKAN: "印鑑登録証明書",
    DocumentType.TAX: "所得・課税証明書",
    DocumentType.KOSEKI: "戸籍全部事項証明書",
    DocumentType.FUHYO: "戸籍の附票の写し",
}


@dataclass(frozen=True)
class Municipality:
    """The issuing municipality and the identity of its 公印 (official seal)."""

    code: str  # 全国地方公共団体コード, six digits with check digit (e.g. "141003" 横浜市)
    name: str  # e.g. "横浜市"
    mayor: str  # the certifying officer as printed, e.g. "横浜市長　山田　太郎"
    seal_text: str  # the characters of the 公印, e.g. "横浜市長之印"


@dataclass(frozen=True)
class Field:
    """One printed item: a label, its value as printed, and a stable machine key."""

    key: str
    label: str
    value: str


@dataclass(frozen=True)
class Section:
    """A block of fields: one person of a household, one 戸籍 entry, one tax year..."""

    title: str
    fields: tuple[Field, ...]

    def get(self, key: str) -> str | None:
        for f in self.fields:
            if f.key == key:
                return f.value
        return None


@dataclass(frozen=True)
class Document:
    """A certificate as the municipality issues it (content only; the binding to a kiosk
    session is added by the issuance protocol around it)."""

    doc_type: DocumentType
    title: str
    municipality: Municipality
    issue_number: str  # 発行番号, unique per municipality
    issued_at: datetime  # timezone-aware (JST)
    sections: tuple[Section, ...]
    certification: str  # e.g. 「この写しは、住民票の原本と相違ないことを証明する。」
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.issued_at.tzinfo is None:
            raise DocumentFormatError("document issued_at must be timezone-aware")

    def find(self, key: str) -> list[str]:
        """Every value with this machine key, in printed order."""
        return [f.value for s in self.sections for f in s.fields if f.key == key]

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc_type": self.doc_type.value,
            "title": self.title,
            "municipality": {
                "code": self.municipality.code,
                "name": self.municipality.name,
                "mayor": self.municipality.mayor,
                "seal_text": self.municipality.seal_text,
            },
            "issue_number": self.issue_number,
            "issued_at": self.issued_at.isoformat(),
            "sections": [
                {"title": s.title, "fields": [[f.key, f.label, f.value] for f in s.fields]}
                for s in self.sections
            ],
            "certification": self.certification,
            "notes": list(self.notes),
        }

    def canonical_bytes(self) -> bytes:
        """The bytes that are signed and digested: sorted-key compact JSON in UTF-8."""
        return json.dumps(
            self.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")

    @classmethod
    def from_dict(cls, d: Any) -> Document:
        """Parse and validate; any shape error is a :class:`DocumentFormatError`."""
        try:
            if not isinstance(d, dict):
                raise TypeError("document is not an object")
            m = d["municipality"]
            muni = Municipality(
                code=_s(m["code"]), name=_s(m["name"]), mayor=_s(m["mayor"]),
                seal_text=_s(m["seal_text"]),
            )
            sections = []
            for s in d["sections"]:
                fields = []
                for item in s["fields"]:
                    if not isinstance(item, list) or len(item) != 3:
                        raise TypeError("field is not [key, label, value]")
                    fields.append(Field(_s(item[0]), _s(item[1]), _s(item[2])))
                sections.append(Section(_s(s["title"]), tuple(fields)))
            notes = d.get("notes", [])
            if not isinstance(notes, list):
                raise TypeError("notes is not a list")
            return cls(
                doc_type=DocumentType(d["doc_type"]),
                title=_s(d["title"]),
                municipality=muni,
                issue_number=_s(d["issue_number"]),
                issued_at=datetime.fromisoformat(_s(d["issued_at"])),
                sections=tuple(sections),
                certification=_s(d["certification"]),
                notes=tuple(_s(n) for n in notes),
            )
        except DocumentFormatError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise DocumentFormatError(f"malformed document: {type(e).__name__}: {e}") from None

    @classmethod
    def from_canonical(cls, data: bytes) -> Document:
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise DocumentFormatError(f"document is not UTF-8 JSON: {e}") from None
        except RecursionError:  # [[[[… nested deeper than the parser's stack
            raise DocumentFormatError("document is not a certificate: JSON nested too deep"
                                      ) from None
        return cls.from_dict(obj)


def _s(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v
