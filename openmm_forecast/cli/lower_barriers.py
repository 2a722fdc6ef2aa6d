"""``openmm-forecast lower-barriers``: a surrogate whose barriers along phi and psi are lowered, for rare basins.

Runs well-tempered metadynamics on the SURROGATE (``--surrogate``: a fitted System or a shipped one; it costs
microseconds per step, so nanoseconds take a minute or two), and writes the surrogate plus
``-strength * F(phi, psi)`` (its own free energy surface, zero at its minimum) as OUT/surrogate.xml, an
ordinary OpenMM System (see :mod:`openmm_forecast.barriers`).  Every residue with a backbone phi and psi gets
its own surface and bias (``--ns`` of metadynamics each); ``--torsion``, given in pairs, replaces them with the
user's torsions (each pair one surface).  Driven by the exact ``ghmc`` or ``metropolis``
rule the chain still samples the target's own distribution: the bias only changes how often jumps are
accepted and how easily they cross.  Give it long jumps, so that a crossing fits inside one
(``--arm flat=OUT/surrogate.xml:ghmc@2000``).  Also writes OUT/surface.npz, OUT/report.json and OUT/surface.png.
"""

import os

from ._common import (POSITIVE, SEED, add_overwrite_argument, add_setup_arguments, number, setup_from_args,
                      surrogate_name)
from .compare import torsion_argument

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
    parser.add_argument("--torsion", action="append", default=[], metavar="[NAME=]I,J,K,L", type=torsion_argument,
                        help="a torsion to lower instead of the backbone phi/psi (0-based atom indices; give them in "
                        "pairs: each pair is one 2D surface and bias)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def torsion_pairs(args, topology):
    """``[(label, (torsion_a, torsion_b))]`` to lower: the ``--torsion`` pairs, else every residue's phi/psi.

    Raises
    ------
    UsageError
        An odd number of ``--torsion``, or no backbone phi/psi and no ``--torsion``.
    """
    from ..analysis import backbone_torsion_pairs
    from ..errors import UsageError

    if args.torsion:
        if len(args.torsion) % 2:
            raise UsageError(f"--torsion comes in pairs (each pair one surface); got {len(args.torsion)}")
        pairs = zip(args.torsion[::2], args.torsion[1::2])
        return [(f"{a.name}/{b.name}", (a.atoms, b.atoms)) for a, b in pairs]
    pairs = [(pair.label, (pair.phi, pair.psi)) for pair in backbone_torsion_pairs(topology)]
    if not pairs:
        raise UsageError("the target has no residue with a backbone phi and psi: give --torsion pairs to lower")
    return pairs


def run(args):
    import numpy as np
    from openmm import unit

    from .._io import atomic_write_path, check_output_directory, write_json
    from .._runtime import openmm as mm
    from ..barriers import lower_barriers, save_surface, surrogate_free_energy
    from ..forecasters.surrogate import resolve_surrogate
    from ..plotting import _pyplot

    check_output_directory(args.out, "--out", OUTPUTS, args.overwrite, hint="choose another --out or pass --overwrite")
    target = setup_from_args(args)
    pairs = torsion_pairs(args, target.topology)
    surrogate = resolve_surrogate(args.surrogate, target)[0]
    surfaces = [surrogate_free_energy(surrogate, target.positions, torsions, target.temperature,
                                      args.ns * unit.nanosecond, bias_factor=args.bias_factor,
                                      height=args.height * unit.kilojoule_per_mole, seed=args.seed,
                                      progress=not args.no_progress, topology=target.topology)
                for _, torsions in pairs]
    lowered = lower_barriers(surrogate, surfaces, args.strength)
    os.makedirs(args.out, exist_ok=True)
    with atomic_write_path(os.path.join(args.out, "surrogate.xml")) as partial:
        with open(partial, "w") as handle:
            handle.write(mm.XmlSerializer.serialize(lowered))
    save_surface(os.path.join(args.out, "surface.npz"), surfaces[0] if len(surfaces) == 1 else surfaces)
    basins = {"beta": (-80.0, 150.0), "alpha_R": (-75.0, -40.0), "alpha_L": (60.0, 40.0), "phi=0 barrier": (0.0, 0.0)}
    described = [{"label": label, "torsions": [list(atoms) for atoms in torsions],
                  "max_bias_kJ": float(args.strength * surface.free_energy_kJ.max()),
                  **({} if args.torsion else {"free_energy_kJ_at": {
                      name: float(v) for name, v in zip(basins, surface(np.radians(list(basins.values()))))}})}
                 for (label, torsions), surface in zip(pairs, surfaces)]
    report = {"surrogate": os.fspath(args.surrogate), "setup": target.setup, "strength": args.strength,
              "metadynamics_ns": args.ns, "bias_factor": args.bias_factor, "seed": args.seed,
              "torsions": {"phi": list(pairs[0][1][0]), "psi": list(pairs[0][1][1])} if not args.torsion else None,
              "free_energy_kJ_at": described[0].get("free_energy_kJ_at"),
              "max_bias_kJ": max(d["max_bias_kJ"] for d in described), "surfaces": described}
    write_json(os.path.join(args.out, "report.json"), report, indent=2)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(surfaces), figsize=(5.2 * len(surfaces), 4.4), squeeze=False,
                             constrained_layout=True)
    for ax, (label, torsions), surface in zip(axes[0], pairs, surfaces):
        image = ax.imshow(surface.free_energy_kJ, origin="lower", extent=(-180, 180, -180, 180), cmap="viridis")
        fig.colorbar(image, ax=ax, label="surrogate free energy F (kJ/mol)")
        names = label.split("/") if args.torsion else ("phi", "psi")
        ax.set_xlabel(f"{names[0]} (degrees)")
        ax.set_ylabel(f"{names[-1]} (degrees)")
        ax.set_title(f"{label}: bias = -{args.strength:g} F ({args.ns:g} ns of metadynamics)", fontsize=9)
    fig.savefig(os.path.join(args.out, "surface.png"), dpi=110)
    plt.close(fig)
    for item in described:
        if "free_energy_kJ_at" in item:
            print(f"free energy of the surrogate, {item['label']} (kJ/mol): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in item["free_energy_kJ_at"].items()))
    print(f"lowered surrogate: {args.out}/surrogate.xml (e.g. --arm flat={args.out}/surrogate.xml:ghmc@2000 "
          "--max-frames 1 --sample-interval 2)")
    return 0
