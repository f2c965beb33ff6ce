"""The ``cardio`` command line.

Every command prints a readable summary, or one JSON object with ``--json``. PINs never
come from a plain argument (they would show in ``ps`` and shell history): they are
prompted for without echo, read from stdin (``--pin-stdin``, one per line) or taken from
a named environment variable (``--pin-env NAME``). Errors are one line on stderr that
names the status word and what to do, with a non-zero exit code:

====  ==========================================
1     any other error (card, file, data)
2     usage
3     wrong PIN / 照合番号 (tries remain)
4     blocked credential
5     card removed or reader failure
6     a certificate or signature checked but not valid (revoked, expired, unknown, ...)
====  ==========================================
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cardio import __version__
from cardio import constants as c
from cardio.apdu.errors import CardioError, PinBlocked, VerificationFailed
from cardio.card import MyNumberCard
from cardio.common import CommonApplication
from cardio.jpki import HASHES, JpkiApplication
from cardio.readers import open_reader
from cardio.text import TextApplication
from cardio.transport import TransportError
from cardio.visual import VisualApplication

EXIT_ERROR, EXIT_USAGE, EXIT_WRONG_PIN, EXIT_BLOCKED, EXIT_TRANSPORT = 1, 2, 3, 4, 5
EXIT_NOT_VALID = 6

SEX = {"1": "男 (male)", "2": "女 (female)", "9": "適用不能 (n/a)", "0": "不明 (unknown)"}


class UsageError(CardioError):
    pass


# -- secrets -------------------------------------------------------------------------------
class SecretSource:
    """Hands out the secrets a command needs, in order, from one source."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._stdin: Iterator[str] | None = None
        self._count = 0

    def get(self, prompt: str, env_option: str = "pin_env") -> str:
        env_name: str | None = getattr(self.args, env_option, None)
        if env_name:
            value = os.environ.get(env_name)
            if value is None:
                raise UsageError(f"environment variable {env_name} is not set")
            return value
        if getattr(self.args, "pin_stdin", False):
            if self._stdin is None:
                self._stdin = iter(sys.stdin.read().splitlines())
            try:
                value = next(self._stdin)
            except StopIteration:
                raise UsageError(f"stdin ended before the {prompt}") from None
            return value.strip()
        if not sys.stdin.isatty():
            raise UsageError(f"no {prompt} given: use --pin-stdin or --pin-env NAME"
                             " (PINs are never taken as plain arguments)")
        return getpass.getpass(f"{prompt}: ")


# -- output ----------------------------------------------------------------------------------
def emit(args: argparse.Namespace, obj: dict[str, Any], lines: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(obj, ensure_ascii=False, indent=2))
    else:
        for line in lines:
            print(line)


def _card(args: argparse.Namespace, *, pin: bool = False) -> tuple[MyNumberCard, Any]:
    reader = open_reader(args.reader, args.trust, exclusive=pin)
    return MyNumberCard(reader.transport), reader.trust


# -- commands --------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    card, _trust = _card(args)
    jpki = JpkiApplication(card)
    token = jpki.token()
    kind = {c.TOKEN_MYNUMBER_CARD: "My Number card (個人番号カード)",
            c.TOKEN_JUKI_CARD: "Juki card (住基カード)",
            c.TOKEN_ANDROID: "Android JPKI token", c.TOKEN_IPHONE: "iPhone JPKI token"
            }.get(token, "unknown JPKI token")
    pins: dict[str, dict[str, Any]] = {}
    for cred in c.Credential:
        tries = card.tries_left(cred)
        pins[cred.key] = {"label": cred.label, "tries_left": tries,
                          "blocked": tries == 0}
    availability = jpki.availability()
    info = CommonApplication(card).card_info()
    obj = {"reader": args.reader, "card": kind, "token": token,
           "certificates": availability, "expiry": info.expiry,
           "municipality": info.municipality, "pins": pins}
    lines = [f"Card:         {kind}", f"Token:        {token}",
             f"Expiry:       {info.expiry}", f"Municipality: {info.municipality}",
             "Certificates: " + ", ".join(k for k, v in availability.items() if v),
             "PINs (tries left, none spent):"]
    for key, p in pins.items():
        state = "BLOCKED" if p["blocked"] else str(p["tries_left"])
        lines.append(f"  {key:<13}{state:>8}  {p['label']}")
    emit(args, obj, lines)
    return 0


