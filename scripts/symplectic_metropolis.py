"""Metropolis acceptance of the structure-preserving forecaster against the verlet surrogate, in one run.

amber14-vacuum alanine dipeptide WITHOUT constraints (what the ``symplectic`` map is exact for),
LangevinMiddleIntegrator 300 K, 1 fs, friction 1/ps, Reference platform, equilibrated once; then, from
the same state, one arm per proposal, each a ForecastAccelerator in Metropolis mode with a fixed span
(``--frames`` frames of the proposal's stride), ``--segment-steps`` Langevin steps and one jump per cycle.
Arms: the learned map (``--model``) and the ``verlet`` baseline at the same span with time steps
``--verlet-fs`` (a physical proposal: exact too).  Writes a JSON report (acceptance, dH statistics, wall
seconds per jump) to ``--out``.

    OMP_NUM_THREADS=1 python scripts/symplectic_metropolis.py --model MODEL.pt --out report.json
"""

import argparse
import json
import time

import numpy as np
import torch
from openmm import unit

import openmm_forecast
from openmm_forecast import ForecastAccelerator, build_system, load_forecaster


def arm(molecular_system, state, forecaster, frames, cycles, segment_steps, seed):
    """One Metropolis run from ``state``: acceptance, dH statistics, wall seconds."""
    simulation = molecular_system.create_simulation(platform="Reference", seed=seed, minimize=False)
    simulation.context.setState(state)
    accelerator = ForecastAccelerator(
        simulation, forecaster, molecular_system=molecular_system, metropolis=True, seed=seed,
        segment_steps=segment_steps, jumps_per_cycle=1, max_frames=frames, temperature_sigmas=None,
        progress=False,
    )
    stride_steps = int(round(forecaster.metadata.stride_ps / 0.001))
    start = time.perf_counter()
    accelerator.step(cycles * (segment_steps + frames * stride_steps))
    wall = time.perf_counter() - start
    stats = accelerator.stats.as_dict()
    dh = np.asarray(accelerator.stats.dh_kJ)
    report = {key: stats[key] for key in ("acceptance_rate", "jumps_accepted", "jumps_attempted", "rejections")}
    report["wall_seconds"] = wall
    report["wall_s_by_part"] = stats["wall_s"]
    report["forecast_ms_per_jump"] = 1000 * stats["wall_s"].get("forecast", 0.0) / max(1, stats["jumps_attempted"])
    report["dH_kJ"] = {"median_abs": float(np.median(np.abs(dh))), "mean": float(np.mean(dh)),
                       "within_1kT": float(np.mean(np.abs(dh) <= accelerator.kT_kJ))}
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="symplectic model file")
    parser.add_argument("--out", required=True, help="JSON report")
    parser.add_argument("--frames", type=int, default=2, help="frames per jump (default 2: 20 fs of a 10 fs stride)")
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--segment-steps", type=int, default=10)
    parser.add_argument("--verlet-fs", default="0.5,1,2", help="comma-separated verlet time steps, fs (empty: none)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    molecular_system = build_system("amber14-vacuum", constraints=None, timestep=1.0 * unit.femtosecond)
    simulation = molecular_system.create_simulation(platform="Reference", seed=args.seed)
    simulation.step(20000)  # 20 ps of equilibration
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    model = load_forecaster(args.model, molecular_system=molecular_system)
    stride_ps = model.metadata.stride_ps
    proposals = {"symplectic": model}
    for step_fs in filter(None, args.verlet_fs.split(",")):
        proposals[f"verlet_{step_fs}fs"] = load_forecaster(
            "verlet", molecular_system=molecular_system, stride_ps=stride_ps * unit.picosecond,
            max_frames=args.frames, timestep=float(step_fs) * unit.femtosecond,
        )
    report = {
        "setup": "amber14-vacuum, constraints none, Langevin 1 fs 300 K friction 1/ps, Reference",
        "span_fs": 1000 * stride_ps * args.frames, "cycles": args.cycles, "segment_steps": args.segment_steps,
        "model": args.model, "arms": {},
    }
    for name, forecaster in proposals.items():
        report["arms"][name] = arm(molecular_system, state, forecaster, args.frames, args.cycles,
                                   args.segment_steps, args.seed)
        print(name, json.dumps(report["arms"][name]), flush=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
