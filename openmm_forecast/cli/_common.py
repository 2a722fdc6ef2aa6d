"""Argument helpers shared by the commands, and the one place where kinds of flag values are validated.

Every numeric flag gets its check from its argparse ``type=`` (:func:`number`, :func:`integer`,
:data:`POSITIVE`, ...), so a bad value is refused before any work, with the flag's name and exit 2;
checks across flags raise :class:`~openmm_forecast.errors.UsageError` (also exit 2).
"""

import argparse
import math

from openmm import unit

from ..forecasters.surrogate import DEFAULT_SURROGATE
from ..systems import SETUPS


MAX_THREADS = 1024
"""Most ``--threads``: more than any machine this runs on has cores (a typo such as 80000 is refused)."""

MAX_STRIDE_FS = 100_000.0
"""Longest ``--stride`` (and ``--arm ...@STRIDE_FS``), fs: 100 ps.  Surrogate jumps of 10 ps are accepted as often
as jumps of 100 fs on OBC2 (0.84 against 0.88), and a barrier-lowered surrogate needs jumps long enough to cross
a barrier inside one jump; the stride reaches the library as a Quantity, so its 1 ps guard on plain numbers
(:data:`~openmm_forecast.forecasters.base.MAX_PLAIN_STRIDE_PS`) does not apply."""

MAX_SEED = 2**31 - 1
"""Largest seed: OpenMM's integrators take a 32-bit signed seed."""


def number(minimum=None, maximum=None, *, above=None, below=None, why=None):
    """``type=`` of a float flag: a finite number within the given bounds (argparse names the flag in its error).

    Parameters
    ----------
    minimum, maximum : float, optional
        Inclusive bounds.
    above, below : float, optional
        Exclusive bounds.
    why : str, optional
        Why the upper bound, appended to the message.

    Returns
    -------
    callable
        ``text -> float``, raising ``argparse.ArgumentTypeError`` (exit 2) for anything else.
    """
    bounds = [f">= {minimum:g}" if minimum is not None else None, f"> {above:g}" if above is not None else None,
              f"<= {maximum:g}" if maximum is not None else None, f"< {below:g}" if below is not None else None]
    wanted = " and ".join(bound for bound in bounds if bound)

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if ((minimum is not None and value < minimum) or (above is not None and value <= above)
                or (maximum is not None and value > maximum) or (below is not None and value >= below)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}" + (f" ({why})" if why else ""))
        return value

    parse.__name__ = "number"  # argparse's fallback message names the type
    return parse


def integer(minimum=1, maximum=None, *, why=None):
    """``type=`` of an integer flag: an integer in ``[minimum, maximum]`` (argparse names the flag in its error).

    Parameters
    ----------
    minimum : int
    maximum : int, optional
        None: no upper limit.
    why : str, optional
        Why the upper limit, appended to the message.

    Returns
    -------
    callable
        ``text -> int``, raising ``argparse.ArgumentTypeError`` (exit 2) for anything else.
    """
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            wanted = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            reason = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(f"must be an integer {wanted}, got {text!r}{reason}")
        return value

    parse.__name__ = "integer"
    return parse


POSITIVE = number(above=0)
"""``type=`` of a flag that must be finite and > 0 (times, intervals, temperatures, tolerances)."""

NON_NEGATIVE = number(minimum=0)
"""``type=`` of a flag that must be finite and >= 0 (equilibration, friction, weights)."""

SEED = integer(1, MAX_SEED, why="0 would let OpenMM pick a random seed; OpenMM seeds are 32-bit")
"""``type=`` of every ``--seed``."""


def steps(span_ps, timestep_ps, flag, allow_zero=False):
    """:func:`~openmm_forecast.units.whole_steps` of a flag's span; a usage error (exit 2) naming ``flag``."""
    from ..errors import UsageError
    from ..units import whole_steps

    try:
        return whole_steps(span_ps, timestep_ps, flag, allow_zero=allow_zero)
    except ValueError as error:
        raise UsageError(str(error)) from None


