from datetime import datetime, timedelta, timezone

import pytest

from kiosk.documents.model import (
    Document,
    DocumentFormatError,
    DocumentType,
    Field,
    Municipality,
    Section,
)

JST = timezone(timedelta(hours=9))


def sample() -> Document:
    return Document(
        doc_type=DocumentType.JUMINHYO,
        title="住民票の写し",
        municipality=Municipality("141003", "横浜市", "横浜市長　山田　太郎", "横浜市長之印"),
        issue_number="2026-000123",
        issued_at=datetime(2026, 11, 25, 10, 0, tzinfo=JST),
        sections=(Section("世帯員1", (Field("name", "氏名", "番号　花子"),
                                      Field("birth", "生年月日", "平成2年1月1日"))),),
        certification="この写しは、住民票の原本と相違ないことを証明する。",
    )


def test_canonical_round_trip_is_byte_exact() -> None:
    d = sample()
    raw = d.canonical_bytes()
    assert Document.from_canonical(raw) == d
    assert Document.from_canonical(raw).canonical_bytes() == raw
    assert raw.startswith(b'{"certification":')  # sorted keys, compact
    assert d.find("name") == ["番号　花子"]


@pytest.mark.parametrize("bad", [b"", b"[]", b"null", b'{"doc_type":"x"}', b"\xff",
                                 b'{"doc_type":"juminhyo"}'])
def test_malformed_is_typed(bad: bytes) -> None:
    with pytest.raises(DocumentFormatError):
        Document.from_canonical(bad)


def test_naive_time_refused() -> None:
    with pytest.raises(DocumentFormatError):
        Document(DocumentType.TAX, "t", sample().municipality, "1", datetime(2026, 1, 1), (), "c")
