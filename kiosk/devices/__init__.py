"""Kiosk peripherals: one module per device protocol, each a sans-IO core plus a thin adapter.

* :mod:`kiosk.devices.id003` — JCM ID-003 bill validator (紙幣識別機);
* :mod:`kiosk.devices.cctalk` — ccTalk coin acceptor and payout hoppers (硬貨・釣銭);
* :mod:`kiosk.devices.cash` — the money ledger of one payment and change-making;
* :mod:`kiosk.devices.ipp` — IPP Everywhere document printer;
* :mod:`kiosk.devices.card_slot` — the PC/SC card slot (insertion/removal);
* :mod:`kiosk.devices.model` — the XFS4IoT-shaped device model the kiosk controller drives.

Nothing here imports :mod:`emulators`; the emulators import these codecs to speak the same
bytes.
"""
