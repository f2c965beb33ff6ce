"""``cardio jpki …``: 公的個人認証 certificates, signatures, certificate validation, CMS
(with RFC 3161 time-stamps) and PAdES."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cardio.cli.framework import (
    SecretSource,
    add_common_options,
    emit,
    open_card,
    parse_time,
    trust_for,
)
from cardio.errors import EXIT_NOT_VALID, UsageError
from cardio.jpki import HASHES, JpkiApplication, KeyKind
from cardio.pki import MAX_CERT, CertificateValidator, Validation, load_certificate
from cardio.trust import TrustStore

_PROMPTS = {"auth": "JPKI auth PIN", "sign": "JPKI signature password"}


def _unlock(jpki: JpkiApplication, args: argparse.Namespace, key: KeyKind) -> None:
    jpki.verify_pin(key, SecretSource(args).get(_PROMPTS[key]))


def cmd_cert(args: argparse.Namespace) -> int:
    card, _trust = open_card(args)
    jpki = JpkiApplication(card)
    if args.which == "sign":
        _unlock(jpki, args, "sign")
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


def _head(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a file whose loader refuses more than ``limit``: a
    certificate or signature named as ``/dev/zero`` (or a multi-GB file by mistake) is the
    loader's one-line size error, not a process that eats memory until it is killed."""
    with open(path, "rb") as f:
        return f.read(limit + 1)


def cmd_sign(args: argparse.Namespace) -> int:
    data = args.input.read_bytes()
    card, _trust = open_card(args)
    jpki = JpkiApplication(card)
    _unlock(jpki, args, args.key)
    sig = jpki.sign(args.key, data, args.hash)
    args.out.write_bytes(sig)
    obj = {"key": args.key, "hash": args.hash, "padding": "pkcs1v15", "in": str(args.input),
           "out": str(args.out), "signature_bytes": len(sig)}
    emit(args, obj, [f"Signed {args.input} with the {args.key} key ({args.hash}, PKCS#1 v1.5);"
                     f" {len(sig)}-byte signature in {args.out}"])
    return 0


def _validation_lines(v: Validation) -> list[str]:
    return [f"Status: {v.status.value}", f"Reason: {v.reason}",
            f"Checks: {', '.join(v.checks) or 'none'}"]


def cmd_verify_cert(args: argparse.Namespace) -> int:
    reader_trust: TrustStore | None = None
    if args.card:
        card, reader_trust = open_card(args)
        jpki = JpkiApplication(card)
        if args.card == "sign":
            _unlock(jpki, args, "sign")
        cert = jpki.certificate(args.card)
    elif args.file is not None:
        cert = load_certificate(_head(args.file, MAX_CERT))
    else:
        raise UsageError("give a certificate FILE or --card auth|sign")
    validator = CertificateValidator(trust_for(args, reader_trust))
    v = validator.validate(cert, at=parse_time(args.at), purpose=args.purpose)
    obj = {**v.to_json(), "subject": cert.subject.rfc4514_string(),
           "serial": format(cert.serial_number, "x")}
    emit(args, obj, [f"Certificate: {obj['subject']} (serial {obj['serial']})",
                     *_validation_lines(v)])
    return 0 if v.status.value == "valid" else EXIT_NOT_VALID


def cmd_cms_sign(args: argparse.Namespace) -> int:
    from cardio.cms import sign
    from cardio.tsp import TsaClient

    content = args.input.read_bytes()
    card, _trust = open_card(args)
    jpki = JpkiApplication(card)
    key: KeyKind = args.key
    _unlock(jpki, args, key)
    cert_der = jpki.certificate_der(key)
    ca_der = jpki.certificate_der(f"{key}-ca")
    p7s = sign(content, cert_der, lambda di: jpki.sign_digest_info(key, di),
               detached=not args.attached, extra_certs=(ca_der,) if args.include_ca else (),
               timestamper=TsaClient(args.tsa) if args.tsa else None)
    args.out.write_bytes(p7s)
    form = "an attached" if args.attached else "a detached"
    stamped = f", time-stamped by {args.tsa}" if args.tsa else ""
    emit(args, {"out": str(args.out), "key": key, "bytes": len(p7s),
                "detached": not args.attached, "timestamp": bool(args.tsa)},
         [f"Wrote {form} CMS signature ({len(p7s)} bytes, {key} key{stamped}) to {args.out}"])
    return 0


def cmd_cms_timestamp(args: argparse.Namespace) -> int:
    from cardio.cms import MAX_CMS, add_timestamp
    from cardio.tsp import TsaClient

    p7s = add_timestamp(_head(args.sig, MAX_CMS), TsaClient(args.tsa))
    out = args.out or args.sig
    out.write_bytes(p7s)
    emit(args, {"out": str(out), "bytes": len(p7s), "tsa": args.tsa},
         [f"Added a signature time-stamp token from {args.tsa} to {out}"])
    return 0


