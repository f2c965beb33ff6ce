"""The demo's browser driver without a browser: a typed error that says how to fix it
(the real drive is in test_browser.py)."""

from __future__ import annotations

import pytest

from kiosk.ui.autopilot import BrowserMissing, drive_issuance


def test_missing_chromium_is_a_typed_error_with_the_fix() -> None:
    called: list[str] = []
    with pytest.raises(BrowserMissing, match=r"run bash scripts/setup\.sh") as err:
        drive_issuance("http://127.0.0.1:9/", pin="0000", document="juminhyo",
                       insert=lambda y: called.append("insert"),
                       put_card=lambda: called.append("put"),
                       take_card=lambda: called.append("take"), yen=[1000],
                       executable="/nonexistent/chromium")
    assert err.value.exit_code == 27 and called == []
    assert "0000" not in str(err.value)
