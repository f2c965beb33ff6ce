"""``cardio kiosk run --config FILE``: the kiosk as a long-running process."""

from __future__ import annotations

from typing import Any


def register(ksub: Any) -> None:
    """Placeholder until the runner loop lands."""
