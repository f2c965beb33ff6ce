"""``cardio kiosk issue`` that SIGKILLs itself at a journal step: the real runner with its
real adapters (software card, HTTP to the center, ID-003/ccTalk over ptys, IPP), killed
where a kiosk's durable state and the world's can part.

    CARDIO_TEST_CRASH="after:N" python -m tests.kiosk.runner_crash_driver kiosk issue …

``after:N`` kills right after the N-th journal commit (before any command of it is
performed); ``before:N`` kills when the N-th *reply* arrives, before it is journalled
(the device or server has acted; the kiosk never learnt it); ``reply:KIND`` kills when the
first reply of that event class arrives (``reply:PrintDone``: the printer completed the job,
the kiosk died before journalling it). Without a crash it prints
the number of each kind of point on stderr as ``crash-points {"after": A, "before": B}``.
The hook patches :meth:`Journal.record` from outside: production code carries no test
switch.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from kiosk.session import events as E
from kiosk.session.journal import Journal


def main() -> int:
    kind, _, at = os.environ.get("CARDIO_TEST_CRASH", "none:0").partition(":")
    crash_at = int(at) if at.isdigit() else 0
    counts = {"after": 0, "before": 0}
    record = Journal.record

    def crashing(self: Journal, session: object, event: E.Event, cmds: list[object]) -> None:
        if isinstance(event, E.Reply):
            if kind == "reply" and type(event).__name__ == at:
                os.kill(os.getpid(), signal.SIGKILL)
            counts["before"] += 1
            if kind == "before" and counts["before"] == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
        changes = self._db.total_changes
        record(self, session, event, cmds)  # type: ignore[arg-type]
        if self._db.total_changes != changes:
            counts["after"] += 1
            if kind == "after" and counts["after"] == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)

    Journal.record = crashing  # type: ignore[method-assign]
    from cardio.cli import main as cardio_main

    rc = cardio_main(sys.argv[1:])
    print("crash-points " + json.dumps(counts), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
