"""``openmm-forecast demo``: plain OpenMM MD against the best available method, a few minutes, no GPU.

Default (``--setup amber14-obc2``, where a step is expensive): alanine dipeptide in OBC2 implicit solvent,
plain MD at 2 fs, hydrogen mass repartitioning at 4 fs, the surrogate proposal (velocity Verlet on the
amber14-vacuum System, exact with the Metropolis rule) and the same proposal on the shipped surrogate learned
from OBC2's own energies and forces (``fit-amber14-obc2``, see ``fit-surrogate``), interleaved in one process;
says which reached the JS bar (plain MD's final JS against the shipped OBC2 reference) first.  ``--setup amber14-vacuum``: the
shipped learned forecaster against plain MD in vacuum, where a step is too cheap for any jump to pay.
Writes OUT/report.json, OUT/ramachandran.png and OUT/convergence.png (default runs/demo).
"""

from ._common import add_threads_argument
from .benchmark import HMR_ARM, add_benchmark_arguments, arms_from_args, execute

FITTED_OBC2 = "fit-amber14-obc2"
"""The shipped surrogate learned from amber14-OBC2 (``openmm_forecast/resources/surrogates``)."""

FITTED_STRIDE_FS = 498
"""Jump length of the learned surrogate's arm in the OBC2 demo, fs."""

DEMOS = {
    "amber14-obc2": {
        "arms": ["plain", HMR_ARM, "surrogate:metropolis", f"learned-surrogate={FITTED_OBC2}:metropolis@{FITTED_STRIDE_FS}"],
        # One 2 fs Langevin step, then one jump: cycles of 100 fs (the amber14-vacuum surrogate, 98 fs jumps) and
        # FITTED_STRIDE_FS + 2 fs (the learned one) tile the 1 ps samples (a leftover shorter than a stride would
        # be integrated one step per cycle).  98 fs for amber14-vacuum: in one benchmark against the 30 ns
        # reference (docs/benchmark.md) 98 fs jumps were accepted 37 % of the time and reached plain MD's JS 3.2x
        # sooner, 248 fs jumps 21 % and 1.25x (HMR 2.3x).  The learned surrogate keeps 86-87 % at 98, 498 and 998 fs.
        "settings": {"stride": 98.0, "max_frames": 1, "segment_steps": 1, "jumps_per_cycle": 1},
        "what": "plain MD (2 fs), HMR (4 fs), the amber14-vacuum surrogate and the surrogate learned from OBC2, "
                "both with the Metropolis rule",
    },
    "amber14-vacuum": {
        "arms": ["plain", "ala2-amber14-vacuum:tolerance"],
        "settings": {},
        "what": "plain MD and the shipped learned forecaster 'ala2-amber14-vacuum' (1 kT tolerance)",
    },
}
"""The arms of each demo and its proposal settings (used where the command line gives none)."""

DEMO_MODEL = "ala2-amber14-vacuum"
"""The shipped forecaster of the vacuum demo."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="a few minutes: plain MD vs HMR vs the surrogate proposals (amber14-vacuum and learned) on alanine "
        "dipeptide in implicit solvent "
        "(or --setup amber14-vacuum: the shipped forecaster), report and plots",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--setup", default="amber14-obc2", choices=sorted(DEMOS),
                        help="amber14-obc2 (default: where a step is expensive) or amber14-vacuum (the learned forecaster "
                        "loses to plain MD)")
    parser.add_argument("--no-hmr", action="store_true", help="amber14-obc2: leave out the HMR arm")
    add_benchmark_arguments(parser, walkers=8, wall_seconds=60.0, out="runs/demo")
    add_threads_argument(parser)
    parser.set_defaults(func=run, platform=None, stride=None, max_frames=None, temperature=300.0, timestep=2.0,
                        friction=1.0, constraints="HBonds", potential_file=None)


def demo_arms(args):
    """The ``--arm`` specifications of the chosen demo, with its settings filled in where ``args`` has None."""
    demo = DEMOS[args.setup]
    for name, value in demo["settings"].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.stride = 10.0 if args.stride is None else args.stride
    args.max_frames = 8 if args.max_frames is None else args.max_frames
    return [spec for spec in demo["arms"] if not (args.no_hmr and spec == HMR_ARM)]


def run(args):
    from ..errors import ModelFileError
    from ..forecasters.registry import models_directory, shipped_models

    specs = demo_arms(args)
    if args.setup == "amber14-vacuum" and DEMO_MODEL not in shipped_models():
        raise ModelFileError(
            f"the vacuum demo needs the shipped forecaster {DEMO_MODEL!r} ({models_directory()}/{DEMO_MODEL}.pt), "
            "which is not installed; train it (scripts/make_default_forecaster.sh), or run the default demo "
            "(amber14-obc2), which needs no trained model"
        )
    print(f"demo: {args.walkers} walkers of {args.setup} alanine dipeptide, {args.wall_seconds:g} s of wall clock each "
          f"for {DEMOS[args.setup]['what'] if not args.no_hmr else ', '.join(specs)}, interleaved")
    execute(args, arms_from_args(args, specs))
    return 0