def cmd_jpki_cert(args: argparse.Namespace) -> int:
    card, _trust = _card(args, pin=args.which == "sign")
    jpki = JpkiApplication(card)
    if args.which == "sign":
        jpki.verify_pin("sign", SecretSource(args).get("JPKI signature password"))
    der = jpki.certificate_der(args.which)
    cert = x509.load_der_x509_certificate(der)
    out = cert.public_bytes(serialization.Encoding.PEM) if args.pem else der
    args.out.write_bytes(out)
    obj = {"certificate": args.which, "out": str(args.out), "format": "pem" if args.pem else "der",
           "subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
           "serial": format(cert.serial_number, "x"),
           "not_before": cert.not_valid_before_utc.isoformat(),
           "not_after": cert.not_valid_after_utc.isoformat(),
           "sha256": hashlib.sha256(der).hexdigest()}
    emit(args, obj, [f"Wrote the {args.which} certificate to {args.out}",
                     f"  subject  {obj['subject']}", f"  issuer   {obj['issuer']}",
                     f"  valid    {obj['not_before']} .. {obj['not_after']}"])
    return 0


def cmd_jpki_sign(args: argparse.Namespace) -> int:
    data = args.input.read_bytes()
    card, _trust = _card(args, pin=True)
    jpki = JpkiApplication(card)
    prompt = "JPKI auth PIN" if args.key == "auth" else "JPKI signature password"
    jpki.verify_pin(args.key, SecretSource(args).get(prompt))
    sig = jpki.sign(args.key, data, args.hash)
    args.out.write_bytes(sig)
    obj = {"key": args.key, "hash": args.hash, "padding": "pkcs1v15", "in": str(args.input),
           "out": str(args.out), "signature_bytes": len(sig)}
    emit(args, obj, [f"Signed {args.input} with the {args.key} key ({args.hash}, PKCS#1 v1.5);"
                     f" {len(sig)}-byte signature in {args.out}"])
    return 0


def cmd_text_read(args: argparse.Namespace) -> int:
    card, trust = _card(args, pin=True)
    text = TextApplication(card)
    secrets = SecretSource(args)
    if args.with_ == "pin":
        text.verify_pin(secrets.get("券面事項入力補助用 PIN (4 digits)"))
        data = text.read_all(trust)
    elif args.with_ == "a":
        text.verify_code_a(secrets.get("照合番号A (個人番号)"))
        data = text.read_all(trust, attributes=False)
    else:
        text.verify_code_b(secrets.get("照合番号B (14 digits)"))
        data = text.read_all(trust, my_number=False)
    a = data.attributes
    obj: dict[str, Any] = {"my_number": data.my_number, "signature": data.status.value,
                           "signature_reason": data.reason}
    if a is not None:
        obj.update(name=a.name, address=a.address, birth=a.birth, sex=a.sex)
    lines = []
    if data.my_number is not None:
        lines.append(f"個人番号: {data.my_number}")
    if a is not None:
        lines += [f"氏名:     {a.name}", f"住所:     {a.address}",
                  f"生年月日: {a.birth}", f"性別:     {SEX.get(a.sex, a.sex)}"]
    lines.append(f"Signature: {data.status.value} ({data.reason})")
    emit(args, obj, lines)
    return 0 if data.status.value != "invalid" else EXIT_ERROR


