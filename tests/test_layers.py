"""The layer rules of ../shared/DESIGN.md, enforced: import-linter's contracts (pyproject
``[tool.importlinter]``) and a grep-level proof that no module under ``cardio/`` imports a
package above it, not even inside a function."""

from __future__ import annotations

import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import cardio

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
UPPER = ("emulators", "facepin", "kiosk")
# An import statement (at any indentation, so inside functions too), or an import by name.
_P = "(?:" + "|".join(UPPER) + ")"
UPWARD = re.compile(
    rf"^\s*(?:from\s+{_P}\b|import\s+(?:[\w.]+\s*,\s*)*{_P}\b)"
    rf"|(?:import_module|__import__)\(\s*['\"]{_P}\b",
    re.MULTILINE)


def upward_imports(source: str) -> list[str]:
    return [m.group(0).strip() for m in UPWARD.finditer(source)]


def lint_imports(cwd: Path, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_contracts_kept() -> None:
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_apdu_contract_lists_every_other_cardio_module() -> None:
    """``cardio.apdu`` may import ``cardio.errors`` only; the forbidden list names every
    other module of cardio, and this fails when a new module is not added to it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["id"] == "apdu-pure")
    listed = {m for m in contract["forbidden_modules"] if m.startswith("cardio.")}
    modules = {f"cardio.{m.name}" for m in pkgutil.iter_modules(cardio.__path__)}
    assert listed == modules - {"cardio.apdu", "cardio.errors"}
    assert set(UPPER) <= set(contract["forbidden_modules"])


def test_no_module_under_cardio_imports_an_upper_package() -> None:
    found = {}
    for path in sorted((ROOT / "cardio").rglob("*.py")):
        hits = upward_imports(path.read_text(encoding="utf-8"))
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert found == {}


@pytest.mark.parametrize("source", [
    "def f():\n    from emulators.card import SoftwareCard\n",
    "if x:\n    import facepin.face\n",
    "import os, kiosk\n",
    "mod = importlib.import_module('emulators.cli')\n",
])
def test_the_grep_sees_imports_anywhere(source: str) -> None:
    assert upward_imports(source)


def test_the_grep_lets_mentions_be(tmp_path: Path) -> None:
    assert upward_imports('"""the emu: scheme lives in emulators.readers"""\n'
                          "from cardio import facepin_like\nimport kiosks_are_not_kiosk\n") == []


def test_lint_imports_catches_an_import_inside_a_function(tmp_path: Path) -> None:
    """The contracts are not vacuous: a copy of the tree with one lazy upward import in
    cardio breaks the build."""
    for pkg in ("cardio", "emulators", "facepin", "kiosk"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "cardio" / "readers.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _sneaky() -> None:\n    from emulators.card import SoftwareCard\n")
    res = lint_imports(tmp_path, {"PYTHONPATH": str(tmp_path)})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cardio.readers -> emulators.card" in res.stdout
