"""Argument helpers shared by the commands."""

from openmm import unit

from ..systems import SETUPS


def add_setup_arguments(parser):
    """Arguments that choose and parametrise a system setup (see :func:`setup_from_args`)."""
    parser.add_argument("--setup", default="amber14-vacuum", choices=SETUPS, help="system setup (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=300.0, help="temperature in K (default %(default)s)")
    parser.add_argument("--timestep", type=float, default=2.0, help="time step in fs (default %(default)s)")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin friction in 1/ps (default %(default)s)")
    parser.add_argument(
        "--constraints", default="HBonds", choices=["HBonds", "AllBonds", "HAngles", "none"],
        help="constraints (default %(default)s)",
    )
    parser.add_argument("--potential-file", default=None, help="TorchScript potential for the 'ml' setup, or 'ani2x'")
    parser.add_argument("--platform", default=None, help="OpenMM platform (default: the fastest measured here)")


def setup_from_args(args):
    """Build the :class:`~openmm_forecast.systems.MolecularSystem` the setup arguments describe."""
    from ..systems import build_system

    return build_system(
        args.setup,
        temperature=args.temperature * unit.kelvin,
        timestep=args.timestep * unit.femtosecond,
        friction=args.friction / unit.picosecond,
        constraints=None if args.constraints == "none" else args.constraints,
        potential_file=args.potential_file,
    )
