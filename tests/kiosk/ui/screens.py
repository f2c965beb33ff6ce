"""One state per screen of the kiosk page, shaped as :meth:`kiosk.ui.hub.WebHub.state`
builds it, each with the most a screen can hold (every document on the menu, each with a
long refusal reason; every option offered; the card panel beside a notice) — the worst
case for fitting a fixed kiosk panel. The browser tests render them with the page's own
``window.kioskRender`` (no kiosk behind it), in every language and at every panel size.

The live flows in ``test_browser.py`` check that the server really sends states of this
shape; these only drive the layout."""

from __future__ import annotations

import copy
from typing import Any

from kiosk.ui.hub import WebHub

__all__ = ["SCREEN_STATES", "state"]

#: Every document type, each with a refusal whose reason is among the longest texts.
_MENU: list[dict[str, Any]] = [
    {"doc": "juminhyo", "fee": 200, "options": ["scope", "honseki", "relationship",
                                                "my_number"], "refusal": ""},
    {"doc": "kisai-jiko", "fee": 200, "options": [], "refusal": ""},
    {"doc": "inkan", "fee": 200, "options": [], "refusal": "no_inkan"},
    {"doc": "tax", "fee": 300, "options": ["year"], "refusal": "no_tax_record"},
    {"doc": "koseki", "fee": 350, "options": ["kind"],
     "refusal": "honseki_not_registered"},
    {"doc": "fuhyo", "fee": 350, "options": [], "refusal": "weekdays_only"},
]


def state(screen: str, **over: Any) -> dict[str, Any]:
    """The hub's state for ``screen`` inside a session, with ``over`` applied."""
    st = WebHub().state()
    st.update({"screen": screen, "in_session": True, "menu": copy.deepcopy(_MENU),
               "pin": {"count": 2, "max": 4, "tries_left": 3}, "txn": ""})
    st.update(over)
    return st


_QUOTE = {"item": "juminhyo", "offered": ["scope", "honseki", "relationship", "my_number"],
          "options": ["scope", "honseki", "relationship", "my_number"], "fee": 200}

#: screen name (as ``body[data-screen]`` shows it; a suffix after ``~`` names a variant)
#: → the state that shows it.
SCREEN_STATES: dict[str, dict[str, Any]] = {
    "start": {**WebHub().state(), "pin_reset": True},
    "start~no-reset": WebHub().state(),
    "notice": {**WebHub().state(), "screen": "notice"},
    "card-out": state("card-out", take_card=True, remind=2, municipality="千代田区"),
    "copies": state("copies", **_QUOTE, unit_fee=200, max_copies=5, copies=1),
    "options~koseki": state("options", item="koseki", offered=["kind"], options=[], fee=0,
                            municipality="千代田区"),
    "options~tax": state("options", item="tax", offered=["year"], options=["year"], fee=0),
    "quote~copies": state("quote", **{**_QUOTE, "fee": 1000}, copies=5, unit_fee=200,
                          municipality="さいたま市"),
    "payment~confirm": state("payment", **_QUOTE, credited=150,
                             accepted={"coins": [10, 50, 100, 500], "notes": [1000]}),
    "setcard": {**WebHub().state(), "screen": "setcard"},
    "card-left": {**WebHub().state(), "screen": "card-left"},
    "reading": state("reading"),
    "pin": state("pin", pin={"count": 2, "max": 4, "tries_left": 1}),
    "pin-wrong": state("pin-wrong", pin={"count": 0, "max": 4, "tries_left": 2}),
    "pin-incomplete": state("pin-incomplete"),
    "pin-again": state("pin-again", pin={"count": 1, "max": 4, "tries_left": 3}),
    "pin-locked": state("pin-locked", notice={"kind": "pin-locked", "reason": "pin_locked",
                                              "amount": 0}, take_card=True, remind=1),
    "working": state("working"),
    "menu": state("menu", reset_offered=True, municipality="さいたま市"),
    "item-refused": state("item-refused", chosen="koseki", detail="honseki_not_registered"),
    "options": state("options", **{**_QUOTE, "options": ["honseki"]}),
    "options~none": state("options", item="inkan", offered=[], options=[], fee=200),
    "quote": state("quote", **_QUOTE),
    "payment": state("payment", **_QUOTE, credited=150,
                     accepted={"coins": [10, 50, 100, 500], "notes": [1000, 2000, 5000]}),
    "new-password": state("new-password", reset_error="mismatch"),
    "printing": state("printing", **_QUOTE, credited=1000, change=800),
    "printing~remind": state("printing", **_QUOTE, credited=1000, remind=2),
    "take-card": state("take-card", **_QUOTE, take_card=True, remind=3),
    "take-pages": state("take-pages", **_QUOTE, credited=1000, change=800),
    "refused": state("refused", notice={"kind": "refused", "reason": "address_too_long",
                                        "amount": 0}, take_card=True, remind=2),
    "cancelled": state("cancelled", **_QUOTE, notice={"kind": "cancelled",
                                                      "reason": "user_cancel", "amount": 0},
                       take_card=True, remind=1, credited=150),
    "not-issued": state("not-issued", **_QUOTE, txn="K1-20260401-000123",
                        notice={"kind": "not-issued", "reason": "print_failed:jam",
                                "amount": 200}, take_card=True, remind=1),
    "call-staff": state("call-staff", detail="stacking"),
    "done": state("done", **_QUOTE, in_session=False, outcome="printed", change=800),
    "done~not-issued": state("done", in_session=False, outcome="failed_refund_due",
                             txn="K1-20260401-000123", notice={
                                 "kind": "not-issued", "reason": "print_failed:jam",
                                 "amount": 200}),
    "timeout-warning": state("menu", warning=20),
}
