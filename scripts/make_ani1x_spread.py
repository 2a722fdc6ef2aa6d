"""ANI-1x thermal frames spread over the whole Ramachandran plane (issue 17): training data beyond one basin.

    .venv/bin/python scripts/make_ani1x_spread.py [--starts 48] [--frames-per-start 10]

Why: the ANI-1x chains of ``make_ani1x_surrogate.py sample`` (3 x 20 ps) all stay in the C7eq basin (phi -109 to
-67 degrees), so a surrogate fitted to them is unconstrained everywhere else.  Measured: the fitted surrogates'
own Langevin MD leaves that region within picoseconds for states ANI-1x puts 190 (family rbf) to 1,100 (family
amber) kJ/mol higher on average than the surrogate does, relative to the training frames.

What: starting structures from Langevin MD of the barrier-lowered OBC2 surrogate (``fit-amber14-obc2-lowered``,
which visits every basin), one every 5 ps; from each, ANI-1x's own MD (the ``ani1x`` setup: minimised, 0.5 ps of
equilibration, then ``--frames-per-start`` frames 50 fs apart, labelled with ANI-1x energies and forces).  Written
to runs/ani1x-surrogate/spread.npz (positions nm, energies kJ/mol, forces kJ/mol/nm, phi_psi degrees, start index);
resumable: the starts already done are kept in spread.partial.npz.
"""

import argparse
import dataclasses
import os
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import openmm  # noqa: E402
from openmm import unit  # noqa: E402

from openmm_forecast import build_system  # noqa: E402
from openmm_forecast.analysis import phi_psi_from_positions  # noqa: E402
from openmm_forecast.forecasters.surrogate import resolve_surrogate  # noqa: E402
from openmm_forecast.surrogate_fitting import sample_target  # noqa: E402

RUN = "runs/ani1x-surrogate"


def starting_structures(target, n_starts, seed=1):
    """Positions (n_starts, N, 3) nm, 5 ps apart in Langevin MD of the lowered OBC2 surrogate."""
    surrogate, _ = resolve_surrogate("fit-amber14-obc2-lowered", target)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(surrogate, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(target.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    integrator.step(5000)
    starts = []
    for _ in range(n_starts):
        integrator.step(2500)
        starts.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(starts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=48)
    parser.add_argument("--frames-per-start", type=int, default=10)
    args = parser.parse_args()
    os.makedirs(RUN, exist_ok=True)
    target = build_system("ani1x")
    starts = starting_structures(target, args.starts)
    partial = os.path.join(RUN, "spread.partial.npz")
    done = dict(np.load(partial)) if os.path.exists(partial) else {}
    parts = {key: list(done.get(key, [])) for key in ("positions", "energies", "forces", "start")}
    first = int(max(parts["start"]) + 1) if parts["start"] else 0
    for index in range(first, args.starts):
        clock = time.time()
        start = dataclasses.replace(target, positions=starts[index] * unit.nanometer)
        positions, energies, forces = sample_target(start, args.frames_per_start, n_chains=1, frame_interval_ps=0.05,
                                                    equilibration_ps=0.5, seed=100 + index)
        parts["positions"] += list(positions)
        parts["energies"] += list(energies)
        parts["forces"] += list(forces)
        parts["start"] += [index] * len(positions)
        np.savez(partial + ".tmp.npz", **{key: np.array(value) for key, value in parts.items()})
        os.replace(partial + ".tmp.npz", partial)
        phi_psi = phi_psi_from_positions(positions[-1:])[0]
        print(f"start {index + 1}/{args.starts}: {len(positions)} frames, last phi/psi {phi_psi.round(0)}, "
              f"{time.time() - clock:.0f} s", flush=True)
    result = {key: np.array(value) for key, value in parts.items()}
    result["phi_psi"] = phi_psi_from_positions(result["positions"])
    np.savez(os.path.join(RUN, "spread.npz"), **result)
    print(f"{RUN}/spread.npz: {len(result['energies'])} frames, phi > 0 in {np.mean(result['phi_psi'][:, 0] > 0):.2f}")


if __name__ == "__main__":
    main()
