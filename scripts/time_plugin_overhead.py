"""Per-jump overhead of the plugin's ghmc cycle and of the Python driver's, beyond the target energy and the surrogate steps.

amber14-obc2 alanine dipeptide on Reference, the shipped fit-amber14-obc2 surrogate (Reference), 500 fs jumps of
250 velocity Verlet steps of 2 fs, one target energy per jump.  Per jump, in the same run:

    overhead = (wall clock - target energy evaluations - surrogate integrator.step calls) / jumps

The plugin times its energy evaluations and its surrogate's steps itself (wall_s "energy", "proposal_steps"); the
Python driver's surrogate steps are timed by wrapping its integrator, its energy evaluations are priced at the
plugin's per-evaluation time of the same repeat (the same C++ computation; the Python driver's getState around it
counts as its overhead).  Timing both in the same run keeps the machine's load out of the subtraction, except for
the overhead itself, which scales with the load (say so with the numbers).

Usage: python plugin/tests/measure_overhead.py [--jumps 200] [--repeats 3]
"""

import argparse
import statistics
import time

import openmm
from openmm import app, unit

import openmm_forecast
from openmm_forecast import ForecastAccelerator, ForecastIntegrator
from openmm_forecast.cycles import GHMCCycle
from openmm_forecast.forecasters.surrogate import SurrogateForecaster

SURROGATE = "fit-amber14-obc2"
STEP = 2.0 * unit.femtosecond
JUMP_STEPS = 250
REFERENCE = openmm.Platform.getPlatformByName("Reference")


class TimedIntegrator:
    """Wraps the Python driver's surrogate integrator: its step calls' wall clock."""

    def __init__(self, integrator):
        self.integrator, self.seconds = integrator, 0.0

    def step(self, steps):
        start = time.perf_counter()
        self.integrator.step(steps)
        self.seconds += time.perf_counter() - start


def plugin_run(molecular_system, state, jumps, through_simulation):
    """(overhead s/jump, energy s/evaluation, acceptance) of the plugin."""
    integrator = ForecastIntegrator(SURROGATE, STEP, 300 * unit.kelvin, 1 / unit.picosecond, acceptance="ghmc",
                                    jump=JUMP_STEPS * STEP, seed=1)
    simulation = app.Simulation(molecular_system.topology, molecular_system.system, integrator, REFERENCE)
    simulation.context.setPositions(state.getPositions())
    simulation.context.setVelocities(state.getVelocities())
    start = time.perf_counter()
    if through_simulation:
        simulation.step(jumps * JUMP_STEPS)
    else:
        integrator.step(jumps * JUMP_STEPS)
    wall = time.perf_counter() - start
    stats = integrator.getStatistics()
    evaluations = stats.jumps_attempted + 1  # one per jump, one at the start
    overhead = (wall - stats.wall_s["energy"] - stats.wall_s["proposal_steps"]) / stats.jumps_attempted
    return overhead, stats.wall_s["energy"] / evaluations, stats.jumps_accepted / stats.jumps_attempted


def python_run(molecular_system, state, jumps, energy_s):
    """(overhead s/jump, acceptance) of the Python driver, its energy evaluations priced at energy_s each."""
    simulation = molecular_system.create_simulation(platform="Reference", seed=1, minimize=False)
    simulation.context.setPositions(state.getPositions())
    simulation.context.setVelocities(state.getVelocities())
    proposal = SurrogateForecaster(molecular_system, stride_ps=JUMP_STEPS * STEP, max_frames=1, surrogate=SURROGATE,
                                   timestep=STEP, platform="Reference")
    proposal._integrator = TimedIntegrator(proposal._integrator)
    accelerator = ForecastAccelerator(simulation, proposal, acceptance=GHMCCycle(), seed=1, progress=False)
    start = time.perf_counter()
    accelerator.step(jumps * JUMP_STEPS)
    wall = time.perf_counter() - start
    stats = accelerator.stats
    evaluations = stats.jumps_attempted + 1
    overhead = (wall - evaluations * energy_s - proposal._integrator.seconds) / stats.jumps_attempted
    return overhead, stats.jumps_accepted / stats.jumps_attempted


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jumps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    molecular_system = openmm_forecast.build_system("amber14-obc2")
    state = molecular_system.create_simulation(platform="Reference", seed=3).context.getState(
        getPositions=True, getVelocities=True)
    rows = {key: [] for key in ("energy", "plugin", "plugin_sim", "python", "acc_plugin", "acc_python")}
    for _ in range(args.repeats):
        overhead, energy, acceptance = plugin_run(molecular_system, state, args.jumps, through_simulation=False)
        rows["plugin"].append(overhead)
        rows["energy"].append(energy)
        rows["acc_plugin"].append(acceptance)
        rows["plugin_sim"].append(plugin_run(molecular_system, state, args.jumps, through_simulation=True)[0])
        overhead, acceptance = python_run(molecular_system, state, args.jumps, energy)
        rows["python"].append(overhead)
        rows["acc_python"].append(acceptance)
    median = {key: statistics.median(values) for key, values in rows.items()}
    us = 1e6
    print(f"{args.jumps} jumps of {JUMP_STEPS} x 2 fs, {args.repeats} repeats, medians; target energy "
          f"{median['energy'] * us:.0f} us per evaluation")
    print(f"overhead per jump: plugin (integrator.step) {median['plugin'] * us:.0f} us, plugin (Simulation.step) "
          f"{median['plugin_sim'] * us:.0f} us, Python driver {median['python'] * us:.0f} us")
    print(f"acceptance: plugin {median['acc_plugin']:.3f}, Python driver {median['acc_python']:.3f}")
    print("each repeat (us):", {key: [round(v * us) for v in rows[key]] for key in ("plugin", "plugin_sim", "python")})


if __name__ == "__main__":
    main()
