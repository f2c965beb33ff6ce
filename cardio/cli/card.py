"""Card-wide commands: ``info`` (kind, token, tries left), ``readers`` (PC/SC readers) and
``pin change``."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from cardio import constants as c
from cardio.cli.framework import SecretSource, add_common_options, emit, open_card
from cardio.common_ap import CommonApplication
from cardio.errors import UsageError
from cardio.identity import validate_four_digit_pin, validate_sign_password
from cardio.jpki import JpkiApplication

_TOKEN_KINDS = {c.TOKEN_MYNUMBER_CARD: "My Number card (個人番号カード)",
                c.TOKEN_JUKI_CARD: "Juki card (住基カード)",
                c.TOKEN_ANDROID: "Android JPKI token", c.TOKEN_IPHONE: "iPhone JPKI token"}

PIN_KINDS = {"auth": c.Credential.AUTH, "sign": c.Credential.SIGN, "text": c.Credential.TEXT,
             "common": c.Credential.COMMON, "juki": c.Credential.JUKI}


def cmd_info(args: argparse.Namespace) -> int:
    card, _trust = open_card(args)
    jpki = JpkiApplication(card)
    token = jpki.token()
    kind = _TOKEN_KINDS.get(token, "unknown JPKI token")
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


def cmd_readers(args: argparse.Namespace) -> int:
    from cardio.pcsc import list_readers  # pyscard is an optional extra

    readers = list_readers()
    obj = {"readers": [{"index": r.index, "name": r.name, "card_present": r.card_present,
                        "atr": r.atr.hex().upper() if r.atr else None} for r in readers]}
    lines = [f"{r.index}: {r.name}  [{'card ' + r.atr.hex(' ').upper() if r.atr else 'empty'}]"
             for r in readers] or ["no PC/SC readers"]
    emit(args, obj, lines)
    return 0


def cmd_pin_change(args: argparse.Namespace) -> int:
    cred = PIN_KINDS[args.kind]
    check = validate_sign_password if args.kind == "sign" else validate_four_digit_pin
    secrets = SecretSource(args)
    old = check(secrets.get(f"current {cred.label}"))
    new = check(secrets.get(f"new {cred.label}", "new_pin_env"))
    if not args.pin_stdin and not args.new_pin_env and sys.stdin.isatty():
        again = check(getpass.getpass(f"new {cred.label} again: "))
        if again != new:
            raise UsageError("the two new values differ; nothing was changed")
    card, _trust = open_card(args)
    card.change_reference_data(cred, old, new)
    emit(args, {"changed": args.kind}, [f"Changed the {cred.label}."])
    return 0


def register_info(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="card kind, token, tries left for every PIN (none spent)")
    add_common_options(p)
    p.set_defaults(func=cmd_info)


def register_pin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pin = sub.add_parser("pin", help="PIN management")
    psub = pin.add_subparsers(dest="pin_command", required=True)
    p = psub.add_parser("change", help="change a PIN (old then new)")
    p.add_argument("kind", choices=sorted(PIN_KINDS))
    add_common_options(p, secrets=True, new_secret=True)
    p.set_defaults(func=cmd_pin_change)


def register_readers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("readers", help="list PC/SC readers and card presence")
    add_common_options(p)
    p.set_defaults(func=cmd_readers)
