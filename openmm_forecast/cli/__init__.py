"""Command-line interface: ``openmm-forecast <command> ...``.

Each command lives in its own module of this package and provides ``add_parser(subparsers)``, which
registers an ``argparse`` sub-parser whose ``func`` default takes the parsed arguments and returns an
exit code.  Add a command by adding its module name to :data:`COMMANDS`.

Failures: a bad argument or bad input is one line on stderr (exit 2 for arguments, 1 for input; ``--verbose``
adds the traceback); Ctrl-C (SIGINT) and SIGTERM end a command without a traceback, with exit code 130 and
143.  Files already written are kept: each is written atomically, and ``run`` finishes or undoes its
current jump, writes a final checkpoint and prints how to resume.
"""

import argparse
import importlib
import logging
import signal
import sys

COMMANDS = ["simulate", "run", "compare", "fit_potential", "fit_surrogate", "lower_barriers", "generate", "train", "evaluate", "benchmark", "demo"]
"""Modules of this package that define commands, in the order ``--help`` lists them."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage of ``run`` alone is a dozen)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    """The top-level argument parser with every command registered."""
    from .. import __version__

    parser = _Parser(
        prog="openmm-forecast",
        description="Accelerated sampling of small molecules with learned forecast jumps around OpenMM.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
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
    from ..errors import ForecastError, UsageError

    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the resume line of an interrupted run
    # Both signals raise KeyboardInterrupt while the command runs, whatever handler the process had installed
    # (an embedding program, or a library, may have replaced Python's default SIGINT handler).
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _terminate),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        if hasattr(args, "prmtop"):  # a command that takes a target (cli/_common.py's add_setup_arguments)
            from ._common import check_target_arguments

            check_target_arguments(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt as interruption:  # SIGINT, or SIGTERM through _terminate
        signum = interruption.args[0] if interruption.args else signal.SIGINT
        print(f"openmm-forecast {args.command}: interrupted ({signal.Signals(signum).name}); the files it wrote "
              "completely are kept", file=sys.stderr)
        return 128 + signum
    except UsageError as error:  # flags that contradict each other: argparse's exit code and form
        print(f"openmm-forecast {args.command}: error: {error} (see openmm-forecast {args.command} --help)",
              file=sys.stderr)
        return 2
    except (ForecastError, OSError, ValueError, mm.OpenMMException) as error:
        # Input and file-system problems and OpenMM's own refusals: one line (--verbose: the traceback too).
        logging.getLogger(__name__).debug("traceback", exc_info=True)
        print(f"openmm-forecast {args.command}: error: {str(error).strip()}", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _terminate(signum, frame):
    """SIGTERM handler: stop as Ctrl-C does (``KeyboardInterrupt``, carrying the signal number)."""
    raise KeyboardInterrupt(signum)


if __name__ == "__main__":
    sys.exit(main())
