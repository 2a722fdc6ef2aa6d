"""``openmm-forecast demo``: plain OpenMM MD against the best available method, a few minutes, no GPU.

Default (``--setup amber14-obc2``, where a step is expensive): alanine dipeptide in OBC2 implicit solvent,
plain MD at 2 fs and hydrogen mass repartitioning at 4 fs (each on its fastest platform configuration,
measured first), the exact ``ghmc`` cycle (one OBC2 energy per 2 ps jump) driven by the surrogate learned
from OBC2's own energies and forces (``fit-amber14-obc2``, see ``fit-surrogate``), and Langevin MD of the same
surrogate with its phi/psi barriers lowered (``fit-amber14-obc2-lowered``, see ``lower-barriers``) with every 2 ps
sample weighted to OBC2 by one OBC2 energy (``:reweight``), interleaved in one process.
Reports effective samples per second of the beta basin with intervals (the winner only outside them), every
basin's population against the converged metadynamics reference (alpha_L included), and the first arm to the
JS bar.  ``--setup ani1x`` (the ML regime: ANI-1x through openmm-torch, 11 ms per step on one core): plain MD,
HMR and the exact ``ghmc`` cycle on ``fit-ani1x`` at 500 fs, against ANI-1x's own chain reference; with
``--wall-seconds 300`` (about 17 minutes) the fitted chain was 16.8x HMR outside the intervals
(docs/results/2026-12-07-ani1x-torsion-ridge/demo-ani1x).  ``--setup amber14-vacuum``: the shipped learned
forecaster against plain MD in vacuum, where a step is too cheap for any jump to pay.  Writes OUT/report.json,
OUT/ramachandran.png and OUT/convergence.png (default runs/demo).
"""

from ._common import add_threads_argument
from .benchmark import HMR_ARM, add_benchmark_arguments, arms_from_args, execute

FITTED_OBC2 = "fit-amber14-obc2"
"""The shipped surrogate learned from amber14-OBC2 (``openmm_forecast/resources/surrogates``)."""

LOWERED_OBC2 = "fit-amber14-obc2-lowered"
"""``fit-amber14-obc2`` minus 0.8 of its own phi/psi free energy surface (``scripts/make_fitted_surrogates.sh``)."""

JUMP_FS = 2000
"""Jump length of the demo's ghmc arm, fs (one jump per 2 ps sample): the learned surrogate keeps ~0.85 acceptance at
every length from 0.1 to 10 ps."""

FITTED_ANI1X = "fit-ani1x"
"""The shipped surrogate learned from ANI-1x (``scripts/make_ani1x_surrogate.py``)."""

ANI1X_JUMP_FS = 500
"""Jump length of the ANI-1x demo's ghmc arm, fs: one ANI-1x energy per 250 surrogate steps, about equal costs."""

DEMOS = {
    "amber14-obc2": {
        "arms": ["plain", HMR_ARM, f"learned={FITTED_OBC2}:ghmc@{JUMP_FS}",
                 f"flat={LOWERED_OBC2}:reweight"],
        # One jump per 2 ps sample (ghmc never integrates the target: jumps of JUMP_FS tile the samples exactly).
        "settings": {"max_frames": 1, "sample_interval": 2.0},
        "what": "plain MD (2 fs), HMR (4 fs), the exact ghmc cycle on the surrogate learned from OBC2, and the same "
                "surrogate with its phi/psi barriers lowered, its samples reweighted to OBC2",
    },
    "ani1x": {
        "arms": ["plain", HMR_ARM, f"fitted={FITTED_ANI1X}:ghmc@{ANI1X_JUMP_FS}"],
        # One 500 fs jump per 0.5 ps sample.
        "settings": {"max_frames": 1, "sample_interval": 0.5},
        "what": "plain MD (2 fs), HMR (4 fs) and the exact ghmc cycle on the surrogate learned from ANI-1x (500 fs "
                "jumps, one ANI-1x energy each); give it --wall-seconds 300 (about 17 minutes) for intervals",
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
        help="a few minutes: plain MD vs HMR vs the exact ghmc cycle on a learned surrogate vs a barrier-lowered "
        "surrogate's samples reweighted, alanine dipeptide in implicit solvent (or --setup ani1x: an ML potential; "
        "--setup amber14-vacuum: the shipped forecaster), report and plots",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--setup", default="amber14-obc2", choices=sorted(DEMOS),
                        help="amber14-obc2 (default: where a step is expensive), ani1x (an ML potential; pass "
                        "--wall-seconds 300) or amber14-vacuum (the learned forecaster loses to plain MD)")
    parser.add_argument("--no-hmr", action="store_true", help="amber14-obc2, ani1x: leave out the HMR arm")
    add_benchmark_arguments(parser, walkers=8, wall_seconds=60.0, out="runs/demo")
    add_threads_argument(parser)
    parser.set_defaults(func=run, platform=None, stride=None, max_frames=None, sample_interval=None,
                        temperature=300.0, timestep=2.0, friction=1.0, constraints="HBonds", potential_file=None)


def demo_arms(args):
    """The ``--arm`` specifications of the chosen demo, with its settings filled in where ``args`` has None."""
    demo = DEMOS[args.setup]
    for name, value in demo["settings"].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.stride = 10.0 if args.stride is None else args.stride
    args.max_frames = 8 if args.max_frames is None else args.max_frames
    args.sample_interval = 1.0 if args.sample_interval is None else args.sample_interval
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
