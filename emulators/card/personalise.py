"""Personalisation: a :class:`Profile` and an emulated J-LIS hierarchy in, the byte-exact
file images of every application out (reference §5, §9, §10).

Where the reference leaves a layout open (what exactly J-LIS signs in a record, the
offset table of the card face, the filler of unknown EFs) the choice is stated where it
is made, and the client checks the same rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cardio import constants as c
from cardio.apdu import tlv
from cardio.crypto import encode_rsa_public_key
from cardio.identity import (
    validate_birth_key,
    validate_code_a,
    validate_code_b,
    validate_four_digit_pin,
    validate_sign_password,
    wareki_yymmdd,
)
from cardio.pinreset import card_key
from cardio.records import CardFace
from emulators.card import images
from emulators.card.jlis import JlisHierarchy, build_cv_certificate, cv_key_id
from emulators.card.keys import FreshKeys, KeySource, raw_sign
from emulators.card.profile import Profile, nth_birthday_after
from emulators.card.spec import FIXED, MY_NUMBER_CARD, NO_VALUE, CardSpec, SpecMismatch
from emulators.card.store import CardImage, CardStore, KeyName, SecretState


def _sign(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def _with_offsets(outer_tag: int, children: list[tlv.Tlv], length_octets: int | None = None
                  ) -> bytes:
    """Build ``outer { DF21 offsets, children... }`` where DF21 holds the 2-byte offsets,
    from the start of the file, of each following child."""
    offsets_len = 2 * len(children)
    table = tlv.build(0xDF21, b"\x00" * offsets_len)
    inner_len = table.size + sum(ch.size for ch in children)
    header_len = len(tlv.build(outer_tag, b"\x00" * inner_len, length_octets).header)
    pos = header_len + table.size
    offs = b""
    for ch in children:
        offs += pos.to_bytes(2, "big")
        pos += ch.size
    return tlv.build(outer_tag, [tlv.build(0xDF21, offs), *children], length_octets).encode()


def my_number_file(my_number: str) -> bytes:
    """17 bytes: ``FF 10 0C`` + 12 digits + ``FF FF`` filler."""
    return tlv.build(0xFF10, my_number.encode("ascii")).encode() + b"\xff\xff"


def attributes_file(p: Profile) -> bytes:
    children = [
        tlv.build(0xDF22, p.name.encode("utf-8")),
        tlv.build(0xDF23, p.address.encode("utf-8")),
        tlv.build(0xDF24, p.birth.strftime("%Y%m%d").encode("ascii")),
        tlv.build(0xDF25, p.sex.encode("ascii")),
    ]
    return _with_offsets(0xFF20, children)


def integrity_file(my_number_physical: bytes, attributes: bytes, ap_key: rsa.RSAPrivateKey
                   ) -> bytes:
    """``FF 30 82 01 4B { DF31 SHA-256(EF0001 physical), DF32 SHA-256(EF0002 from DF22 to
    the end), DF33 signature }``. J-LIS's signature covers the encoded DF31 and DF32."""
    start = tlv.parse(attributes).get(0xDF22).offset
    end = tlv.total_size(attributes)
    d31 = tlv.build(0xDF31, hashlib.sha256(my_number_physical).digest())
    d32 = tlv.build(0xDF32, hashlib.sha256(attributes[start:end]).digest())
    sig = tlv.build(0xDF33, _sign(ap_key, d31.encode() + d32.encode()), length_octets=2)
    return tlv.build(0xFF30, [d31, d32, sig], length_octets=2).encode()


def signed_key_file(outer: int, key_tag: int, sig_tag: int, key: rsa.RSAPublicKey,
                    ap_key: rsa.RSAPrivateKey, before: list[tlv.Tlv] | None = None) -> bytes:
    """A record certifying a card key: ``outer { [before...], key_tag key, sig_tag sig }``
    with the signature over every encoded object before it."""
    objs = list(before or [])
    objs.append(tlv.build(key_tag, encode_rsa_public_key(key), length_octets=2))
    sig = _sign(ap_key, b"".join(o.encode() for o in objs))
    objs.append(tlv.build(sig_tag, sig, length_octets=2))
    return tlv.build(outer, objs, length_octets=2).encode()


def text_basic_info(key_id: bytes) -> bytes:
    """``FF 40 82 00 9F { DF41 04 01 03 0E 01, DF42 10 key ID, DF43 82 00 80 (32 + 96 FF) }``
    — the non-minimal lengths as the card writes them."""
    return tlv.build(0xFF40, [
        tlv.build(0xDF41, bytes.fromhex("01030E01")),
        tlv.build(0xDF42, key_id),
        tlv.build(0xDF43, secrets.token_bytes(32) + b"\xff" * 96, length_octets=2),
    ], length_octets=2).encode()


