"""Check a chain reference (``scripts/make_chain_reference.py``) against plain MD of the target: stationarity.

Usage::

    taskset -c 1 python scripts/validate_chain_reference.py runs/ani1x-chain-reference --rounds 16 --window-ps 1 \\
        --out openmm_forecast/resources/reference/ani1x-chain/validation.json

If the chains sample the target's Boltzmann distribution, plain Langevin MD of the target started from their
states (with Maxwell-Boltzmann velocities) stays in it: every average over a window of plain MD equals the
average at the window's start.  A chain that samples wrongly (a bug in the acceptance, a non-reversible
proposal) shows up as a drift of the fast observables, which plain MD relaxes within a picosecond: the potential
energy (relaxes in ~0.1 ps), the C5 / C7eq split of the beta basin (psi > 120 degrees), phi.

The chains continue from the reference run's checkpoint (so they are equilibrated; the reference's own files
are not changed): every ``--jumps`` jumps, each chain's state starts one window of plain MD (the setup's own
integrator: LangevinMiddleIntegrator 300 K, 1/ps, 2 fs, HBonds; the chain's platform), recording every
``--frame-ps``.  It writes the per-window observables at the start and averaged over the second half of each
window, their mean difference with a standard error across windows, and a z-score per observable.
"""

import argparse
import json
import os
import pickle
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="the run folder of make_chain_reference.py (progress.json, checkpoint.pkl)")
    parser.add_argument("--rounds", type=int, default=16, help="windows per chain")
    parser.add_argument("--jumps", type=int, default=20, help="chain jumps between windows")
    parser.add_argument("--window-ps", type=float, default=1.0)
    parser.add_argument("--frame-ps", type=float, default=0.1)
    parser.add_argument("--out", required=True, help="JSON report")
    args = parser.parse_args()

    import openmm_forecast  # noqa: F401 (torch before openmm)
    import torch
    from openmm import unit

    from openmm_forecast import ForecastWalkers, GHMCCycle, build_system
    from openmm_forecast.analysis import phi_psi_from_positions
    from openmm_forecast.platforms import PlatformConfiguration

    torch.set_num_threads(1)
    progress = json.load(open(os.path.join(args.reference, "progress.json")))
    settings, recorded = progress["settings"], progress["platform"]
    configuration = PlatformConfiguration.create(recorded["platform"], recorded["properties"], recorded["pinned"])
    molecular_system = build_system(settings["setup"])
    seeds = list(range(1, settings["walkers"] + 1))
    walkers = ForecastWalkers(molecular_system, settings["surrogate"], seeds=seeds, platform=configuration,
                              forecaster_options={"stride_ps": settings["jump_fs"] * unit.femtosecond,
                                                  "max_frames": 1},
                              acceptance=GHMCCycle(velocity_memory=settings["velocity_memory"]))
    with open(os.path.join(args.reference, "checkpoint.pkl"), "rb") as handle:
        walkers.restore(pickle.load(handle))
    md = molecular_system.create_simulation(platform=configuration, seed=1000, minimize=False)
    timestep_ps = molecular_system.timestep.value_in_unit(unit.picosecond)
    frame_steps = int(round(args.frame_ps / timestep_ps))
    n_frames = int(round(args.window_ps / args.frame_ps))
    jump_steps = int(round(settings["jump_fs"] / 1000.0 / timestep_ps))

    def observe(context):
        state = context.getState(getPositions=True, getEnergy=True)
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        phi, psi = phi_psi_from_positions(positions[None])[0]
        return [state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), float(psi > 120.0), phi]

    names = ("potential_energy_kJ", "c5_fraction", "phi_degrees")
    windows = []  # (n_windows, n_frames + 1, 3)
    start = time.perf_counter()
    for round_index in range(args.rounds):
        walkers.step(args.jumps * jump_steps)
        for positions in walkers.positions_nm():
            md.context.setPositions(positions)
            md.context.setVelocitiesToTemperature(molecular_system.temperature, 1000 * round_index + len(windows) + 1)
            md.context.applyVelocityConstraints(1e-6)
            frames = [observe(md.context)]
            for _ in range(n_frames):
                md.step(frame_steps)
                frames.append(observe(md.context))
            windows.append(frames)
        print(f"round {round_index + 1}/{args.rounds}: {len(windows)} windows, {time.perf_counter() - start:.0f} s",
              flush=True)
    data = np.array(windows)
    late = data[:, n_frames // 2 + 1:, :].mean(axis=1)
    report = {"method": __doc__.split("\n\n")[1].replace("\n", " "), "settings": vars(args),
              "chain_settings": settings, "windows": len(windows), "wall_s": time.perf_counter() - start,
              "observables": {}}
    for i, name in enumerate(names):
        difference = late[:, i] - data[:, 0, i]
        error = float(difference.std(ddof=1) / np.sqrt(len(difference)))
        report["observables"][name] = {
            "at_start": float(data[:, 0, i].mean()), "second_half_of_windows": float(late[:, i].mean()),
            "difference": float(difference.mean()), "standard_error": error,
            "z": float(difference.mean() / error) if error > 0 else None,
            "mean_by_frame": data[:, :, i].mean(axis=0).tolist()}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps({name: {k: v for k, v in value.items() if k != "mean_by_frame"}
                      for name, value in report["observables"].items()}, indent=2))


if __name__ == "__main__":
    main()
