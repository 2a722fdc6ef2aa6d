"""``openmm-forecast lower-barriers``: a surrogate whose barriers along phi and psi are lowered, for rare basins.

Runs well-tempered metadynamics on the SURROGATE (``--surrogate``: a fitted System or a shipped one; it costs
microseconds per step, so nanoseconds take a minute or two), and writes the surrogate plus
``-strength * F(phi, psi)`` (its own free energy surface, zero at its minimum) as OUT/surrogate.xml, an
ordinary OpenMM System (see :mod:`openmm_forecast.barriers`).  Driven by the exact ``ghmc`` or ``metropolis``
rule the chain still samples the target's own distribution: the bias only changes how often jumps are
accepted and how easily they cross.  Give it long jumps, so that a crossing fits inside one
(``--arm flat=OUT/surrogate.xml:ghmc@2000``).  Also writes OUT/surface.npz, OUT/report.json and OUT/surface.png.
"""

import os

from ._common import (POSITIVE, SEED, add_overwrite_argument, add_setup_arguments, number, setup_from_args,
                      surrogate_name)

OUTPUTS = ("surrogate.xml", "surface.npz", "report.json", "surface.png")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "lower-barriers",
        help="lower a surrogate's phi/psi barriers by metadynamics on it (exact with ghmc/metropolis; rare basins)",
        description=__doc__.split("\n\n")[1],
    )
    add_setup_arguments(parser)
    parser.add_argument("--surrogate", required=True, type=surrogate_name,
                        help="the surrogate to lower: a shipped fitted surrogate (e.g. fit-amber14-obc2) or a .xml "
                        "System file from fit-surrogate")
    parser.add_argument("--strength", type=number(0, 1), default=0.6,
                        help="fraction of the surrogate's free energy surface removed, 0-1 (default %(default)s)")
    parser.add_argument("--ns", type=number(above=0, maximum=1000), default=5.0,
                        help="ns of metadynamics on the surrogate (default %(default)s)")
    parser.add_argument("--bias-factor", type=number(above=1), default=6.0,
                        help="well-tempered bias factor (default %(default)s)")
    parser.add_argument("--seed", type=SEED, default=1, help="(default %(default)s)")
    parser.add_argument("--height", type=POSITIVE, default=1.0, help="Gaussian height in kJ/mol (default %(default)s)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def run(args):
    import numpy as np
    from openmm import unit

    from .._io import atomic_write_path, check_output_directory, write_json
    from .._runtime import openmm as mm
    from ..barriers import lower_barriers, save_surface, surrogate_free_energy
    from ..forecasters.surrogate import load_surrogate_system
    from ..plotting import _pyplot
    from ..systems import PHI_ATOMS, PSI_ATOMS, SETUPS, build_system

    check_output_directory(args.out, "--out", OUTPUTS, args.overwrite, hint="choose another --out or pass --overwrite")
    target = setup_from_args(args)
    surrogate = (build_system(args.surrogate, constraints=target.constraints, temperature=target.temperature).system
                 if args.surrogate in SETUPS else load_surrogate_system(args.surrogate))
    surface = surrogate_free_energy(surrogate, target.positions, (PHI_ATOMS, PSI_ATOMS), target.temperature,
                                    args.ns * unit.nanosecond, bias_factor=args.bias_factor,
                                    height=args.height * unit.kilojoule_per_mole, seed=args.seed,
                                    progress=not args.no_progress)
    lowered = lower_barriers(surrogate, surface, args.strength)
    os.makedirs(args.out, exist_ok=True)
    with atomic_write_path(os.path.join(args.out, "surrogate.xml")) as partial:
        with open(partial, "w") as handle:
            handle.write(mm.XmlSerializer.serialize(lowered))
    save_surface(os.path.join(args.out, "surface.npz"), surface)
    basins = {"beta": (-80.0, 150.0), "alpha_R": (-75.0, -40.0), "alpha_L": (60.0, 40.0), "phi=0 barrier": (0.0, 0.0)}
    values = surface(np.radians(list(basins.values())))
    report = {"surrogate": os.fspath(args.surrogate), "setup": target.setup, "strength": args.strength,
              "metadynamics_ns": args.ns, "bias_factor": args.bias_factor, "seed": args.seed,
              "torsions": {"phi": list(PHI_ATOMS), "psi": list(PSI_ATOMS)},
              "free_energy_kJ_at": {name: float(v) for name, v in zip(basins, values)},
              "max_bias_kJ": float(args.strength * surface.free_energy_kJ.max())}
    write_json(os.path.join(args.out, "report.json"), report, indent=2)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4), constrained_layout=True)
    image = ax.imshow(surface.free_energy_kJ, origin="lower", extent=(-180, 180, -180, 180), cmap="viridis")
    fig.colorbar(image, ax=ax, label="surrogate free energy F (kJ/mol)")
    ax.set_xlabel("phi (degrees)")
    ax.set_ylabel("psi (degrees)")
    ax.set_title(f"bias = -{args.strength:g} F ({args.ns:g} ns of metadynamics)", fontsize=9)
    fig.savefig(os.path.join(args.out, "surface.png"), dpi=110)
    plt.close(fig)
    print("free energy of the surrogate (kJ/mol): "
          + ", ".join(f"{k} {v:.1f}" for k, v in report["free_energy_kJ_at"].items()))
    print(f"lowered surrogate: {args.out}/surrogate.xml (e.g. --arm flat={args.out}/surrogate.xml:ghmc@2000 "
          "--max-frames 1 --sample-interval 2)")
    return 0
