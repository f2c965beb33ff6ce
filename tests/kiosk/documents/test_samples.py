from __future__ import annotations

from kiosk.documents.model import Document, DocumentType
from kiosk.documents.samples import sample_document, sample_documents


def test_one_sample_of_each_of_the_six_types_round_trips() -> None:
    docs = sample_documents()
    assert [d.doc_type for d in docs] == list(DocumentType)
    for d in docs:
        assert Document.from_canonical(d.canonical_bytes()) == d


def test_serials_make_distinct_issue_numbers_and_digests() -> None:
    a, b = sample_document("inkan", serial=1), sample_document("inkan", serial=2)
    assert a.issue_number != b.issue_number
    assert a.canonical_bytes() != b.canonical_bytes()


def test_the_juminhyo_sample_carries_the_numbers_a_seal_must_not() -> None:
    doc = sample_document("juminhyo")
    assert doc.find("my_number") and doc.find("juminhyo_code")
