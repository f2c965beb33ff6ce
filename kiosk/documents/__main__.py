"""``python -m kiosk.documents doc …``: the ``doc`` commands without the cardio host."""

from __future__ import annotations

import sys

from kiosk.documents.cli import main

if __name__ == "__main__":
    sys.exit(main())