def cmd_cms_verify(args: argparse.Namespace) -> int:
    from cardio.cms import MAX_CMS, verify
    from cardio.tsp import signing_time_of

    content = args.input.read_bytes() if args.input is not None else None
    sig = verify(_head(args.sig, MAX_CMS), content)
    trust = trust_for(args)
    validator = CertificateValidator(trust)
    stamp = signing_time_of(sig, trust) if sig.timestamp_token is not None else None
    at_signing = args.at_signing_time or (stamp is not None and not args.at)
    when = None
    warnings: list[str] = []
    if at_signing:
        st = stamp or signing_time_of(sig, trust)
        when, source, warnings = st.at, st.source, st.warnings
        if when is None:
            raise UsageError("the signature has neither a time-stamp token nor a signingTime")
    else:
        when = parse_time(args.at)
        source = "--at (given by you)" if args.at else "now (this verifier's clock)"
    v = validator.validate(sig.signer, at=when, purpose="any")
    obj = {"signature": "valid", "signer": sig.signer.subject.rfc4514_string(),
           "signing_time": sig.signing_time.isoformat() if sig.signing_time else None,
           "timestamp": None if stamp is None or stamp.timestamp is None else {
               "gen_time": stamp.timestamp.gen_time.isoformat(),
               "tsa": stamp.timestamp.tsa.subject.rfc4514_string(),
               "serial": format(stamp.timestamp.serial, "x")},
           "attached": sig.content is not None,
           "time_source": source, "warnings": warnings, "certificate": v.to_json()}
    ts_line = (f"Time-stamp: {obj['timestamp']['gen_time']} by {obj['timestamp']['tsa']}"
               if isinstance(obj["timestamp"], dict) else "Time-stamp: none")
    emit(args, obj, ["Signature: valid (content matches, RSA verified)",
                     f"Signer: {obj['signer']}", f"Signing time: {obj['signing_time']}",
                     ts_line, f"Checked at: {source}", *_validation_lines(v),
                     *(f"WARNING: {w}" for w in warnings)])
    for w in warnings:
        print(f"cardio: warning: {w}", file=sys.stderr)
    return 0 if v.status.value == "valid" else EXIT_NOT_VALID


def _quiet_pyhanko() -> None:
    """pyHanko logs validation failures with tracebacks; the report says what failed."""
    import logging

    for name in ("pyhanko", "pyhanko_certvalidator"):
        logging.getLogger(name).addHandler(logging.NullHandler())
        logging.getLogger(name).propagate = False


def _need_pyhanko() -> None:
    try:
        import pyhanko  # noqa: F401
    except ImportError:
        raise UsageError("PDF signatures need pyHanko: pip install 'cardio[signatures]'"
                         ) from None
    _quiet_pyhanko()


def cmd_pdf_sign(args: argparse.Namespace) -> int:
    import os

    _need_pyhanko()
    from cardio.pdf import MAX_PDF, CardPdfSigner, PdfError, sign_pdf

    data = _head(args.input, MAX_PDF)
    if not data.lstrip()[:5] == b"%PDF-":
        raise PdfError(f"{args.input} is not a PDF (no %PDF- header)")
    tsa = args.tsa or os.environ.get("CARDIO_TSA_URL")
    if args.level != "B-B" and not tsa:
        raise UsageError(f"PAdES {args.level} needs a time-stamp: give --tsa URL or set"
                         " CARDIO_TSA_URL")
    card, reader_trust = open_card(args)
    trust = trust_for(args, reader_trust)
    jpki = JpkiApplication(card)
    _unlock(jpki, args, "sign")
    signer = CardPdfSigner(jpki.certificate_der("sign"), (jpki.certificate_der("sign-ca"),),
                           lambda di: jpki.sign_digest_info("sign", di))
    out = sign_pdf(data, signer, trust, level=args.level, field_name=args.field,
                   reason=args.reason, location=args.location, tsa_url=tsa,
                   visible=not args.invisible)
    args.out.write_bytes(out)
    emit(args, {"out": str(args.out), "level": args.level, "field": args.field,
                "bytes": len(out), "tsa": tsa if args.level != "B-B" else None},
         [f"Signed {args.input} at PAdES {args.level} (field {args.field}) into {args.out}"])
    return 0


