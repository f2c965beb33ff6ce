"""The software card at the APDU level: bytes in, bytes and status words out."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cardio import constants as c
from cardio.apdu import tlv
from cardio.crypto import digest_info
from emulators.card import Profile, SoftwareCard
from tests.conftest import Apdu

JPKI = "00A4040C0AD392F000260100000001"
TEXT = "00A4040C0AD3921000310001010408"
VISUAL = "00A4040C0AD3921000310001010402"
COMMON = "00A4040C0AD3921000310001010100"


def hexs(b: bytes) -> str:
    return b.hex()


def test_atr_is_a_real_contact_atr(soft_card: SoftwareCard) -> None:
    assert soft_card.reset() == bytes.fromhex("3BE000FF8131FE4514")


def test_select_known_and_foreign_aids(apdu: Apdu) -> None:
    for sel in (JPKI, TEXT, VISUAL, COMMON, "00A4040C0AD3921000310001010401"):
        assert apdu(sel) == (b"", 0x9000)
    # OpenSC probes other applets first: every foreign AID answers 6A82.
    assert apdu("00A4040C07A0000000031010")[1] == 0x6A82
    assert apdu("00A4040C0AD392F000260100000002")[1] == 0x6A82
    assert apdu("00A4040C07A0000001510000")[1] == 0x9000  # GP ISD: MF level


def test_select_mf_behaviour(apdu: Apdu) -> None:
    assert apdu("00A40000")[1] == 0x6A86            # after reset
    assert apdu("00A40000023F00")[1] == 0x6A82
    apdu(JPKI)
    assert apdu("00A40000")[1] == 0x9000            # stays in the DF
    assert apdu("00A4020C020006")[1] == 0x9000


def test_logical_channels_and_unknown_instructions(apdu: Apdu) -> None:
    assert apdu("01A4040C0AD392F000260100000001")[1] == 0x6881
    assert apdu("00FE0000")[1] == 0x6D00
    assert apdu("B0A4040C0AD392F000260100000001")[1] == 0x6E00
    assert apdu("00A4040C05D392")[1] == 0x6700      # malformed: Lc beyond the data
    apdu(JPKI)
    assert apdu("80FC0000")[1] == 0x6700
    assert apdu("80A20000")[1] == 0x6A86


def test_read_binary_chunks_and_end(apdu: Apdu, soft_card: SoftwareCard) -> None:
    der = soft_card.image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)]
    apdu(JPKI)
    assert apdu("00A4020C02000A")[1] == 0x9000
    head, sw = apdu("00B0000007")
    assert sw == 0x9000 and head == der[:7]
    data, sw = apdu("00B0000000")
    assert sw == 0x9000 and data == der[:256]
    last = len(der) - 10
    data, sw = apdu(f"00B0{last:04X}00")             # Le=256 past the end: the rest, 9000
    assert (data, sw) == (der[last:], 0x9000)
    assert apdu(f"00B0{len(der):04X}00")[1] == 0x6B00
    assert apdu("00B07F0000")[1] == 0x6B00
    # Extended Le returns the whole file in one APDU.
    data, sw = apdu("00B00000000000")
    assert (data, sw) == (der, 0x9000)
    assert apdu("00B00000")[1] == 0x6700             # no Le


def test_read_binary_sfi_selects_the_ef(apdu: Apdu, soft_card: SoftwareCard) -> None:
    der = soft_card.image.files[(c.AID_JPKI, c.JPKI_AUTH_CA_CERT)]
    apdu(JPKI)
    data, sw = apdu("00B08B0000")
    assert (data, sw) == (der[:256], 0x9000)
    data, sw = apdu("00B0010000")                   # the EF is now current
    assert (data, sw) == (der[256:512], 0x9000)
    assert apdu("00B09F0000")[1] == 0x6A82
    assert apdu("00B0800000")[1] in (0x6A82, 0x6A86)


def test_token_and_availability(apdu: Apdu) -> None:
    apdu(JPKI)
    token, sw = apdu("00B0860000")
    assert sw == 0x9000 and len(token) == 160
    assert token[:32] == b"JPKIAPICCTOKEN2".ljust(32, b" ")
    assert apdu("00B0880000") == (bytes.fromhex("8F8F00"), 0x9000)


def test_sign_certificate_needs_the_password(apdu: Apdu, profile: Profile) -> None:
    apdu(JPKI)
    assert apdu("00B0810004")[1] == 0x6982
    assert apdu("0020009B" + f"{len(profile.sign_password):02X}"
                + profile.sign_password.encode().hex())[1] == 0x9000
    data, sw = apdu("00B0810004")
    assert sw == 0x9000 and data[:2] == b"\x30\x82"


def test_retry_counter_semantics(apdu: Apdu, profile: Profile) -> None:
    apdu(JPKI)
    assert apdu("00200098")[1] == 0x63C3              # empty VERIFY spends nothing
    assert apdu("00200098")[1] == 0x63C3
    wrong = "0000" if profile.auth_pin != "0000" else "1111"
    assert apdu("0020009804" + wrong.encode().hex())[1] == 0x63C2
    assert apdu("00200098")[1] == 0x63C2
    assert apdu("0020009804" + profile.auth_pin.encode().hex())[1] == 0x9000
    assert apdu("00200098")[1] == 0x63C3              # success resets the counter
    for expected in (0x63C2, 0x63C1, 0x63C0):
        assert apdu("0020009804" + wrong.encode().hex())[1] == expected
    assert apdu("0020009804" + profile.auth_pin.encode().hex())[1] == 0x6984
    assert apdu("00200098")[1] == 0x63C0
    # Selecting the key EF and using P2=80 addresses the same counter.
    assert apdu("00A4020C020018")[1] == 0x9000
    assert apdu("00200080")[1] == 0x63C0
    assert apdu("0020008004" + profile.auth_pin.encode().hex())[1] == 0x6984


def test_verify_errors(apdu: Apdu) -> None:
    assert apdu("00200098")[1] == 0x6A82              # no DF selected
    apdu(JPKI)
    assert apdu("00200080")[1] == 0x6A88              # no key EF selected
    assert apdu("0020009F")[1] == 0x6A88              # no such key
    assert apdu("00200198")[1] == 0x6A86
    apdu(TEXT)
    assert apdu("00200092")[1] == 0x63C0              # text 0012 ships blocked
    assert apdu("002000920431323334")[1] == 0x6984


def test_security_state_is_per_df_and_cleared_by_select(apdu: Apdu, profile: Profile) -> None:
    pin = profile.text_pin.encode().hex()
    apdu(TEXT)
    assert apdu("00B0810000")[1] == 0x6982
    assert apdu("0020009104" + pin)[1] == 0x9000
    assert apdu("00B0810000")[1] == 0x9000
    assert apdu("00A4020C020004")[1] == 0x9000       # SELECT EF keeps it
    assert apdu("00B0820000")[1] == 0x9000
    apdu(JPKI)
    apdu(TEXT)                                        # SELECT by AID clears it
    assert apdu("00B0810000")[1] == 0x6982
    assert apdu("0020009104" + pin)[1] == 0x9000
    apdu(TEXT)                                        # even re-selecting the same AID
    assert apdu("00B0810000")[1] == 0x6982


def test_reset_clears_security_state(apdu: Apdu, soft_card: SoftwareCard,
                                     profile: Profile) -> None:
    apdu(TEXT)
    apdu("0020009104" + profile.text_pin.encode().hex())
    soft_card.reset()
    assert apdu("00B0810000")[1] == 0x6A82           # nothing selected after reset
    apdu(TEXT)
    assert apdu("00B0810000")[1] == 0x6982


def test_text_access_by_code_a_and_b(apdu: Apdu, profile: Profile) -> None:
    apdu(TEXT)
    assert apdu("002000940C" + profile.my_number.encode().hex())[1] == 0x9000
    assert apdu("00B0810000")[1] == 0x9000            # A opens 0001
    assert apdu("00B0820000")[1] == 0x6982            # ... not 0002
    assert apdu("00B0830000")[1] == 0x9000
    apdu(TEXT)
    assert apdu("002000950E" + profile.code_b.encode().hex())[1] == 0x9000
    assert apdu("00B0820000")[1] == 0x9000            # B opens 0002
    assert apdu("00B0810000")[1] == 0x6982


def test_text_file_images_are_byte_exact(soft_card: SoftwareCard, profile: Profile) -> None:
    f = soft_card.image.files
    mn = f[(c.AID_TEXT, 0x0001)]
    assert mn == b"\xff\x10\x0c" + profile.my_number.encode() + b"\xff\xff"
    attrs = f[(c.AID_TEXT, 0x0002)]
    obj = tlv.parse(attrs)
    assert obj.tag == 0xFF20
    offsets = obj.get(0xDF21).value
    for i, tag in enumerate((0xDF22, 0xDF23, 0xDF24, 0xDF25)):
        off = int.from_bytes(offsets[2 * i : 2 * i + 2], "big")
        assert attrs[off : off + 2] == tag.to_bytes(2, "big")
    assert obj.get(0xDF22).value.decode() == profile.name
    assert "\u3000" in profile.name
    integ = f[(c.AID_TEXT, 0x0003)]
    assert len(integ) == 336 and integ[:5] == bytes.fromhex("FF3082014B")
    i_obj = tlv.parse(integ)
    assert i_obj.get(0xDF31).value == hashlib.sha256(mn).digest()
    start = obj.get(0xDF22).offset
    assert i_obj.get(0xDF32).value == hashlib.sha256(attrs[start:]).digest()
    cv = f[(c.AID_TEXT, 0x0004)]
    assert len(cv) == 568 and cv[:5] == bytes.fromhex("7F21820233")
    assert cv[5:10] == bytes.fromhex("5F4E820129")
    assert f[(c.AID_TEXT, 0x0005)][:5] == bytes.fromhex("FF4082009F")
    assert f[(c.AID_TEXT, 0x0007)][:5] == bytes.fromhex("FF50820213")


def test_visual_access_and_images(apdu: Apdu, soft_card: SoftwareCard,
                                  profile: Profile) -> None:
    apdu(VISUAL)
    assert apdu("00B0820000")[1] == 0x6982
    assert apdu("00B0830000")[1] == 0x9000             # basic info is free
    assert apdu("002000920E" + profile.code_b.encode().hex())[1] == 0x9000
    assert apdu("00B0820000")[1] == 0x9000
    assert apdu("00B0850000")[1] == 0x6982             # the 個人番号 image needs A
    face = soft_card.image.files[(c.AID_VISUAL, 0x0002)]
    assert face[:3] == bytes.fromhex("FF2082")
    photo = tlv.parse(face).get(0xDF27).value
    assert photo[:12] == bytes.fromhex("0000000C6A5020200D0A870A")  # JP2 signature box
    assert soft_card.image.files[(c.AID_VISUAL, 0x0001)][:5] == bytes.fromhex("FF1082021E")
    from cardio.identity import wareki_yymmdd
    assert apdu("00200091" + "06" + wareki_yymmdd(profile.birth).encode().hex())[1] == 0x9000
    assert apdu("00B0810000")[1] == 0x9000


def _auth_key(soft_card: SoftwareCard) -> rsa.RSAPublicKey:
    cert = x509.load_der_x509_certificate(soft_card.image.files[(c.AID_JPKI, 0x000A)])
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    return key


@pytest.mark.parametrize("p2", ["80", "97"])
def test_sign_schemes(apdu: Apdu, soft_card: SoftwareCard, profile: Profile, p2: str) -> None:
    key = _auth_key(soft_card)
    msg = b"message to sign"
    h = hashlib.sha256(msg).digest()
    apdu(JPKI)
    di = digest_info("sha256", h)
    if p2 == "80":
        assert apdu(f"802A00{p2}{len(di):02X}{di.hex()}00")[1] == 0x6A88  # no key selected
        apdu("00A4020C020017")
    assert apdu(f"802A00{p2}{len(di):02X}{di.hex()}00")[1] == 0x6982   # before the PIN
    apdu("0020009804" + profile.auth_pin.encode().hex())
    sig, sw = apdu(f"802A00{p2}{len(di):02X}{di.hex()}00")
    assert sw == 0x9000 and len(sig) == 256
    key.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
    # P1=03: the card hashes and wraps: the same signature as P1=00 with a DigestInfo.
    sig3, sw = apdu(f"802A03{p2}{len(msg):02X}{msg.hex()}00")
    assert (sig3, sw) == (sig, 0x9000)
    # P1=02: DigestInfo around the given hash.
    sig2, _ = apdu(f"802A02{p2}20{h.hex()}00")
    assert sig2 == sig
    # P1=01: PKCS#1 v1.5 over the bare hash.
    sig1, _ = apdu(f"802A01{p2}{len(msg):02X}{msg.hex()}00")
    assert key.recover_data_from_signature(sig1, padding.PKCS1v15(), None) == h
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    sig4, _ = apdu(f"802A04{p2}20{h.hex()}00")
    from cryptography.hazmat.primitives.asymmetric import utils
    key.verify(sig4, h, pss, utils.Prehashed(hashes.SHA256()))
    sig5, _ = apdu(f"802A05{p2}{len(msg):02X}{msg.hex()}00")
    key.verify(sig5, msg, pss, hashes.SHA256())
    assert apdu(f"802A06{p2}0101" + "00")[1] == 0x6A86
    assert apdu(f"802A02{p2}0101" + "00")[1] == 0x6985   # P1=02 wants 32 bytes


def test_sign_key_needs_its_own_password(apdu: Apdu, profile: Profile) -> None:
    apdu(JPKI)
    apdu("0020009804" + profile.auth_pin.encode().hex())
    assert apdu("802A009A0101" + "00")[1] == 0x6982


def test_presence_keys_sign_without_pin(apdu: Apdu, soft_card: SoftwareCard) -> None:
    di = digest_info("sha256", hashlib.sha256(b"challenge").digest())
    for sel in (TEXT, VISUAL):
        apdu(sel)
        sig, sw = apdu(f"802A0000{len(di):02X}{di.hex()}00")
        assert sw == 0x9000 and len(sig) == 256
    apdu(JPKI)
    assert apdu(f"802A0000{len(di):02X}{di.hex()}00")[1] == 0x6A88


def test_internal_authenticate(apdu: Apdu) -> None:
    apdu(COMMON)
    sig, sw = apdu("0088009904" + "01020304" + "00")
    assert sw == 0x9000 and len(sig) == 256
    apdu(TEXT)
    assert apdu("0088009304" + "01020304" + "00")[1] == 0x6985


def test_change_reference_data(apdu: Apdu, profile: Profile, card_dir: tuple[Path, Profile]
                               ) -> None:
    apdu(JPKI)
    apdu("00A4020C020018")
    assert apdu("002401800439393939")[1] == 0x6982      # before VERIFY
    assert apdu("0020008004" + profile.auth_pin.encode().hex())[1] == 0x9000
    assert apdu("0024018003393939")[1] == 0x6A80        # 3 digits
    assert apdu("002401800439393939")[1] == 0x9000
    assert apdu("803200800439393939")[1] == 0x6985      # CHANGE KEY is for 共通/住基
    # The new PIN works in a new process (a fresh SoftwareCard on the same directory).
    other = Apdu(SoftwareCard.open(card_dir[0]))
    other(JPKI)
    assert other("002000980439393939")[1] == 0x9000


def test_change_sign_password_rules(apdu: Apdu, profile: Profile) -> None:
    apdu(JPKI)
    apdu("00A4020C02001B")
    pw = profile.sign_password.encode()
    assert apdu(f"00200080{len(pw):02X}{pw.hex()}")[1] == 0x9000
    for bad in (b"abc123", b"ABCDEF", b"A1", b"A1" * 9):
        assert apdu(f"00240180{len(bad):02X}{bad.hex()}")[1] == 0x6A80
    assert apdu(f"00240180{6:02X}{b'NEW123'.hex()}")[1] == 0x9000


def test_change_key_for_common_pin(apdu: Apdu, profile: Profile) -> None:
    apdu(COMMON)
    apdu("00A4020C02001C")
    assert apdu("0020008004" + profile.common_pin.encode().hex())[1] == 0x9000  # type: ignore
    assert apdu("002401800431323334")[1] == 0x6985
    assert apdu("803200800431323334")[1] == 0x9000
    apdu(COMMON)
    assert apdu("0020009C0431323334")[1] == 0x9000


def test_get_challenge(apdu: Apdu) -> None:
    a, sw = apdu("0084000008")
    b, _ = apdu("0084000008")
    assert sw == 0x9000 and len(a) == 8 and a != b
    assert len(apdu("0084000000")[0]) == 256
    assert apdu("00840000000100")[1] == 0x6985           # extended Le refused


def test_get_data_at_mf_level(apdu: Apdu, profile: Profile) -> None:
    assert apdu("00CA00F000") == (profile.municipality.encode(), 0x9000)
    assert apdu("00CA00F200") == (profile.card_expiry.strftime("%Y%m%d").encode(), 0x9000)
    assert apdu("00CA5F5100") == (bytes.fromhex("E000FF8131FE4514"), 0x9000)
    assert apdu("00CA00F800")[1] == 0x6700                # 568 bytes: short Le refused
    data, sw = apdu("00CA00F8000000")
    assert sw == 0x9000 and len(data) == 568
    assert apdu("00CA123400")[1] == 0x6A88
    apdu(JPKI)
    assert apdu("00CA00F000")[1] == 0x6A88
    apdu("00A4040C07A0000001510000")
    assert apdu("00CA00F000")[1] == 0x9000


def test_read_record(apdu: Apdu, profile: Profile) -> None:
    apdu(COMMON)
    rec, sw = apdu("00B2010C00")
    assert sw == 0x9000 and rec[:2] == b"\x01\x1c" and len(rec) == 30
    assert rec[17:22] == profile.municipality.encode()
    assert apdu("00B2020C00")[1] == 0x6A83
    assert apdu("00B2010C00")[1] == 0x9000
    assert apdu("00B0810000")[1] == 0x6981               # a record EF is not binary


def test_removal_fault(soft_card: SoftwareCard) -> None:
    from cardio.transport import CardRemovedError
    soft_card.faults.remove_after = 1
    assert soft_card.transmit(bytes.fromhex(JPKI))[-2:] == b"\x90\x00"
    with pytest.raises(CardRemovedError):
        soft_card.transmit(bytes.fromhex(JPKI))
    with pytest.raises(CardRemovedError):
        soft_card.transmit(bytes.fromhex(JPKI))
    soft_card.insert()
    assert soft_card.transmit(bytes.fromhex(JPKI))[-2:] == b"\x90\x00"


def test_card_directory_secrets_are_private(card_dir: tuple[Path, Profile]) -> None:
    import stat

    path, _ = card_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for name in ("card.json", "state.json", *[f"keys/{k.name}" for k in (path / "keys").iterdir()]):
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600, name


def test_raw_sign_fast_path_equals_the_exponentiation() -> None:
    """The OpenSSL path for standard DigestInfos gives the very bytes of the textbook
    PKCS#1 v1.5 exponentiation (which still serves other payloads)."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import rsa

    from cardio.crypto import digest_info
    from emulators.card.keys import raw_sign

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = key.private_numbers().public_numbers.n
    d = key.private_numbers().d
    for name in ("sha256", "sha384", "sha512"):
        payload = digest_info(name, hashlib.new(name, b"nonce").digest())
        k = 256
        em = b"\x00\x01" + b"\xff" * (k - 3 - len(payload)) + b"\x00" + payload
        assert raw_sign(key, payload) == pow(int.from_bytes(em, "big"), d, n).to_bytes(k, "big")
    odd = b"\x30\x10" + b"\x01" * 16  # not a DigestInfo: the exponentiation path
    em = b"\x00\x01" + b"\xff" * (256 - 3 - len(odd)) + b"\x00" + odd
    assert raw_sign(key, odd) == pow(int.from_bytes(em, "big"), d, n).to_bytes(256, "big")