def cmd_visual_read(args: argparse.Namespace) -> int:
    card, trust = _card(args, pin=True)
    visual = VisualApplication(card)
    secrets = SecretSource(args)
    if args.with_ == "pin":
        text = TextApplication(card)
        text.verify_pin(secrets.get("券面事項入力補助用 PIN (4 digits)"))
        visual.verify_code_a(text.my_number())
    elif args.with_ == "a":
        visual.verify_code_a(secrets.get("照合番号A (個人番号)"))
    else:
        visual.verify_code_b(secrets.get("照合番号B (14 digits)"))
    data = visual.read_verified(trust)
    face = data.face
    args.out.mkdir(parents=True, exist_ok=True)
    files = {"photo": ("photo.jp2", face.photo), "name": ("name.png", face.name_image),
             "address": ("address.png", face.address_image),
             "security_code": ("security_code.png", face.security_code_image)}
    written = {}
    for key, (fname, blob) in files.items():
        (args.out / fname).write_bytes(blob)
        written[key] = str(args.out / fname)
    obj = {"birth": face.birth, "sex": face.sex, "expiry": face.expiry, "files": written,
           "signature": data.status.value, "signature_reason": data.reason}
    emit(args, obj, [f"生年月日: {face.birth}", f"性別:     {SEX.get(face.sex, face.sex)}",
                     f"有効期限: {face.expiry}",
                     f"Photo (JPEG 2000, {len(face.photo)} bytes) and images in {args.out}",
                     f"Signature: {data.status.value} ({data.reason})"])
    return 0 if data.status.value != "invalid" else EXIT_ERROR


_PIN_KINDS = {"auth": c.Credential.AUTH, "sign": c.Credential.SIGN, "text": c.Credential.TEXT,
              "common": c.Credential.COMMON, "juki": c.Credential.JUKI}


def cmd_pin_change(args: argparse.Namespace) -> int:
    from cardio.identity import validate_four_digit_pin, validate_sign_password

    cred = _PIN_KINDS[args.kind]
    check = validate_sign_password if args.kind == "sign" else validate_four_digit_pin
    secrets = SecretSource(args)
    old = check(secrets.get(f"current {cred.label}"))
    new = check(secrets.get(f"new {cred.label}", "new_pin_env"))
    if not args.pin_stdin and not args.new_pin_env and sys.stdin.isatty():
        again = check(getpass.getpass(f"new {cred.label} again: "))
        if again != new:
            raise UsageError("the two new values differ; nothing was changed")
    card, _trust = _card(args, pin=True)
    card.change_reference_data(cred, old, new)
    emit(args, {"changed": args.kind}, [f"Changed the {cred.label}."])
    return 0


def cmd_emu_init(args: argparse.Namespace) -> int:
    from emulators.card import JlisHierarchy, Profile, create_card
    from emulators.card.images import photo_jp2

    profile = Profile.from_file(args.profile) if args.profile else Profile()
    jlis = JlisHierarchy.load_or_create(args.jlis)
    photo = photo_jp2(args.photo) if args.photo else None
    create_card(args.dir, profile, jlis, photo=photo)
    from emulators.jpki_ca import JpkiAuthority

    JpkiAuthority(jlis).register_card(args.dir)  # J-LIS records which card it issued
    from cardio.identity import wareki_yymmdd

    creds = {"auth_pin": profile.auth_pin, "sign_password": profile.sign_password,
             "text_pin": profile.text_pin, "common_pin": profile.common_pin,
             "juki_pin": profile.juki_pin, "my_number": profile.my_number,
             "code_b": profile.code_b, "security_code": profile.security_code,
             "birth_key": wareki_yymmdd(profile.birth)}
    obj = {"dir": str(args.dir), "reader": f"emu:{args.dir}", "jlis_dir": str(jlis.path),
           **creds}
    lines = [f"Created a software My Number card in {args.dir}",
             f"Use it with: cardio --reader emu:{args.dir} info",
             f"Trust anchors (emulated J-LIS): {jlis.path}",
             "Credentials (shown once; the card keeps only salted digests):"]
    lines += [f"  {k:<14} {v}" for k, v in creds.items()]
    emit(args, obj, lines)
    return 0


