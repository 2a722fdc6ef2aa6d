"""``openmm-forecast simulate``: plain OpenMM MD of a target (a named setup or your own System), writing a trajectory
and a log."""

import json
import os
import sys
import time

from openmm import app

from .._io import check_output_directory, write_json
from ..reporters import BlowUpReporter
from ._common import NON_NEGATIVE, POSITIVE, SEED, add_setup_arguments, setup_from_args, steps

OUTPUTS = ("trajectory.dcd", "log.csv", "topology.pdb", "summary.json")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "simulate",
        help="plain MD of a target: a named setup or your own System (trajectory, log, final state)",
        description="Plain OpenMM MD (Langevin, the setup's temperature/friction/time step). Writes "
        "OUT/trajectory.dcd, OUT/topology.pdb, OUT/log.csv (StateDataReporter) and OUT/summary.json.",
    )
    add_setup_arguments(parser)
    parser.add_argument("--time", type=POSITIVE, required=True, help="simulated time in ps")
    parser.add_argument("--report-interval", type=POSITIVE, default=1.0, help="ps between trajectory frames (default 1)")
    parser.add_argument("--equilibration", type=NON_NEGATIVE, default=10.0, help="ps of equilibration before recording")
    parser.add_argument("--seed", type=SEED, default=1, help="random seed (thermostat and velocities)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.set_defaults(func=run)


def run(args):
    n_steps = steps(args.time, args.timestep / 1000, "--time")
    interval = steps(args.report_interval, args.timestep / 1000, "--report-interval")
    equilibration = steps(args.equilibration, args.timestep / 1000, "--equilibration", allow_zero=True)
    check_output_directory(args.out, "--out", OUTPUTS)
    molecular_system = setup_from_args(args)
    simulation = molecular_system.create_simulation(platform=args.platform, seed=args.seed)
    os.makedirs(args.out, exist_ok=True)  # only now: refused input leaves no directory behind
    guard = BlowUpReporter(simulation.system, molecular_system.temperature, interval)
    simulation.reporters.append(guard)  # first: a state that blew up is written nowhere (equilibration included)
    simulation.step(equilibration)
    simulation.currentStep = 0
    simulation.context.setTime(0.0)
    state = simulation.context.getState(getPositions=True)
    with open(os.path.join(args.out, "topology.pdb"), "w") as handle:
        app.PDBFile.writeFile(molecular_system.topology, state.getPositions(), handle)
    simulation.reporters.append(app.DCDReporter(os.path.join(args.out, "trajectory.dcd"), interval))
    simulation.reporters.append(
        app.StateDataReporter(
            os.path.join(args.out, "log.csv"), interval, step=True, time=True, potentialEnergy=True,
            kineticEnergy=True, totalEnergy=True, temperature=True, speed=True,
        )
    )
    progress = app.StateDataReporter(
        sys.stderr, max(interval, n_steps // 20), step=True, progress=True,
        remainingTime=True, speed=True, totalSteps=n_steps,
    )
    simulation.reporters.append(progress)
    start = time.perf_counter()
    simulation.step(n_steps)
    guard.check_simulation(simulation)
    wall = time.perf_counter() - start
    simulated_ns = n_steps * args.timestep * 1e-6
    summary = {
        "setup": molecular_system.setup,
        "source": molecular_system.source,
        "potential": molecular_system.potential,
        "platform": simulation.context.getPlatform().getName(),
        "n_atoms": molecular_system.n_atoms,
        "steps": n_steps,
        "simulated_ns": simulated_ns,
        "wall_seconds": wall,
        "ns_per_day": simulated_ns / wall * 86400.0,
        "frames": n_steps // interval,
        "seed": args.seed,
        "temperature_K": args.temperature,
        "timestep_fs": args.timestep,
        "friction_per_ps": args.friction,
        "constraints": molecular_system.constraints,
        "system_fingerprint": molecular_system.fingerprint(),
    }
    write_json(os.path.join(args.out, "summary.json"), summary)
    print(json.dumps(summary, indent=2))
    return 0
