"""One error hierarchy (issue 9 §4): every exception class the project defines is a
``CardioError`` with an exit code among the documented ones, and no bare builtin
exception is raised on purpose outside the places listed here with their reason."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import cardio
import emulators
import facepin
import kiosk
from cardio.errors import CardioError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (cardio, emulators, facepin, kiosk)
DOCUMENTED = {1, 2, 3, 4, 5, 6, 20, 21, 22, 23, 24, 25, 26, 27, 28, 70}

# Errors outside the hierarchy that another branch is changing right now (issue 9 §5 owns
# emulators/card/). When one is fixed this test fails until its entry is removed.
PENDING_CLASSES: set[str] = set()
PENDING_RAISES = {
    # kiosk: raised inside Document.from_dict and converted to DocumentFormatError there.
    "kiosk/documents/model.py": {"TypeError"},
}
BUILTIN = {"Exception", "ValueError", "TypeError", "KeyError", "RuntimeError", "LookupError",
           "OSError", "IndexError", "AttributeError", "AssertionError"}


def project_modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return names


def test_every_exception_class_is_a_cardio_error_with_an_exit_code() -> None:
    outside, codes = set(), {}
    for name in project_modules():
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            if cls_name.startswith("_"):
                continue  # private control flow, caught where it is raised
            if not issubclass(cls, CardioError):
                outside.add(f"{name}.{cls_name}")
                continue
            assert "exit_code" not in vars(cls) or isinstance(vars(cls)["exit_code"], int)
            codes[f"{name}.{cls_name}"] = cls.exit_code
    assert outside == PENDING_CLASSES
    assert set(codes.values()) <= DOCUMENTED, codes
    # The codes the CLI documented before the hierarchy (tests/cardio/test_cli.py relies
    # on them) come from the class attributes now.
    assert codes["cardio.apdu.errors.VerificationFailed"] == 3
    assert codes["cardio.apdu.errors.PinBlocked"] == 4
    assert codes["cardio.transport.CardRemovedError"] == 5
    assert codes["cardio.cms.CmsError"] == 6
    assert codes["cardio.errors.UsageError"] == 2


def test_no_bare_builtin_exception_raised_on_purpose() -> None:
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in Path(pkg.__path__[0]).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                        isinstance(node.exc.func, ast.Name) and node.exc.func.id in BUILTIN:
                    found.setdefault(str(path.relative_to(ROOT)), set()).add(node.exc.func.id)
    assert found == PENDING_RAISES


def test_readme_documents_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|$", readme, re.MULTILINE))
    assert {int(k) for k in table} >= DOCUMENTED | {70, 130}
