"""``cardio credential …``: the resident's wallet and a relying party's verifier on the
command line.

Holder: ``obtain`` (JPKI authentication with the card at the issuance service, then the
credential is stored), ``list``, ``show``, ``present`` (shows what the verifier asks for and
discloses only the approved items). Relying party: ``request`` (a presentation request with
a fresh nonce, remembered in ``--state``), ``verify`` (offline against the trust list and a
status list token; exit 0 and exactly the disclosed items, or exit 6 and the reason).

Registered through the ``cardio.commands`` entry point (:func:`register`); errors and exit
codes are the host's. CLI wiring may use ``emulators`` for ``--trust emu`` (the emulated
municipalities' published keys); the library never does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

from cardio.cli import SecretSource, emit, open_card
from kiosk.credentials.errors import CredentialUsageError, PresentationRefused, WalletError
from kiosk.credentials.sdjwt import Path

__all__ = ["register"]

TRUST_ENV = "CARDIO_DOC_TRUST_DIR"
STATE_ENV = "CARDIO_VERIFIER_DIR"
MAX_FILE = 512 * 1024


def _wallet(args: argparse.Namespace) -> Any:
    from kiosk.credentials.holder import Wallet

    return Wallet(FsPath(args.wallet) if args.wallet else None)


def _state(args: argparse.Namespace) -> FsPath:
    if args.state:
        return FsPath(args.state)
    if os.environ.get(STATE_ENV):
        return FsPath(os.environ[STATE_ENV])
    base = os.environ.get("XDG_STATE_HOME") or str(FsPath.home() / ".local" / "state")
    return FsPath(base) / "cardio" / "verifier" / "nonces"


def _read(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise WalletError(f"{what} {path}: {e.strerror}") from None
    if len(data) > MAX_FILE:
        raise WalletError(f"{what} {path} is larger than {MAX_FILE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise WalletError(f"{what} {path} is not UTF-8 text") from None


def parse_claim(spec: str) -> Path:
    """``household.*.name`` → ``("household", None, "name")``."""
    out: list[str | int | None] = []
    for part in spec.split("."):
        if part == "*":
            out.append(None)
        elif part.isdigit():
            out.append(int(part))
        elif part:
            out.append(part)
        else:
            raise CredentialUsageError(f"--claim {spec!r}: empty path element")
    if not out or not isinstance(out[0], str):
        raise CredentialUsageError(f"--claim {spec!r} must start with a claim name")
    return tuple(out)


def _clock(args: argparse.Namespace) -> Callable[[], float]:
    """The wall clock, or ``--now`` running on (an emulated world whose services run with
    ``--now``: holder and verifier must share its time)."""
    if not getattr(args, "now", None):
        return time.time
    from cardio.cli import parse_time

    when = parse_time(args.now, "--now")
    assert when is not None
    offset = when.timestamp() - time.time()
    return lambda: time.time() + offset


def _spec(p: Path) -> str:
    return _safe(".".join("*" if x is None else str(x) for x in p))


def _safe(text: str) -> str:
    """``text`` for a terminal: every control or formatting character (escape sequences,
    bidi overrides, zero-width characters, line separators) shown as ``\\uXXXX``. Requests
    with such characters are refused when parsed; this also covers values from a
    credential."""
    import unicodedata

    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in
                   ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else c for c in text)


def _show(value: Any) -> str:
    return _safe(json.dumps(value, ensure_ascii=False))


# -- holder -------------------------------------------------------------------------------------
def cmd_obtain(args: argparse.Namespace) -> int:
    from cardio.jpki import JpkiApplication
    from kiosk.credentials.client import obtain_credential

    card, _trust = open_card(args)
    jpki = JpkiApplication(card)
    jpki.verify_pin("auth", SecretSource(args).get("JPKI auth PIN (4 digits)"))

    def sign(challenge: bytes) -> tuple[bytes, bytes]:
        return jpki.certificate_der("auth"), jpki.sign("auth", challenge)

    options = {k: v for k, v in (("scope", args.scope), ("honseki", args.honseki),
                                 ("relationship", args.relationship)) if v}
    cred = obtain_credential(args.center, sign, _wallet(args), options=options)
    claims, _paths = cred.contents()
    items = sorted(k for k in claims if k not in ("iss", "iat", "exp", "vct", "cnf", "status"))
    emit(args, {"id": cred.id, "issuer": cred.issuer, "expires_at": cred.expires_at,
                "items": items, "wallet": str(_wallet(args).path)},
         [f"credential {cred.id} from municipality {cred.issuer} stored in"
          f" {_wallet(args).path}", f"  valid until {_date(cred.expires_at)}",
          f"  items (each disclosable on its own): {', '.join(items)}"])
    return 0


def _date(ts: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.timezone(dt.timedelta(hours=9))).isoformat()


def cmd_list(args: argparse.Namespace) -> int:
    creds = _wallet(args).all()
    rows = [{"id": c.id, "issuer": c.issuer, "vct": c.parsed.payload.get("vct"),
             "expires_at": c.expires_at, "expired": c.expires_at < time.time()}
            for c in creds]
    emit(args, {"credentials": rows},
         [f"{r['id']}  {r['issuer']}  until {_date(r['expires_at'])}"
          + ("  (expired)" if r["expired"] else "") for r in rows] or ["no credentials"])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from kiosk.credentials.holder import personal
    from kiosk.credentials.juminhyo import label_of

    cred = _wallet(args).load(args.id)
    claims, _ = cred.contents()
    mine = personal(claims)
    emit(args, {"id": cred.id, "issuer": cred.issuer, "expires_at": cred.expires_at,
                "claims": mine},
         [f"credential {cred.id} ({cred.issuer}, until {_date(cred.expires_at)})"]
         + [f"  {_safe(label_of((k,)))}: {_show(v)}" for k, v in mine.items()])
    return 0


def cmd_present(args: argparse.Namespace) -> int:
    from kiosk.credentials.juminhyo import label_of
    from kiosk.credentials.request import PresentationRequest

    try:
        req = PresentationRequest.from_json(json.loads(_read(args.request, "request")))
    except ValueError:
        raise WalletError(f"request {args.request} is not JSON") from None
    cred = _wallet(args).choose(req, args.credential)
    plan = cred.plan(req)
    print(f"{_safe(req.client_id)} asks for ({_safe(req.purpose) or 'no purpose given'}):",
          file=sys.stderr)
    for item in plan:
        shown = ", ".join(_show(v) for v in item.values) \
            if item.available else "(not in this credential)"
        print(f"  {_safe(item.label)} [{_spec(item.path)}]: {shown}", file=sys.stderr)
    if args.approve is not None:
        approved = [p.path for p in plan] if args.approve == "all" else \
            [parse_claim(s) for s in args.approve.split(",") if s]
    elif sys.stdin.isatty():
        approved = [p.path for p in plan if p.available and
                    input(f"disclose {_safe(p.label)}? [y/N] ").strip().lower()
                    in ("y", "yes")]
    else:
        raise CredentialUsageError("nothing approved: give --approve all|ITEM,ITEM (or run"
                                   " on a terminal to be asked item by item)")
    text = cred.present(req, approved, now=_clock(args)())
    FsPath(args.out).write_text(text + "\n", encoding="ascii")
    sent = _sent(cred, text)
    emit(args, {"out": args.out, "credential": cred.id, "bytes": len(text),
                "disclosed": [{"path": list(p), "value": v} for p, v in sent],
                "client_id": req.client_id},
         [f"presentation for {_safe(req.client_id)} written to {args.out} ({len(text)}"
          " bytes); it discloses exactly:"]
         + [f"  {_safe(label_of(p))} [{_spec(p)}]: {_show(v)}" for p, v in sent]
         + ([] if sent else ["  nothing"]))
    return 0


def _sent(cred: Any, text: str) -> list[tuple[Path, Any]]:
    """Each item the presentation discloses, by its path in the credential, with its value:
    the leaves (a member's element and the household array are containers of what is
    listed)."""
    from kiosk.credentials.sdjwt import parse, resolve

    sd = parse(text)
    _claims, paths = resolve(sd.payload, sd.disclosures)
    full, _ = cred.contents()
    out = []
    for p in sorted(paths.values(), key=lambda x: [str(e) for e in x]):
        if any(q != p and q[:len(p)] == p for q in paths.values()):
            continue
        value: Any = full
        for e in p:
            value = value[e]
        out.append((p, value))
    return out


# -- relying party -------------------------------------------------------------------------
def _trust(args: argparse.Namespace) -> tuple[list[Any], str]:
    from kiosk.documents.trust import load_trust_list

    if args.trust and args.trust != "emu":
        return load_trust_list(FsPath(args.trust)), f"--trust {args.trust}"
    if not args.trust and os.environ.get(TRUST_ENV):
        return load_trust_list(FsPath(os.environ[TRUST_ENV])), f"${TRUST_ENV}"
    if args.trust == "emu":
        from emulators.document_issuers import DocumentIssuer

        jlis = FsPath(args.jlis) if args.jlis else None
        return ([i.credential_trust_entry() for i in DocumentIssuer.all(jlis)],
                "emulated issuers (--trust emu)")
    raise CredentialUsageError("no trust list: give --trust DIR (the municipalities' published"
                               " keys; 'cardio doc trust --out DIR' exports the emulated"
                               f" ones), set ${TRUST_ENV}, or --trust emu")


def cmd_request(args: argparse.Namespace) -> int:
    from kiosk.credentials.juminhyo import PRESETS, label_of
    from kiosk.credentials.verifier import DirectoryNonces, Verifier

    paths: list[Path] = list(PRESETS[args.preset]) if args.preset else []
    paths += [parse_claim(c) for c in args.claim or []]
    if not paths:
        raise CredentialUsageError("say what to ask for: --preset or --claim (repeatable)")
    v = Verifier([], client_id=args.client_id, status=None, nonces=DirectoryNonces(_state(args)),
                 clock=_clock(args))
    req = v.request(paths, purpose=args.purpose or "", ttl=args.ttl)
    FsPath(args.out).write_text(json.dumps(req.to_json(), ensure_ascii=False, indent=1) + "\n",
                                encoding="utf-8")
    emit(args, {"out": args.out, "client_id": req.client_id, "expires_at": req.expires_at,
                "claims": [list(p) for p in req.claims]},
         [f"request written to {args.out} (valid {args.ttl} s, single use)",
          "  asks for: " + ", ".join(label_of(p) for p in req.claims)])
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from kiosk.credentials.request import PresentationRequest
    from kiosk.credentials.verifier import (
        DirectoryNonces,
        FetchingStatus,
        StatusTokens,
        Verifier,
    )

    trust, source = _trust(args)
    try:
        req = PresentationRequest.from_json(json.loads(_read(args.request, "request")))
    except ValueError:
        raise WalletError(f"request {args.request} is not JSON") from None
    status: Any
    if args.fetch_status:
        status = FetchingStatus()
    else:
        status = StatusTokens(_read(p, "status token") for p in args.status or [])
    clock = _clock(args)
    v = Verifier(trust, client_id=req.client_id, status=status,
                 nonces=DirectoryNonces(_state(args)), clock=clock,
                 require_status=not args.no_status)
    text = _read(args.file, "presentation")
    started = time.perf_counter()
    try:
        out = v.verify(text, req)
    except PresentationRefused as e:
        ms = (time.perf_counter() - started) * 1000
        emit(args, {"valid": False, "reason": e.reason, "message": str(e),
                    "trust_source": source, "ms": round(ms, 2)},
             [f"refused ({e.reason}): {e}", f"  trust: {source}"])
        return e.exit_code
    ms = (time.perf_counter() - started) * 1000
    emit(args, {**out.to_json(), "trust_source": source, "ms": round(ms, 2)},
         [f"valid: {len(out.disclosed)} disclosures from {out.issuer_name or out.issuer}"
          f" ({out.issuer}), status {'checked' if out.status_checked else 'NOT checked'}"]
         + [f"  {k}: {json.dumps(val, ensure_ascii=False)}" for k, val in out.claims.items()]
         + [f"  trust: {source}", f"  {len(text.strip())} bytes received, {ms:.1f} ms"])
    return 0


def register(sub: Any) -> None:
    """Add the ``credential`` group (the ``cardio.commands`` hook)."""
    from kiosk.credentials.juminhyo import PRESETS

    top = sub.add_parser("credential", help="the 住民票 as a selective-disclosure credential:"
                         " wallet and verifier")
    csub = top.add_subparsers(dest="credential_command", required=True)

    def common(p: argparse.ArgumentParser, *, wallet: bool = False,
               state: bool = False) -> None:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print one JSON object")
        if wallet:
            p.add_argument("--wallet", metavar="DIR", help="wallet directory (default:"
                           " $CARDIO_WALLET_DIR or ~/.local/share/cardio/wallet)")
        if state:
            p.add_argument("--state", metavar="DIR", help="where open requests' nonces are"
                           f" kept (default: ${STATE_ENV} or ~/.local/state/cardio/verifier)")

    p = csub.add_parser("obtain", help="authenticate with the card and store a new credential")
    p.add_argument("--center", required=True, metavar="URL",
                   help="the issuance service (証明書交付センター), e.g. http://127.0.0.1:8400")
    p.add_argument("--reader", required=True, help="emu:DIR for a software card, or a PC/SC"
                   " reader name")
    p.add_argument("--scope", choices=["self", "household"], help="include the household's"
                   " other members (default: self)")
    p.add_argument("--honseki", choices=["no", "yes"], help="include 本籍・筆頭者")
    p.add_argument("--relationship", choices=["no", "yes"], help="include 世帯主・続柄")
    p.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    p.add_argument("--pin-env", metavar="NAME", help="read the PIN from $NAME")
    p.set_defaults(func=cmd_obtain, trust=None)
    common(p, wallet=True)

    p = csub.add_parser("list", help="the credentials in the wallet")
    common(p, wallet=True)
    p.set_defaults(func=cmd_list)

    p = csub.add_parser("show", help="everything a stored credential holds (the holder's view)")
    p.add_argument("id")
    common(p, wallet=True)
    p.set_defaults(func=cmd_show)

    p = csub.add_parser("present", help="answer a verifier's request with the approved items")
    p.add_argument("request", help="the verifier's request (JSON)")
    p.add_argument("--out", required=True, help="where to write the presentation")
    p.add_argument("--credential", metavar="ID", help="which credential (default: the newest"
                   " of the requested type)")
    p.add_argument("--approve", metavar="all|ITEM,…", help="approve without asking: 'all'"
                   " requested items, or a list such as name,address (household.*.name)")
    p.add_argument("--now", help="the time to sign at, ISO 8601 (default: now)")
    common(p, wallet=True)
    p.set_defaults(func=cmd_present)

    p = csub.add_parser("request", help="(relying party) make a presentation request")
    p.add_argument("--client-id", required=True, help="the verifier's identifier (the aud the"
                   " holder signs), e.g. https://shop.example")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a typical request")
    p.add_argument("--claim", action="append", metavar="PATH", help="an item to ask for, e.g."
                   " name, address, household.*.name (repeatable)")
    p.add_argument("--purpose", help="shown to the holder")
    p.add_argument("--ttl", type=int, default=300, help="seconds the request stays open")
    p.add_argument("--out", required=True, help="where to write the request (JSON)")
    p.add_argument("--now", help="the request's time, ISO 8601 (default: now)")
    common(p, state=True)
    p.set_defaults(func=cmd_request)

    p = csub.add_parser(
        "verify", help="(relying party) verify a presentation offline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Checks the issuer's signature against the trust list (keys with use:"
        " credential), validity, every disclosure, the holder's key-binding JWT (nonce of an"
        " open request of ours, single use; aud; iat within 5 minutes; sd_hash) and the"
        " municipality's status list; prints exactly the disclosed items (exit 0) or the"
        " reason (exit 6).")
    p.add_argument("file", help="the presentation (SD-JWT+KB)")
    p.add_argument("--request", required=True, help="the request it answers (JSON)")
    p.add_argument("--trust", metavar="DIR", help="trust list directory, or 'emu' (default:"
                   f" ${TRUST_ENV})")
    p.add_argument("--jlis", metavar="DIR", help="emulated J-LIS directory (with --trust emu)")
    p.add_argument("--status", action="append", metavar="FILE",
                   help="a Status List Token fetched earlier (repeatable; offline)")
    p.add_argument("--fetch-status", action="store_true",
                   help="fetch the status list named in the credential (online)")
    p.add_argument("--no-status", action="store_true",
                   help="accept without a revocation check (says so in the output)")
    p.add_argument("--now", help="verification time, ISO 8601 (default: now)")
    common(p, state=True)
    p.set_defaults(func=cmd_verify)
