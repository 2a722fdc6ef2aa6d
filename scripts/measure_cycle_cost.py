"""Cost of one ghmc cycle against the existing Metropolis cycle and against its limit (issue 17, item 1).

Target (default; ``--setup``, ``--surrogate`` and ``--jump-fs`` choose others, e.g. ``--setup ani1x --surrogate
fit-ani1x --jump-fs 500 --no-torch`` for the ML regime): ``amber14-obc2`` alanine dipeptide on the CPU platform (``Threads=1``, the process pinned to one core
before any Context exists) and on the Reference platform; proposal: the shipped learned surrogate
``fit-amber14-obc2`` (velocity Verlet at 2 fs on the Reference platform), jumps of 498 fs (249 steps).
Both cycles run in the same process, interleaved, and are driven as the benchmark drives them
(``step`` of 1 ps per sample): ghmc (``acceptance='ghmc'``) and Metropolis with one Langevin step of
the target per cycle (``segment_steps=1, jumps_per_cycle=1``).

The limit is one target energy plus the jump's surrogate steps, both timed inside the runs: every
``getState`` that evaluates the target (energy or forces) is timed by a proxy of the Simulation's Context,
the surrogate steps are the accelerator's 'forecast' time; the rest of a cycle is the Metropolis cycle's
Langevin step and Python.  Separately, ``getState(getEnergy=True)`` after ``setPositions`` is timed with and
without forces, to show whether energy-only calls are cheaper; the same comparison is made for a TorchForce
target (``ml`` with the shipped ``ala2-ani-amber14`` ANI-architecture potential) on both platforms.

Run::

    python scripts/measure_cycle_cost.py --core 0 --picoseconds 200 --repeats 2

It prints a table (milliseconds per jump) and writes nothing.
"""

import argparse
import os
import time

os.environ.setdefault("OPENMM_CPU_THREADS", "1")  # the CPU platform's default Threads, read when it loads


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", type=int, default=0, help="the one core the process is pinned to (default 0)")
    parser.add_argument("--picoseconds", type=int, default=200, help="simulated ps per arm and repeat (default 200)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each arm (default 2)")
    parser.add_argument("--platforms", nargs="+", default=["CPU", "Reference"])
    parser.add_argument("--no-torch", action="store_true", help="skip the TorchForce energy-only comparison")
    parser.add_argument("--setup", default="amber14-obc2", help="the target (default amber14-obc2)")
    parser.add_argument("--surrogate", default="fit-amber14-obc2", help="the proposal's surrogate (default fit-amber14-obc2)")
    parser.add_argument("--jump-fs", type=float, default=498.0, help="jump length in fs (default 498)")
    return parser.parse_args()


