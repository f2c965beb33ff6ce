"""The message catalogues are data: every key in every language, every key the page asks
for, a text for every screen, reason, document type and option the back end can send."""

from __future__ import annotations

import json
import re

import pytest

from emulators.issuance.rules import REASONS
from kiosk.session import commands as C
from kiosk.ui.app import STATIC
from kiosk.ui.hub import MESSAGES, UiConfigError, catalogue_languages, load_catalogue

SCRIPT = (STATIC / "app.js").read_text(encoding="utf-8")


def test_every_key_in_every_catalogue() -> None:
    langs = catalogue_languages()
    assert {"ja", "en"} <= set(langs)
    keys = {lang: set(load_catalogue(lang)) for lang in langs}
    for lang, ks in keys.items():
        assert ks == keys["ja"], (lang, sorted(ks ^ keys["ja"]))
        assert all(load_catalogue(lang)[k].strip() for k in ks), lang


def test_placeholders_agree() -> None:
    """A translation keeps the placeholders ({n}, {txn}) of the Japanese text."""
    ja = load_catalogue("ja")
    for lang in catalogue_languages():
        cat = load_catalogue(lang)
        for k, v in ja.items():
            assert set(re.findall(r"\{\w+\}", cat[k])) == set(re.findall(r"\{\w+\}", v)), \
                (lang, k)


def test_the_page_asks_only_for_keys_that_exist() -> None:
    ja = load_catalogue("ja")
    literal = set(re.findall(r"""\bt\("([a-z_.\-]+)"[,)]""", SCRIPT))
    assert literal and literal <= set(ja), sorted(literal - set(ja))
    # screen titles the page builds as "screen." + name + ".title"
    for screen in ("start", "setcard", "reading", "pin", "pin-wrong", "pin-incomplete",
                   "pin-locked", "working", "menu", "item-refused", "options", "quote",
                   "payment", "printing", "take-card", "take-pages", "done", "cancelled",
                   "refused", "not-issued", "call-staff"):
        assert f"screen.{screen}.title" in ja, screen


def test_every_core_screen_has_words() -> None:
    ja = load_catalogue("ja")
    for screen in C.Screen:
        if screen in (C.Screen.IDLE, C.Screen.TIMEOUT_WARNING):
            continue  # idle is the hub's start screen; the warning is a dialog
        assert f"screen.{screen.value}.title" in ja, screen


def test_every_reason_and_document_has_words() -> None:
    """The back end's refusal codes (emulated J-LIS side), the core's own reasons and the
    document types of DESIGN.md each have a plain text."""
    ja = load_catalogue("ja")
    core = {"user_cancel", "timeout", "card_removed", "pin_locked", "card_error",
            "card_unresponsive", "center_unavailable", "nothing_available", "binding_mismatch",
            "bad_signature", "binding_check_error", "device_fault", "print_failed",
            "payment_short", "escrow_stuck", "bad_seal"}
    for code in set(REASONS) | core:
        assert f"reason.{code}" in ja, code
    for doc in ("juminhyo", "kisai-jiko", "inkan", "tax", "koseki", "fuhyo"):
        assert f"doc.{doc}" in ja, doc
    for opt in ("scope", "honseki", "relationship", "my_number", "kind", "year"):
        assert f"opt.{opt}" in ja, opt


def test_a_language_is_one_file(tmp_path: pytest.TempPathFactory) -> None:
    """Nothing lists languages but the directory; a broken file is a typed error."""
    assert sorted(p.stem for p in MESSAGES.glob("*.json")) == catalogue_languages()
    with pytest.raises(UiConfigError, match="no message catalogue"):
        load_catalogue("xx")
    for lang in catalogue_languages():
        data = json.loads((MESSAGES / f"{lang}.json").read_text(encoding="utf-8"))
        assert data["_name"] and data["_speech"]


def test_the_set_card_screen_asks_for_the_card_only_until_the_pin_is_checked() -> None:
    """Review of issue 24: the card is asked out right after the PIN (card-out), so the
    set-card screen must not tell people to leave it until the procedure ends."""
    from kiosk.ui.hub import load_catalogue

    said = {lang: load_catalogue(lang)["screen.setcard.text"]
            for lang in ("ja", "en", "zh", "ko")}
    assert "暗証番号の確認が終わるまで" in said["ja"] and "手続きが終わるまで" not in said["ja"]
    assert "PIN" in said["en"] and "until you are finished" not in said["en"]
    assert "密码" in said["zh"] and "手续结束" not in said["zh"]
    assert "비밀번호" in said["ko"] and "절차가 끝날" not in said["ko"]
