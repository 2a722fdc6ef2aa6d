"""Time MD steps of ANI TorchForce potentials against amber14-vacuum, in one process; print JSON.

Usage: python scripts/time_potentials.py [--steps 200] [--threads 1] [--potential FILE ...] [--xtb]

Without --potential, randomly initialised ANI potentials of the fit-potential default architecture
(hidden layers 128-96-64) are timed with ensembles of 1 and 8 networks, in float64 and float32
(random weights cost the same as trained ones).  Alanine dipeptide, 2 fs, HBonds, Langevin 300 K.
``--xtb`` adds the gfn2-xtb setup (tblite through a PythonForce): MD steps, and energy + gradient calls of
tblite alone (``ms_per_energy_and_gradient``); OMP_NUM_THREADS defaults to 1 for it.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tblite's OpenMP threads, before it loads

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch
from openmm import unit

import openmm_forecast
from openmm_forecast.potentials import build_ani_potential, save_potential


def ms_per_step(molecular_system, platform_name, steps):
    simulation = molecular_system.create_simulation(platform=platform_name, seed=1, minimize=False)
    simulation.step(10)
    simulation.context.getState(getPositions=True)
    start = time.perf_counter()
    simulation.step(steps)
    simulation.context.getState(getPositions=True)
    return 1000.0 * (time.perf_counter() - start) / steps


def ms_per_xtb_evaluation(molecular_system, calls):
    """tblite energy + gradient of the gfn2-xtb setup's computation alone, at thermal-like configurations."""
    from openmm_forecast.xtb import GFN2xTBComputation

    computation = GFN2xTBComputation([atom.element.atomic_number for atom in molecular_system.topology.atoms()])
    x = molecular_system.positions.value_in_unit(unit.nanometer)
    rng = np.random.default_rng(0)
    computation.energy_and_forces(x)
    start = time.perf_counter()
    for _ in range(calls):
        computation.energy_and_forces(x + rng.normal(scale=0.003, size=np.shape(x)))
    return 1000.0 * (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--potential", nargs="*", default=None, help="potential files to time instead")
    parser.add_argument("--xtb", action="store_true", help="also time the gfn2-xtb setup (needs tblite)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    amber = openmm_forecast.build_system("amber14-vacuum")
    elements = amber.elements
    results = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "torch_threads": args.threads, "steps": args.steps, "ms_per_step": {}}
    with tempfile.TemporaryDirectory() as directory:
        files = {}
        if args.potential:
            files = {os.path.basename(path): path for path in args.potential}
        else:
            for ensemble in (1, 8):
                for dtype in ("float64", "float32"):
                    path = os.path.join(directory, f"ani_ensemble{ensemble}_{dtype}.pt")
                    save_potential(build_ani_potential(elements, ensemble_size=ensemble, dtype=dtype), path)
                    files[f"ani ensemble {ensemble} {dtype}"] = path
        for platform_name in ("Reference", "CPU"):
            timings = {"amber14-vacuum": ms_per_step(amber, platform_name, args.steps)}
            for name, path in files.items():
                ml = openmm_forecast.build_system("ml", potential_file=path)
                timings[name] = ms_per_step(ml, platform_name, args.steps)
            if args.xtb:
                timings["gfn2-xtb"] = ms_per_step(openmm_forecast.build_system("gfn2-xtb"), platform_name, args.steps)
            results["ms_per_step"][platform_name] = timings
        if args.xtb:
            results["omp_threads"] = os.environ["OMP_NUM_THREADS"]
            results["ms_per_energy_and_gradient"] = {
                "gfn2-xtb (tblite alone)": ms_per_xtb_evaluation(openmm_forecast.build_system("gfn2-xtb"), args.steps)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
