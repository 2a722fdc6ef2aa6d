"""``openmm-forecast fit-surrogate``: learn a cheap amber-form surrogate System from the target's own MD.

Samples the target setup by its own Langevin MD (``--chains`` chains, ``--frames`` frames in all), labels
every frame with the target's energy and forces, and fits the parameters of amber14 in vacuum (plus extra
torsion terms) so that ``U_target - U_surrogate`` is as constant as possible over those states (see
:mod:`openmm_forecast.surrogate_fitting`).  Writes OUT/surrogate.xml (a serialized System: give it to
``--model``, ``--arm`` or ``--surrogate`` of the other commands), OUT/report.json, OUT/fit.png and
OUT/samples.npz; a rerun with samples.npz in OUT reuses those samples (nothing is recomputed).
"""

import json
import os

import numpy as np

from ._common import (
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    add_overwrite_argument,
    add_setup_arguments,
    integer,
    number,
    setup_from_args,
    steps,
)

OUTPUTS = ("surrogate.xml", "report.json", "fit.png")
SAMPLES = "samples.npz"

BASES = ("amber14-vacuum",)
"""Setups a fit may start from: amber-form in vacuum (harmonic bonds and angles, periodic torsions, one
NonbondedForce without cutoff), what :class:`~openmm_forecast.surrogate_fitting.AmberSurrogateEnergy` fits."""

