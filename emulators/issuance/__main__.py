"""``python -m emulators.issuance [issuance] serve|seed|card|incidents|clear …``."""

import sys

from emulators.issuance.cli import main

sys.exit(main())
