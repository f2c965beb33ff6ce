"""Sample certificates of all six types: realistic in shape, fictitious in content.

They stand in for the municipality server's output (issue 10) so the renderer, the seal and
the verifier can be built and tested before that server exists, and they are what
``doc render --sample TYPE`` prints. Every name, address and number here is invented; the
個人番号 and 住民票コード are deliberately present on the 住民票 so tests can prove they never
reach the seal. The 戸籍 sample has enough entries to run onto a second page.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kiosk.documents.model import (
    DOCUMENT_TITLES,
    Document,
    DocumentFormatError,
    DocumentType,
    Field,
    Municipality,
    Section,
)

__all__ = ["SAMPLE_MUNICIPALITY", "sample_document", "sample_documents"]

JST = timezone(timedelta(hours=9))

SAMPLE_MUNICIPALITY = Municipality(
    code="999997",  # not an assigned 団体コード: obviously a test issuer
    name="見本市",
    mayor="見本市長　青葉　一郎",
    seal_text="見本市長之印",
)

_CERTIFICATION = {
    DocumentType.JUMINHYO: "この写しは、住民票の原本と相違ないことを証明する。",
    DocumentType.KISAI_JIKO: "上記のとおり住民票に記載されていることを証明する。",
    DocumentType.INKAN: "この写しは、登録されている印影と相違ないことを証明する。",
    DocumentType.TAX: "上記のとおり相違ないことを証明する。",
    DocumentType.KOSEKI: "これは、戸籍に記録されている事項の全部を証明した書面である。",
    DocumentType.FUHYO: "この写しは、戸籍の附票の原本と相違ないことを証明する。",
}

_ADDRESS = "見本県見本市中央区青葉台三丁目4番5号　みほんハイツ201号"
_HONSEKI = "見本県見本市中央区青葉台三丁目4番地"


def _person(name: str, kana: str, birth: str, sex: str, relation: str, since: str,
            *, ids: tuple[str, str] | None = None) -> tuple[Field, ...]:
    fields = [
        Field("name", "氏名", name),
        Field("kana", "ふりがな", kana),
        Field("birth", "生年月日", birth),
        Field("sex", "性別", sex),
        Field("relation", "続柄", relation),
        Field("resident_since", "住民となった年月日", since),
    ]
    if ids is not None:
        fields.append(Field("juminhyo_code", "住民票コード", ids[0]))
        fields.append(Field("my_number", "個人番号", ids[1]))
    return tuple(fields)


def _sections(doc_type: DocumentType) -> tuple[tuple[Section, ...], tuple[str, ...]]:
    if doc_type is DocumentType.JUMINHYO:
        return (
            Section("世帯", (
                Field("address", "住所", _ADDRESS),
                Field("householder", "世帯主", "青葉　太郎"),
            )),
            Section("1", _person("青葉　太郎", "あおば　たろう", "昭和60年4月12日", "男", "世帯主",
                                 "平成22年3月1日", ids=("12345678901", "123456789018"))),
            Section("2", _person("青葉　花子", "あおば　はなこ", "昭和62年11月3日", "女", "妻",
                                 "平成24年6月15日", ids=("23456789012", "234567890125"))),
        ), ("個人番号・住民票コードは請求により記載。",)
    if doc_type is DocumentType.KISAI_JIKO:
        return (
            Section("記載事項", (
                Field("name", "氏名", "青葉　太郎"),
                Field("birth", "生年月日", "昭和60年4月12日"),
                Field("address", "住所", _ADDRESS),
                Field("resident_since", "住民となった年月日", "平成22年3月1日"),
            )),
        ), ()
    if doc_type is DocumentType.INKAN:
        return (
            Section("登録者", (
                Field("name", "氏名", "青葉　太郎"),
                Field("birth", "生年月日", "昭和60年4月12日"),
                Field("address", "住所", _ADDRESS),
                Field("inkan_number", "登録番号", "第0004217号"),
                Field("inkan_image", "印影", "（印影）青葉"),
            )),
        ), ()
    if doc_type is DocumentType.TAX:
        return (
            Section("納税義務者", (
                Field("name", "氏名", "青葉　太郎"),
                Field("address", "住所", _ADDRESS),
                Field("tax_year", "年度", "令和8年度（令和7年分）"),
            )),
            Section("所得", (
                Field("income_total", "総所得金額", "5,240,000円"),
                Field("income_salary", "給与収入", "7,100,000円"),
                Field("deductions", "所得控除合計", "1,830,000円"),
                Field("taxable", "課税標準額", "3,410,000円"),
            )),
            Section("税額", (
                Field("tax_city", "市民税", "207,600円"),
                Field("tax_prefecture", "県民税", "138,400円"),
                Field("tax_total", "合計", "346,000円"),
            )),
        ), ()
    if doc_type is DocumentType.KOSEKI:
        sections = [
            Section("戸籍事項", (
                Field("honseki", "本籍", _HONSEKI),
                Field("hittosha", "筆頭者", "青葉　太郎"),
                Field("edit", "戸籍改製", "【改製日】平成16年11月13日"),
            )),
        ]
        people = [("青葉　太郎", "昭和60年4月12日", "夫", "青葉　健一", "長男"),
                  ("青葉　花子", "昭和62年11月3日", "妻", "緑川　誠", "長女"),
                  ("青葉　翔太", "平成25年8月20日", "子", "青葉　太郎", "長男"),
                  ("青葉　結衣", "平成28年2月9日", "子", "青葉　太郎", "長女"),
                  ("青葉　陽斗", "令和2年5月30日", "子", "青葉　太郎", "二男")]
        for i, (name, birth, role, father, rel) in enumerate(people, 1):
            sections.append(Section(f"戸籍に記録されている者 {i}", (
                Field("name", "名", name),
                Field("birth", "生年月日", birth),
                Field("father", "父", father),
                Field("relation", "続柄", rel),
                Field("role", "身分", role),
                Field("event_birth", "出生", f"【出生日】{birth}　【出生地】見本県見本市"),
                Field("event_notify", "届出", f"【届出日】{birth}の翌月　【届出人】父"),
                Field("event_marriage", "婚姻",
                      "【婚姻日】平成23年5月3日　【配偶者氏名】（省略）" if role in ("夫", "妻")
                      else "（記録なし）"),
            )))
        return tuple(sections), ("以下余白",)
    if doc_type is DocumentType.FUHYO:
        return (
            Section("戸籍", (
                Field("honseki", "本籍", _HONSEKI),
                Field("hittosha", "筆頭者", "青葉　太郎"),
            )),
            Section("附票", (
                Field("name", "氏名", "青葉　太郎"),
                Field("birth", "生年月日", "昭和60年4月12日"),
                Field("address", "住所", _ADDRESS),
                Field("address_since", "住所を定めた年月日", "平成22年3月1日"),
                Field("address_prev", "前住所", "見本県見本市北区若葉町一丁目2番3号"),
            )),
        ), ()
    raise DocumentFormatError(f"no sample for {doc_type}")  # pragma: no cover - enum is closed


def sample_document(doc_type: DocumentType | str, *, serial: int = 1,
                    issued_at: datetime | None = None) -> Document:
    """A fictitious certificate of ``doc_type``; ``serial`` varies the issue number so tests
    can make many distinct documents."""
    dt = DocumentType(doc_type)
    sections, notes = _sections(dt)
    when = issued_at or datetime(2026, 11, 20, 10, 15, tzinfo=JST) + timedelta(minutes=serial)
    return Document(
        doc_type=dt,
        title=DOCUMENT_TITLES[dt],
        municipality=SAMPLE_MUNICIPALITY,
        issue_number=f"第{when:%Y}-{list(DocumentType).index(dt) + 1:02d}{serial:06d}号",
        issued_at=when,
        sections=sections,
        certification=_CERTIFICATION[dt],
        notes=notes,
    )


def sample_documents() -> list[Document]:
    """One sample of each of the six types."""
    return [sample_document(t) for t in DocumentType]
