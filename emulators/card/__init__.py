"""The software My Number card."""

from emulators.card.card import CardRemoved, Faults, SoftwareCard
from emulators.card.jlis import JlisHierarchy
from emulators.card.personalise import create_card, personalise
from emulators.card.profile import Profile

__all__ = ["CardRemoved", "Faults", "JlisHierarchy", "Profile", "SoftwareCard", "create_card",
           "personalise"]
