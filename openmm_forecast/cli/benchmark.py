"""``openmm-forecast benchmark``: plain OpenMM MD against forecast-accelerated walkers, same wall clock.

Runs ``--walkers`` replicas with plain MD (fastest platform for the system) and the same replicas with
forecast jumps batched over walkers, each for ``--wall-seconds``, alternating in slices of
``--slice-seconds`` in this process; writes OUT/report.json
(machine, speeds, JS divergences to the reference, basins, transitions, acceptance, speed-ups: see
:mod:`openmm_forecast.benchmark`), OUT/ramachandran.png and OUT/convergence.png.
"""

import logging

from ._common import (
    add_acceptance_arguments,
    add_baseline_arguments,
    add_setup_arguments,
    apply_threads,
    baseline_options,
    setup_from_args,
)


def add_benchmark_arguments(parser, walkers=8, wall_seconds=60.0, out=None):
    """Arguments shared by ``benchmark`` and ``demo``: budget, walkers, reference, forecaster settings."""
    parser.add_argument("--walkers", type=int, default=walkers, help="replicas in each arm (default %(default)s)")
    parser.add_argument("--wall-seconds", type=float, default=wall_seconds,
                        help="wall-clock budget of each arm in seconds (default %(default)s)")
    parser.add_argument("--out", required=out is None, default=out, help="output directory" + (
        " (default %(default)s)" if out else ""))
    parser.add_argument("--reference", default=None,
                        help="reference phi/psi: a directory of .npy runs (n_frames, 2) in degrees, 1 frame per ps, "
                        "or one file (default: $OPENMM_FORECAST_REFERENCE, else the 2 x 100 ns amber14-vacuum runs "
                        "shipped in the package)")
    parser.add_argument("--reference-interval", type=float, default=1.0,
                        help="ps between the reference's frames (default 1, the shared reference runs)")
    parser.add_argument("--sample-interval", type=float, default=1.0, help="ps between phi/psi samples (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="first walker seed (default 1)")
    parser.add_argument("--slice-seconds", type=float, default=10.0,
                        help="the arms alternate in slices of this many wall-clock seconds (default 10; 0: plain MD "
                        "for its whole budget, then the hybrid)")
    add_acceptance_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "benchmark",
        help="plain MD vs accelerated walkers for the same wall-clock budget: speed, JS, report and plots",
        description=__doc__.split("\n\n")[1],
    )
    add_setup_arguments(parser)
    parser.add_argument("--model", required=True,
                        help="forecaster: a shipped model, a model file, 'surrogate' (velocity Verlet on --surrogate) "
                        "or a baseline ('verlet', 'ballistic', 'constant')")
    add_baseline_arguments(parser)
    add_benchmark_arguments(parser)
    parser.set_defaults(func=run)


def execute(args, molecular_system, model, forecaster_options=None):
    """Run the benchmark the arguments describe and print its summary; returns the report."""
    from openmm import unit

    from ..benchmark import format_summary, run_benchmark

    if not getattr(args, "verbose", False):  # per-walker re-equilibration notices: counted in the report instead
        logging.getLogger("openmm_forecast.accelerator").setLevel(logging.WARNING)
    apply_threads(args)
    report = run_benchmark(
        molecular_system, model, args.out, n_walkers=args.walkers, wall_seconds=args.wall_seconds,
        reference=args.reference, sample_interval=args.sample_interval * unit.picosecond,
        reference_interval=args.reference_interval * unit.picosecond, seed=args.seed,
        platform=args.platform, forecaster_options=forecaster_options, progress=False if args.no_progress else None,
        slice_seconds=args.slice_seconds if args.slice_seconds > 0 else None,
        energy_tolerance_kT=args.energy_tolerance, acceptance=args.acceptance,
    )
    print(format_summary(report))
    print(f"report: {args.out}/report.json, plots: {args.out}/ramachandran.png, {args.out}/convergence.png")
    return report


def run(args):
    molecular_system = setup_from_args(args)
    execute(args, molecular_system, args.model, baseline_options(args))
    return 0
