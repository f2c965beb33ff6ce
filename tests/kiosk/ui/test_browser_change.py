"""The payment screen when the hoppers are low (issue 24): it names the coins and notes it
takes, leaves out the notes whose change the hoppers' stock cannot pay, and a ¥1,000 note
inserted anyway comes straight back (nothing credited); coins then pay and the certificate
prints. Its own kiosk: the hoppers' stock is configured low."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.emulators.issuance.conftest import Service
from tests.kiosk.ui.conftest import Kiosk, start_kiosk
from tests.kiosk.ui.test_browser import Flow, bought, feeder, finish, flow, to_menu

pytestmark = pytest.mark.slow

#: What the kiosk believes its hoppers hold: ¥500 of change at most.
STOCK = {500: 0, 100: 3, 50: 2, 10: 10}


@pytest.fixture(scope="module")
def kiosk(backend: Service, lab: dict[str, Any],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    hoppers = "".join(f"[[hopper]]\naddress = {a}\ncoin = {c}\nstock = {STOCK[c]}\n"
                      for a, c in ((3, 500), (4, 100), (5, 50), (6, 10)))
    devices = lab["devices_toml"].split("[[hopper]]")[0] + hoppers + \
        lab["devices_toml"][lab["devices_toml"].index("[emulator]"):]
    k = start_kiosk(backend, lab, tmp_path_factory.mktemp("kiosk-low"), devices=devices)
    yield k
    k.stop()


@pytest.fixture
def flows(chromium: Any, kiosk: Kiosk) -> Iterator[list[Flow]]:
    made: list[Flow] = []
    yield made
    for f in made:
        f.close()
    kiosk.take()


def coins_for(fee: int) -> list[int]:
    out = []
    for c in (100, 50, 10):
        while fee >= c:
            out.append(c)
            fee -= c
    return out


def test_a_note_the_hoppers_cannot_change_is_refused(backend: Service, lab: dict[str, Any],
                                                     kiosk: Kiosk, chromium: Any,
                                                     flows: list[Flow]) -> None:
    card = backend.card()
    f = flow(flows, chromium, kiosk, "ja", "low-change")
    to_menu(f, kiosk, card)
    bought(f, kiosk, lab, [])
    st = f.p.state
    assert st["accepted"]["coins"] == [10, 50, 100, 500]
    assert st["accepted"]["notes"] == [], st["accepted"]  # no note's change is payable
    text = f.page.text_content("#accepted") or ""
    assert "100円" in text and "使えません" in text
    feeder(lab)(1000)  # inserted anyway: handed back by the validator, nothing credited
    f.page.wait_for_timeout(3000)
    assert f.p.screen == "payment" and f.p.state["credited"] == 0
    for c in coins_for(st["fee"]):
        feeder(lab)(c)
    end = finish(f, kiosk)
    assert (end["outcome"], end["paid"], end["change"]) == ("printed", st["fee"], 0), end
