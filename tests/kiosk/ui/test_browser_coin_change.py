"""A coin whose change the hoppers cannot pay (review of issue 24): coins were always taken,
so a ¥500 coin for a ¥200 fee with ¥200 of change in the hoppers printed, said おつり200円
and owed ¥100 silently. Now the payment screen leaves that coin off, the acceptor inhibits
it (it comes straight back, nothing credited), and smaller coins pay. Its own kiosk: the
hoppers' stock is configured at ¥100 of change at most."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kiosk.devices.cash import can_change
from tests.emulators.issuance.conftest import Service
from tests.kiosk.ui.conftest import Kiosk, start_kiosk
from tests.kiosk.ui.test_browser import Flow, bought, feeder, finish, flow, to_menu
from tests.kiosk.ui.test_browser_change import coins_for

pytestmark = pytest.mark.slow

#: What the kiosk believes its hoppers hold: ¥100 of change at most (one 50, five 10).
STOCK = {500: 0, 100: 0, 50: 1, 10: 5}


@pytest.fixture(scope="module")
def kiosk(backend: Service, lab: dict[str, Any],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    hoppers = "".join(f"[[hopper]]\naddress = {a}\ncoin = {c}\nstock = {STOCK[c]}\n"
                      for a, c in ((3, 500), (4, 100), (5, 50), (6, 10)))
    devices = lab["devices_toml"].split("[[hopper]]")[0] + hoppers + \
        lab["devices_toml"][lab["devices_toml"].index("[emulator]"):]
    k = start_kiosk(backend, lab, tmp_path_factory.mktemp("kiosk-coin"), devices=devices)
    yield k
    k.stop()


@pytest.fixture
def flows(chromium: Any, kiosk: Kiosk) -> Iterator[list[Flow]]:
    made: list[Flow] = []
    yield made
    for f in made:
        f.close()
    kiosk.take()


def test_a_coin_the_hoppers_cannot_change_is_not_taken(backend: Service, lab: dict[str, Any],
                                                       kiosk: Kiosk, chromium: Any,
                                                       flows: list[Flow]) -> None:
    card = backend.card()
    f = flow(flows, chromium, kiosk, "ja", "coin-change")
    to_menu(f, kiosk, card)
    bought(f, kiosk, lab, [])
    st = f.p.state
    fee = st["fee"]
    assert not can_change(500 - fee, STOCK), fee  # the case under test
    assert 500 not in st["accepted"]["coins"], st["accepted"]
    feeder(lab)(500)  # inserted anyway: inhibited, it comes back; nothing credited
    f.page.wait_for_timeout(3000)
    f.p.poll()
    assert f.p.screen == "payment" and f.p.state["credited"] == 0
    for c in coins_for(fee):
        feeder(lab)(c)
    end = finish(f, kiosk)
    assert (end["outcome"], end["paid"], end["change"], end["refund_due"]) == \
        ("printed", fee, 0, 0), end
