"""The main job on embedded defaults: create a software card and run a full cycle
against it through the same client code a real reader would use.

Wiring of the emulator and the client, so it lives in ``emulators`` (DESIGN.md: ``cardio``
imports nothing above it); ``cardio demo`` is registered by :mod:`emulators.cli`.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cardio import constants as c
from cardio.card import MyNumberCard
from cardio.common_ap import CommonApplication
from cardio.jpki import JpkiApplication
from cardio.text import TextApplication
from cardio.transport import CountingTransport, InProcessTransport
from cardio.trust import TrustStore
from cardio.visual import VisualApplication
from emulators.card import JlisHierarchy, Profile, SoftwareCard, create_card


def _mask(value: str) -> str:
    return value[:2] + "*" * (len(value) - 4) + value[-2:]


def run_demo(directory: Path | None = None, *, as_json: bool = False) -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cardio-demo-") as tmp:
        base = Path(directory) if directory is not None else Path(tmp)
        jlis = JlisHierarchy.load_or_create(base / "jlis")
        profile = Profile()
        card_dir = base / "card"
        create_card(card_dir, profile, jlis)
        made = time.perf_counter()

        transport = CountingTransport(InProcessTransport(SoftwareCard.open(card_dir)))
        card = MyNumberCard(transport)
        trust = TrustStore.from_dir(jlis.path)
        jpki = JpkiApplication(card)
        out: dict[str, Any] = {"card_dir": str(card_dir) if directory else None}

        out["token"] = jpki.token()
        auth_cert = jpki.certificate("auth")
        out["auth_certificate"] = {"subject": auth_cert.subject.rfc4514_string(),
                                   "issuer": auth_cert.issuer.rfc4514_string(),
                                   "not_after": auth_cert.not_valid_after_utc.isoformat()}
        out["pins"] = {cred.key: card.tries_left(cred) for cred in c.Credential}

        jpki.verify_pin("auth", profile.auth_pin)
        message = b"cardio demo: authenticate this challenge"
        signature = jpki.sign("auth", message)
        key = auth_cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        out["auth_signature"] = "verified against the card's auth certificate"

        jpki.verify_pin("sign", profile.sign_password)
        sign_cert = jpki.certificate("sign")
        doc = b"cardio demo: a document to sign"
        sig2 = jpki.sign("sign", doc, "sha512")
        sign_key = sign_cert.public_key()
        assert isinstance(sign_key, rsa.RSAPublicKey)
        sign_key.verify(sig2, doc, padding.PKCS1v15(), hashes.SHA512())
        out["sign_signature"] = "verified against the card's signature certificate (SHA-512)"

        text = TextApplication(card)
        text.verify_pin(profile.text_pin)
        data = text.read_all(trust)
        assert data.attributes is not None and data.my_number is not None
        out["text"] = {"my_number": _mask(data.my_number), "name": data.attributes.name,
                       "birth": data.attributes.birth, "sex": data.attributes.sex,
                       "address": data.attributes.address, "signature": data.status.value}

        visual = VisualApplication(card)
        visual.verify_code_a(data.my_number)
        vdata = visual.read_verified(trust)
        out["visual"] = {"photo_jp2_bytes": len(vdata.face.photo),
                         "expiry": vdata.face.expiry, "signature": vdata.status.value}
        out["card_info"] = vars(CommonApplication(card).card_info())
        out["apdus"] = transport.stats.apdus
        out["bytes"] = transport.stats.bytes_sent + transport.stats.bytes_received
        out["seconds"] = {"personalise": round(made - started, 3),
                          "cycle": round(time.perf_counter() - made, 3)}

    ok = data.status.value == "valid" and vdata.status.value == "valid"
    if as_json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0 if ok else 1
    t = out["text"]
    print("cardio demo — a software My Number card, read end to end")
    print(f"  card           {out['token']}, serial {out['card_info']['serial']},"
          f" expires {out['card_info']['expiry']}")
    print(f"  auth cert      {out['auth_certificate']['subject']}")
    print(f"                 issued by {out['auth_certificate']['issuer']}")
    print("  PIN tries      " + ", ".join(f"{k}={v}" for k, v in out["pins"].items()))
    print(f"  auth signature {out['auth_signature']}")
    print(f"  sign signature {out['sign_signature']}")
    print(f"  個人番号        {t['my_number']} (masked)")
    print(f"  基本4情報       {t['name']} / {t['birth']} / sex {t['sex']}")
    print(f"                 {t['address']}")
    print(f"  text signature {t['signature']} (J-LIS integrity record)")
    print(f"  card face      photo {out['visual']['photo_jp2_bytes']} bytes JPEG 2000,"
          f" signature {out['visual']['signature']}")
    print(f"  cost           {out['apdus']} APDUs, {out['bytes']} bytes;"
          f" personalise {out['seconds']['personalise']} s,"
          f" cycle {out['seconds']['cycle']} s")
    print("OK" if ok else "FAILED: a signature did not verify")
    return 0 if ok else 1