MAX_FRAMES = 10**6
"""Most ``--frames``: every frame is held in memory with its forces (about 1 kB for alanine dipeptide) and every
Adam step evaluates all of them."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "fit-surrogate",
        help="fit an amber-form surrogate System to a target setup's energies and forces (a learned, exact proposal)",
        description=__doc__.split("\n\n")[1],
    )
    add_setup_arguments(parser)
    parser.add_argument("--base", default="amber14-vacuum", choices=BASES,
                        help="the amber-form setup in vacuum the fit starts from (default %(default)s)")
    parser.add_argument("--frames", type=integer(1, MAX_FRAMES, why="all frames and their forces are held in memory"),
                        default=2000, help=f"target frames in all (default %(default)s, at most {MAX_FRAMES})")
    parser.add_argument("--chains", type=integer(1), default=2, help="independent target chains (default %(default)s)")
    parser.add_argument("--frame-interval", type=POSITIVE, default=0.05,
                        help="ps between frames (default %(default)s)")
    parser.add_argument("--equilibration", type=NON_NEGATIVE, default=5.0,
                        help="ps of equilibration per chain (default %(default)s)")
    parser.add_argument("--iterations", type=integer(1), default=1500, help="Adam steps (default %(default)s)")
    parser.add_argument("--learning-rate", type=POSITIVE, default=0.02, help="(default %(default)s)")
    parser.add_argument("--sigma", type=POSITIVE, default=0.01,
                        help="nm: displacement scale of the force term (default %(default)s)")
    parser.add_argument("--prior-weight", type=NON_NEGATIVE, default=1e-3,
                        help="weight of the squared parameter changes (default %(default)s)")
    parser.add_argument("--validation-fraction", type=number(0, below=1), default=0.2,
                        help="held-out fraction: the end of the last chain (default %(default)s)")
    parser.add_argument("--seed", type=SEED, default=1, help="seed of the first chain (default %(default)s)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def run(args):
    from openmm import unit

    from .. import __version__
    from .._io import atomic_write_path, check_output_directory, load_npz, write_json
    from .._runtime import openmm as mm
    from ..surrogate_fitting import fit_surrogate, sample_target
    from ..systems import build_system

    from ..errors import DataFileError, UsageError

    if args.frames < args.chains:
        raise UsageError(f"--frames {args.frames} gives no frame to some of the --chains {args.chains}")
    steps(args.frame_interval, args.timestep / 1000.0, "--frame-interval")
    steps(args.equilibration, args.timestep / 1000.0, "--equilibration", allow_zero=True)
    check_output_directory(args.out, "--out", OUTPUTS, args.overwrite, hint="choose another --out or pass --overwrite")
    target = setup_from_args(args)
    base = build_system(args.base, constraints=target.constraints, temperature=target.temperature)
    samples_path = os.path.join(args.out, SAMPLES)
    progress = not args.no_progress
    sampling = dict(frames=args.frames, chains=args.chains, frame_interval_ps=args.frame_interval,
                    equilibration_ps=args.equilibration, seed=args.seed)
    if os.path.exists(samples_path):
        data = load_npz(samples_path, ("positions", "energies", "forces", "sampling"),
                        "the target samples fit-surrogate wrote there")
        positions, energies, forces = data["positions"], data["energies"], data["forces"]
        try:
            stored = json.loads(str(data["sampling"]))
            stored["fingerprint"], stored["setup"]
        except (ValueError, TypeError, KeyError) as error:
            raise DataFileError(f"{samples_path} has no readable record of its sampling ({error!r}); remove it to "
                                "sample again") from None
        if stored["fingerprint"] != target.fingerprint():
            raise ValueError(f"{samples_path} was sampled from another target ({stored['setup']}); remove it or "
                             "choose another --out")
        print(f"reusing {len(positions)} target frames from {samples_path}")
    else:
        positions, energies, forces = sample_target(
            target, args.frames, n_chains=args.chains, frame_interval_ps=args.frame_interval,
            equilibration_ps=args.equilibration, seed=args.seed, platform=args.platform or "Reference",
            progress=progress)
        with atomic_write_path(samples_path) as partial:
            with open(partial, "wb") as handle:
                np.savez(handle, positions=positions, energies=energies, forces=forces,
                         sampling=np.array(json.dumps(dict(sampling, setup=target.setup,
                                                           fingerprint=target.fingerprint()))))
    system, report = fit_surrogate(
        target, positions, energies, forces, base.system, iterations=args.iterations,
        learning_rate=args.learning_rate, sigma_nm=args.sigma, prior_weight=args.prior_weight,
        validation_fraction=args.validation_fraction, progress=progress)
    report = {
        "target": {"setup": target.setup, "potential": target.potential, "constraints": target.constraints,
                   "temperature_K": float(target.temperature.value_in_unit(unit.kelvin)),
                   "fingerprint": target.fingerprint()},
        "base": args.base, "sampling": sampling, "openmm_forecast_version": __version__, **report,
    }
    with atomic_write_path(os.path.join(args.out, "surrogate.xml")) as partial:
        with open(partial, "w") as handle:
            handle.write(mm.XmlSerializer.serialize(system))
    write_json(os.path.join(args.out, "report.json"), report)
    _plot(os.path.join(args.out, "fit.png"), report)
    for split in ("train", "validation"):
        if report["after"][split] is None:
            continue
        b, a = report["before"][split], report["after"][split]
        print(f"{split}: std(U_target - U_surrogate) {b['energy_std']:.2f} -> {a['energy_std']:.2f} kJ/mol, "
              f"projected force RMSE {b['force_rmse']:.0f} -> {a['force_rmse']:.0f} kJ/mol/nm, long-jump acceptance "
              f"{b['long_jump_acceptance']:.2f} -> {a['long_jump_acceptance']:.2f}")
    print(f"surrogate: {args.out}/surrogate.xml (use --model {args.out}/surrogate.xml or --arm NAME={args.out}/"
          "surrogate.xml:metropolis@STRIDE_FS)")
    return 0


def _plot(path, report):
    from .._io import atomic_write_path
    from ..plotting import _pyplot

    plt = _pyplot()
    history = report["history"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    steps = [h["iteration"] for h in history]
    left.plot(steps, [h["energy_std"] for h in history], label="std(U_t - U_s), kJ/mol (train)")
    left.set_xlabel("iteration")
    left.set_yscale("log")
    left.legend()
    right.plot(steps, [h["force_rmse"] for h in history], color="C1", label="projected force RMSE, kJ/mol/nm (train)")
    right.set_xlabel("iteration")
    right.set_yscale("log")
    right.legend()
    figure.suptitle(f"surrogate fit to {report['target']['setup']} ({report['target']['potential']})")
    figure.tight_layout()
    with atomic_write_path(path) as partial:
        figure.savefig(partial, dpi=100, format="png")
    plt.close(figure)
