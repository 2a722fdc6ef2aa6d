"""``openmm-forecast benchmark``: plain MD, HMR and forecast-accelerated walkers, same wall clock, one process.

Runs ``--walkers`` replicas in every arm (``--arm``, repeatable; default: plain MD and ``--model``), each for
``--wall-seconds``, alternating in slices of ``--slice-seconds``; writes OUT/report.json (machine; per arm:
speed, JS to the reference of the same potential, plain MD's noise at that length, time to the JS bar,
temperature, acceptance, basins, transitions: see :mod:`openmm_forecast.benchmark`), OUT/ramachandran.png and
OUT/convergence.png.
"""

import argparse
import logging
import math

from ..acceptance import RULES
from ..analysis import BASINS
from ._backend import add_backend_argument, backend_from_args
from ..benchmark import ENGINES, METADYNAMICS
from .compare import torsion_argument
from ._common import (
    MAX_STRIDE_FS,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    add_acceptance_arguments,
    add_baseline_arguments,
    add_overwrite_argument,
    add_setup_arguments,
    apply_threads,
    baseline_options,
    integer,
    number,
    setup_from_args,
)

ACCEPTANCE_RULES = tuple(sorted(RULES))
"""Acceptance rules an ``--arm`` may name after its proposal (``MODEL:RULE``)."""

MAX_WALKERS = 1000
"""Most ``--walkers`` per arm: each walker is an OpenMM Context of its own (memory, and worker threads on the CPU
platform), and at a fixed wall clock more walkers only shorten each walker's trajectory."""

HMR_ARM = "hmr"
PLAIN_ARM = "plain"
METAD_ARM = "metad"
REWEIGHT = "reweight"
"""The ``:RULE`` of an arm that runs Langevin MD of the surrogate MODEL and reweights every sample to the target."""


