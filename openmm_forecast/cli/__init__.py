"""Command-line interface: ``openmm-forecast <command> ...``.

Each command lives in its own module of this package and provides ``add_parser(subparsers)``, which
registers an ``argparse`` sub-parser whose ``func`` default takes the parsed arguments and returns an
exit code.  Add a command by adding its module name to :data:`COMMANDS`.
"""

import argparse
import importlib
import logging
import sys

COMMANDS = ["simulate", "run", "compare", "fit_potential", "generate", "train", "evaluate", "benchmark", "demo"]
"""Modules of this package that define commands, in the order ``--help`` lists them."""


def build_parser():
    """The top-level argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="openmm-forecast",
        description="Accelerated sampling of small molecules with learned forecast jumps around OpenMM.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv=None):
    """Entry point of the ``openmm-forecast`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 2
    from .._runtime import openmm as mm
    from ..errors import ForecastError

    try:
        return int(args.func(args) or 0)
    except (ForecastError, OSError, ValueError, mm.OpenMMException) as error:
        # Input and file-system problems and OpenMM's own refusals: one line (--verbose: the traceback too).
        logging.getLogger(__name__).debug("traceback", exc_info=True)
        print(f"openmm-forecast {args.command}: error: {str(error).strip()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
