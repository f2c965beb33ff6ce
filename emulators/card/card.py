"""The software My Number card: the pure engine plus its card directory, power and faults.

``SoftwareCard.transmit(bytes) -> bytes`` is the whole interface; transports (in-process,
pyscard, vpcd) only move bytes. This class is the I/O shell around
:class:`emulators.card.engine.CardEngine`: it holds the session between commands, reads
the persistent state the command needs from the card directory (fresh, since another
process may share the card), makes the engine's changes durable under the card lock
before the answer leaves, and injects the faults reliability tests ask for.

A store failure while a command runs (``state.json`` damaged, unreadable or unwritable)
is answered ``6581`` (memory failure, as a real card's EEPROM failure answers) with one
log line; the card keeps its session and answers later commands, and works again once
the directory is repaired.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cardio import constants as c
from cardio.apdu.command import CommandApdu
from cardio.apdu.errors import MalformedApdu
from cardio.apdu.status import SW
from cardio.transport import CardRemovedError
from emulators.card.engine import CardEngine, Outcome, Session, StateUse
from emulators.card.spec import MY_NUMBER_CARD, CardSpec
from emulators.card.store import (
    CardImage,
    CardStore,
    CardStoreError,
    KeyName,
    SecretState,
    key_name,
    key_names,
)

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Faults on demand, for reliability tests of the layers above.

    ``remove_after``: the card is pulled after this many more APDUs (the next one gets
    no answer); ``on_apdu``: a hook called with each command before it is processed.
    """

    remove_after: int | None = None
    on_apdu: Callable[[CommandApdu], None] | None = None


class CardRemoved(CardRemovedError):
    """The software card was pulled out (raised to the transport, never to the card)."""


class SoftwareCard:
    """A personalised My Number card in software (any card ``spec`` describes)."""

    def __init__(self, image: CardImage, store: CardStore | None = None,
                 spec: CardSpec = MY_NUMBER_CARD) -> None:
        self.image = image
        self.store = store
        self.engine = CardEngine(spec, image)
        self.atr = bytes.fromhex(image.meta.get("atr", c.ATR_CONTACT.hex()))
        self.faults = Faults()
        self.present = True
        self.session = Session()

    @classmethod
    def open(cls, path: Path | str, spec: CardSpec = MY_NUMBER_CARD) -> SoftwareCard:
        """Open a card directory; :class:`~emulators.card.store.CardStoreError` (a
        :class:`~cardio.errors.CardioError`) when it is missing or damaged."""
        store = CardStore(Path(path))
        return cls(store.load(), store, spec)

    # -- power ----------------------------------------------------------------------
    def reset(self) -> bytes:
        """Warm or cold reset: security state cleared, nothing selected. Returns the ATR."""
        self.session = Session()
        return self.atr

    power_on = reset

    def power_off(self) -> None:
        self.session = Session()

    def remove(self) -> None:
        self.present = False
        self.session = Session()

    def insert(self) -> None:
        self.present = True
        self.session = Session()

    # -- APDU entry point ------------------------------------------------------------
    def transmit(self, raw: bytes) -> bytes:
        """Process one command APDU and return the response APDU bytes."""
        if not self.present:
            raise CardRemoved("no card in the reader; insert it and retry")
        if self.faults.remove_after is not None:
            if self.faults.remove_after <= 0:
                self.faults.remove_after = None
                self.remove()
                raise CardRemoved("the card was removed during the command;"
                                  " insert it again and retry")
            self.faults.remove_after -= 1
        try:
            cmd = CommandApdu.parse(raw)
        except MalformedApdu:
            return SW.WRONG_LENGTH.trailer
        if self.faults.on_apdu is not None:
            self.faults.on_apdu(cmd)
        try:
            outcome = self._run(cmd)
        except CardStoreError as exc:
            # The message names the file and the fault, never a value.
            log.error("software card: %s; answering 6581 (memory failure)", exc)
            return SW.MEMORY_FAILURE.trailer
        self.session = outcome.session
        return outcome.response

    def _run(self, cmd: CommandApdu) -> Outcome:
        use = self.engine.state_use(cmd)
        secrets = self.image.secrets
        if self.store is None or use is StateUse.NONE:
            outcome = self.engine.process(cmd, self.session, secrets)
            secrets.update(outcome.changes)  # a card without a directory keeps them here
            return outcome
        if use is StateUse.READ:
            # Another process may have spent a try since: read the counters afresh.
            self._replace_secrets(self.store.read_secrets())
            return self.engine.process(cmd, self.session, secrets)
        with self.store.transaction() as state:
            self._cache(state)
            outcome = self.engine.process(cmd, self.session, secrets)
            # Durable before the answer leaves: the transaction writes on exit.
            for name, st in outcome.changes.items():
                state[key_name(*name)] = st
        secrets.update(outcome.changes)  # only once they are on disk
        return outcome

    def _cache(self, state: dict[str, SecretState]) -> None:
        self._replace_secrets(key_names(state))

    def _replace_secrets(self, fresh: dict[KeyName, SecretState]) -> None:
        if fresh != self.image.secrets:
            self.image.secrets.clear()
            self.image.secrets.update(fresh)