def add_overwrite_argument(parser):
    """``--overwrite``: replace the report files of an earlier run in ``--out`` (see ``check_output_directory``)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of an earlier run in --out (default: refuse, nothing is replaced)")


TARGET_FLAGS = {"setup": "--setup", "system": "--system", "prmtop": "--prmtop"}
"""The flags that choose a target, one at a time (``--pdb`` goes with ``--system``, ``--inpcrd`` with ``--prmtop``)."""

DEFAULT_SETUP = "amber14-vacuum"
"""The named test system of a command given no target."""


def add_setup_arguments(parser):
    """Arguments that choose and parametrise the target (see :func:`check_target_arguments`, :func:`setup_from_args`).

    The target is a named test system (``--setup``) or the user's own: ``--system SYSTEM.xml --pdb STRUCTURE.pdb``
    (a serialized System and its structure, PDB or PDBx/mmCIF) or ``--prmtop FILE --inpcrd FILE`` (AMBER).
    """
    target = parser.add_argument_group(
        "target", "a named test system (--setup, default amber14-vacuum) or your own molecule: --system with --pdb, "
        "or --prmtop with --inpcrd")
    target.add_argument("--setup", default=None, choices=SETUPS,
                        help=f"named alanine-dipeptide test system (default {DEFAULT_SETUP} when no other target)")
    target.add_argument("--system", default=None, metavar="SYSTEM.xml",
                        help="your own target: an OpenMM System serialized with XmlSerializer (needs --pdb)")
    target.add_argument("--pdb", default=None, metavar="STRUCTURE.pdb",
                        help="with --system: its topology and starting positions, one atom per particle in the same "
                        "order (PDB, or PDBx/mmCIF ending in .cif)")
    target.add_argument("--prmtop", default=None, help="your own target from AMBER files (needs --inpcrd)")
    target.add_argument("--inpcrd", default=None, help="with --prmtop: coordinates (.inpcrd, .rst7, .crd)")
    target.add_argument("--implicit-solvent", default=None, choices=["HCT", "OBC1", "OBC2", "GBn", "GBn2"],
                        help="with --prmtop: generalized Born model from the prmtop's radii (default none)")
    parser.add_argument("--temperature", type=POSITIVE, default=300.0, help="temperature in K (default %(default)s)")
    parser.add_argument("--timestep", type=POSITIVE, default=2.0, help="time step in fs (default %(default)s)")
    parser.add_argument("--friction", type=NON_NEGATIVE, default=1.0,
                        help="Langevin friction in 1/ps (default %(default)s)")
    parser.add_argument(
        "--constraints", default=None, choices=["HBonds", "AllBonds", "HAngles", "none"],
        help="constraints of --setup and --prmtop (default HBonds; a --system file holds its own)",
    )
    parser.add_argument("--potential-file", default=None, help="TorchScript potential for the 'ml' setup, or 'ani2x'")
    parser.add_argument("--platform", default=None, help="OpenMM platform (default: the fastest measured here)")
    add_threads_argument(parser)


def check_target_arguments(args):
    """Refuse a target given inconsistently, or files that cannot make one, before any work; fill in defaults.

    Called by ``openmm-forecast`` for every command with the target arguments, right after parsing.  Sets
    ``args.setup`` to :data:`DEFAULT_SETUP` when no target is given, and ``args.constraints`` to 'HBonds' when
    not given (except with ``--system``, whose file holds its constraints).

    Raises
    ------
    UsageError
        Two targets, a file without its partner (``--system`` without ``--pdb``, ...), an option of another kind
        of target, a missing or unreadable file, or a structure whose atom count is not the System's (exit 2).
    """
    from ..errors import UsageError

    given = [flag for key, flag in TARGET_FLAGS.items() if getattr(args, key) is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} each choose the target; give one of them")
    for first, second in (("system", "pdb"), ("pdb", "system"), ("prmtop", "inpcrd"), ("inpcrd", "prmtop")):
        if getattr(args, first) is not None and getattr(args, second) is None:
            raise UsageError(f"--{first} needs --{second}")
    if args.implicit_solvent is not None and args.prmtop is None:
        raise UsageError("--implicit-solvent applies to --prmtop only (a --system file holds its own forces)")
    if args.potential_file is not None and args.setup != "ml":
        raise UsageError("--potential-file applies to --setup ml only")
    if args.system is not None and args.constraints is not None:
        raise UsageError(f"--constraints does not apply to --system: {args.system} holds the System's constraints")
    if not given:
        args.setup = DEFAULT_SETUP
    if args.system is None and args.constraints is None:
        args.constraints = "HBonds"
    if args.setup is None:
        _custom_target(args)  # read once now: a bad file is refused before any work


def _custom_target(args, **options):
    """The user's own target that ``--system/--pdb`` or ``--prmtop/--inpcrd`` names (``options``: ``from_xml`` or
    ``from_amber`` keywords); a bad file is a UsageError naming its flag."""
    from ..errors import TargetInputError, UsageError
    from ..systems import MolecularSystem

    try:
        if args.system is not None:
            return MolecularSystem.from_xml(args.system, args.pdb, **options)
        return MolecularSystem.from_amber(args.prmtop, args.inpcrd, implicit_solvent=args.implicit_solvent,
                                          constraints=None if args.constraints == "none" else args.constraints,
                                          **options)
    except TargetInputError as error:
        flags = "--system/--pdb" if args.system is not None else "--prmtop/--inpcrd"
        raise UsageError(f"{flags}: {error}") from None


def add_baseline_arguments(parser):
    """Arguments of the forecasters built from arguments rather than loaded (see :func:`baseline_options`)."""
    parser.add_argument("--stride", type=number(above=0, maximum=MAX_STRIDE_FS), default=10.0,
                        help="baselines and surrogates (ala2-amber14-obc2 too) only: fs between forecast frames "
                        "(default %(default)s)")
    parser.add_argument("--max-frames", type=integer(1, 1000), default=8,
                        help="baselines and surrogates (ala2-amber14-obc2 too) only: frames per forecast "
                        "(default %(default)s)")
    parser.add_argument("--surrogate", default=DEFAULT_SURROGATE, type=surrogate_name,
                        help="--model surrogate only: the System the proposal integrates: 'derived' (default: the "
                        "target's own System without its costly terms, implicit solvent or ML potential; amber14 for "
                        "a target with only an ML potential), a setup (built for the same atoms and constraints), a "
                        "shipped fitted surrogate or a .xml System file (a fitted surrogate can also be given as "
                        "--model or --arm itself)")
    parser.add_argument("--surrogate-timestep", type=POSITIVE, default=2.0,
                        help="--model surrogate only: its velocity Verlet time step in fs (default %(default)s)")


def baseline_options(args, model=None):
    """``load_forecaster`` keywords for ``model`` (default ``args.model``) when it is a baseline, the surrogate, a
    fitted surrogate System or a shipped model that is one (``ala2-amber14-obc2``), else None."""
    from ..forecasters.registry import BASELINES, integrates_surrogate

    model = args.model if model is None else model
    surrogate = model == "surrogate" or integrates_surrogate(model)  # a fitted System is the model; a card names one
    if model not in BASELINES and not surrogate:
        return None
    options = {"stride_ps": args.stride * unit.femtosecond, "max_frames": args.max_frames}
    if model == "surrogate":
        options.update(surrogate=args.surrogate)
    if surrogate:
        options.update(timestep=args.surrogate_timestep * unit.femtosecond)
    return options


def surrogate_name(value):
    """argparse type of ``--surrogate``: a setup, a shipped fitted surrogate or a .xml file."""
    from ..forecasters.surrogate import is_surrogate_file, shipped_surrogates

    if value == DEFAULT_SURROGATE or value in SETUPS or is_surrogate_file(value):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is neither {DEFAULT_SURROGATE!r}, a setup ({', '.join(SETUPS)}), a shipped fitted surrogate "
        f"({', '.join(shipped_surrogates()) or 'none'}) nor a .xml System file"
    )


def add_acceptance_arguments(parser):
    """``--acceptance`` (with ``--metropolis`` as its shorthand) and ``--energy-tolerance``."""
    from ..acceptance import RULES
    from ..options import AcceleratorOptions

    defaults = AcceleratorOptions()  # the one source of option defaults
    parser.add_argument("--acceptance", choices=sorted(RULES), default=defaults.acceptance.name,
                        help="acceptance rule of the jumps (default %(default)s): 'tolerance' accepts |dH| within "
                        "--energy-tolerance, 'metropolis' is exact with a structure-preserving proposal (surrogate, "
                        "verlet), 'dynamics' rescales momenta to keep H (FlashMD)")
    parser.add_argument("--metropolis", dest="acceptance", action="store_const", const="metropolis",
                        help="shorthand for --acceptance metropolis")
    parser.add_argument("--energy-tolerance", type=POSITIVE, default=defaults.energy_tolerance_kT,
                        help="accepted |dH| in kT of --acceptance tolerance (default %(default)s)")
    parser.add_argument("--allow-inexact-metropolis", action="store_true",
                        help="run metropolis or ghmc with a forecaster not certified volume-preserving and reversible "
                        "(a learned network): refused by default, since the test then certifies nothing (a network "
                        "cooled the molecule to 46-130 K at 80-88 %% 'acceptance'); warned and recorded")


def add_threads_argument(parser):
    """``--threads``: torch's CPU threads (see :func:`apply_threads`)."""
    parser.add_argument(
        "--threads", type=integer(1, MAX_THREADS), default=1,
        help="torch CPU threads, used by ML potentials (TorchForce) and forecasters (default 1: a 22-atom molecule "
        "gains nothing from more, and two TorchForce Contexts with 2 threads each on a busy 2-core CPU were "
        "measured ~250x slower per step than with 1)",
    )


def apply_threads(args):
    """Set ``torch.set_num_threads(args.threads)`` (validated by the flag's type)."""
    import torch

    torch.set_num_threads(args.threads)


def setup_from_args(args, **overrides):
    """Build the :class:`~openmm_forecast.systems.MolecularSystem` the target arguments describe (a named test
    system, or the user's own from ``--system/--pdb`` or ``--prmtop/--inpcrd``).

    ``overrides``: keywords that replace the arguments' (``temperature``, ``timestep``, ``friction``,
    ``hydrogen_mass``; for a named setup any ``build_system`` keyword).  Every call builds a new System (an HMR
    arm's masses never reach another arm's).
    """
    from ..systems import build_system

    apply_threads(args)
    kwargs = dict(
        temperature=args.temperature * unit.kelvin,
        timestep=args.timestep * unit.femtosecond,
        friction=args.friction / unit.picosecond,
    )
    if args.setup is None:
        return _custom_target(args, **{**kwargs, **overrides})
    kwargs.update(constraints=None if args.constraints == "none" else args.constraints,
                  potential_file=args.potential_file)
    kwargs.update(overrides)
    return build_system(args.setup, **kwargs)
