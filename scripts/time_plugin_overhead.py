"""Per-jump overhead of the plugin's ghmc cycle and of the Python driver's, beyond one target energy and the
surrogate's steps, with the target on Reference and on CPU; a JSON report.

amber14-obc2 alanine dipeptide as the target (on each ``--platforms`` entry; CPU with one thread), the shipped
fit-amber14-obc2 surrogate in a private Reference Context (both drivers' default), 500 fs jumps of 250 velocity
Verlet steps of 2 fs, ``ghmc``: one target energy per jump.  Per jump, in the same run and on the same platform:

    overhead = (wall clock - target energy evaluations - the surrogate's integrator.step calls) / jumps

The plugin times its energy evaluations and its surrogate's steps itself (``wall_s`` ``energy`` and
``proposal_steps``); the Python driver's surrogate steps are timed by wrapping its integrator, and its energy
evaluations are priced at the plugin's per-evaluation time of the same repeat and platform (the same C++
computation; one per jump and one at the start: any further evaluation the Python driver makes counts as its
overhead).  Three runs per repeat, interleaved so that all see the same load: the plugin under
``integrator.step(n)`` (one call), the plugin under ``Simulation.step(n)`` (OpenMM's Python loop of 10-step
calls, the plain usage) and the Python driver (``ForecastAccelerator.step``).  The overhead scales with the
machine's load like everything else: the report records the load average before and after (``os.getloadavg``),
medians and minima over the repeats, and the plugin's own split of its overhead (``plugin_split_us``).

Then the walkers of the benchmark's two engines (``walkers_ms_per_jump``): ``PluginWalkers`` and the Python
driver's ``ForecastWalkers`` of the same surrogate, rule, jump and seeds (``--walkers``), in alternating blocks of
``--block-jumps`` jumps per walker, wall clock per jump and the process's CPU time over its wall clock (a share
below 1 is time the machine gave to other processes).

Usage: python scripts/time_plugin_overhead.py [--jumps 100] [--repeats 5] [--platforms Reference CPU]
       [--walkers 4] [--block-jumps 20] [--out overhead.json]
"""

import argparse
import datetime
import json
import os
import statistics
import time

from openmm import app, unit

import openmm_forecast
from openmm_forecast import ForecastAccelerator, ForecastIntegrator
from openmm_forecast.benchmark import machine_info
from openmm_forecast.cycles import GHMCCycle
from openmm_forecast.forecasters.surrogate import SurrogateForecaster
from openmm_forecast.platforms import PlatformConfiguration
from openmm_forecast.walkers import ForecastWalkers, PluginWalkers

SURROGATE = "fit-amber14-obc2"
STEP = 2.0 * unit.femtosecond
JUMP_STEPS = 250
US = 1e6


def configuration(name):
    """The target's platform configuration: CPU with one thread (its force sums deterministic, one core's work)."""
    return PlatformConfiguration.create(name, {"Threads": 1} if name == "CPU" else None)


class TimedIntegrator:
    """Wraps the Python driver's surrogate integrator: its step calls' wall clock."""

    def __init__(self, integrator):
        self.integrator, self.seconds = integrator, 0.0

    def step(self, steps):
        start = time.perf_counter()
        self.integrator.step(steps)
        self.seconds += time.perf_counter() - start


def plugin_run(molecular_system, state, jumps, platform, through_simulation):
    """One plugin run: overhead (s/jump), energy (s/evaluation), acceptance and the plugin's split (s/jump)."""
    integrator = ForecastIntegrator(SURROGATE, STEP, 300 * unit.kelvin, 1 / unit.picosecond, acceptance="ghmc",
                                    jump=JUMP_STEPS * STEP, seed=1)
    simulation = app.Simulation(molecular_system.topology, molecular_system.system, integrator, platform.platform(),
                                platform.properties_dict)
    simulation.context.setPositions(state.getPositions())
    simulation.context.setVelocities(state.getVelocities())
    start = time.perf_counter()
    if through_simulation:
        simulation.step(jumps * JUMP_STEPS)
    else:
        integrator.step(jumps * JUMP_STEPS)
    wall = time.perf_counter() - start
    stats = integrator.getStatistics()
    wall_s, n = stats.wall_s, stats.jumps_attempted
    # What the plugin's timers see of its overhead.  Every energy evaluation lies inside the timer of the transfer
    # (the one at the start) or of the guard (one per jump), so their sum less all evaluations is exact.
    split = {
        "refresh_projection_guards_and_test": (wall_s["transfer"] + wall_s["guard"] - wall_s["energy"]) / n,
        "surrogate_context_transfer": (wall_s["forecast"] - wall_s["proposal_steps"]) / n,
    }
    return {"overhead": (wall - wall_s["energy"] - wall_s["proposal_steps"]) / n,
            "energy": wall_s["energy"] / (n + 1),  # one per jump, one at the start
            "proposal_steps": wall_s["proposal_steps"] / n,
            "acceptance": stats.jumps_accepted / n, "split": split}


