"""The applet clients against the software card: values out, typed errors, APDU budget."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardio import constants as c
from cardio.apdu import tlv
from cardio.apdu.errors import PinBlocked, SecurityStatusNotSatisfied, VerificationFailed
from cardio.card import MyNumberCard
from cardio.common_ap import CommonApplication
from cardio.identity import InvalidValue
from cardio.jpki import JpkiApplication
from cardio.records import CardFace
from cardio.text import TextApplication
from cardio.transport import CountingTransport, InProcessTransport
from cardio.trust import DataStatus, TrustStore
from cardio.visual import VisualApplication
from emulators.card import JlisHierarchy, Profile, SoftwareCard, personalise
from emulators.card.keys import KeyPool


def test_read_auth_certificate_with_few_apdus(client: MyNumberCard, counting: CountingTransport,
                                              soft_card: SoftwareCard) -> None:
    der = JpkiApplication(client).certificate_der("auth")
    assert der == soft_card.image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)]
    # SELECT + one SFI read of 256 bytes + ceil((len-256)/256) more.
    assert counting.stats.apdus == 1 + 1 + -(-(len(der) - 256) // 256)


def test_extended_reader_reads_a_file_in_one_apdu(soft_card: SoftwareCard) -> None:
    t = CountingTransport(InProcessTransport(soft_card, supports_extended=True))
    der = JpkiApplication(MyNumberCard(t)).certificate_der("auth-ca")
    assert der == soft_card.image.files[(c.AID_JPKI, c.JPKI_AUTH_CA_CERT)]
    assert t.stats.apdus == 2


def test_pin_status_spends_no_try(client: MyNumberCard) -> None:
    for _ in range(5):
        assert client.tries_left(c.Credential.AUTH) == 3
        assert client.tries_left(c.Credential.SIGN) == 5
    assert client.tries_left(c.Credential.TEXT_A) == 10


def test_wrong_pin_then_blocked(client: MyNumberCard, profile: Profile) -> None:
    jpki = JpkiApplication(client)
    wrong = "0000" if profile.auth_pin != "0000" else "1111"
    with pytest.raises(VerificationFailed) as exc:
        jpki.verify_pin("auth", wrong)
    assert exc.value.tries_left == 2 and "63C2" in str(exc.value) and "auth" in str(exc.value)
    assert wrong not in str(exc.value)
    with pytest.raises(VerificationFailed):
        jpki.verify_pin("auth", wrong)
    with pytest.raises(PinBlocked) as blocked:
        jpki.verify_pin("auth", wrong)            # the last try blocks: 63C0
    assert "blocked" in str(blocked.value)
    with pytest.raises(PinBlocked) as again:
        jpki.verify_pin("auth", profile.auth_pin)  # 6984 even with the right PIN
    assert again.value.sw == 0x6984
    assert jpki.tries_left("auth") == 0


def test_invalid_pin_format_never_reaches_the_card(client: MyNumberCard,
                                                    counting: CountingTransport) -> None:
    with pytest.raises(InvalidValue):
        JpkiApplication(client).verify_pin("auth", "12345")
    with pytest.raises(InvalidValue):
        JpkiApplication(client).verify_pin("sign", "short")
    assert counting.stats.apdus == 0


def test_sign_and_verify_all_hashes(client: MyNumberCard, profile: Profile) -> None:
    jpki = JpkiApplication(client)
    jpki.verify_pin("sign", profile.sign_password)
    cert = jpki.certificate("sign")
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    for name, algo in (("sha256", hashes.SHA256()), ("sha384", hashes.SHA384()),
                       ("sha512", hashes.SHA512())):
        sig = jpki.sign("sign", b"document", name)
        key.verify(sig, b"document", padding.PKCS1v15(), algo)
    sig = jpki.sign_on_card("sign", b"document", 0x03)
    key.verify(sig, b"document", padding.PKCS1v15(), hashes.SHA256())


def test_sign_without_pin_is_refused(client: MyNumberCard) -> None:
    with pytest.raises(SecurityStatusNotSatisfied) as exc:
        JpkiApplication(client).sign("auth", b"x")
    assert exc.value.sw == 0x6982


def test_sign_certificate_needs_password(client: MyNumberCard) -> None:
    with pytest.raises(SecurityStatusNotSatisfied):
        JpkiApplication(client).certificate_der("sign")


def test_change_pin_and_use_it(client: MyNumberCard, profile: Profile) -> None:
    jpki = JpkiApplication(client)
    jpki.change_pin("auth", profile.auth_pin, "2468")
    client.forget_selection()
    # The old PIN is gone: it now costs a try, and the new one restores the counter.
    with pytest.raises(VerificationFailed) as exc:
        jpki.verify_pin("auth", profile.auth_pin)
    assert exc.value.tries_left == 2
    jpki.verify_pin("auth", "2468")
    assert jpki.tries_left("auth") == 3
    assert len(jpki.sign("auth", b"x")) == 256
    jpki.change_pin("sign", profile.sign_password, "NEWPASS9")
    with pytest.raises(VerificationFailed) as exc:
        jpki.verify_pin("sign", profile.sign_password)
    assert exc.value.tries_left == 4
    jpki.verify_pin("sign", "newpass9")  # folded to upper case as the official apps do
    assert jpki.tries_left("sign") == 5


def test_text_read_and_signature(client: MyNumberCard, profile: Profile,
                                 trust: TrustStore) -> None:
    text = TextApplication(client)
    text.verify_pin(profile.text_pin)
    data = text.read_all(trust)
    assert data.my_number == profile.my_number
    assert data.attributes is not None
    assert (data.attributes.name, data.attributes.address) == (profile.name, profile.address)
    assert data.attributes.birth == profile.birth.strftime("%Y%m%d")
    assert data.status is DataStatus.VALID
    assert text.read_all(None).status is DataStatus.UNTRUSTED
    assert text.read_all(TrustStore()).status is DataStatus.UNTRUSTED


def test_text_read_detects_tampering(soft_card: SoftwareCard, profile: Profile,
                                     trust: TrustStore) -> None:
    key = (c.AID_TEXT, c.TEXT_ATTRIBUTES)
    raw = bytearray(soft_card.image.files[key])
    name_obj = tlv.parse(bytes(raw)).get(0xDF22)
    raw[name_obj.offset + 3] ^= 0x01  # one bit of the name
    soft_card.image.files[key] = bytes(raw)
    text = TextApplication(MyNumberCard(InProcessTransport(soft_card)))
    text.verify_pin(profile.text_pin)
    data = text.read_all(trust)
    assert data.status is DataStatus.INVALID
    assert "基本4情報" in data.reason


def test_text_with_codes(client: MyNumberCard, profile: Profile, trust: TrustStore) -> None:
    text = TextApplication(client)
    text.verify_code_a(profile.my_number)
    assert text.read_all(trust, attributes=False).status is DataStatus.VALID
    client.select(c.AID_TEXT, force=True)
    text.verify_code_b(profile.code_b)
    data = text.read_all(trust, my_number=False)
    assert data.status is DataStatus.VALID and data.my_number is None


def test_visual_read(client: MyNumberCard, profile: Profile, trust: TrustStore) -> None:
    visual = VisualApplication(client)
    with pytest.raises(SecurityStatusNotSatisfied):
        visual.card_face()
    visual.verify_code_b(profile.code_b)
    data = visual.read_verified(trust)
    assert data.status is DataStatus.VALID
    assert data.face.photo[4:8] == b"jP  "
    assert data.face.name_image[:8] == b"\x89PNG\r\n\x1a\n"
    assert data.face.expiry == profile.card_expiry.strftime("%Y%m%d")
    assert VisualApplication(client).basic_info().municipality == profile.municipality


def test_visual_read_detects_a_swapped_photo(soft_card: SoftwareCard, profile: Profile,
                                             trust: TrustStore) -> None:
    key = (c.AID_VISUAL, c.VISUAL_FACE)
    face = tlv.parse(soft_card.image.files[key])
    kids = [k for k in face.children if k.tag != 0xDF21]
    photo = next(k for k in kids if k.tag == 0xDF27)
    photo.value = photo.value[:-1] + bytes((photo.value[-1] ^ 0xFF,))
    soft_card.image.files[key] = tlv.build(0xFF20, [face.get(0xDF21), *kids],
                                           length_octets=2).encode()
    visual = VisualApplication(MyNumberCard(InProcessTransport(soft_card)))
    visual.verify_code_a(profile.my_number)
    assert visual.read_verified(trust).status is DataStatus.INVALID


def test_presence_signature(client: MyNumberCard, profile: Profile) -> None:
    text = TextApplication(client)
    with pytest.raises(SecurityStatusNotSatisfied):  # EF 0007 needs a credential
        text.presence_signature(b"nonce-123")
    text.verify_code_b(profile.code_b)
    sig, signed = text.presence_signature(b"nonce-123")
    assert len(sig) == 256
    assert signed.public_key.key_size == 2048


def test_common_card_info(client: MyNumberCard, profile: Profile) -> None:
    info = CommonApplication(client).card_info()
    assert info.municipality == profile.municipality
    assert info.expiry == profile.card_expiry.strftime("%Y%m%d")
    assert len(info.serial) == 15


def test_get_data_via_client(client: MyNumberCard, profile: Profile) -> None:
    assert client.get_data(c.DO_MUNICIPALITY) == profile.municipality.encode()


def test_card_face_signed_payload_is_digest_info() -> None:
    payload = CardFace.signed_payload((b"a", b"b", b"c"))
    assert payload[:2] == bytes((0x30, len(payload) - 2))
    assert len(payload) == 2 + 15 + 2 + 96


# -- property-based: random holders, read back exactly ----------------------------------------
jp_chars = st.characters(codec="utf-8", categories=["Lo", "Nd", "Lu"],
                         exclude_characters="\x00")
names = st.builds(lambda a, b: f"{a}\u3000{b}", st.text(jp_chars, min_size=1, max_size=20),
                  st.text(jp_chars, min_size=1, max_size=20))
addresses = st.text(jp_chars | st.sampled_from("－　１２３丁目番号"), min_size=1, max_size=120)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(name=names, address=addresses,
       birth=st.dates(dt.date(1920, 1, 1), dt.date(2010, 12, 31)),
       sex=st.sampled_from(["1", "2", "9"]))
def test_property_personalise_and_read_back(jlis: JlisHierarchy, key_pool: KeyPool,
                                            default_photo: bytes, trust: TrustStore,
                                            name: str, address: str, birth: dt.date,
                                            sex: str) -> None:
    profile = Profile(name=name, address=address, birth=birth, sex=sex)
    card = SoftwareCard(personalise(profile, jlis, key_pool, default_photo))
    client = MyNumberCard(InProcessTransport(card))
    text = TextApplication(client)
    text.verify_pin(profile.text_pin)
    data = text.read_all(trust)
    assert data.status is DataStatus.VALID
    assert data.my_number == profile.my_number
    assert data.attributes is not None
    assert data.attributes.name == name
    assert data.attributes.address == address
    assert data.attributes.birth == birth.strftime("%Y%m%d")
    assert data.attributes.sex == sex
    raw = card.image.files[(c.AID_TEXT, c.TEXT_ATTRIBUTES)]
    if len(raw) > 130:
        assert raw[2] in (0x81, 0x82)  # long-form length
    visual = VisualApplication(client)
    visual.verify_code_b(profile.code_b)
    assert visual.read_verified(trust).status is DataStatus.VALID