def cmd_readers(args: argparse.Namespace) -> int:
    from cardio.pcsc import list_readers

    readers = list_readers()
    obj = {"readers": [{"index": r.index, "name": r.name, "card_present": r.card_present,
                        "atr": r.atr.hex().upper() if r.atr else None} for r in readers]}
    lines = [f"{r.index}: {r.name}  [{'card ' + r.atr.hex(' ').upper() if r.atr else 'empty'}]"
             for r in readers] or ["no PC/SC readers"]
    emit(args, obj, lines)
    return 0


def cmd_emu_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from emulators.card import SoftwareCard
    from emulators.vpcd import VpcdBridge, serve_forever

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    def reporter(directory: Path, port: int) -> Callable[[str], None]:
        def report(event: str) -> None:
            print(f"{directory} on port {port}: {event}", flush=True)
        return report

    bridges = [VpcdBridge(SoftwareCard.open(d), args.port + i, args.host,
                          on_event=reporter(d, args.port + i))
               for i, d in enumerate(args.dirs)]
    print(f"serving {len(bridges)} card(s) to vpcd at {args.host}:{args.port}"
          f"{'..' + str(args.port + len(bridges) - 1) if len(bridges) > 1 else ''};"
          " Ctrl-C to stop", flush=True)
    serve_forever(bridges, stop)
    print("stopped", flush=True)
    return 0


def _trust_for(args: argparse.Namespace, reader_trust: Any = None) -> Any:
    from cardio.trust import TrustStore

    if args.trust is not None:
        return TrustStore.from_dir(args.trust)
    if reader_trust is not None:
        return reader_trust
    env = os.environ.get("CARDIO_TRUST_DIR")
    if env:
        return TrustStore.from_dir(Path(env))
    raise UsageError("no trust anchors: give --trust DIR (J-LIS's roots, or"
                     " 'cardio emu ca roots' for the emulated ones) or set CARDIO_TRUST_DIR")


def _at(args: argparse.Namespace) -> Any:
    import datetime as dt

    if not args.at:
        return None
    try:
        when = dt.datetime.fromisoformat(args.at)
    except ValueError as exc:
        raise UsageError("--at takes an ISO 8601 time, e.g. 2030-01-01T00:00:00+09:00"
                         ) from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _validation_lines(v: Any) -> list[str]:
    return [f"Status: {v.status.value}", f"Reason: {v.reason}",
            f"Checks: {', '.join(v.checks) or 'none'}"]


def cmd_jpki_verify_cert(args: argparse.Namespace) -> int:
    from cardio.pki import CertificateValidator, load_certificate

    reader_trust = None
    if args.card:
        card, reader_trust = _card(args, pin=args.card == "sign")
        jpki = JpkiApplication(card)
        if args.card == "sign":
            jpki.verify_pin("sign", SecretSource(args).get("JPKI signature password"))
        cert = jpki.certificate(args.card)
    elif args.file is not None:
        cert = load_certificate(args.file.read_bytes())
    else:
        raise UsageError("give a certificate FILE or --card auth|sign")
    validator = CertificateValidator(_trust_for(args, reader_trust))
    v = validator.validate(cert, at=_at(args), purpose=args.purpose)
    obj = {**v.to_json(), "subject": cert.subject.rfc4514_string(),
           "serial": format(cert.serial_number, "x")}
    emit(args, obj, [f"Certificate: {obj['subject']} (serial {obj['serial']})",
                     *_validation_lines(v)])
    return 0 if v.status.value == "valid" else EXIT_NOT_VALID


def cmd_jpki_cms_sign(args: argparse.Namespace) -> int:
    from cardio.cms import sign_detached

    content = args.input.read_bytes()
    card, _trust = _card(args, pin=True)
    jpki = JpkiApplication(card)
    key = args.key
    jpki.verify_pin(key, SecretSource(args).get(
        "JPKI signature password" if key == "sign" else "JPKI auth PIN"))
    cert_der = jpki.certificate_der(key)
    ca_der = jpki.certificate_der(f"{key}-ca")
    p7s = sign_detached(content, cert_der, lambda di: jpki.sign_digest_info(key, di),
                        extra_certs=(ca_der,) if args.include_ca else ())
    args.out.write_bytes(p7s)
    emit(args, {"out": str(args.out), "key": key, "bytes": len(p7s), "detached": True},
         [f"Wrote a detached CMS signature ({len(p7s)} bytes, {key} key) to {args.out}"])
    return 0