def add_benchmark_arguments(parser, walkers=8, wall_seconds=60.0, out=None):
    """Arguments shared by ``benchmark`` and ``demo``: budget, walkers, reference, bar, acceptance settings."""
    parser.add_argument("--walkers", type=integer(1, MAX_WALKERS, why="each walker is an OpenMM Context of its own"),
                        default=walkers, help=f"replicas in each arm (default %(default)s, at most {MAX_WALKERS})")
    parser.add_argument("--wall-seconds", type=POSITIVE, default=wall_seconds,
                        help="wall-clock budget of each arm in seconds (default %(default)s)")
    parser.add_argument("--out", required=out is None, default=out, help="output directory" + (
        " (default %(default)s)" if out else ""))
    parser.add_argument("--reference", default=None,
                        help="reference phi/psi of the same potential: a directory of .npy runs (n_frames, 2) in "
                        "degrees, 1 frame per ps, or one file (default: $OPENMM_FORECAST_REFERENCE, else the plain-MD "
                        "runs shipped for the setup; setups without one are refused unless --reference or "
                        "--no-reference is given)")
    parser.add_argument("--no-reference", action="store_true",
                        help="no reference: measure speed, acceptance and temperature only (no JS, no bar)")
    parser.add_argument("--js-bar", type=number(above=0, below=math.log(2), why="the JS divergence lies in [0, ln 2]"),
                        default=None,
                        help="JS every arm's time is measured to (default: the JS the first arm, plain MD, reaches at "
                        "the end of its budget)")
    parser.add_argument("--reference-interval", type=POSITIVE, default=1.0,
                        help="ps between the reference's frames (default 1, the shipped reference runs)")
    parser.add_argument("--sample-interval", type=POSITIVE, default=1.0, help="ps between phi/psi samples (default 1)")
    parser.add_argument("--seed", type=SEED, default=1, help="first walker seed (default 1)")
    parser.add_argument("--slice-seconds", type=NON_NEGATIVE, default=10.0,
                        help="the arms alternate in slices of this many wall-clock seconds (default 10; 0: each arm "
                        "for its whole budget, one after the other)")
    add_acceptance_arguments(parser)
    parser.add_argument("--segment-steps", type=integer(1), default=None,
                        help="hybrid arms whose rule integrates (not ghmc): integration steps between jump rounds "
                        "(default: the accelerator's, one stride)")
    parser.add_argument("--jumps-per-cycle", type=integer(1), default=None,
                        help="hybrid arms: most jumps after each integration segment (default: the accelerator's, 4)")
    parser.add_argument("--hmr-timestep", type=POSITIVE, default=4.0,
                        help="the hmr arm's time step in fs (default %(default)s)")
    parser.add_argument("--hmr-mass", type=POSITIVE, default=1.5,
                        help="the hmr arm's hydrogen mass in amu (default %(default)s, openmm-setup's choice for "
                        "LangevinMiddleIntegrator at 4 fs)")
    add_baseline_arguments(parser)
    parser.add_argument("--pin", choices=("auto", "yes", "no"), default="auto",
                        help="pin the process to one core: auto (default) times the baseline both ways and pins when "
                        "that is faster (the CPU platform's worker thread is slow to wake across cores); the report "
                        "names every arm's platform, threads and pinning")
    parser.add_argument("--metad-height", type=POSITIVE, default=METADYNAMICS["height_kJ"],
                        help="metad arms: initial Gaussian height in kJ/mol (default %(default)s)")
    parser.add_argument("--metad-bias-factor", type=number(above=1), default=METADYNAMICS["bias_factor"],
                        help="metad arms: well-tempered bias factor (default %(default)s)")
    parser.add_argument("--metad-deposit", type=POSITIVE, default=METADYNAMICS["deposit_ps"],
                        help="metad arms: ps between Gaussians (default %(default)s; sample at a multiple of it)")
    parser.add_argument("--metad-independent", action="store_true",
                        help="metad arms: one bias per walker (default: one bias shared by all walkers)")
    parser.add_argument("--torsion", action="append", default=[], metavar="[NAME=]I,J,K,L", type=torsion_argument,
                        help="a torsion to report besides every residue's phi/psi (0-based atom indices; repeatable): "
                        "populations and effective samples per second of its gauche+, trans and gauche- states")
    parser.add_argument("--observable", default="beta", choices=[basin.name for basin in BASINS],
                        help="basin whose indicator's effective samples per second decide the winner (default beta)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_backend_argument(parser)
    add_overwrite_argument(parser)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "benchmark",
        help="plain MD, HMR and accelerated walkers for the same wall-clock budget: time to a JS bar, report, plots",
        description=__doc__.split("\n\n")[1],
    )
    add_setup_arguments(parser)
    parser.add_argument("--model", default=None,
                        help="forecaster of the hybrid arm when no --arm is given: a shipped model, a model file, or "
                        "'surrogate' (velocity Verlet on --surrogate) or a baseline ('verlet', 'ballistic', 'constant')")
    parser.add_argument("--arm", action="append", default=None, metavar="[NAME=]MODEL[:RULE][@STRIDE_FS][:plugin]",
                        help="an arm (repeatable; the first is the baseline the others are compared with): 'plain' "
                        "(MD at --timestep), 'hmr' (hydrogen mass repartitioning: --hmr-mass, --hmr-timestep), 'metad' "
                        "(well-tempered metadynamics of the target on the first residue's phi/psi, reweighted by c(t)), or a "
                        f"forecaster with an acceptance rule ({', '.join(ACCEPTANCE_RULES)}; default: --acceptance) and "
                        "optionally its own stride in fs, e.g. --arm plain --arm hmr --arm surrogate:metropolis@248; "
                        "a trailing ':plugin' runs the arm on the C++ ForecastIntegrator (one per walker, under "
                        "Simulation.step; a fitted surrogate or a TorchScript model; jump = stride x --max-frames) "
                        "instead of the Python driver, e.g. --arm fit-amber14-obc2:ghmc@500:plugin; "
                        f"MODEL:{REWEIGHT} runs Langevin MD of the surrogate MODEL (a shipped fitted surrogate or a .xml "
                        "System) and weighs every sample by exp(-(U_target - U_surrogate)/kT), one target energy each, "
                        "e.g. --arm fit-amber14-obc2-lowered:reweight")
    add_benchmark_arguments(parser)
    parser.set_defaults(func=run)


