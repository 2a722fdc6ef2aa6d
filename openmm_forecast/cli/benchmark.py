"""``openmm-forecast benchmark``: plain OpenMM MD against forecast-accelerated walkers, same wall clock.

Runs ``--walkers`` replicas with plain MD (fastest platform for the system) and the same replicas with
forecast jumps batched over walkers, each for ``--wall-seconds``, alternating in slices of
``--slice-seconds`` in this process; writes OUT/report.json
(machine, speeds, JS divergences to the reference, basins, transitions, acceptance, speed-ups: see
:mod:`openmm_forecast.benchmark`), OUT/ramachandran.png and OUT/convergence.png.
"""

import logging

from ._common import add_overwrite_argument, add_setup_arguments, apply_threads, finite_float, setup_from_args


def add_benchmark_arguments(parser, walkers=8, wall_seconds=60.0, out=None):
    """Arguments shared by ``benchmark`` and ``demo``: budget, walkers, reference, forecaster settings."""
    parser.add_argument("--walkers", type=int, default=walkers, help="replicas in each arm (default %(default)s)")
    parser.add_argument("--wall-seconds", type=finite_float, default=wall_seconds,
                        help="wall-clock budget of each arm in seconds (default %(default)s)")
    parser.add_argument("--out", required=out is None, default=out, help="output directory" + (
        " (default %(default)s)" if out else ""))
    parser.add_argument("--reference", default=None,
                        help="reference phi/psi: a directory of .npy runs (n_frames, 2) in degrees, 1 frame per ps, "
                        "or one file (default: $OPENMM_FORECAST_REFERENCE, else the 2 x 100 ns amber14-vacuum runs "
                        "shipped in the package)")
    parser.add_argument("--reference-interval", type=finite_float, default=1.0,
                        help="ps between the reference's frames (default 1, the shared reference runs)")
    parser.add_argument("--sample-interval", type=finite_float, default=1.0, help="ps between phi/psi samples (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="first walker seed (default 1)")
    parser.add_argument("--slice-seconds", type=finite_float, default=10.0,
                        help="the arms alternate in slices of this many wall-clock seconds (default 10; 0: plain MD "
                        "for its whole budget, then the hybrid)")
    parser.add_argument("--energy-tolerance", type=finite_float, default=1.0, help="accepted |dH| in kT (default 1)")
    parser.add_argument("--metropolis", action="store_true", help="Metropolis acceptance instead of the tolerance")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_overwrite_argument(parser)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "benchmark",
        help="plain MD vs accelerated walkers for the same wall-clock budget: speed, JS, report and plots",
        description=__doc__.split("\n\n")[1],
    )
    add_setup_arguments(parser)
    parser.add_argument("--model", required=True,
                        help="forecaster: a shipped model, a model file, or a baseline ('verlet', 'ballistic', 'constant')")
    parser.add_argument("--stride", type=finite_float, default=10.0, help="baselines only: fs between forecast frames (default 10)")
    parser.add_argument("--max-frames", type=int, default=8, help="baselines only: frames per forecast (default 8)")
    add_benchmark_arguments(parser)
    parser.set_defaults(func=run)


def execute(args, molecular_system, model, forecaster_options=None):
    """Run the benchmark the arguments describe and print its summary; returns the report."""
    from openmm import unit

    from .._io import check_output_directory
    from ..benchmark import BENCHMARK_OUTPUTS, format_summary, run_benchmark

    check_output_directory(args.out, "--out", BENCHMARK_OUTPUTS, args.overwrite,
                           hint="choose another --out or pass --overwrite")
    if not getattr(args, "verbose", False):  # per-walker re-equilibration notices: counted in the report instead
        logging.getLogger("openmm_forecast.accelerator").setLevel(logging.WARNING)
    apply_threads(args)
    report = run_benchmark(
        molecular_system, model, args.out, n_walkers=args.walkers, wall_seconds=args.wall_seconds,
        reference=args.reference, sample_interval=args.sample_interval * unit.picosecond,
        reference_interval=args.reference_interval * unit.picosecond, seed=args.seed,
        platform=args.platform, forecaster_options=forecaster_options, progress=False if args.no_progress else None,
        slice_seconds=args.slice_seconds if args.slice_seconds > 0 else None,
        energy_tolerance_kT=args.energy_tolerance, metropolis=args.metropolis, overwrite=args.overwrite,
    )
    print(format_summary(report))
    print(f"report: {args.out}/report.json, plots: {args.out}/ramachandran.png, {args.out}/convergence.png")
    return report


def run(args):
    from ..forecasters.registry import BASELINES

    molecular_system = setup_from_args(args)
    options = {"stride_ps": args.stride / 1000.0, "max_frames": args.max_frames} if args.model in BASELINES else None
    execute(args, molecular_system, args.model, options)
    return 0
