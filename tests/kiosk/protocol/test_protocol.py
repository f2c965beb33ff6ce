"""The sans-IO issuance protocol: strict codecs, the binding check, kiosk signatures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.model import Document, DocumentType, Field, Municipality, Section
from kiosk.protocol import (
    BadDocumentSignature,
    BindingMismatch,
    ExpectedSession,
    MalformedMessage,
    MessageTooLarge,
    UnsupportedVersion,
    check_binding,
    decode,
    encode,
    sign_document,
)
from kiosk.protocol.kiosk_auth import (
    KioskAuthError,
    parse_headers,
    request_headers,
    verify_request,
)
from kiosk.protocol.messages import (
    Binding,
    DocumentRequest,
    Finalize,
    Menu,
    MenuItem,
    OpenSession,
    SignedDocument,
)

JST = dt.timezone(dt.timedelta(hours=9))
MUNI = Municipality("141003", "横浜市", "横浜市長　山田　太郎", "横浜市長之印")
CERT = hashlib.sha256(b"cert-a").hexdigest()


def document(name: str = "見本　一郎", when: dt.datetime | None = None) -> Document:
    return Document(
        doc_type=DocumentType.JUMINHYO, title="住民票の写し", municipality=MUNI,
        issue_number="141003-000001", issued_at=when or dt.datetime(2026, 11, 25, 10, 0,
                                                                   tzinfo=JST),
        sections=(Section("1", (Field("name", "氏名", name),)),),
        certification="この写しは、住民票の原本と相違ないことを証明する。")


def binding(**over: str) -> Binding:
    values = dict(request_id="req-00000001", session_id="ses-00000001", kiosk_id="kiosk-0001",
                  cert_sha256=CERT, municipality_code="141003", doc_type="juminhyo",
                  issued_at="2026-11-25T10:00:00+09:00")
    values.update(over)
    return Binding(**values)


def expected(**over: str) -> ExpectedSession:
    b = binding()
    values = dict(request_id=b.request_id, session_id=b.session_id, kiosk_id=b.kiosk_id,
                  cert_sha256=b.cert_sha256, municipality_code=b.municipality_code,
                  doc_type=b.doc_type)
    values.update(over)
    return ExpectedSession(**values)


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# -- codec ---------------------------------------------------------------------------------
def test_round_trip_of_nested_messages() -> None:
    menu = Menu(request_id="req-00000001", session_id="ses-00000001",
                items=[MenuItem("juminhyo", "住民票の写し", 200, {"scope": ["self", "household"]})],
                refused=[])
    assert decode(Menu, encode(menu)) == menu


@pytest.mark.parametrize("raw, error", [
    (b"\xff\xfe", MalformedMessage),
    (b"[1,2]", MalformedMessage),
    (b'{"request_id":"req-00000001"}', MalformedMessage),  # kiosk_id missing
    (b'{"request_id":"req-00000001","kiosk_id":"kiosk-0001","x":1}', MalformedMessage),
    (b'{"request_id":"req-00000001","kiosk_id":7}', MalformedMessage),
    (b'{"request_id":"../../etc","kiosk_id":"kiosk-0001"}', MalformedMessage),
    (b'{"request_id":"req-00000001","kiosk_id":"kiosk-0001","v":"cardio-issuance/0"}',
     UnsupportedVersion),
    (b'{"request_id":"req-00000001","kiosk_id":"kiosk-0001","n":NaN}', MalformedMessage),
    # a key twice: which one a reader takes is up to the reader (last wins in Python)
    (b'{"request_id":"req-00000001","kiosk_id":"kiosk-0002","kiosk_id":"kiosk-0001"}',
     MalformedMessage),
    (b'{"request_id":"' + b"a" * 70000 + b'"}', MessageTooLarge),
])
def test_malformed_and_oversized_messages_are_typed_errors(raw: bytes, error: type) -> None:
    with pytest.raises(error):
        decode(OpenSession, raw)


def test_bool_is_not_an_int_and_outcome_is_checked() -> None:
    with pytest.raises(MalformedMessage):
        decode(Finalize, b'{"request_id":"req-00000001","session_id":"ses-00000001",'
                         b'"outcome":"stolen"}')
    with pytest.raises(MalformedMessage):
        decode(MenuItem, b'{"doc_type":"x","title":"t","fee":true,"options":{}}')
    with pytest.raises(MalformedMessage):
        decode(DocumentRequest, b'{"request_id":"req-00000001","session_id":"ses-00000001",'
                                b'"doc_type":"passport"}')


@pytest.mark.parametrize(("raw", "error", "says"), [
    (b'{"request_id":"r","session_id":"s","items":[{"doc_type":"juminhyo","title":"t",'
     b'"fee":300,"options":{}},{"doc_type":"inkan","title":"t","fee":"300","options":{}}],'
     b'"refused":[]}', MalformedMessage, "Menu.items[1].fee: expected an integer"),
    (b'{"request_id":"r","session_id":"s","items":[{"doc_type":"juminhyo","title":"t",'
     b'"fee":300,"options":{"a":7}}],"refused":[]}', MalformedMessage,
     "Menu.items[0].options.a: expected a list"),
    (b'{"request_id":"r","session_id":"s","items":[],"refused":[],"extra":1,"more":2}',
     MalformedMessage, "Menu: unknown keys ['extra', 'more']"),
    (b'{"request_id":"r","items":[],"refused":[]}', MalformedMessage,
     "Menu: missing key 'session_id'"),
    (b'{"request_id":"r","session_id":"s","items":[],"refused":[],"v":"cardio-issuance/9"}',
     UnsupportedVersion, "Menu: version 'cardio-issuance/9'"),
    (b'{"request_id":"r","session_id":"s","items":' + b"[{}]" * 0 + b'[' + b'{"doc_type":'
     b'"x","title":"t","fee":1,"options":{}},' * 300 + b'{}],"refused":[]}', MessageTooLarge,
     "Menu.items: more than 256 items"),
])
def test_refusals_name_the_path_to_the_bad_value(raw: bytes, error: type[Exception],
                                                 says: str) -> None:
    """A refusal says where: the message, then each field and index down to the value."""
    with pytest.raises(error) as e:
        decode(Menu, raw)
    assert str(e.value).startswith(says), str(e.value)


def test_decoding_is_repeatable_after_a_refusal() -> None:
    """The per-type converters are built once; a refusal leaves nothing half-built."""
    good = encode(Menu(request_id="r", session_id="s", items=[MenuItem("juminhyo", "t", 300,
                                                                        {})], refused=[]))
    for _ in range(2):
        with pytest.raises(MalformedMessage):
            decode(Menu, good.replace(b'"fee":300', b'"fee":true'))
        assert decode(Menu, good).items[0].fee == 300


def test_deep_nesting_is_refused() -> None:
    raw = b'{"binding":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(MalformedMessage):
        decode(SignedDocument, raw)


# -- binding ---------------------------------------------------------------------------------
def test_a_document_bound_to_this_session_passes(key: ec.EllipticCurvePrivateKey) -> None:
    doc = document()
    signed = sign_document(doc, binding(), key)
    wire = decode(SignedDocument, encode(signed), limit=1 << 20)
    got = check_binding(expected(), wire, {"141003": key.public_key()})
    assert got == doc


@pytest.mark.parametrize("field", ["request_id", "session_id", "kiosk_id", "cert_sha256",
                                   "doc_type"])
def test_every_binding_field_is_checked(key: ec.EllipticCurvePrivateKey, field: str) -> None:
    other = {"request_id": "req-00000002", "session_id": "ses-00000002",
             "kiosk_id": "kiosk-0002", "cert_sha256": hashlib.sha256(b"b").hexdigest(),
             "doc_type": "inkan"}[field]
    signed = sign_document(document(), binding(), key)
    with pytest.raises(BindingMismatch) as e:
        check_binding(expected(**{field: other}), signed, {"141003": key.public_key()})
    assert e.value.field == field
    assert other not in str(e.value) and CERT not in str(e.value)


def test_swapped_request_id_breaks_the_signature(key: ec.EllipticCurvePrivateKey) -> None:
    signed = sign_document(document(), binding(), key)
    forged = dataclasses.replace(signed, binding=binding(request_id="req-00000002"))
    with pytest.raises(BadDocumentSignature):
        check_binding(expected(request_id="req-00000002"), forged, {"141003": key.public_key()})


def test_altered_content_breaks_the_signature(key: ec.EllipticCurvePrivateKey) -> None:
    signed = sign_document(document(), binding(), key)
    d: dict[str, Any] = json.loads(json.dumps(signed.document))
    d["sections"][0]["fields"][0][2] = "別人　二郎"
    with pytest.raises(BadDocumentSignature):
        check_binding(expected(), dataclasses.replace(signed, document=d),
                      {"141003": key.public_key()})


def test_another_municipalitys_key_or_an_untrusted_key_is_refused(
        key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    signed = sign_document(document(), binding(), other)
    with pytest.raises(BadDocumentSignature):
        check_binding(expected(), signed, {"141003": key.public_key()})
    with pytest.raises(BadDocumentSignature):
        check_binding(expected(), sign_document(document(), binding(), key), {})


def test_a_document_whose_content_disagrees_with_its_binding_cannot_be_signed(
        key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(BindingMismatch, match="does not describe"):
        sign_document(document(), binding(doc_type="inkan"), key)


# -- kiosk request signatures ------------------------------------------------------------------
def test_kiosk_request_signature(key: ec.EllipticCurvePrivateKey) -> None:
    h = request_headers(key, "kiosk-0001", "POST", "/v1/sessions", b"{}", 1000.0)
    kid, ts, nonce, sig = parse_headers(h)
    verify_request(key.public_key(), kid, ts, nonce, sig, "POST", "/v1/sessions", b"{}", 1010.0)
    for method, path, body, now, code in [
        ("POST", "/v1/sessions", b'{"x":1}', 1000.0, "kiosk_bad_signature"),
        ("POST", "/v1/finalize", b"{}", 1000.0, "kiosk_bad_signature"),
        ("POST", "/v1/sessions", b"{}", 1500.0, "kiosk_request_stale"),
    ]:
        with pytest.raises(KioskAuthError) as e:
            verify_request(key.public_key(), kid, ts, nonce, sig, method, path, body, now)
        assert e.value.code == code
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(KioskAuthError):
        verify_request(other.public_key(), kid, ts, nonce, sig, "POST", "/v1/sessions", b"{}",
                       1000.0)
    with pytest.raises(KioskAuthError):
        parse_headers({k: v for k, v in h.items() if k != "x-cardio-signature"})
    with pytest.raises(KioskAuthError):
        parse_headers({**h, "x-cardio-kiosk": "kiosk\nX-Evil: 1"})