def python_run(molecular_system, state, jumps, platform, energy_s):
    """One Python driver run: overhead (s/jump), its energy evaluations priced at ``energy_s`` each, and acceptance."""
    simulation = molecular_system.create_simulation(platform=platform, seed=1, minimize=False)
    simulation.context.setPositions(state.getPositions())
    simulation.context.setVelocities(state.getVelocities())
    proposal = SurrogateForecaster(molecular_system, stride_ps=JUMP_STEPS * STEP, max_frames=1, surrogate=SURROGATE,
                                   timestep=STEP, platform="Reference")
    proposal._integrator = TimedIntegrator(proposal._integrator)
    accelerator = ForecastAccelerator(simulation, proposal, acceptance=GHMCCycle(), seed=1, progress=False)
    start = time.perf_counter()
    accelerator.step(jumps * JUMP_STEPS)
    wall = time.perf_counter() - start
    n = accelerator.stats.jumps_attempted
    return {"overhead": (wall - (n + 1) * energy_s - proposal._integrator.seconds) / n,
            "proposal_steps": proposal._integrator.seconds / n,
            "acceptance": accelerator.stats.jumps_accepted / n}


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "repeats": values}


def measure(molecular_system, state, name, jumps, repeats):
    platform = configuration(name)
    rows = {"plugin": [], "plugin_simulation_step": [], "python_driver": [], "energy": [], "proposal_steps": []}
    acceptance = {"plugin": [], "python_driver": []}
    split = []
    for _ in range(repeats):
        plugin = plugin_run(molecular_system, state, jumps, platform, through_simulation=False)
        simulation = plugin_run(molecular_system, state, jumps, platform, through_simulation=True)
        python = python_run(molecular_system, state, jumps, platform, plugin["energy"])
        rows["plugin"].append(plugin["overhead"] * US)
        rows["plugin_simulation_step"].append(simulation["overhead"] * US)
        rows["python_driver"].append(python["overhead"] * US)
        rows["energy"].append(plugin["energy"] * US)
        rows["proposal_steps"].append(plugin["proposal_steps"] * US)
        acceptance["plugin"].append(plugin["acceptance"])
        acceptance["python_driver"].append(python["acceptance"])
        split.append({key: value * US for key, value in plugin["split"].items()})
    return {
        "target_platform": {"name": platform.name, "properties": platform.properties_dict},
        "overhead_us_per_jump": {key: summary(rows[key]) for key in ("plugin", "plugin_simulation_step", "python_driver")},
        "target_energy_us_per_evaluation": summary(rows["energy"]),
        "surrogate_steps_us_per_jump": summary(rows["proposal_steps"]),
        "acceptance": {key: statistics.median(values) for key, values in acceptance.items()},
        "plugin_split_us": {key: statistics.median(row[key] for row in split) for key in split[0]},
    }


