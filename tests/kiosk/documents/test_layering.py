"""The layer rule for this package: ``kiosk.documents`` never imports ``emulators``, except
its CLI wiring (``cli.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import kiosk.documents

PKG = Path(kiosk.documents.__file__).parent


def test_library_modules_do_not_import_emulators() -> None:
    offenders = []
    for path in sorted(PKG.glob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "emulators"]
    assert offenders == []
