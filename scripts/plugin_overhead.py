"""Per-jump overhead of the C++ ForecastIntegrator against the Python ForecastAccelerator (Reference platform).

Both drive amber14-vacuum alanine dipeptide (HBonds, 1 fs LangevinMiddle steps, 1/ps) from the same state with the
same float64 free-flight TorchScript forecaster (stride 2 fs, up to 4 frames).  For each driver:

- ``per_jump_us``: wall clock of the run less its integration and forecaster time, per jump attempted (what the
  driver itself costs: guards, constraint projection, energy evaluations, state transfer, bookkeeping);
- ``beyond_energy_us``: the same less the force and energy evaluations of the cycle (the candidate's, and the
  capture after each integration).  The plugin times them itself (``wall_s['energy']``); for the Python driver,
  which makes the same evaluations on the same Reference kernel (about 2.7 per jump in both), the plugin's
  figure per jump is subtracted.

Usage: python scripts/plugin_overhead.py [--steps N] [--out report.json]
"""

import argparse
import json
import time

import openmm
import torch
from openmm import app, unit

import openmm_forecast
from openmm_forecast import ForecastAccelerator, ForecastIntegrator
from openmm_forecast.forecasters import ForecasterMetadata, TorchForecaster
from openmm_forecast.forecasters.torch_forecaster import atomic_numbers_of

STRIDE_PS = 0.002
TIMESTEP = 1.0 * unit.femtosecond
FRICTION = 1.0 / unit.picosecond


class FreeFlight(torch.nn.Module):
    def __init__(self, elements):
        super().__init__()
        self.stride_ps = STRIDE_PS
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers_of(elements), dtype=torch.int64))
        self.register_buffer("one", torch.ones((), dtype=torch.float64))

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, n_frames: int):
        x0, v0 = positions[:, -1], velocities[:, -1]
        spans = self.stride_ps * torch.arange(1, n_frames + 1, dtype=x0.dtype)
        return x0[:, None] + v0[:, None] * spans[None, :, None, None], v0[:, None].expand(-1, n_frames, -1, -1) * self.one


def simulation(molecular_system, integrator, state):
    sim = app.Simulation(molecular_system.topology, molecular_system.system, integrator,
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setState(state)
    return sim


def summary(wall_s, stats, energy_us_per_jump):
    jumps = stats.jumps_attempted
    per_jump_us = 1e6 * (wall_s - stats.wall_s["integration"] - stats.wall_s["forecast"]) / jumps
    return {
        "jumps": jumps, "accepted": stats.jumps_accepted, "wall_s": wall_s,
        "forecast_us_per_jump": 1e6 * stats.wall_s["forecast"] / jumps,
        "per_jump_us": per_jump_us,
        "energy_us_per_jump": energy_us_per_jump,
        "beyond_energy_us": per_jump_us - energy_us_per_jump,
        "wall_split_s": dict(stats.wall_s),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    molecular_system = openmm_forecast.build_system("amber14-vacuum")
    metadata = ForecasterMetadata("free_flight", molecular_system.elements, STRIDE_PS, max_frames=4, temperature_K=300.0)
    forecaster = TorchForecaster(FreeFlight(molecular_system.elements), metadata)
    start = molecular_system.create_simulation(platform="Reference", seed=3)
    state = start.context.getState(getPositions=True, getVelocities=True)

    python = simulation(molecular_system, openmm.LangevinMiddleIntegrator(300 * unit.kelvin, FRICTION, TIMESTEP), state)
    accelerator = ForecastAccelerator(python, forecaster, seed=1)
    begin = time.perf_counter()
    accelerator.step(args.steps)
    python_wall = time.perf_counter() - begin

    integrator = ForecastIntegrator(forecaster, TIMESTEP, 300 * unit.kelvin, FRICTION, seed=1)
    plugin = simulation(molecular_system, integrator, state)
    begin = time.perf_counter()
    integrator.step(args.steps)
    plugin_wall = time.perf_counter() - begin

    plugin_stats = integrator.getStatistics()
    energy_us_per_jump = 1e6 * plugin_stats.wall_s["energy"] / plugin_stats.jumps_attempted
    report = {
        "conditions": f"amber14-vacuum, Reference, {args.steps} steps of 1 fs, free-flight float64 forecaster, 1 torch thread",
        "plugin": summary(plugin_wall, plugin_stats, energy_us_per_jump),
        "python": summary(python_wall, accelerator.stats, energy_us_per_jump),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
