"""The emulated operators' tools: enrol kiosks (J-LIS's registry of multicopiers), issue a
software My Number card to a registered resident (and notify the serial → resident mapping
as J-LIS does), and list or clear incidents.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cardio import constants as c
from cardio.errors import CardioError
from emulators.card import JlisHierarchy, Profile, create_card
from emulators.card.keys import KeySource
from emulators.card.store import CardStore
from emulators.issuance.db import Database
from emulators.issuance.municipality import municipality_public_keys
from emulators.issuance.rules import JST, Resident, Settings, age_on
from kiosk.protocol.credentials import KioskCredentials

__all__ = ["IssuanceSetupError", "clear_incidents", "enroll_kiosk", "ensure_kiosk", "incidents",
           "issue_card", "pick_eligible_resident"]


class IssuanceSetupError(CardioError):
    """The emulated J-LIS side is not set up for this (no such resident, no server yet)."""


def enroll_kiosk(db: Database, kiosk_id: str, center_url: str, out: Path | None = None,
                 operator: str = "emulated-operator") -> KioskCredentials:
    """Register a kiosk's public key with the center and, with ``out``, leave its
    credentials there (private key 0600) for the kiosk software to find."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with db.tx(write=True) as t:
        t.execute("DELETE FROM kiosks WHERE kiosk_id=?", (kiosk_id,))
        t.execute("INSERT INTO kiosks (kiosk_id, public_key, operator, active) VALUES"
                  " (?, ?, ?, 1)", (kiosk_id, pem, operator))
    creds = KioskCredentials(kiosk_id, key, center_url, municipality_public_keys(db))
    if out is not None:
        creds.save(out)
    return creds


def ensure_kiosk(db: Database, kiosk_id: str, center_url: str, out: Path) -> KioskCredentials:
    """Keep an enrolled kiosk's key across restarts (refreshing the center URL and the
    municipality keys it trusts); enrol it if it has none yet or the center forgot it."""
    key_file = out / "kiosk.key"
    if key_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode() if isinstance(key, ec.EllipticCurvePrivateKey) else None
        with db.tx() as t:
            row = t.one("SELECT public_key FROM kiosks WHERE kiosk_id=? AND active=1",
                        (kiosk_id,))
        if isinstance(key, ec.EllipticCurvePrivateKey) and row is not None and row[0] == pem:
            creds = KioskCredentials(kiosk_id, key, center_url, municipality_public_keys(db))
            creds.save(out)
            return creds
    return enroll_kiosk(db, kiosk_id, center_url, out)


def pick_eligible_resident(db: Database, today: dt.date | None = None) -> str:
    """A random resident with no refusal case (adult, active, printable, no flags)."""
    today = today or dt.datetime.now(JST).date()
    with db.tx() as t:
        rows = t.all(f"SELECT {Resident.COLUMNS} FROM residents WHERE status='active' AND"
                     " support_measure=0 AND gaiji_pending=0 AND moved_in < ? ORDER BY"
                     " random() LIMIT 50", (today.isoformat(),))
        settings = {str(code): Settings.from_json(json.loads(s)) for code, s in
                    t.all("SELECT code, settings FROM municipalities")}
    for row in rows:
        r = Resident.from_row(row)
        s = settings[r.municipality]
        if age_on(r.birth, today) >= 18 and len(r.name) <= s.name_limit and \
                len(r.address) <= s.address_limit:
            return r.id
    raise IssuanceSetupError("no eligible resident: run 'issuance seed' first")


def issue_card(db: Database, jlis_dir: Path | None, directory: Path, resident_id: str | None,
               *, keys: KeySource | None = None, photo: bytes | None = None,
               ca_url: str | None = None, issued: dt.date | None = None) -> dict[str, Any]:
    """Personalise a software card for a registered resident and register its auth
    certificate's serial with the municipality. Returns the ``emu init --json`` keys plus
    ``resident_id``, ``name``, ``address``, ``municipality``."""
    from cardio.identity import wareki_yymmdd

    ca_url = ca_url or db.info("ca_url")
    if ca_url is None:
        raise IssuanceSetupError("the emulated JPKI CA's URL is not known: start 'issuance"
                                 " serve' once first (it records it)")
    rid = resident_id or pick_eligible_resident(db)
    with db.tx() as t:
        row = t.one(f"SELECT {Resident.COLUMNS} FROM residents WHERE id=?", (rid,))
    if row is None:
        raise IssuanceSetupError(f"no resident {rid}")
    r = Resident.from_row(row)
    today = issued or dt.datetime.now(JST).date()
    profile = Profile(name=r.name, address=r.address, birth=r.birth, sex=r.sex,
                      my_number=r.my_number, municipality=r.municipality[:5], issued=today,
                      with_sign_certificate=age_on(r.birth, today) >= 15)
    jlis = JlisHierarchy.load_or_create(jlis_dir, ca_url=ca_url)
    create_card(directory, profile, jlis, keys=keys, photo=photo)
    der = CardStore(directory).load().files[(c.AID_JPKI, c.JPKI_AUTH_CERT)]
    serial = format(x509.load_der_x509_certificate(der).serial_number, "x")
    with db.tx(write=True) as t:
        t.execute("INSERT INTO cert_serials (serial_hex, resident_id, registered) VALUES"
                  " (?, ?, ?)", (serial, r.id, dt.datetime.now(dt.UTC).timestamp()))
    return {"dir": str(directory), "reader": f"emu:{directory}", "jlis_dir": str(jlis.path),
            "resident_id": r.id, "name": r.name, "address": r.address,
            "municipality": r.municipality, "birth": r.birth.isoformat(),
            "auth_pin": profile.auth_pin, "sign_password": profile.sign_password,
            "text_pin": profile.text_pin, "common_pin": profile.common_pin,
            "juki_pin": profile.juki_pin, "my_number": profile.my_number,
            "code_b": profile.code_b, "security_code": profile.security_code,
            "birth_key": wareki_yymmdd(profile.birth)}


def incidents(db: Database, *, open_only: bool = False) -> list[dict[str, Any]]:
    sql = ("SELECT id, municipality, request_id, kiosk_id, kind, detail, at, cleared FROM"
           " incidents" + (" WHERE cleared IS NULL" if open_only else "") + " ORDER BY id")
    with db.tx() as t:
        rows = t.all(sql)
        stopped = {str(r[0]) for r in t.all("SELECT code FROM municipalities WHERE stopped=1")}
    return [{"id": r[0], "municipality": r[1], "request_id": r[2], "kiosk_id": r[3],
             "kind": r[4], "detail": r[5], "at": dt.datetime.fromtimestamp(r[6], dt.UTC)
             .isoformat(), "cleared": r[7] is not None, "stopped": r[1] in stopped}
            for r in rows]


def clear_incidents(db: Database, municipality: str) -> int:
    """The operator's all-clear: close the municipality's incidents and resume issuance."""
    now = dt.datetime.now(dt.UTC).timestamp()
    with db.tx(write=True) as t:
        if t.one("SELECT 1 FROM municipalities WHERE code=?", (municipality,)) is None:
            raise IssuanceSetupError(f"no municipality {municipality}")
        cur = t.execute("UPDATE incidents SET cleared=? WHERE municipality=? AND cleared IS"
                        " NULL", (now, municipality))
        t.execute("UPDATE municipalities SET stopped=0 WHERE code=?", (municipality,))
        return int(cur.rowcount)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"
