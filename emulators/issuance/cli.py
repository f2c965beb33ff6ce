"""``cardio emu issuance …``: serve the emulated J-LIS side, seed registers, issue a card to
a registered resident, list and clear incidents.

:func:`register` adds the ``issuance`` group to the ``emu`` sub-commands
(:mod:`emulators.cli` calls it); errors and exit codes are the host's
(:func:`cardio.cli.run`). The ``serve`` ready line is one compact JSON line with
``--json``, so a supervisor can read it before the process ends.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cardio.cli import port_number
from cardio.errors import UsageError

__all__ = ["register"]


def _jlis_dir(args: argparse.Namespace) -> Path:
    from emulators.card.jlis import default_jlis_dir

    return Path(args.jlis) if args.jlis else default_jlis_dir()


def _db_url(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    return f"sqlite:///{_jlis_dir(args) / 'issuance.db'}"


def _emit(args: argparse.Namespace, obj: Any, lines: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(obj, ensure_ascii=False), flush=True)
    else:
        for line in lines:
            print(line, flush=True)


MAX_RESIDENTS = 10_000_000
"""A synthetic population no larger than Tokyo's: 1000 residents take about 0.1 s, so the
bound is minutes of work, not a process that never ends."""
MAX_KIOSKS = 10_000


def _count(option: str, value: int, most: int) -> None:
    """A count from the command line: negative ones were taken as zero or worse
    (``--residents -5`` printed "-2 residents"), huge ones ran until killed."""
    if not 0 <= value <= most:
        raise UsageError(f"{option} is 0..{most:,}, not {value}")


def cmd_serve(args: argparse.Namespace) -> int:
    from emulators.issuance.server import parse_now, serve

    def ready(info: dict[str, Any]) -> None:
        _emit(args, info, [f"証明書交付センター: {info['center']}",
                           f"JPKI CA (OCSP, CRL): {info['ca']}",
                           f"database: {info['database']}, workers: {info['workers']}",
                           f"kiosk credentials: {info['kiosks_dir']}",
                           f"clock: {info['now']}", "SIGTERM or Ctrl-C stops it"])

    if args.workers < 1 or args.workers > 64:
        raise UsageError("--workers is 1..64")
    _count("--kiosks", args.kiosks, MAX_KIOSKS)
    _count("--seed-residents", args.seed_residents, MAX_RESIDENTS)
    return serve(_db_url(args), workers=args.workers, host=args.host,
                 port=port_number(args.port),
                 now=parse_now(args.now) if args.now else None, jlis_dir=_jlis_dir(args),
                 kiosks=args.kiosks, seed_residents=args.seed_residents, on_ready=ready,
                 log_level=args.log_level)


def cmd_seed(args: argparse.Namespace) -> int:
    import time

    from emulators.issuance.db import Database
    from emulators.issuance.population import seed

    _count("--residents", args.residents, MAX_RESIDENTS)
    started = time.perf_counter()
    counts = seed(Database(_db_url(args)), args.residents, args.municipalities,
                  rng_seed=args.seed)
    took = time.perf_counter() - started
    _emit(args, {"residents": counts, "seconds": round(took, 2)},
          [f"{code}: {n} residents" for code, n in counts.items()] +
          [f"{sum(counts.values())} residents in {took:.1f} s"])
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from emulators.issuance.db import Database
    from emulators.issuance.operator import issue_card

    obj = issue_card(Database(_db_url(args)), _jlis_dir(args), args.dir, args.resident)
    _emit(args, obj, [f"Created a software My Number card in {obj['dir']} for resident"
                      f" {obj['resident_id']} ({obj['municipality']})",
                      f"Use it with: cardio --reader emu:{obj['dir']} info",
                      "Credentials (shown once):"] +
          [f"  {k:<14} {obj[k]}" for k in ("auth_pin", "sign_password", "text_pin")])
    return 0


def cmd_incidents(args: argparse.Namespace) -> int:
    if args.action == "clear":
        if not args.municipality:
            raise UsageError("incidents clear needs a MUNICIPALITY code")
        return _clear(args, args.municipality)
    if args.action is not None:
        raise UsageError("the only action is 'clear MUNICIPALITY'")
    from emulators.issuance.db import Database
    from emulators.issuance.operator import incidents

    items = incidents(Database(_db_url(args)))
    _emit(args, {"incidents": items},
          [f"#{i['id']} {i['at']} municipality {i['municipality']} kiosk {i['kiosk_id']}"
           f" request {i['request_id']}: {i['kind']} ({i['detail']})"
           f"{' cleared' if i['cleared'] else ' OPEN'}" for i in items] or ["no incidents"])
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    return _clear(args, args.municipality)


def _clear(args: argparse.Namespace, municipality: str) -> int:
    from emulators.issuance.db import Database
    from emulators.issuance.operator import clear_incidents

    n = clear_incidents(Database(_db_url(args)), municipality)
    _emit(args, {"municipality": municipality, "cleared": n, "stopped": False},
          [f"Cleared {n} incident(s); issuance for {municipality} resumed."])
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke 住民票 credentials in their municipality's status list (docs/credentials.md)."""
    from emulators.issuance.db import Database
    from emulators.issuance.wallet import revoke_credentials

    if args.resident is None and (args.municipality is None or args.index is None):
        raise UsageError("name --resident ID, or --municipality CODE and --index N")
    n = revoke_credentials(Database(_db_url(args)), resident_id=args.resident,
                           municipality=args.municipality, idx=args.index)
    _emit(args, {"revoked": n}, [f"Revoked {n} credential(s); the next status list token"
                                 " says so."])
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, help="sqlite:///PATH (default: issuance.db in the"
                   " emulated J-LIS directory) or postgresql://...")
    p.add_argument("--jlis", default=None, help="emulated J-LIS directory (default"
                   " $CARDIO_JLIS_DIR)")
    p.add_argument("--json", action="store_true", help="one JSON object")