def session_key_file(key: rsa.RSAPublicKey) -> bytes:
    return tlv.build(0xA1, encode_rsa_public_key(key), length_octets=2).encode()


def card_face_file(p: Profile, face_key: rsa.RSAPublicKey, ap_key: rsa.RSAPrivateKey,
                   photo: bytes) -> bytes:
    """Visual EF 0002. The signature covers three groups (DF22-DF24, DF25-DF26, DF27);
    DF29 and DF2A come after it and are not covered (reference §5.3)."""
    signed = [
        tlv.build(0xDF22, p.birth.strftime("%Y%m%d").encode("ascii")),
        tlv.build(0xDF23, p.sex.encode("ascii")),
        tlv.build(0xDF24, encode_rsa_public_key(face_key), length_octets=2),
        tlv.build(0xDF25, images.text_png(p.name, 512, 48)),
        tlv.build(0xDF26, images.text_png(p.address, 512, 32, max_lines=3)),
        tlv.build(0xDF27, photo, length_octets=2),
    ]
    groups = (
        b"".join(o.encode() for o in signed[0:3]),
        b"".join(o.encode() for o in signed[3:5]),
        signed[5].encode(),
    )
    sig = raw_sign(ap_key, CardFace.signed_payload(groups))
    rest = [
        tlv.build(0xDF28, sig, length_octets=2),
        tlv.build(0xDF29, p.card_expiry.strftime("%Y%m%d").encode("ascii")),
        tlv.build(0xDF2A, images.digits_png(p.security_code, 24, 12)),
    ]
    return _with_offsets(0xFF20, signed + rest, length_octets=2)


def visual_basic_info(key_id: bytes, municipality: str) -> bytes:
    return tlv.build(0xFF30, [
        tlv.build(0xDF31, bytes.fromhex("06030E01")),
        tlv.build(0xDF32, key_id),
        tlv.build(0xDF33, b"\x01"),
        tlv.build(0xDF34, municipality.encode("ascii")),
        tlv.build(0xDF35, key_id + secrets.token_bytes(256), length_octets=2),
    ]).encode()


def token_info(serial: str) -> bytes:
    """EF 0006: a 160-byte PKCS#11 CK_TOKEN_INFO, space-padded (reference §5.1)."""
    def pad(s: str, n: int) -> bytes:
        return s.encode("ascii").ljust(n, b" ")[:n]

    flags = 0x0001 | 0x0004 | 0x0008 | 0x0400  # RNG, LOGIN_REQUIRED, USER_PIN_INIT, TOKEN_INIT
    ulongs = [flags, 0, 0, 0, 0, 16, 4, 0, 0, 0, 0]
    out = pad(c.TOKEN_MYNUMBER_CARD, 32) + pad("cardio software card", 32) + pad(
        "MyNumberCard", 16) + pad(serial[-16:], 16)
    out += b"".join(u.to_bytes(4, "big") for u in ulongs)
    out += b"03" + b"01" + b" " * 16
    assert len(out) == 160
    return out


def jpki_validity(p: Profile) -> tuple[dt.datetime, dt.datetime]:
    """JPKI certificates end on the holder's 5th birthday after issue, or at the card's
    expiry if that is earlier."""
    start = dt.datetime.combine(p.issued, dt.time(0, 0), dt.UTC) - dt.timedelta(hours=9)
    end_date = min(nth_birthday_after(p.birth, p.issued, 5), p.card_expiry)
    end = dt.datetime.combine(end_date, dt.time(14, 59, 59), dt.UTC)
    return start, end