def parse_arm(spec, default_rule):
    """``[NAME=]MODEL[:RULE][@STRIDE_FS][:ENGINE]`` -> (name, model, rule, stride_fs, engine).

    ``rule`` is None for 'plain', 'hmr' and 'metad'; ``stride_fs`` None unless given (then it replaces ``--stride`` for
    this arm's baseline or surrogate proposal); ``engine`` one of :data:`~openmm_forecast.benchmark.ENGINES`, the
    last ``:`` field when it names one ('python' unless given; the default name of a plugin arm ends in
    ``-plugin``).

    Raises
    ------
    UsageError
        An empty model, an unknown rule, a rule or stride after 'plain', 'hmr' or 'metad', a stride that is not a
        number of fs in (0, :data:`~openmm_forecast.cli._common.MAX_STRIDE_FS`], or the plugin engine for an arm
        without a proposal or with a baseline the plugin does not have.
    """
    import os

    from ..errors import UsageError

    name, _, rest = spec.partition("=") if "=" in spec else ("", "", spec)
    head, _, last = rest.rpartition(":")
    engine = last if head and last in ENGINES else "python"
    rest = head if head and last in ENGINES else rest
    rest, _, stride = rest.rpartition("@") if "@" in rest else (rest, "", "")
    model, _, rule = rest.partition(":") if rest.count(":") == 1 else (rest, "", "")
    if not model:
        raise UsageError(f"--arm {spec!r}: no model (expected [NAME=]MODEL[:RULE][@STRIDE_FS][:plugin])")
    stride_fs = None
    if stride:
        try:
            stride_fs = number(above=0, maximum=MAX_STRIDE_FS)(stride)
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"--arm {spec!r}: the stride after '@' (fs) {error}") from None
    if model in (PLAIN_ARM, HMR_ARM, METAD_ARM):
        if rule or stride or engine != "python":
            raise UsageError(f"--arm {spec!r}: {model!r} integrates the target and takes no acceptance rule, stride "
                             "or engine")
        return name or model, model, None, None, engine
    rule = rule or default_rule
    if rule == REWEIGHT:
        if stride or engine != "python":
            raise UsageError(f"--arm {spec!r}: a reweighted surrogate runs its own Langevin MD at --timestep: no stride "
                             "or engine")
        return name or f"{os.path.splitext(os.path.basename(model))[0]}-{REWEIGHT}", model, rule, None, engine
    if rule not in ACCEPTANCE_RULES:
        raise UsageError(f"--arm {spec!r}: unknown acceptance rule {rule!r}; choose from "
                         f"{', '.join(ACCEPTANCE_RULES)} (or {REWEIGHT!r})")
    if engine == "plugin":
        from ..forecasters.registry import BASELINES
        from ..plugin import RULES as PLUGIN_RULES

        if model == "surrogate" or model in BASELINES:
            raise UsageError(f"--arm {spec!r}: the plugin's proposal is a fitted surrogate System (a shipped name, a "
                             f"model card or a .xml file) or a TorchScript model, not {model!r}")
        if rule not in PLUGIN_RULES:
            raise UsageError(f"--arm {spec!r}: the plugin's rules are {', '.join(PLUGIN_RULES)}, not {rule!r}")
    stem = os.path.splitext(os.path.basename(model))[0]
    default = f"{stem}-{rule}" + (f"-{stride}fs" if stride else "") + ("-plugin" if engine == "plugin" else "")
    return name or default, model, rule, stride_fs, engine


