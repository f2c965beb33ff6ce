"""``python -m cardio.cli``: the same as the ``cardio`` script."""

import sys

from cardio.cli.host import main

sys.exit(main())
