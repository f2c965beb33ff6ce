"""The software My Number card: applet specs (``spec``), the pure engine (``engine``), the
card with its directory, power and faults (``card``, ``store``), personalisation."""

from emulators.card.card import CardRemoved, Faults, SoftwareCard
from emulators.card.jlis import JlisHierarchy
from emulators.card.personalise import create_card, personalise
from emulators.card.profile import Profile
from emulators.card.spec import MY_NUMBER_CARD, AppletSpec, CardSpec
from emulators.card.store import CardDirectoryDamaged, CardStore, CardStoreError

__all__ = ["MY_NUMBER_CARD", "AppletSpec", "CardDirectoryDamaged", "CardRemoved", "CardSpec",
           "CardStore", "CardStoreError", "Faults", "JlisHierarchy", "Profile", "SoftwareCard",
           "create_card", "personalise"]