def cmd_pdf_verify(args: argparse.Namespace) -> int:
    _need_pyhanko()
    from cardio.pdf import MAX_PDF, verify_pdf

    reports = verify_pdf(_head(args.file, MAX_PDF), trust_for(args), online=not args.offline)
    ok = all(r.ok for r in reports)
    lines = []
    for r in reports:
        lines += [f"Signature {r.field_name}: {'VALID' if r.ok else 'NOT VALID'}",
                  f"  signer        {r.signer}",
                  f"  integrity     {'intact' if r.intact and r.signature_valid else 'BROKEN'}",
                  f"  chain         {'trusted' if r.chain_trusted else 'NOT trusted'}",
                  f"  revocation    {r.revocation} at {r.signing_time} ({r.signing_time_source})",
                  f"  timestamp     {r.timestamp['time'] if r.timestamp else 'none'}",
                  f"  coverage      {r.coverage}"
                  f" ({'whole document' if r.whole_document else 'not the whole document'})",
                  f"  after signing {r.modifications}"
                  f"{' (validation data only)' if r.modifications == 'lta_updates' else ''}",
                  *(f"  problem: {p}" for p in r.problems)]
    emit(args, {"file": str(args.file), "valid": ok,
                "signatures": [r.to_json() for r in reports]}, lines)
    return 0 if ok else EXIT_NOT_VALID


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jpki = sub.add_parser("jpki", help="公的個人認証 certificates and signatures")
    jsub = jpki.add_subparsers(dest="jpki_command", required=True)
    p = jsub.add_parser("cert", help="export a certificate")
    p.add_argument("which", choices=["auth", "sign", "auth-ca", "sign-ca"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pem", action="store_true", help="write PEM instead of DER")
    add_common_options(p, secrets=True)
    p.set_defaults(func=cmd_cert)
    p = jsub.add_parser("sign", help="PKCS#1 v1.5 signature of a file")
    p.add_argument("--key", choices=["auth", "sign"], required=True)
    p.add_argument("--in", dest="input", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hash", choices=HASHES, default="sha256")
    add_common_options(p, secrets=True)
    p.set_defaults(func=cmd_sign)

    p = jsub.add_parser("verify-cert", help="validate a certificate: chain, validity,"
                        " key usage, revocation (OCSP, CRL fallback)")
    p.add_argument("file", type=Path, nargs="?", help="certificate (DER or PEM)")
    p.add_argument("--card", choices=["auth", "sign"], help="read the certificate from the card")
    p.add_argument("--at", help="check validity at this ISO 8601 time (default now)")
    p.add_argument("--purpose", choices=["any", "auth", "sign"], default="any")
    add_common_options(p, secrets=True)
    p.set_defaults(func=cmd_verify_cert)
    cms = jsub.add_parser("cms", help="CMS signatures (detached or attached) with the card")
    csub = cms.add_subparsers(dest="cms_command", required=True)
    p = csub.add_parser("sign", help="CMS SignedData (.p7s detached, .p7m attached)")
    p.add_argument("--in", dest="input", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--key", choices=["sign", "auth"], default="sign")
    p.add_argument("--include-ca", action="store_true", help="also embed the CA certificate")
    p.add_argument("--attached", action="store_true", help="put the content inside")
    p.add_argument("--tsa", metavar="URL", help="add an RFC 3161 signature time-stamp"
                   " token from this TSA (e.g. http://127.0.0.1:PORT/tsa)")
    add_common_options(p, secrets=True)
    p.set_defaults(func=cmd_cms_sign)
    p = csub.add_parser("timestamp", help="add an RFC 3161 time-stamp token to a signature")
    p.add_argument("--sig", type=Path, required=True)
    p.add_argument("--tsa", metavar="URL", required=True)
    p.add_argument("--out", type=Path, help="default: rewrite --sig")
    add_common_options(p)
    p.set_defaults(func=cmd_cms_timestamp)
    p = csub.add_parser("verify", help="verify a CMS signature and its certificate")
    p.add_argument("--in", dest="input", type=Path,
                   help="the signed content (required for a detached signature)")
    p.add_argument("--sig", type=Path, required=True)
    p.add_argument("--at", help="validate the certificate at this time (default: the"
                   " time-stamp token's genTime if there is one, else now)")
    p.add_argument("--at-signing-time", action="store_true",
                   help="validate the certificate at the time of signing: the time-stamp"
                   " token's genTime when the signature has one. WARNING: without a token"
                   " the signingTime attribute is used, which is claimed by the signer, not"
                   " authenticated: whoever holds a compromised key can backdate it before"
                   " the revocation, so a key-compromise revocation may not show")
    add_common_options(p)
    p.set_defaults(func=cmd_cms_verify)

    pdf = jsub.add_parser("pdf", help="PAdES signatures on PDF with the card (pyHanko)")
    psub = pdf.add_subparsers(dest="pdf_command", required=True)
    p = psub.add_parser("sign", help="sign a PDF with the signature key")
    p.add_argument("--in", dest="input", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--level", choices=["B-B", "B-T", "B-LT"], default="B-B",
                   help="B-T adds a TSA time-stamp, B-LT also the chain, OCSP responses"
                   " and CRLs (DSS) for offline validation")
    p.add_argument("--field", default="Signature1", help="signature field (created on page"
                   " 1 if the PDF has no field of that name)")
    p.add_argument("--reason")
    p.add_argument("--location")
    p.add_argument("--tsa", metavar="URL", help="RFC 3161 TSA (default $CARDIO_TSA_URL)")
    p.add_argument("--invisible", action="store_true", help="no appearance on the page")
    add_common_options(p, secrets=True)
    p.set_defaults(func=cmd_pdf_sign)
    p = psub.add_parser("verify", help="validate every signature of a PDF")
    p.add_argument("file", type=Path)
    p.add_argument("--offline", action="store_true", help="fetch nothing: revocation only"
                   " from the PDF's DSS (B-LT)")
    add_common_options(p)
    p.set_defaults(func=cmd_pdf_verify)