def cmd_jpki_cms_verify(args: argparse.Namespace) -> int:
    from cardio.cms import verify_detached
    from cardio.pki import CertificateValidator

    sig = verify_detached(args.sig.read_bytes(), args.input.read_bytes())
    validator = CertificateValidator(_trust_for(args))
    # No timestamp tokens yet (issue 15): signingTime is only what the signer claims.
    claimed = args.at_signing_time and sig.signing_time is not None
    v = validator.validate(sig.signer, at=sig.signing_time if claimed else _at(args),
                           purpose="any")
    source = ("signingTime (unauthenticated, claimed by the signer)" if claimed else
              "--at (given by you)" if args.at else "now (this verifier's clock)")
    warnings = []
    if claimed:
        warnings.append("the certificate was checked at the signer's own signingTime, which"
                        " nothing authenticates: a signer holding a compromised key can"
                        " backdate it to before a key-compromise revocation")
    obj = {"signature": "valid", "signer": sig.signer.subject.rfc4514_string(),
           "signing_time": sig.signing_time.isoformat() if sig.signing_time else None,
           "time_source": source, "warnings": warnings, "certificate": v.to_json()}
    emit(args, obj, ["Signature: valid (content matches, RSA verified)",
                     f"Signer: {obj['signer']}", f"Signing time: {obj['signing_time']}",
                     f"Checked at: {source}", *_validation_lines(v),
                     *(f"WARNING: {w}" for w in warnings)])
    for w in warnings:
        print(f"cardio: warning: {w}", file=sys.stderr)
    return 0 if v.status.value == "valid" else EXIT_NOT_VALID


def _jlis(args: argparse.Namespace) -> Any:
    from emulators.card import JlisHierarchy

    return JlisHierarchy.load_or_create(args.jlis)


