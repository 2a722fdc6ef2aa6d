"""Measure the fidelity of the dynamics acceptance rule (FlashMD's momentum rescaling) against plain MD.

Usage::

    OMP_NUM_THREADS=1 python scripts/measure_dynamics_rule.py --wall-seconds 150 --walkers 4 --out runs/dynamics_rule

Arms, all amber14-vacuum alanine dipeptide (HBonds, 2 fs, LangevinMiddleIntegrator 300 K, 1/ps), Reference
platform, the same seeds, interleaved in slices of wall clock in one process
(:func:`openmm_forecast.benchmark.run_interleaved`), each for ``--wall-seconds``:

- ``plain``: plain MD;
- ``learned-dynamics``: the shipped learned forecaster ``ala2-amber14-vacuum`` with ``acceptance='dynamics'``;
- ``surrogate-dynamics``: the surrogate proposal (amber14-vacuum itself, velocity Verlet at 2 fs, 10 fs frames,
  up to 8) with ``acceptance='dynamics'``;
- on request (``--arms``): ``surrogate-metropolis`` and ``surrogate-tolerance``, the same proposal under the
  other rules (Metropolis is exact: a control for how the temperature is read).

Per arm: simulated ns, ns/day, JS divergence of the pooled phi/psi histogram against the shipped 200 ns
reference (36 x 36 bins, natural log), basin populations, mean kinetic temperature (a reporter every ps reads
the Context's kinetic energy, as StateDataReporter does, in both arms alike), and the accelerator's
statistics.  Writes OUT/report.json and prints a table.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from openmm import unit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import openmm_forecast  # noqa: E402  (torch before openmm)
from openmm_forecast._io import write_json  # noqa: E402
from openmm_forecast.analysis import basin_populations, js_divergence, ramachandran_histogram  # noqa: E402
from openmm_forecast.benchmark import (  # noqa: E402
    default_reference_path,
    load_reference_runs,
    machine_info,
    run_interleaved,
)
from openmm_forecast.guards import degrees_of_freedom, kinetic_temperature_K  # noqa: E402
from openmm_forecast.walkers import ForecastWalkers, PlainWalkers  # noqa: E402


class KineticTemperatureReporter:
    """Records the kinetic temperature (K) of a simulation every ``interval`` steps."""

    def __init__(self, interval, dof):
        self.interval, self.dof, self.temperatures_K = interval, dof, []

    def describeNextReport(self, simulation):
        return {"steps": self.interval - simulation.currentStep % self.interval, "periodic": None,
                "include": ["energy"]}

    def report(self, simulation, state):
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        self.temperatures_K.append(kinetic_temperature_K(kinetic, self.dof))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wall-seconds", type=float, default=150.0, help="budget of each arm (default %(default)s)")
    parser.add_argument("--walkers", type=int, default=4)
    parser.add_argument("--slice-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--arms", nargs="+", default=["plain", "learned-dynamics", "surrogate-dynamics"],
                        help="arms to run (default %(default)s; also surrogate-metropolis, surrogate-tolerance)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    molecular_system = openmm_forecast.build_system("amber14-vacuum")
    seeds = [args.seed + i for i in range(args.walkers)]
    common = dict(seeds=seeds, platform="Reference")
    surrogate = {"stride_ps": 0.01, "max_frames": 8, "timestep": 2.0 * unit.femtosecond}
    builders = {
        "plain": lambda: PlainWalkers(molecular_system, **common),
        "learned-dynamics": lambda: ForecastWalkers(
            molecular_system, "ala2-amber14-vacuum", acceptance="dynamics", **common),
        **{f"surrogate-{rule}": (lambda rule=rule: ForecastWalkers(
            molecular_system, "surrogate", acceptance=rule, forecaster_options=surrogate, **common))
           for rule in ("dynamics", "metropolis", "tolerance")},
    }
    unknown = set(args.arms) - set(builders)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {', '.join(builders)}")
    arms = {name: builders[name]() for name in args.arms}
    dof = degrees_of_freedom(molecular_system.system)
    steps_per_ps = int(round(1.0 / molecular_system.timestep.value_in_unit(unit.picosecond)))
    reporters = {}
    for name, walkers in arms.items():
        reporters[name] = [KineticTemperatureReporter(steps_per_ps, dof) for _ in walkers.simulations]
        for simulation, reporter in zip(walkers.simulations, reporters[name]):
            simulation.reporters.append(reporter)

    runs, files = load_reference_runs(default_reference_path())
    reference = ramachandran_histogram(np.concatenate(runs))
    start = time.perf_counter()
    samples = run_interleaved(arms, 1.0 * unit.picosecond, args.wall_seconds, args.slice_seconds, progress=False)
    report = {"machine": machine_info(), "wall_seconds_per_arm": args.wall_seconds, "walkers": args.walkers,
              "seeds": seeds, "reference_files": files, "total_wall_s": time.perf_counter() - start, "arms": {}}
    for name, arm_samples in samples.items():
        phi_psi = arm_samples.phi_psi(molecular_system.topology).reshape(-1, 2)
        temperatures = np.concatenate([r.temperatures_K for r in reporters[name]])
        entry = {
            "simulated_ns": arm_samples.simulated_ps / 1000.0,
            "wall_seconds": float(arm_samples.wall_s[-1]),
            "ns_per_day": arm_samples.simulated_ps / 1000.0 / float(arm_samples.wall_s[-1]) * 86400.0,
            "js_to_reference": float(js_divergence(ramachandran_histogram(phi_psi), reference)),
            "basins": basin_populations(phi_psi),
            "temperature_K": {"mean": float(temperatures.mean()), "std": float(temperatures.std()),
                              "n": int(temperatures.size)},
        }
        if isinstance(arms[name], ForecastWalkers):
            stats = arms[name].stats().as_dict()
            entry["stats"] = stats
            entry["acceptance_rate"] = stats["acceptance_rate"]
        report["arms"][name] = entry
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "report.json"), report)
    print(f"{'arm':20s} {'ns':>7s} {'ns/day':>8s} {'JS':>7s} {'T mean':>7s} {'accept':>7s}  basins")
    for name, entry in report["arms"].items():
        basins = ", ".join(f"{k} {v['population']:.3f}" for k, v in entry["basins"].items())
        rate = entry.get("acceptance_rate")
        print(f"{name:20s} {entry['simulated_ns']:7.3f} {entry['ns_per_day']:8.0f} {entry['js_to_reference']:7.4f} "
              f"{entry['temperature_K']['mean']:7.1f} {'' if rate is None else format(rate, '.3f'):>7s}  {basins}")
    print(json.dumps({name: entry.get("stats", {}).get("rejections") for name, entry in report["arms"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
