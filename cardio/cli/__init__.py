"""The ``cardio`` command line: a plug-in host (:mod:`cardio.cli.host`; the shared pieces are
in :mod:`cardio.cli.framework`).

Plug-ins import what they share from here: :func:`emit`, :class:`SecretSource`,
:func:`add_common_options`, :func:`open_card`, :func:`trust_for`, :func:`parse_time`
and the errors. Exit codes are documented in :mod:`cardio.errors` and the README.
"""

from cardio.cli.framework import (
    SecretSource,
    add_common_options,
    emit,
    open_card,
    parse_time,
    port_number,
    run,
    trust_for,
)
from cardio.cli.host import COMMANDS_GROUP, build_parser, load_plugins, main
from cardio.errors import (
    EXIT_BLOCKED,
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_NOT_VALID,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    EXIT_WRONG_PIN,
    CardioError,
    UsageError,
)

__all__ = [
    "COMMANDS_GROUP",
    "EXIT_BLOCKED",
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_NOT_VALID",
    "EXIT_TRANSPORT",
    "EXIT_USAGE",
    "EXIT_WRONG_PIN",
    "CardioError",
    "SecretSource",
    "UsageError",
    "add_common_options",
    "build_parser",
    "emit",
    "load_plugins",
    "main",
    "open_card",
    "parse_time",
    "port_number",
    "run",
    "trust_for",
]