def cmd_emu_ca_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from emulators.jpki_ca import CaServer, JpkiAuthority

    port = _port(args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = CaServer(JpkiAuthority(_jlis(args)), args.host, port).start()
    print(f"JPKI CA (OCSP, CRL) at {server.url}; Ctrl-C to stop", flush=True)
    stop.wait()
    server.stop()
    print("stopped", flush=True)
    return 0


def cmd_emu_ca_roots(args: argparse.Namespace) -> int:
    from emulators.jpki_ca import export_roots

    written = export_roots(_jlis(args), args.out)
    emit(args, {k: str(v) for k, v in written.items()},
         [f"{k}: {v}" for k, v in written.items()])
    return 0


def cmd_emu_ca_revoke(args: argparse.Namespace) -> int:
    import json as _json

    from emulators.card import JlisHierarchy
    from emulators.jpki_ca import JpkiAuthority

    meta = _json.loads((args.card_dir / "card.json").read_text())
    jlis = JlisHierarchy.load_or_create(args.jlis or Path(meta["jlis_dir"]))
    ca = JpkiAuthority(jlis)
    if args.event:
        revs = ca.card_event(args.card_dir, args.event)
    elif args.cert:
        revs = [ca.revoke_card(args.card_dir, args.cert, args.reason)]
    else:
        raise UsageError("give --cert auth|sign (with --reason) or --event")
    obj = {"revoked": [{"cert": r.kind, "serial": format(r.serial, "x"), "reason": r.reason,
                        "time": r.time.isoformat()} for r in revs]}
    emit(args, obj, [f"Revoked the {r.kind} certificate {r.serial:x} ({r.reason}) at"
                     f" {r.time.isoformat()}" for r in revs])
    return 0


def cmd_facepin_verify(args: argparse.Namespace) -> int:
    from facepin.capture import frames, is_video
    from facepin.face import THRESHOLD, FaceEngine, MatchResult, Outcome, load_image, verify

    if args.reference == "card":
        card, _trust = _card(args, pin=True)
        text = TextApplication(card)
        visual = VisualApplication(card)
        text.verify_pin(SecretSource(args).get("券面事項入力補助用 PIN (4 digits)"))
        visual.verify_code_a(text.my_number())
        reference = load_image(visual.card_face().photo)
    else:
        reference = load_image(Path(args.reference))
    threshold = args.threshold if args.threshold is not None else THRESHOLD
    engine = FaceEngine.shared()
    if is_video(args.probe):
        result: MatchResult | None = None
        for frame in frames(args.probe):
            result = verify(reference, frame, threshold=threshold, engine=engine)
            if result.outcome in (Outcome.MATCH, Outcome.NO_MATCH):
                break
        if result is None:
            result = MatchResult(Outcome.NO_FACE, None, threshold, "probe: no frames")
    else:
        result = verify(reference, load_image(Path(args.probe)), threshold=threshold,
                        engine=engine)
    obj = result.to_json()
    dist = "-" if result.distance is None else f"{result.distance:.3f}"
    emit(args, obj, [f"Result: {result.outcome.value}", f"Distance: {dist} (threshold"
                     f" {threshold})"] + ([f"Detail: {result.detail}"] if result.detail else []))
    return 0 if result.match else EXIT_NOT_VALID


def cmd_facepin_serve(args: argparse.Namespace) -> int:
    from emulators.jpki_ca import JpkiAuthority
    from facepin.service import ServiceConfig, serve

    port = _port(args.port)
    jlis = _jlis(args)
    if args.master_key is not None:
        master = args.master_key.read_bytes()
    else:
        master = jlis.pin_reset_master()  # the emulated issuer's key
    # The emulated J-LIS's card registry (certificate → card serial, card-face key).
    config = ServiceConfig(database=args.db, trust=_trust_for(args), master_key=master,
                           registry=JpkiAuthority(jlis).card_of)
    serve(config, args.host, port)
    return 0


def _port(value: str) -> int:
    """A TCP port (0 picks a free one), or a one-line usage error (exit 2)."""
    if not (value.isascii() and value.isdigit() and int(value) <= 65535):
        raise UsageError(f"--port takes a number from 0 to 65535, not {value!r}")
    return int(value)


def cmd_demo(args: argparse.Namespace) -> int:
    from cardio.demo import run_demo

    return run_demo(args.dir, as_json=args.json)


# -- parser -----------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, *, secrets: bool = False, new_secret: bool = False
            ) -> None:
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON object")
    p.add_argument("--reader", default=argparse.SUPPRESS,
                   help="emu:DIR for a software card, or a PC/SC reader name")
    p.add_argument("--trust", type=Path, default=argparse.SUPPRESS,
                   help="directory of trust anchors (PEM)")
    if secrets:
        p.add_argument("--pin-stdin", action="store_true",
                       help="read the PIN(s) from stdin, one per line")
        p.add_argument("--pin-env", metavar="NAME", help="read the PIN from $NAME")
    if new_secret:
        p.add_argument("--new-pin-env", metavar="NAME", help="read the new PIN from $NAME")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardio", description="My Number card (個人番号カード) tool")
    parser.add_argument("--version", action="version", version=f"cardio {__version__}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--reader", default=None,
                        help="emu:DIR for a software card, or a PC/SC reader name")
    parser.add_argument("--trust", type=Path, default=None,
                        help="directory of trust anchors (PEM)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="card kind, token, tries left for every PIN (none spent)")
    _common(p)
    p.set_defaults(func=cmd_info)

    jpki = sub.add_parser("jpki", help="公的個人認証 certificates and signatures")
    jsub = jpki.add_subparsers(dest="jpki_command", required=True)
    p = jsub.add_parser("cert", help="export a certificate")
    p.add_argument("which", choices=["auth", "sign", "auth-ca", "sign-ca"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pem", action="store_true", help="write PEM instead of DER")
    _common(p, secrets=True)
    p.set_defaults(func=cmd_jpki_cert)
    p = jsub.add_parser("sign", help="PKCS#1 v1.5 signature of a file")
    p.add_argument("--key", choices=["auth", "sign"], required=True)
    p.add_argument("--in", dest="input", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hash", choices=HASHES, default="sha256")
    _common(p, secrets=True)
    p.set_defaults(func=cmd_jpki_sign)

    p = jsub.add_parser("verify-cert", help="validate a certificate: chain, validity,"
                        " key usage, revocation (OCSP, CRL fallback)")
    p.add_argument("file", type=Path, nargs="?", help="certificate (DER or PEM)")
    p.add_argument("--card", choices=["auth", "sign"], help="read the certificate from the card")
    p.add_argument("--at", help="check validity at this ISO 8601 time (default now)")
    p.add_argument("--purpose", choices=["any", "auth", "sign"], default="any")
    _common(p, secrets=True)
    p.set_defaults(func=cmd_jpki_verify_cert)
    cms = jsub.add_parser("cms", help="detached CMS signatures with the card")
    csub = cms.add_subparsers(dest="cms_command", required=True)
    p = csub.add_parser("sign", help="detached CMS SignedData (.p7s)")
    p.add_argument("--in", dest="input", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--key", choices=["sign", "auth"], default="sign")
    p.add_argument("--include-ca", action="store_true", help="also embed the CA certificate")
    _common(p, secrets=True)
    p.set_defaults(func=cmd_jpki_cms_sign)
    p = csub.add_parser("verify", help="verify a detached CMS signature and its certificate")
    p.add_argument("--in", dest="input", type=Path, required=True)
    p.add_argument("--sig", type=Path, required=True)
    p.add_argument("--at", help="validate the certificate at this time (default now)")
    p.add_argument("--at-signing-time", action="store_true",
                   help="validate the certificate at the signingTime attribute. WARNING:"
                   " that time is claimed by the signer, not authenticated (no timestamp"
                   " token): whoever holds a compromised key can backdate it before the"
                   " revocation, so a key-compromise revocation may not show")
    _common(p)
    p.set_defaults(func=cmd_jpki_cms_verify)

    text = sub.add_parser("text", help="券面事項入力補助AP: 個人番号 and 基本4情報")
    tsub = text.add_subparsers(dest="text_command", required=True)
    p = tsub.add_parser("read", help="read and check J-LIS's signature")
    p.add_argument("--with", dest="with_", choices=["pin", "a", "b"], default="pin",
                   help="credential: the 4-digit PIN (default), 照合番号A or 照合番号B")
    _common(p, secrets=True)
    p.set_defaults(func=cmd_text_read)

    visual = sub.add_parser("visual", help="券面事項確認AP: photo and card face")
    vsub = visual.add_subparsers(dest="visual_command", required=True)
    p = vsub.add_parser("read", help="save the photo (JP2) and face images")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--with", dest="with_", choices=["pin", "a", "b"], default="pin",
                   help="the text PIN (reads 照合番号A from the card), 照合番号A or 照合番号B")
    _common(p, secrets=True)
    p.set_defaults(func=cmd_visual_read)

    pin = sub.add_parser("pin", help="PIN management")
    psub = pin.add_subparsers(dest="pin_command", required=True)
    p = psub.add_parser("change", help="change a PIN (old then new)")
    p.add_argument("kind", choices=sorted(_PIN_KINDS))
    _common(p, secrets=True, new_secret=True)
    p.set_defaults(func=cmd_pin_change)

    emu = sub.add_parser("emu", help="software cards")
    esub = emu.add_subparsers(dest="emu_command", required=True)
    p = esub.add_parser("init", help="create a software My Number card")
    p.add_argument("dir", type=Path)
    p.add_argument("--profile", type=Path, help="holder profile (JSON or TOML)")
    p.add_argument("--photo", type=Path, help="face image to put on the chip")
    p.add_argument("--jlis", type=Path, default=None,
                   help="emulated J-LIS directory (default $CARDIO_JLIS_DIR or"
                   " ~/.local/share/cardio/emu-jlis)")
    _common(p)
    p.set_defaults(func=cmd_emu_init)

    p = esub.add_parser("serve", help="plug software cards into pcscd through vpcd")
    p.add_argument("dirs", type=Path, nargs="+", metavar="DIR")
    p.add_argument("--port", type=int, default=35963,
                   help="vpcd port of the first card (the next card takes the next port)")
    p.add_argument("--host", default="127.0.0.1")
    _common(p)
    p.set_defaults(func=cmd_emu_serve)

    ca = esub.add_parser("ca", help="the emulated JPKI CAs (OCSP, CRL, revocation)")
    casub = ca.add_subparsers(dest="ca_command", required=True)
    p = casub.add_parser("serve", help="run the OCSP responder and CRL server on loopback")
    p.add_argument("--jlis", type=Path, default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default="35980", help="TCP port, 0-65535 (0: any free one)")
    _common(p)
    p.set_defaults(func=cmd_emu_ca_serve)
    p = casub.add_parser("roots", help="write the emulated trust anchors as PEM")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jlis", type=Path, default=None)
    _common(p)
    p.set_defaults(func=cmd_emu_ca_roots)
    p = casub.add_parser("revoke", help="revoke a software card's certificate")
    p.add_argument("card_dir", type=Path)
    p.add_argument("--cert", choices=["auth", "sign"])
    p.add_argument("--reason", default="unspecified",
                   choices=["unspecified", "key_compromise", "affiliation_changed",
                            "superseded", "cessation_of_operation", "certificate_hold",
                            "privilege_withdrawn"])
    p.add_argument("--event", choices=["attributes_changed", "lost"],
                   help="attributes_changed revokes the sign cert; lost revokes both")
    p.add_argument("--jlis", type=Path, default=None)
    _common(p)
    p.set_defaults(func=cmd_emu_ca_revoke)

    fp = sub.add_parser("facepin", help="face verification and the PIN-reset service")
    fsub = fp.add_subparsers(dest="facepin_command", required=True)
    p = fsub.add_parser("verify", help="1:1 match of a reference photo and a live probe")
    p.add_argument("--reference", required=True,
                   help="'card' (the chip photo, read with the text PIN) or an image file")
    p.add_argument("--probe", required=True,
                   help="an image file, a video file, or camera[:N]")
    p.add_argument("--threshold", type=float, default=None)
    _common(p, secrets=True)
    p.set_defaults(func=cmd_facepin_verify)

    p = fsub.add_parser("serve", help="run the PIN-reset reservation service (ASGI)")
    p.add_argument("--db", default="sqlite:///facepin.db", help="sqlite:///PATH")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default="35990", help="TCP port, 0-65535 (0: any free one)")
    p.add_argument("--master-key", type=Path, default=None,
                   help="issuer master key file (default: the emulated J-LIS one)")
    p.add_argument("--jlis", type=Path, default=None)
    _common(p)
    p.set_defaults(func=cmd_facepin_serve)

    p = sub.add_parser("readers", help="list PC/SC readers and card presence")
    _common(p)
    p.set_defaults(func=cmd_readers)

    p = sub.add_parser("demo", help="create a software card and run a full cycle against it")
    p.add_argument("--dir", type=Path, default=None, help="keep the card here")
    _common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _exit_code(exc: BaseException) -> int:
    from cardio.cms import CmsError

    if isinstance(exc, CmsError):
        return EXIT_NOT_VALID
    if isinstance(exc, PinBlocked):
        return EXIT_BLOCKED
    if isinstance(exc, VerificationFailed):
        return EXIT_WRONG_PIN
    if isinstance(exc, TransportError):
        return EXIT_TRANSPORT
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CardioError, OSError, ValueError) as exc:
        print(f"cardio: error: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print("cardio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
