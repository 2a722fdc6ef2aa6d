"""``openmm-forecast demo``: the shipped forecaster against plain OpenMM on alanine dipeptide, a few minutes.

The benchmark of ``openmm-forecast benchmark`` on the embedded default: alanine dipeptide, amber14 in
vacuum (HBonds, 2 fs, 300 K), the shipped forecaster 'ala2-amber14-vacuum', on the CPU; prints a short
summary and writes OUT/report.json, OUT/ramachandran.png and OUT/convergence.png (default runs/demo).
"""

from ._common import add_threads_argument
from .benchmark import add_benchmark_arguments, execute

DEMO_MODEL = "ala2-amber14-vacuum"
"""The shipped forecaster the demo runs."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="a few minutes: the shipped forecaster vs plain OpenMM on alanine dipeptide (report and plots)",
        description=__doc__.split("\n\n")[1],
    )
    add_benchmark_arguments(parser, walkers=8, wall_seconds=90.0, out="runs/demo")
    add_threads_argument(parser)
    parser.set_defaults(func=run, platform=None)


def run(args):
    from ..errors import ModelFileError
    from ..forecasters.registry import models_directory, shipped_models
    from ..systems import build_system

    if DEMO_MODEL not in shipped_models():
        raise ModelFileError(
            f"the demo needs the shipped forecaster {DEMO_MODEL!r} ({models_directory()}/{DEMO_MODEL}.pt), which "
            "is not installed; train it (scripts/make_default_forecaster.sh) or run 'openmm-forecast benchmark "
            "--model verlet ...' for the pipeline with a baseline"
        )
    print(f"demo: {args.walkers} walkers of amber14-vacuum alanine dipeptide, {args.wall_seconds:g} s of wall clock "
          f"each for plain OpenMM MD and for forecaster {DEMO_MODEL!r}, interleaved")
    execute(args, build_system("amber14-vacuum"), DEMO_MODEL)
    return 0