def measure_walkers(molecular_system, name, n_walkers, block_jumps, repeats):
    """ms per jump and CPU share of PluginWalkers and ForecastWalkers, alternating blocks of ``block_jumps`` jumps."""
    platform = configuration(name)
    jump = JUMP_STEPS * STEP
    engines = {
        "plugin": PluginWalkers(molecular_system, SURROGATE, n_walkers, platform=platform, acceptance="ghmc", jump=jump),
        "python_driver": ForecastWalkers(molecular_system, SURROGATE, n_walkers, platform=platform, acceptance="ghmc",
                                         forecaster_options={"stride_ps": jump, "max_frames": 1, "timestep": STEP}),
    }
    per_jump = {key: [] for key in engines}
    cpu_share = {key: [] for key in engines}
    for _ in range(repeats):
        for key, walkers in engines.items():
            wall, cpu = time.perf_counter(), time.process_time()
            walkers.step(block_jumps * JUMP_STEPS)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            per_jump[key].append(wall / (block_jumps * n_walkers) * 1e3)
            cpu_share[key].append(cpu / wall)
    return {"walkers": n_walkers, "jumps_per_walker_per_block": block_jumps,
            "ms_per_jump": {key: summary(values) for key, values in per_jump.items()},
            "cpu_share": {key: statistics.median(values) for key, values in cpu_share.items()},
            "acceptance": {"plugin": engines["plugin"].stats().as_dict()["acceptance_rate"],
                           "python_driver": engines["python_driver"].stats().as_dict()["acceptance_rate"]}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jumps", type=int, default=100, help="jumps per run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the three runs (default %(default)s)")
    parser.add_argument("--platforms", nargs="+", default=["Reference", "CPU"],
                        help="the target's platforms (default %(default)s)")
    parser.add_argument("--walkers", type=int, default=4, help="walkers per engine (default %(default)s)")
    parser.add_argument("--block-jumps", type=int, default=20,
                        help="jumps per walker in each block of the walkers' comparison (default %(default)s)")
    parser.add_argument("--out", default=None, help="JSON report (default: print only)")
    args = parser.parse_args()
    molecular_system = openmm_forecast.build_system("amber14-obc2")
    state = molecular_system.create_simulation(platform="Reference", seed=3).context.getState(
        getPositions=True, getVelocities=True)
    machine = machine_info()
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {key: machine[key] for key in ("cpu_model", "cpu_cores", "gpus", "versions")},
        "load_average_before": os.getloadavg(),
        "setup": {"target": "amber14-obc2", "surrogate": SURROGATE, "surrogate_platform": "Reference",
                  "rule": "ghmc", "jump_fs": JUMP_STEPS * STEP.value_in_unit(unit.femtosecond),
                  "surrogate_steps_per_jump": JUMP_STEPS, "jumps_per_run": args.jumps, "repeats": args.repeats},
        "platforms": {},
        "walkers_ms_per_jump": {},
    }
    for name in args.platforms:
        report["platforms"][name] = measure(molecular_system, state, name, args.jumps, args.repeats)
        row = report["platforms"][name]
        overhead = row["overhead_us_per_jump"]
        print(f"{name}: overhead per jump, median (min) of {args.repeats}: plugin {overhead['plugin']['median']:.0f} "
              f"({overhead['plugin']['min']:.0f}) us, plugin under Simulation.step "
              f"{overhead['plugin_simulation_step']['median']:.0f} ({overhead['plugin_simulation_step']['min']:.0f}) us, "
              f"Python driver {overhead['python_driver']['median']:.0f} ({overhead['python_driver']['min']:.0f}) us; "
              f"target energy {row['target_energy_us_per_evaluation']['median']:.0f} us, surrogate steps "
              f"{row['surrogate_steps_us_per_jump']['median']:.0f} us per jump; acceptance {row['acceptance']}")
        print(f"  plugin's split (us/jump): { {k: round(v, 1) for k, v in row['plugin_split_us'].items()} }")
    for name in args.platforms:
        row = report["walkers_ms_per_jump"][name] = measure_walkers(molecular_system, name, args.walkers,
                                                                    args.block_jumps, args.repeats)
        print(f"{name}, {args.walkers} walkers: ms per jump, median (min) of {args.repeats} blocks: " + ", ".join(
            f"{key} {value['median']:.2f} ({value['min']:.2f}), CPU share {row['cpu_share'][key]:.2f}"
            for key, value in row["ms_per_jump"].items()))
    report["load_average_after"] = os.getloadavg()
    print(f"load average before {report['load_average_before']}, after {report['load_average_after']}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
