"""Time fit_surrogate on 22 and 44 atoms (issue 19, item 3): amber14+OBC2 targets, amber14-vacuum bases.

    .venv/bin/python scripts/time_surrogate_fit.py [--atoms 22 44] [--frames 2000] [--iterations 100] [--profile]

The 44-atom target is two alanine dipeptides 1.2 nm apart in one System (a stand-in for a 40-60 atom peptide:
the same number of atoms, bonded terms and pairs).  Frames: 2 ps of vacuum Langevin MD every 20 fs per 400
frames (cheap; thermal enough for a timing), labelled with the OBC2 target's energies and forces.  Prints the
seconds per Adam iteration and the whole fit; ``--profile`` prints cProfile's top functions.
"""

import argparse
import cProfile
import dataclasses
import os
import pstats
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from openmm import app, unit  # noqa: E402

from openmm_forecast import build_system  # noqa: E402
from openmm_forecast._runtime import openmm as mm  # noqa: E402
from openmm_forecast.potential_training import label_configurations  # noqa: E402
from openmm_forecast.surrogate_fitting import fit_surrogate  # noqa: E402

torch.set_num_threads(1)


def targets(n_atoms):
    """(target MolecularSystem, base System) for 22 or 44 atoms."""
    obc2 = build_system("amber14-obc2")
    vacuum = build_system("amber14-vacuum")
    if n_atoms == 22:
        return obc2, vacuum.system
    modeller = app.Modeller(obc2.topology, obc2.positions)
    shifted = obc2.positions.value_in_unit(unit.nanometer) + np.array([1.2, 0.0, 0.0])
    modeller.add(obc2.topology, shifted * unit.nanometer)
    target = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(
        modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    base = app.ForceField("amber14-all.xml").createSystem(modeller.topology, nonbondedMethod=app.NoCutoff,
                                                         constraints=app.HBonds)
    return dataclasses.replace(obc2, topology=modeller.topology, system=target, positions=modeller.positions,
                               setup="custom", solute_atoms=44), base


def frames(base, positions, n_frames, seed=1):
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = mm.Context(base, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    mm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    integrator.step(2500)
    out = []
    for _ in range(n_frames):
        integrator.step(10)
        out.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atoms", type=int, nargs="+", default=[22, 44])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--options", default="{}", help="extra fit_surrogate keywords, a Python dict literal")
    args = parser.parse_args()
    import ast

    options = ast.literal_eval(args.options)
    for n_atoms in args.atoms:
        target, base = targets(n_atoms)
        positions = frames(base, target.positions, args.frames)
        energies, forces = label_configurations(target.system, positions)
        start = time.process_time()
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        _, report = fit_surrogate(target, positions, energies, forces, base, iterations=args.iterations, **options)
        if profiler:
            profiler.disable()
        seconds = time.process_time() - start
        done = report.get("rounds", report["iterations"])
        print(f"{n_atoms} atoms, {len(positions)} frames, {options or 'defaults'}: {seconds:.1f} s CPU for {done} "
              f"rounds/iterations ({seconds / done:.3f} s each); validation energy_std "
              f"{report['before']['validation']['energy_std']:.2f} -> {report['after']['validation']['energy_std']:.2f} "
              f"kJ/mol", flush=True)
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
