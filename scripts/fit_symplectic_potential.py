"""Fit the learned potential of a ``symplectic`` forecaster to the force field's energies and forces.

The ``symplectic`` map is velocity Verlet on its learned potential ``V_theta``, so it conserves
``K + V_theta`` up to the Verlet shadow error, and the true ``dH`` of a jump is about
``d(U - V_theta)`` along it: what the Metropolis acceptance needs is ``V_theta - U`` nearly constant, not
the trajectory's RMSD.  This script therefore fits ``V_theta`` directly (force matching plus
mean-removed energies) on the frames of NVE training segments, with energies and forces recomputed by
the setup's System (the one that generated the data, rebuilt from its metadata: setup and constraints),
holding out segments as :func:`openmm_forecast.training.split_segments` does.  The model keeps its exact
drift masses.  Writes the model file (with its metadata and fit record) to ``--out`` and a JSON record
next to it.

    OMP_NUM_THREADS=1 python scripts/fit_symplectic_potential.py --data TRAIN.h5 --out MODEL.pt --minutes 8
"""

import argparse
import json
import math
import time

import numpy as np
import torch
from openmm import unit

import openmm_forecast  # noqa: F401  (torch before openmm)
from openmm_forecast import build_system
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.data import data_fingerprint, load_trajectory
from openmm_forecast.forecasters import build_forecaster, save_forecaster
from openmm_forecast.training import package_versions, split_segments
from openmm_forecast.units import kT_kJ

FORCE_SCALE = 100.0
"""Force errors are measured in units of 100 kJ/mol/nm (about 2 % of a thermal bond force)."""


def energies_and_forces(system, positions):
    """Potential energies (n,) kJ/mol and forces (n, N, 3) kJ/mol/nm of positions (n, N, 3) nm (Reference)."""
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    energies, forces = np.empty(len(positions)), np.empty(positions.shape)
    for index, x in enumerate(positions):
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True)
        energies[index] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces[index] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energies, forces


def fit_loss(module, x, energies, forces, energy_weight, kT):
    """Force-matching loss (units of FORCE_SCALE^2) + energy_weight * mean-removed energy loss (units of kT^2)."""
    predicted = module.forces(x)
    force_loss = ((predicted - forces) ** 2).mean() / FORCE_SCALE**2
    v = module.potential(x)
    energy_error = (v - v.mean()) - (energies - energies.mean())
    energy_loss = (energy_error**2).mean() / kT**2
    return force_loss + energy_weight * energy_loss, force_loss, energy_loss


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="NVE training file (constraints none)")
    parser.add_argument("--out", required=True, help="model file to write")
    parser.add_argument("--stride-fs", type=float, default=10.0)
    parser.add_argument("--max-frames", type=int, default=2)
    parser.add_argument("--substeps", type=int, default=10)
    parser.add_argument("--n-rbf", type=int, default=16)
    parser.add_argument("--frames-per-segment", type=int, default=7, help="frames of each segment used")
    parser.add_argument("--minutes", type=float, default=8.0, help="fit time budget, wall clock")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--energy-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load_trajectory(args.data)
    meta = data.metadata
    if meta.get("constraints", "none") not in ("none", None):
        raise SystemExit(f"{args.data} has constraints {meta['constraints']!r}: the symplectic map is exact only "
                         "without constraints; generate data with --constraints none")
    train_segments, val_segments = split_segments(len(data), 0.1, 1)
    picks = np.linspace(0, data.positions.shape[1] - 1, args.frames_per_segment).round().astype(int)
    molecular_system = build_system(meta["setup"], constraints=None)
    kT = kT_kJ(float(meta["temperature_K"]))

    started = time.perf_counter()
    sets = {}
    for name, segments in (("train", train_segments), ("validation", val_segments)):
        x = data.positions[segments][:, picks].reshape(-1, data.n_atoms, 3)
        energies, forces = energies_and_forces(molecular_system.system, x)
        sets[name] = [torch.tensor(a, dtype=torch.float64) for a in (x, energies, forces)]
    labelling_seconds = time.perf_counter() - started

    forecaster = build_forecaster(
        "symplectic",
        dict(elements=list(meta["elements"]), stride_ps=args.stride_fs / 1000.0, max_frames=args.max_frames,
             setup=meta.get("setup"), potential=meta.get("potential"), constraints="none",
             temperature_K=float(meta["temperature_K"]), data_fingerprint=data_fingerprint(args.data),
             system_fingerprint=meta.get("system_fingerprint")),
        dtype="float64", substeps=args.substeps, n_rbf=args.n_rbf, masses=list(meta["masses_amu"]),
    )
    module = forecaster.module
    module.log_drift_mass.requires_grad_(False)  # exact drift: the map then conserves K + V_theta
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=args.learning_rate)
    x, energies, forces = sets["train"]
    generator = torch.Generator().manual_seed(args.seed)
    budget, step, history = 60.0 * args.minutes, 0, []
    fit_start = time.perf_counter()
    while time.perf_counter() - fit_start < budget:
        progress = (time.perf_counter() - fit_start) / budget
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
        batch = torch.randint(len(x), (args.batch,), generator=generator)
        loss, _, _ = fit_loss(module, x[batch], energies[batch], forces[batch], args.energy_weight, kT)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 500 == 0:
            with torch.no_grad():
                vx, ve, vf = sets["validation"]
                _, force_loss, energy_loss = fit_loss(module, vx[:1000], ve[:1000], vf[:1000], 1.0, kT)
            entry = {"step": step, "seconds": time.perf_counter() - fit_start,
                     "validation_force_rmse_kJ_nm": FORCE_SCALE * math.sqrt(float(force_loss)),
                     "validation_energy_rmse_kJ": kT * math.sqrt(float(energy_loss))}
            history.append(entry)
            print(json.dumps(entry), flush=True)
    with torch.no_grad():
        vx, ve, vf = sets["validation"]
        _, force_loss, energy_loss = fit_loss(module, vx, ve, vf, 1.0, kT)
    record = {
        "method": "force and mean-removed energy matching of V_theta (scripts/fit_symplectic_potential.py)",
        "arguments": vars(args), "steps": step, "fit_seconds": time.perf_counter() - fit_start,
        "labelling_seconds": labelling_seconds, "n_train_configurations": int(len(x)),
        "n_validation_configurations": int(len(vx)), "validation_segments": [int(s) for s in val_segments],
        "validation_force_rmse_kJ_nm": FORCE_SCALE * math.sqrt(float(force_loss)),
        "validation_energy_rmse_kJ": kT * math.sqrt(float(energy_loss)),
        "reference_force_rms_kJ_nm": float(vf.pow(2).mean().sqrt()),
        "reference_energy_std_kJ": float(ve.std()), "versions": package_versions(), "history": history,
    }
    forecaster.metadata.extra["training"] = record
    module.eval()
    save_forecaster(forecaster, args.out)
    with open(args.out + ".fit.json", "w") as handle:
        json.dump(record, handle, indent=1)
    print(json.dumps({k: v for k, v in record.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