def arms_from_args(args, specs=None):
    """The :class:`~openmm_forecast.benchmark.BenchmarkArm` list the arguments describe.

    Every specification is parsed (and refused, :class:`~openmm_forecast.errors.UsageError`) before any
    System is built.

    Parameters
    ----------
    args : argparse.Namespace
    specs : list of str, optional
        Arm specifications (default ``args.arm``, else plain MD and ``args.model``).
    """
    from openmm import unit

    from ..benchmark import BenchmarkArm, check_plugin
    from ..errors import PluginError, UsageError

    default_rule = args.acceptance
    if specs is None:
        specs = args.arm or ([PLAIN_ARM, args.model] if args.model else None)
    if not specs:
        raise UsageError("give --model (plain MD against it) or one --arm per arm")
    parsed = [parse_arm(spec, default_rule) for spec in specs]
    for spec, (*_, engine) in zip(specs, parsed):
        if engine == "plugin":
            if getattr(args, "backend", "local") != "local":
                raise UsageError(f"--arm {spec!r}: plugin arms run only in-process (--backend local)")
            try:
                check_plugin(f"--arm {spec!r}")
            except PluginError as error:
                raise UsageError(str(error)) from error
    molecular_system = setup_from_args(args)  # at --timestep: shared by the plain and hybrid arms
    arms = []
    for spec, (name, model, rule, stride_fs, engine) in zip(specs, parsed):
        if model == PLAIN_ARM:
            arms.append(BenchmarkArm(name, molecular_system))
        elif model == METAD_ARM:
            arms.append(BenchmarkArm(name, molecular_system, metadynamics={
                "height_kJ": args.metad_height, "bias_factor": args.metad_bias_factor,
                "deposit_ps": args.metad_deposit, "shared_bias": not args.metad_independent}))
        elif model == HMR_ARM:
            hmr = setup_from_args(args, timestep=args.hmr_timestep * unit.femtosecond,
                                  hydrogen_mass=args.hmr_mass * unit.dalton)
            arms.append(BenchmarkArm(name, hmr))
        elif rule == REWEIGHT:
            from ..forecasters.surrogate import resolve_surrogate

            try:
                resolve_surrogate(model, molecular_system)  # refused here, before any work, naming the flag
            except ValueError as error:
                raise UsageError(f"--arm {spec!r}: {error}") from None
            arms.append(BenchmarkArm(name, molecular_system, reweighted_surrogate=model))
        else:
            options = baseline_options(args, model)
            if stride_fs is not None:
                if options is None:
                    raise UsageError(f"--arm {spec!r}: a stride is set only for baseline and surrogate proposals, "
                                     f"not for the learned forecaster {model!r}")
                options["stride_ps"] = stride_fs * unit.femtosecond
            accelerator = {"acceptance": rule, "energy_tolerance_kT": args.energy_tolerance}
            if args.allow_inexact_metropolis:
                accelerator["allow_inexact_metropolis"] = True
            for option in ("segment_steps", "jumps_per_cycle"):
                # a rule that never integrates the target (ghmc) has no segment: --segment-steps is not its option
                if getattr(args, option) is not None and (option != "segment_steps" or RULES[rule].integrates):
                    accelerator[option] = getattr(args, option)
            arms.append(BenchmarkArm(name, molecular_system, model, options, accelerator, engine=engine))
    return arms


def execute(args, arms):
    """Run the benchmark of ``arms`` with the budget the arguments give and print its summary; returns the report."""
    from openmm import unit

    from .._io import check_output_directory
    from ..benchmark import BENCHMARK_OUTPUTS, format_summary, run_benchmark
    from ..errors import UsageError

    if args.no_reference and args.reference is not None:
        raise UsageError("--no-reference and --reference exclude each other")
    check_output_directory(args.out, "--out", BENCHMARK_OUTPUTS, args.overwrite,
                           hint="choose another --out or pass --overwrite")
    if not getattr(args, "verbose", False):  # per-walker re-equilibration notices: counted in the report instead
        logging.getLogger("openmm_forecast.accelerator").setLevel(logging.WARNING)
    apply_threads(args)
    backend = backend_from_args(args)
    try:
        report = run_benchmark(
            arms, args.out, n_walkers=args.walkers, wall_seconds=args.wall_seconds,
            reference=False if args.no_reference else args.reference, js_bar=args.js_bar,
            sample_interval=args.sample_interval * unit.picosecond,
            reference_interval=args.reference_interval * unit.picosecond, seed=args.seed,
            platform=args.platform if backend is None else backend.default_platform(args.platform),
            pin={"auto": "auto", "yes": True, "no": False}[args.pin], efficiency_observable=args.observable,
            progress=False if args.no_progress else None,
            slice_seconds=args.slice_seconds if args.slice_seconds > 0 else None,
            overwrite=args.overwrite, backend=backend, torsions=args.torsion,
        )
    finally:
        if backend is not None:
            backend.shutdown()
    print(format_summary(report))
    plots = "ramachandran.png" + (", convergence.png" if report["reference"] is not None else "")
    print(f"report: {args.out}/report.json, plots: {plots} in {args.out}")
    return report


def run(args):
    execute(args, arms_from_args(args))
    return 0
