"""``cardio emu …`` and ``cardio demo``: the emulator's commands, registered with the
``cardio`` command line through the entry-point group ``cardio.commands``.

This is the one place where the emulated J-LIS hierarchy — and with it every emulated key,
the PIN-reset master key included — may be created from the command line (DESIGN.md:
production commands such as ``facepin serve`` take their keys from configuration only).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import threading
import typing
from collections.abc import Callable
from pathlib import Path

from cardio import constants as c
from cardio.cli import UsageError, add_common_options, emit, port_number
from cardio.errors import CardioError
from cardio.identity import wareki_yymmdd
from emulators.card import JlisHierarchy, Profile, SoftwareCard, create_card


class CardDirectoryError(CardioError):
    """A card directory named on the command line cannot be used (missing, of another
    format, or damaged); the message names the file and what is wrong."""


class ProfileError(CardioError):
    """A holder profile file that is not a valid profile (not UTF-8, not JSON/TOML, wrong
    types); the message names the file, never the values in it."""


def _check_types(profile: Profile, path: Path) -> Profile:
    """Every field of the right type (JSON has no dates and TOML no ``None``, so a wrong
    type would otherwise surface as a crash deep in personalisation)."""
    hints = typing.get_type_hints(Profile)
    for f in dataclasses.fields(Profile):
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        value = getattr(profile, f.name)
        if not isinstance(value, tuple(a for a in allowed if isinstance(a, type))) or (
                isinstance(value, bool) and bool not in allowed):
            raise ProfileError(f"profile {path}: {f.name} must be"
                               f" {' or '.join(a.__name__ for a in allowed)},"
                               f" not {type(value).__name__}")
    return profile


def _load_profile(path: Path) -> Profile:
    try:
        return _check_types(Profile.from_file(path), path)
    except CardioError:
        raise  # already says what is wrong (InvalidValue: a bad check digit, ...)
    except (ValueError, TypeError, AttributeError) as exc:
        # Decoding and type errors from parsing a user's file are data errors, not bugs.
        raise ProfileError(f"profile {path} is not a valid profile (JSON or TOML object of"
                           f" strings and dates): {type(exc).__name__}: {exc}") from exc


def _open_card(directory: Path) -> SoftwareCard:
    """The card at ``directory``; a missing or damaged directory raises
    ``CardStoreError``/``CardDirectoryDamaged`` (CardioErrors, exit 1) from the store."""
    return SoftwareCard.open(directory)


def _jlis(path: Path | None) -> JlisHierarchy:
    """The emulated J-LIS hierarchy at ``path`` (default ``$CARDIO_JLIS_DIR``), created
    on first use — emulated keys only, never a production one."""
    return JlisHierarchy.load_or_create(path)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def cmd_init(args: argparse.Namespace) -> int:
    from PIL import Image

    from emulators.card.images import photo_jp2

    profile = _load_profile(args.profile) if args.profile else Profile()
    jlis = _jlis(args.jlis)
    try:
        photo = photo_jp2(args.photo) if args.photo else None
    except Image.DecompressionBombError:  # not an OSError: it was an internal error (70)
        raise CardioError(f"--photo {args.photo}: the image is too large (over"
                          f" {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels)") from None
    create_card(args.dir, profile, jlis, photo=photo)
    from emulators.jpki_ca import JpkiAuthority

    JpkiAuthority(jlis).register_card(args.dir)  # J-LIS records which card it issued
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


def cmd_serve(args: argparse.Namespace) -> int:
    from emulators.vpcd import VpcdBridge, serve_forever

    first = port_number(args.port)
    last = first + len(args.dirs) - 1
    if first == 0:  # vpcd listens on a known port and the card connects to it
        raise UsageError("--port 0 is out of range: the card connects to vpcd's port"
                         " (1..65535; 35963 for 'Virtual PCD 00 00')")
    if last > 65535:
        raise UsageError(f"--port {first} leaves no port for card {len(args.dirs)}:"
                         f" {last} is out of range (1..65535)")
    cards = [_open_card(d) for d in args.dirs]  # every directory checked before serving
    stop = _stop_on_signals()

    def reporter(directory: Path, port: int) -> Callable[[str], None]:
        def report(event: str) -> None:
            print(f"{directory} on port {port}: {event}", flush=True)
        return report

    bridges = [VpcdBridge(card, first + i, args.host, on_event=reporter(d, first + i))
               for i, (d, card) in enumerate(zip(args.dirs, cards, strict=True))]
    print(f"serving {len(bridges)} card(s) to vpcd at {args.host}:{first}"
          f"{'..' + str(first + len(bridges) - 1) if len(bridges) > 1 else ''};"
          " Ctrl-C to stop", flush=True)
    serve_forever(bridges, stop)
    print("stopped", flush=True)
    return 0


def cmd_ca_serve(args: argparse.Namespace) -> int:
    from emulators.jpki_ca import CaServer, JpkiAuthority

    port = port_number(args.port)
    stop = _stop_on_signals()
    server = CaServer(JpkiAuthority(_jlis(args.jlis)), args.host, port).start()
    print(f"JPKI CA (OCSP, CRL; RFC 3161 TSA under /tsa) at {server.url}; Ctrl-C to stop",
          flush=True)
    stop.wait()
    server.stop()
    print("stopped", flush=True)
    return 0


def cmd_ca_roots(args: argparse.Namespace) -> int:
    from emulators.jpki_ca import export_roots

    written = export_roots(_jlis(args.jlis), args.out)
    emit(args, {k: str(v) for k, v in written.items()},
         [f"{k}: {v}" for k, v in written.items()])
    return 0


def cmd_ca_pin_reset_key(args: argparse.Namespace) -> int:
    """The emulated issuer's PIN-reset master key file, created on first use, for
    ``facepin serve --master-key-file`` in tests and demos."""
    jlis = _jlis(args.jlis)
    jlis.pin_reset_master()
    path = jlis.path / "pin-reset-master.key"
    emit(args, {"master_key_file": str(path)}, [str(path)])
    return 0


def _card_jlis_dir(card_dir: Path) -> Path:
    """The J-LIS directory that personalised the card, as ``card.json`` records it."""
    meta = _open_card(card_dir).image.meta
    jlis = meta.get("jlis_dir")
    if not isinstance(jlis, str) or not jlis:
        raise CardDirectoryError(f"card directory damaged: {card_dir / 'card.json'}:"
                                 " no jlis_dir (give --jlis DIR)")
    return Path(jlis)


def cmd_ca_revoke(args: argparse.Namespace) -> int:
    from emulators.jpki_ca import JpkiAuthority

    if not args.event and not args.cert:
        raise UsageError("give --cert auth|sign (with --reason) or --event")
    ca = JpkiAuthority(_jlis(args.jlis or _card_jlis_dir(args.card_dir)))
    if args.event:
        revs = ca.card_event(args.card_dir, args.event)
    else:
        revs = [ca.revoke_card(args.card_dir, args.cert, args.reason)]
    obj = {"revoked": [{"cert": r.kind, "serial": format(r.serial, "x"), "reason": r.reason,
                        "time": r.time.isoformat()} for r in revs]}
    emit(args, obj, [f"Revoked the {r.kind} certificate {r.serial:x} ({r.reason}) at"
                     f" {r.time.isoformat()}" for r in revs])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from emulators.demo import run_demo

    return run_demo(args.dir, as_json=args.json)


def cmd_demo_kiosk(args: argparse.Namespace) -> int:
    from emulators.kiosk_demo import demo_ok, run_kiosk_demo, summary_lines

    summary = run_kiosk_demo(args.dir, interactive=args.interactive,
                             browser=not args.no_browser, lang=args.lang,
                             residents=args.residents)
    emit(args, summary, summary_lines(summary))
    return 0 if demo_ok(summary) else 1


_JLIS_HELP = "emulated J-LIS directory (default $CARDIO_JLIS_DIR or ~/.local/share/cardio/emu-jlis)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Entry point (``cardio.commands``): ``emu …`` and ``demo``."""
    emu = sub.add_parser("emu", help="software cards")
    esub = emu.add_subparsers(dest="emu_command", required=True)
    p = esub.add_parser("init", help="create a software My Number card")
    p.add_argument("dir", type=Path)
    p.add_argument("--profile", type=Path, help="holder profile (JSON or TOML)")
    p.add_argument("--photo", type=Path, help="face image to put on the chip")
    p.add_argument("--jlis", type=Path, default=None, help=_JLIS_HELP)
    add_common_options(p)
    p.set_defaults(func=cmd_init)

    p = esub.add_parser("serve", help="plug software cards into pcscd through vpcd")
    p.add_argument("dirs", type=Path, nargs="+", metavar="DIR")
    p.add_argument("--port", default=str(c.VPCD_PORT),
                   help="vpcd port of the first card (the next card takes the next port)")
    p.add_argument("--host", default="127.0.0.1")
    add_common_options(p)
    p.set_defaults(func=cmd_serve)

    from emulators.devices.cli import register as register_devices
    from emulators.issuance.cli import register as register_issuance

    register_issuance(esub)
    register_devices(esub)

    ca = esub.add_parser("ca", help="the emulated JPKI CAs (OCSP, CRL, revocation)")
    casub = ca.add_subparsers(dest="ca_command", required=True)
    p = casub.add_parser("serve", help="run the OCSP responder and CRL server on loopback")
    p.add_argument("--jlis", type=Path, default=None, help=_JLIS_HELP)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default=str(c.EMU_CA_PORT),
                   help="TCP port, 0-65535 (0: any free one)")
    add_common_options(p)
    p.set_defaults(func=cmd_ca_serve)
    p = casub.add_parser("roots", help="write the emulated trust anchors as PEM")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jlis", type=Path, default=None, help=_JLIS_HELP)
    add_common_options(p)
    p.set_defaults(func=cmd_ca_roots)
    p = casub.add_parser("pin-reset-key", help="path of the emulated PIN-reset master key"
                         " (created on first use) for 'facepin serve --master-key-file'")
    p.add_argument("--jlis", type=Path, default=None, help=_JLIS_HELP)
    add_common_options(p)
    p.set_defaults(func=cmd_ca_pin_reset_key)
    p = casub.add_parser("revoke", help="revoke a software card's certificate")
    p.add_argument("card_dir", type=Path)
    p.add_argument("--cert", choices=["auth", "sign"])
    p.add_argument("--reason", default="unspecified",
                   choices=["unspecified", "key_compromise", "affiliation_changed",
                            "superseded", "cessation_of_operation", "certificate_hold",
                            "privilege_withdrawn"])
    p.add_argument("--event", choices=["attributes_changed", "lost"],
                   help="attributes_changed revokes the sign cert; lost revokes both")
    p.add_argument("--jlis", type=Path, default=None, help=_JLIS_HELP)
    add_common_options(p)
    p.set_defaults(func=cmd_ca_revoke)

    demo = sub.add_parser("demo", help="the demos: a whole コンビニ交付 (kiosk), a card read"
                          " end to end (card)")
    dsub = demo.add_subparsers(dest="demo_command", required=True)
    p = dsub.add_parser("kiosk", help="one certificate issued at an emulated kiosk through its"
                        " touch UI in headless Chromium, the printed page verified")
    p.add_argument("--dir", type=Path, default=None,
                   help="keep everything here (default: a new temporary directory)")
    p.add_argument("--interactive", action="store_true",
                   help="leave the kiosk at its URL for a person (this terminal holds the"
                   " card and the money)")
    p.add_argument("--no-browser", action="store_true",
                   help="no Chromium: the kiosk's scripted customer plays the resident")
    p.add_argument("--lang", default="ja", choices=["ja", "en", "zh", "ko"],
                   help="the kiosk screen's first language")
    p.add_argument("--residents", type=int, default=200, help="seeded population size")
    add_common_options(p)
    p.set_defaults(func=cmd_demo_kiosk)
    p = dsub.add_parser("card", help="create a software card and run a full cycle against it")
    p.add_argument("--dir", type=Path, default=None, help="keep the card here")
    add_common_options(p)
    p.set_defaults(func=cmd_demo)


__all__ = ["CardDirectoryError", "ProfileError", "register"]
