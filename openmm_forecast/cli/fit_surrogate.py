"""``openmm-forecast fit-surrogate``: learn a cheap amber-form surrogate System from the target's own MD.

Samples the target setup by its own Langevin MD (``--chains`` chains, ``--frames`` frames in all), labels
every frame with the target's energy and forces, and fits a surrogate of amber14-vacuum's form (``--family
amber``; ``anharmonic``: quartic bonds and angles, torsion periodicities 1-6; ``coupled``: also 1-3 and 1-4 pair
terms; ``rbf``: a bounded Gaussian correction on every atom pair's distance) so that ``U_target - U_surrogate``
is as constant as possible over those states (see :mod:`openmm_forecast.surrogate_fitting`): a few closed-form
least-squares rounds, seconds to a minute for 20-60 atoms.  The report predicts the acceptance of ghmc or
metropolis jumps of ``--predict-jumps`` fs, by running those jumps from held-out frames.  Writes
OUT/surrogate.xml (a serialized System: give it to ``--model``, ``--arm`` or ``--surrogate`` of the other
commands), OUT/report.json, OUT/fit.png and OUT/samples.npz; a rerun with samples.npz in OUT reuses those
samples (nothing is recomputed).
"""

import json
import os

import numpy as np

from ..platforms import fastest_platform
from ._backend import add_backend_argument, backend_from_args
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
least-squares round evaluates all of them."""


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
    parser.add_argument("--family", default="amber", choices=("amber", "anharmonic", "coupled", "rbf"),
                        help="surrogate terms: amber's form; anharmonic: quartic bonds and angles, torsion "
                             "periodicities 1-6; coupled: anharmonic plus 1-3 and 1-4 pair terms; rbf: amber's form, "
                             "torsions to n = 6 and a bounded Gaussian correction on every atom pair's distance, zero "
                             "outside the sampled distances (the ANI-1x fit; default %(default)s)")
    parser.add_argument("--iterations", type=integer(1), default=10,
                        help="most least-squares rounds (the charges are refitted about the last round's; the fit stops "
                             "when the held-out loss falls by less than 1 %%; default %(default)s)")
    parser.add_argument("--sigma", type=POSITIVE, default=0.01,
                        help="nm: displacement scale of the force term (default %(default)s)")
    parser.add_argument("--predict-jumps", type=POSITIVE, nargs="*", default=[100.0, 500.0], metavar="FS",
                        help="jump lengths (fs, multiples of 2) whose acceptance the report predicts from held-out "
                             "frames, one target energy per frame each (default 100 500; none: no prediction)")
    parser.add_argument("--predict-frames", type=integer(2), default=200,
                        help="most held-out frames per predicted jump length (default %(default)s)")
    parser.add_argument("--validation-fraction", type=number(0, below=1), default=0.2,
                        help="held-out fraction: the end of the last chain (default %(default)s)")
    parser.add_argument("--seed", type=SEED, default=1, help="seed of the first chain (default %(default)s)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_overwrite_argument(parser)
    add_backend_argument(parser, "the target's sampling chains")
    parser.set_defaults(func=run)


def run(args):
    from openmm import unit

    from .. import __version__
    from .._io import atomic_write_path, check_output_directory, load_npz, write_json
    from .._runtime import openmm as mm
    from ..surrogate_fitting import fit_surrogate, sample_target
    from ..forecasters.surrogate import derived_surrogate_system
    from ..systems import build_system

    from ..errors import DataFileError, UsageError

    if args.frames < args.chains:
        raise UsageError(f"--frames {args.frames} gives no frame to some of the --chains {args.chains}")
    steps(args.frame_interval, args.timestep / 1000.0, "--frame-interval")
    steps(args.equilibration, args.timestep / 1000.0, "--equilibration", allow_zero=True)
    check_output_directory(args.out, "--out", OUTPUTS, args.overwrite, hint="choose another --out or pass --overwrite")
    target = setup_from_args(args)
    base = (build_system(args.base, constraints=target.constraints, temperature=target.temperature).system
            if target.setup is not None else derived_surrogate_system(target.system, target.topology)[0])  # own target
    samples_path = os.path.join(args.out, SAMPLES)
    progress = not args.no_progress
    platform = args.platform or fastest_platform(target)  # as --help says: measured on the target, not assumed
    print(f"target platform: {platform}")
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
        backend = backend_from_args(args)
        try:
            positions, energies, forces = sample_target(
                target, args.frames, n_chains=args.chains, frame_interval_ps=args.frame_interval,
                equilibration_ps=args.equilibration, seed=args.seed, platform=platform,
                progress=progress, backend=backend)
            if backend is not None:
                sampling["backend"] = dict(backend.describe(), chains_ran_on=backend.placements)
        finally:
            if backend is not None:
                backend.shutdown()
        with atomic_write_path(samples_path) as partial:
            with open(partial, "wb") as handle:
                np.savez(handle, positions=positions, energies=energies, forces=forces,
                         sampling=np.array(json.dumps(dict(sampling, setup=target.setup,
                                                           fingerprint=target.fingerprint()))))
    system, report = fit_surrogate(
        target, positions, energies, forces, base, family=args.family, iterations=args.iterations,
        sigma_nm=args.sigma, validation_fraction=args.validation_fraction, predict_jumps=[jump * unit.femtosecond for jump in args.predict_jumps],
        predict_frames=args.predict_frames, seed=args.seed, platform=platform, progress=progress)
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
    for jump, prediction in report.get("predicted_acceptance", {}).items():
        print(f"predicted acceptance of {jump} fs jumps (ghmc/metropolis, {prediction['n_frames']} held-out frames): "
              f"{prediction['acceptance']:.2f} +- {prediction['stderr']:.2f} (std of dH {prediction['dH_std_kJ']:.2f} "
              f"kJ/mol, of which the surrogate's own integration error {prediction['surrogate_dH_std_kJ']:.2f})")
    print(f"fit: {report['rounds']} rounds, {report['fit_seconds']:.0f} s CPU")
    print(f"surrogate: {args.out}/surrogate.xml (use --model {args.out}/surrogate.xml or --arm NAME={args.out}/"
          "surrogate.xml:metropolis@STRIDE_FS)")
    return 0


def _plot(path, report):
    from .._io import atomic_write_path
    from ..plotting import _pyplot

    plt = _pyplot()
    history = report["history"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    rounds = [h["round"] for h in history]
    left.plot(rounds, [h["validation_energy_std"] for h in history], "o-", label="std(U_t - U_s), kJ/mol (held out)")
    left.axhline(report["before"]["validation"]["energy_std"], color="0.5", ls=":", label="starting System")
    left.set_xlabel("round")
    left.set_yscale("log")
    left.legend()
    right.plot(rounds, [h["validation_force_rmse"] for h in history], "o-", color="C1",
               label="projected force RMSE, kJ/mol/nm (held out)")
    right.axhline(report["before"]["validation"]["force_rmse"], color="0.5", ls=":", label="starting System")
    right.set_xlabel("round")
    right.set_yscale("log")
    right.legend()
    figure.suptitle(f"{report['family']} surrogate fit to {report['target']['setup']} ({report['target']['potential']})")
    figure.tight_layout()
    with atomic_write_path(path) as partial:
        figure.savefig(partial, dpi=100, format="png")
    plt.close(figure)