def personalise(p: Profile, jlis: JlisHierarchy, keys: KeySource | None = None,
                photo: bytes | None = None) -> CardImage:
    """Build every file, key and secret of a card for ``p``."""
    keys = keys or FreshKeys()
    photo = photo if photo is not None else images.photo_jp2()
    serial = "4" + "".join(str(secrets.randbelow(10)) for _ in range(14))
    auth_key, sign_key = keys.new_key(), keys.new_key()
    text_ap, text_sig, text_sess = keys.new_key(), keys.new_key(), keys.new_key()
    vis_ap, vis_sig, common_key = keys.new_key(), keys.new_key(), keys.new_key()
    text_id = cv_key_id("6000033", b"\x08\x05", secrets.randbelow(1000))
    vis_id = cv_key_id("6000023", b"\x08\x05", secrets.randbelow(1000))
    card_id = cv_key_id("6000010", b"\x01\x02", secrets.randbelow(1000))

    not_before, not_after = jpki_validity(p)
    auth_cert = jlis.issue_jpki_certificate("auth", auth_key.public_key(),
                                            not_before=not_before, not_after=not_after)
    der = serialization.Encoding.DER
    image = CardImage(meta={
        "atr": c.ATR_CONTACT.hex().upper(),
        "serial": serial,
        "jlis_dir": str(Path(jlis.path).resolve()),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    })
    f = image.files
    J, T, V, C, K = c.AID_JPKI, c.AID_TEXT, c.AID_VISUAL, c.AID_COMMON, c.AID_JUKI

    # JPKI AP
    if p.with_sign_certificate:
        sign_cert = jlis.issue_jpki_certificate(
            "sign", sign_key.public_key(), not_before=not_before, not_after=not_after,
            san_attributes={"name": p.name, "sex": p.sex,
                            "birth": p.birth.strftime("%Y%m%d"), "address": p.address})
        f[(J, c.JPKI_SIGN_CERT)] = sign_cert.public_bytes(der)
        f[(J, c.JPKI_CERT_AVAILABILITY)] = bytes.fromhex("8F8F00")
    else:
        f[(J, c.JPKI_CERT_AVAILABILITY)] = bytes.fromhex("008F00")
    f[(J, c.JPKI_SIGN_CA_CERT)] = jlis.sign_ca.cert.public_bytes(der)
    f[(J, c.JPKI_TOKEN)] = token_info(serial)
    f[(J, c.JPKI_UNKNOWN_0009)] = b"\xff" * 16
    f[(J, c.JPKI_AUTH_CERT)] = auth_cert.public_bytes(der)
    f[(J, c.JPKI_AUTH_CA_CERT)] = jlis.auth_ca.cert.public_bytes(der)
    image.private_keys[(J, c.JPKI_AUTH_KEY)] = auth_key
    image.private_keys[(J, c.JPKI_SIGN_KEY)] = sign_key

    # 券面事項入力補助AP
    mn = my_number_file(p.my_number)
    attrs = attributes_file(p)
    f[(T, c.TEXT_MY_NUMBER)] = mn
    f[(T, c.TEXT_ATTRIBUTES)] = attrs
    f[(T, c.TEXT_INTEGRITY)] = integrity_file(mn, attrs, text_ap)
    f[(T, c.TEXT_CV_CERT)] = jlis.cv_certificate(text_id, text_ap.public_key())
    f[(T, c.TEXT_BASIC_INFO)] = text_basic_info(text_id)
    f[(T, c.TEXT_SESSION_KEY)] = session_key_file(text_sess.public_key())
    f[(T, c.TEXT_SIGNED_PUBKEY)] = signed_key_file(0xFF50, 0xDF51, 0xDF52,
                                                   text_sig.public_key(), text_ap)
    f[(T, c.TEXT_UNKNOWN_0008)] = b"\xff" * 16
    image.private_keys[(T, c.TEXT_SIGN_KEY)] = text_sig

    # 券面事項確認AP
    f[(V, c.VISUAL_AGE)] = signed_key_file(
        0xFF10, 0xDF12, 0xDF13, vis_sig.public_key(), vis_ap,
        before=[tlv.build(0xDF11, p.birth.strftime("%Y%m%d").encode("ascii"))])
    f[(V, c.VISUAL_FACE)] = card_face_file(p, vis_sig.public_key(), vis_ap, photo)
    f[(V, c.VISUAL_BASIC_INFO)] = visual_basic_info(vis_id, p.municipality)
    f[(V, c.VISUAL_CV_CERT)] = jlis.cv_certificate(vis_id, vis_ap.public_key())
    f[(V, c.VISUAL_MY_NUMBER_IMAGE)] = signed_key_file(
        0xFF40, 0xDF42, 0xDF43, vis_sig.public_key(), vis_ap,
        before=[tlv.build(0xDF41, images.digits_png(p.my_number, 72, 12))])
    f[(V, c.VISUAL_UNKNOWN_0006)] = b"\xff" * 16
    image.private_keys[(V, c.VISUAL_SIGN_KEY)] = vis_sig

    # 共通AP and 住基AP
    expiry8 = p.card_expiry.strftime("%Y%m%d")
    image.records[(C, c.COMMON_CARD_INFO)] = [
        b"\x01\x1c" + (serial + p.municipality + expiry8).encode("ascii")]
    f[(C, c.COMMON_KEY_ID)] = card_id
    image.private_keys[(C, c.COMMON_AUTH_KEY)] = common_key
    image.records[(K, c.JUKI_RECORD)] = [card_id]

    # Credentials: retry limits and value rules from the spec; the 照合番号 limits may
    # come from the profile (unconfirmed on real cards, reference §11.1).
    cred = c.Credential
    values = {cred.AUTH: validate_four_digit_pin(p.auth_pin),
              cred.SIGN: validate_sign_password(p.sign_password),
              cred.TEXT: validate_four_digit_pin(p.text_pin),
              cred.TEXT_A: validate_code_a(p.my_number),
              cred.TEXT_B: validate_code_b(p.code_b),
              cred.VISUAL_A: validate_code_a(p.my_number),
              cred.VISUAL_B: validate_code_b(p.code_b),
              cred.VISUAL_BIRTH: validate_birth_key(wareki_yymmdd(p.birth)),
              cred.COMMON: validate_four_digit_pin(p.common_pin or p.auth_pin),
              cred.JUKI: validate_four_digit_pin(p.juki_pin or p.auth_pin)}
    image.secrets.update(credential_states(
        MY_NUMBER_CARD, {(k.aid, k.fid): v for k, v in values.items()},
        fixed_tries=p.code_tries))

    # Issuer-authenticated PIN reset (our design, cardio.pinreset): the per-card key.
    image.meta["reset_key"] = card_key(jlis.pin_reset_master(), serial).hex()

    # MF-level data objects
    d = image.data_objects
    d[c.DO_ISSUER_ID] = jlis.cv_root_id
    d[c.DO_CARD_NUMBER] = serial.encode("ascii")
    d[c.DO_CARD_RECOGNITION] = bytes.fromhex("730C060A2A864886FC6B04010101")
    d[c.DO_MUNICIPALITY] = p.municipality.encode("ascii")
    d[c.DO_EXPIRY] = expiry8.encode("ascii")
    d[c.DO_INTERMEDIATE_KEY_ID] = jlis.cv_root_id
    d[c.DO_CV_ROOT_TO_INTERMEDIATE] = jlis.cv_certificate(jlis.cv_root_id,
                                                         jlis.cv_root_key.public_key())
    d[c.DO_CV_INTERMEDIATE_TO_CARD] = build_cv_certificate(
        jlis.cv_root_key, jlis.cv_root_id, card_id, common_key.public_key())
    d[c.DO_CONTACT_ATR] = c.ATR_CONTACT[1:]
    check_declared(MY_NUMBER_CARD, image)
    return image