def register(emu_sub: Any) -> None:
    """Add ``issuance`` and its sub-commands to the ``emu`` subparsers action."""
    group = emu_sub.add_parser("issuance", help="the emulated 証明書交付センター and"
                               " municipal 証明発行サーバ")
    sub = group.add_subparsers(dest="issuance_command", required=True)

    p = sub.add_parser("serve", help="run center, municipalities and the JPKI CA on loopback")
    _common(p)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--port", default="0", help="center port, 0-65535 (default 0: a free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--now", default=None, help="start the services' clock at this ISO time")
    p.add_argument("--kiosks", type=int, default=1, help="kiosks to enrol (credentials under"
                   " the J-LIS directory's kiosks/)")
    p.add_argument("--seed-residents", type=int, default=1000,
                   help="residents to create when the database is empty")
    p.add_argument("--log-level", default="warning", choices=["warning", "info", "error"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("seed", help="create municipalities and a synthetic population")
    _common(p)
    p.add_argument("--residents", type=int, default=1000)
    p.add_argument("--municipalities", type=int, default=4)
    p.add_argument("--seed", type=int, default=1, help="random seed (deterministic)")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("card", help="a software card for a registered resident")
    p.add_argument("dir", type=Path)
    p.add_argument("--resident", default=None, help="resident id (default: a random"
                   " eligible one)")
    _common(p)
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("incidents", help="list incidents (or: incidents clear MUNICIPALITY)")
    p.add_argument("action", nargs="?", default=None)
    p.add_argument("municipality", nargs="?", default=None)
    _common(p)
    p.set_defaults(func=cmd_incidents)

    p = sub.add_parser("clear", help="clear a municipality's incidents and resume issuance")
    p.add_argument("municipality")
    _common(p)
    p.set_defaults(func=cmd_clear)

    p = sub.add_parser("revoke-credentials", help="revoke 住民票 credentials (a resident's,"
                       " or one by municipality and status index)")
    p.add_argument("--resident", help="every credential of this resident id")
    p.add_argument("--municipality", help="with --index: one credential")
    p.add_argument("--index", type=int, help="its status list index")
    _common(p)
    p.set_defaults(func=cmd_revoke)
