"""Layer rule for the devices: ``kiosk.devices`` never imports ``emulators`` (the emulators
import the kiosk's codecs, never the other way), checked on the source's AST."""

from __future__ import annotations

import ast
from pathlib import Path

import kiosk.devices

ROOT = Path(kiosk.devices.__file__).parent


def _imports(path: Path, top_level: bool = False) -> set[str]:
    names: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_kiosk_devices_never_import_emulators() -> None:
    offenders = {p.name: sorted(n for n in _imports(p) if n.split(".")[0] == "emulators")
                 for p in ROOT.glob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_protocol_cores_do_no_io() -> None:
    # The sans-IO cores import no serial, socket or HTTP module at module level; the thin
    # adapters import pyserial lazily inside themselves.
    for name in ("id003.py", "cctalk.py", "cash.py", "card_slot.py"):
        top = {n.split(".")[0] for n in _imports(ROOT / name, top_level=True)}
        assert not top & {"serial", "socket", "http", "urllib", "smartcard"}, name