def credential_states(spec: CardSpec, values: Mapping[KeyName, bytes], *,
                      fixed_tries: int | None = None) -> dict[KeyName, SecretState]:
    """The persistent state of every credential ``spec`` declares: its value (salted
    digest only), its retry limit and its rule. ``fixed_tries`` overrides the limit of
    the printed values (照合番号, birth-date key)."""
    out: dict[KeyName, SecretState] = {}
    for applet in spec.applets:
        for cred in applet.credentials:
            name = (applet.aid, cred.fid)
            value = values.get(name)
            if value is None and cred.rule is not NO_VALUE:
                raise SpecMismatch(f"{applet.name}: no value for {cred.label}")
            tries = fixed_tries if cred.rule is FIXED and fixed_tries else cred.max_tries
            out[name] = SecretState.new(value, tries, cred.rule.name)
    return out


def check_declared(spec: CardSpec, image: CardImage) -> None:
    """Refuse an image with a file or key its spec does not declare: the engine would
    give it no access rule but "free"."""
    for aid, fid in [*image.files, *image.records]:
        applet = spec.applet(aid)
        if applet is None or applet.file(fid) is None:
            raise SpecMismatch(f"EF {aid.hex().upper()}/{fid:04X} is not in the spec")
    for aid, fid in image.private_keys:
        applet = spec.applet(aid)
        if applet is None or applet.key(fid) is None:
            raise SpecMismatch(f"key {aid.hex().upper()}/{fid:04X} is not in the spec")


def create_card(path: Path, profile: Profile, jlis: JlisHierarchy,
                keys: KeySource | None = None, photo: bytes | None = None) -> CardStore:
    """Personalise and write a new card directory."""
    store = CardStore(path)
    store.write(personalise(profile, jlis, keys, photo))
    return store
