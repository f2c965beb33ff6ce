"""Kiosk controller (コンビニ交付). Not built yet."""
