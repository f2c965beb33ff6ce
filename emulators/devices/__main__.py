"""``python -m emulators.devices serve [--json]`` — the same as ``cardio emu devices serve``."""

from __future__ import annotations

import argparse
import sys

from emulators.devices.cli import add_serve_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.devices")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(sub.add_parser("serve", help="run the emulated peripherals"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