def energy_costs(simulation, n=200, blocks=10):
    """(energy only, energy and forces, setPositions alone) in ms per call, on a Simulation's own Context.

    Each call follows a ``setPositions`` (no cached result); the three kinds alternate in ``blocks`` blocks of
    ``n / blocks`` calls and the median block is kept, so that a busy machine slows all three alike.
    """
    import numpy as np
    from openmm import unit

    context = simulation.context
    saved = context.getState(getPositions=True, getVelocities=True)
    positions = saved.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    kinds = (dict(getEnergy=True), dict(getEnergy=True, getForces=True), dict(getPositions=True))
    times = [[] for _ in kinds]
    for _ in range(blocks):
        for kind, record in zip(kinds, times):
            start = time.perf_counter()
            for _ in range(n // blocks):
                context.setPositions(positions)
                context.getState(**kind)
            record.append((time.perf_counter() - start) / (n // blocks) * 1e3)
    context.setState(saved)
    return tuple(float(np.median(record)) for record in times)


class TimedContext:
    """A Context proxy that counts and times the ``getState`` calls that evaluate the potential."""

    def __init__(self, context):
        self.context, self.evaluations, self.seconds = context, 0, 0.0

    def getState(self, *args, **kwargs):  # noqa: N802 (OpenMM's name)
        if not (kwargs.get("getEnergy") or kwargs.get("getForces")):
            return self.context.getState(*args, **kwargs)
        start = time.perf_counter()
        try:
            return self.context.getState(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.evaluations += 1

    def __getattr__(self, name):
        return getattr(self.context, name)


def run_arm(accelerator, picoseconds, steps_per_ps):
    """Wall seconds, jumps, acceptance, the accelerator's time split and the target's evaluations (count, s)."""
    from openmm_forecast.accelerator import AcceleratorStats

    accelerator.stats = AcceleratorStats()
    timed = accelerator.simulation.context = TimedContext(accelerator.simulation.context)
    start = time.perf_counter()
    try:
        for _ in range(picoseconds):
            accelerator.step(steps_per_ps)
    finally:
        wall = time.perf_counter() - start
        accelerator.simulation.context = timed.context
    stats = accelerator.stats.as_dict()
    return wall, stats["jumps_attempted"], stats["acceptance_rate"], stats["wall_s"], timed.evaluations, timed.seconds


def main():
    args = parse_args()
    os.sched_setaffinity(0, {args.core})  # before any Context (the CPU platform's threads inherit it)
    import numpy as np

    import openmm_forecast  # noqa: F401  (torch before openmm)
    from openmm_forecast import ForecastAccelerator, SurrogateForecaster, build_system

    from openmm import unit

    system = build_system(args.setup)
    steps_per_ps = int(round(1.0 / system.timestep.value_in_unit(unit.picosecond)))
    surrogate = SurrogateForecaster(system, stride_ps=args.jump_fs / 1000.0, max_frames=1, surrogate=args.surrogate)
    print(f"{args.setup}, surrogate {args.surrogate}; pinned to core {args.core}; "
          f"OPENMM_CPU_THREADS={os.environ['OPENMM_CPU_THREADS']}; {surrogate.steps_per_stride} surrogate steps per jump")
    rows = []
    for platform in args.platforms:
        arms = {}
        for name, options in (("ghmc", dict(acceptance="ghmc")),
                              ("metropolis", dict(acceptance="metropolis", segment_steps=1, jumps_per_cycle=1))):
            simulation = system.create_simulation(platform=platform, seed=7)
            accelerator = ForecastAccelerator(simulation, surrogate, molecular_system=system, seed=7, progress=False,
                                              **options)
            accelerator.step(steps_per_ps * 10)  # warm-up
            arms[name] = accelerator
        context = arms["ghmc"].simulation.context
        threads = context.getPlatform().getPropertyValue(context, "Threads") if platform == "CPU" else "-"
        energy_ms, energy_forces_ms, set_positions_ms = energy_costs(arms["ghmc"].simulation)
        print(f"\n{platform} (Threads {threads}): target energy only {energy_ms:.3f} ms, energy+forces "
              f"{energy_forces_ms:.3f} ms, setPositions+getPositions {set_positions_ms:.3f} ms")
        results = {name: [] for name in arms}
        for _ in range(args.repeats):
            for name, accelerator in arms.items():
                results[name].append(run_arm(accelerator, args.picoseconds, steps_per_ps))
        for name, runs in results.items():
            for wall, jumps, acceptance, split, evaluations, evaluation_s in runs:
                per_jump = 1e3 * wall / jumps
                surrogate_ms = 1e3 * split["forecast"] / jumps
                target_ms = 1e3 * evaluation_s / jumps  # every evaluation of the target, per jump
                integration_ms = 1e3 * split["integration"] / jumps
                limit = 1e3 * evaluation_s / evaluations + surrogate_ms  # one evaluation + the surrogate steps
                overhead = per_jump - surrogate_ms - target_ms - integration_ms
                rows.append((platform, name, acceptance, per_jump, surrogate_ms, target_ms, overhead, per_jump / limit))
                print(f"  {name:10s} acceptance {acceptance:.3f}  {per_jump:6.2f} ms/jump = surrogate "
                      f"{surrogate_ms:.2f} + target evaluations {target_ms:.2f} ({evaluations / jumps:.2f} per jump) + "
                      f"target steps {integration_ms:.2f} + Python {overhead:.2f}  | limit {limit:.2f} ms, ratio "
                      f"{per_jump / limit:.2f}")
    if not args.no_torch:
        ml = build_system("ml", potential_file="ala2-ani-amber14")
        for platform in args.platforms:
            simulation = ml.create_simulation(platform=platform, seed=7, minimize=False)
            energy_ms, energy_forces_ms, _ = energy_costs(simulation, n=100)
            print(f"\nTorchForce ala2-ani-amber14 on {platform}: energy only {energy_ms:.2f} ms, energy+forces "
                  f"{energy_forces_ms:.2f} ms ({energy_ms / energy_forces_ms:.2f}x)")
    print("\nratios (cycle / (one target energy + surrogate steps)):",
          {f"{p}/{n}": round(float(np.mean([r[7] for r in rows if r[:2] == (p, n)])), 2) for p, n, *_ in rows})


if __name__ == "__main__":
    main()
