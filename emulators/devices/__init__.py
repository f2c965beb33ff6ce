"""Emulated kiosk peripherals: a JCM ID-003 bill validator and a ccTalk coin acceptor with
payout hoppers behind real pseudo-terminals, and an IPP Everywhere printer (Debian's
``ippeveprinter``) in a private namespace — each with faults on demand.

Start them all with ``cardio emu devices serve``,
or in-process with :class:`emulators.devices.lab.DeviceLab`.
"""
