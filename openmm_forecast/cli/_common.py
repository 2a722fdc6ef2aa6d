"""Argument helpers shared by the commands."""

import argparse
import math

from openmm import unit

from ..systems import SETUPS


def finite_float(text):
    """``type=`` of every float flag: a finite number (argparse names the flag in its error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_overwrite_argument(parser):
    """``--overwrite``: replace the report files of an earlier run in ``--out`` (see ``check_output_directory``)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of an earlier run in --out (default: refuse, nothing is replaced)")


def add_setup_arguments(parser):
    """Arguments that choose and parametrise a system setup (see :func:`setup_from_args`)."""
    parser.add_argument("--setup", default="amber14-vacuum", choices=SETUPS, help="system setup (default %(default)s)")
    parser.add_argument("--temperature", type=finite_float, default=300.0, help="temperature in K (default %(default)s)")
    parser.add_argument("--timestep", type=finite_float, default=2.0, help="time step in fs (default %(default)s)")
    parser.add_argument("--friction", type=finite_float, default=1.0, help="Langevin friction in 1/ps (default %(default)s)")
    parser.add_argument(
        "--constraints", default="HBonds", choices=["HBonds", "AllBonds", "HAngles", "none"],
        help="constraints (default %(default)s)",
    )
    parser.add_argument("--potential-file", default=None, help="TorchScript potential for the 'ml' setup, or 'ani2x'")
    parser.add_argument("--platform", default=None, help="OpenMM platform (default: the fastest measured here)")
    add_threads_argument(parser)


def add_baseline_arguments(parser):
    """Arguments of the forecasters built from arguments rather than loaded (see :func:`baseline_options`)."""
    parser.add_argument("--stride", type=finite_float, default=10.0,
                        help="baselines and surrogates (ala2-amber14-obc2 too) only: fs between forecast frames "
                        "(default %(default)s)")
    parser.add_argument("--max-frames", type=int, default=8,
                        help="baselines and surrogates (ala2-amber14-obc2 too) only: frames per forecast "
                        "(default %(default)s)")
    parser.add_argument("--surrogate", default="amber14-vacuum", type=surrogate_name,
                        help="--model surrogate only: the System the proposal integrates: a setup (built for the "
                        "same atoms and constraints), a shipped fitted surrogate or a .xml System file (default "
                        "%(default)s; a fitted surrogate can also be given as --model or --arm itself)")
    parser.add_argument("--surrogate-timestep", type=finite_float, default=2.0,
                        help="--model surrogate only: its velocity Verlet time step in fs (default %(default)s)")


def baseline_options(args, model=None):
    """``load_forecaster`` keywords for ``model`` (default ``args.model``) when it is a baseline, the surrogate, a
    fitted surrogate System or a shipped model that is one (``ala2-amber14-obc2``), else None."""
    from ..forecasters.registry import BASELINES, integrates_surrogate

    model = args.model if model is None else model
    surrogate = model == "surrogate" or integrates_surrogate(model)  # a fitted System is the model; a card names one
    if model not in BASELINES and not surrogate:
        return None
    options = {"stride_ps": args.stride / 1000.0, "max_frames": args.max_frames}
    if model == "surrogate":
        options.update(surrogate=args.surrogate)
    if surrogate:
        options.update(timestep=args.surrogate_timestep * unit.femtosecond)
    return options


def surrogate_name(value):
    """argparse type of ``--surrogate``: a setup, a shipped fitted surrogate or a .xml file."""
    from ..forecasters.surrogate import is_surrogate_file, shipped_surrogates

    if value in SETUPS or is_surrogate_file(value):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is neither a setup ({', '.join(SETUPS)}), a shipped fitted surrogate "
        f"({', '.join(shipped_surrogates()) or 'none'}) nor a .xml System file"
    )


def add_acceptance_arguments(parser):
    """``--acceptance`` (with ``--metropolis`` as its shorthand) and ``--energy-tolerance``."""
    from ..acceptance import RULES

    parser.add_argument("--acceptance", choices=sorted(RULES), default="tolerance",
                        help="acceptance rule of the jumps (default %(default)s): 'tolerance' accepts |dH| within "
                        "--energy-tolerance, 'metropolis' is exact with a structure-preserving proposal (surrogate, "
                        "verlet), 'dynamics' rescales momenta to keep H (FlashMD)")
    parser.add_argument("--metropolis", dest="acceptance", action="store_const", const="metropolis",
                        help="shorthand for --acceptance metropolis")
    parser.add_argument("--energy-tolerance", type=finite_float, default=1.0,
                        help="accepted |dH| in kT of --acceptance tolerance (default %(default)s)")


def add_threads_argument(parser):
    """``--threads``: torch's CPU threads (see :func:`apply_threads`)."""
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads, used by ML potentials (TorchForce) and forecasters (default 1: a 22-atom molecule "
        "gains nothing from more, and two TorchForce Contexts with 2 threads each on a busy 2-core CPU were "
        "measured ~250x slower per step than with 1)",
    )


def apply_threads(args):
    """Set ``torch.set_num_threads(args.threads)``, refusing values below 1."""
    import torch

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)


def setup_from_args(args, **overrides):
    """Build the :class:`~openmm_forecast.systems.MolecularSystem` the setup arguments describe.

    ``overrides``: ``build_system`` keywords that replace the arguments' (e.g. ``timestep``, ``hydrogen_mass``).
    """
    from ..systems import build_system

    apply_threads(args)
    kwargs = dict(
        temperature=args.temperature * unit.kelvin,
        timestep=args.timestep * unit.femtosecond,
        friction=args.friction / unit.picosecond,
        constraints=None if args.constraints == "none" else args.constraints,
        potential_file=args.potential_file,
    )
    kwargs.update(overrides)
    return build_system(args.setup, **kwargs)