def test_extended_le_by_sfi_reads_whole_files(apdu: Apdu, soft_card: SoftwareCard,
                                              profile: Profile) -> None:
    """jsapdu's ``readEfBinaryFull``: ``00 B0 (80|SFI) 00 00 00 00``, no SELECT EF before it,
    returns the whole EF (physical filler included) with 9000 (reference §6)."""
    apdu(JPKI)
    for fid in (c.JPKI_AUTH_CERT, c.JPKI_AUTH_CA_CERT, c.JPKI_SIGN_CA_CERT):
        raw = soft_card.image.files[(c.AID_JPKI, fid)]
        assert apdu(f"00B0{0x80 | fid:02X}00000000") == (raw, 0x9000)
    # An extended Le below what remains: exactly that many; the 8-bit SFI offset applies.
    auth = soft_card.image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)]
    assert apdu("00B08A10000120") == (auth[0x10 : 0x10 + 0x120], 0x9000)
    # The signature certificate still needs its password, extended or not.
    assert apdu("00B08100000000")[1] == 0x6982
    pw = profile.sign_password.encode()
    assert apdu(f"0020009B{len(pw):02X}{pw.hex()}")[1] == 0x9000
    sign = soft_card.image.files[(c.AID_JPKI, c.JPKI_SIGN_CERT)]
    assert apdu("00B08100000000") == (sign, 0x9000)
    # The card face with its photo, the largest EF, in one APDU after 照合番号B.
    apdu(VISUAL)
    code_b = profile.code_b.encode()
    assert apdu(f"00200092{len(code_b):02X}{code_b.hex()}")[1] == 0x9000
    face = soft_card.image.files[(c.AID_VISUAL, c.VISUAL_FACE)]
    assert len(face) > 256
    assert apdu("00B08200000000") == (face, 0x9000)
    # A truncated extended Le is malformed: 6700.
    assert apdu("00B08A000000")[1] == 0x6700
