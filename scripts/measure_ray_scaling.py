"""Throughput of walkers in-process and through Ray with 1 and 2 workers (docs/guide/parallel.md).

    python scripts/measure_ray_scaling.py [--setup amber14-obc2] [--walkers 4] [--seconds 20] [--model verlet]

Each configuration samples the same walkers (seeds 1..N, CPU platform, one thread per worker) for the same wall
clock after an untimed warm-up sample; prints simulated ns per day of all walkers together, ns per CPU-hour (CPU
time of the processes that hold the walkers, from /proc: on a machine shared with other work the wall-clock
rate also measures the share of the cores the scheduler gave), Ray's start-up time, the actors' start-up time
and the bytes of one round's checkpoint.  A machine shared with other work gives
noisy numbers: run each configuration more than once (``--repeats``).
"""

import argparse
import json
import os
import pickle
import time

from openmm import unit

import openmm_forecast
from openmm_forecast.distributed import RayBackend
from openmm_forecast.platforms import PlatformConfiguration
from openmm_forecast.walkers import ForecastWalkers, PlainWalkers


def ns_per_day(samples):
    return samples.simulated_ps / 1000.0 / samples.wall_s[-1] * 86400.0


def cpu_seconds(pids):
    """User + system CPU seconds of processes (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", default="amber14-obc2")
    parser.add_argument("--walkers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval-ps", type=float, default=1.0)
    parser.add_argument("--model", default=None, help="forecaster (default: plain MD)")
    parser.add_argument("--stride-fs", type=float, default=10.0, help="baselines' stride (default 10 fs, 4 frames)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    system = openmm_forecast.build_system(args.setup)
    cpu = PlatformConfiguration.create("CPU", {"Threads": 1})
    interval = args.interval_ps * unit.picosecond
    from openmm_forecast.forecasters.registry import BASELINES

    baseline = {"stride_ps": args.stride_fs * unit.femtosecond, "max_frames": 4} if args.model in BASELINES else None
    options = {} if args.model is None else {"forecaster": args.model, "forecaster_options": baseline}
    results = {"setup": args.setup, "walkers": args.walkers, "seconds": args.seconds, "model": args.model, "runs": []}

    def measure(label, walkers):
        walkers.sample(interval, n_samples=1)  # warm-up (first energy, first forecast)
        pids = sorted({entries[-1]["pid"] for entries in walkers.placement()})
        for _ in range(args.repeats):
            cpu = cpu_seconds(pids)
            samples = walkers.sample(interval, wall_seconds=args.seconds)
            cpu = cpu_seconds(pids) - cpu
            results["runs"].append({"configuration": label, "ns_per_day": ns_per_day(samples),
                                    "ns_per_cpu_hour": samples.simulated_ps / 1000.0 / cpu * 3600.0,
                                    "cpu_s": cpu, "wall_s": float(samples.wall_s[-1]),
                                    "samples": len(samples.time_ps), "load_average": os.getloadavg()[0]})
            print(json.dumps(results["runs"][-1]), flush=True)

    if args.model is None:
        measure("in-process", PlainWalkers(system, args.walkers, platform=cpu))
    else:
        measure("in-process", ForecastWalkers(system, args.model, args.walkers, platform=cpu, forecaster_options=baseline))
    for workers in (1, 2):
        start = time.perf_counter()
        backend = RayBackend(num_cpus=2, workers=workers)
        results[f"ray_startup_s_{workers}"] = backend.startup_s
        start = time.perf_counter()
        walkers = backend.walkers(system, args.walkers, platform=cpu, **options)
        results[f"actors_startup_s_{workers}"] = time.perf_counter() - start
        measure(f"ray {workers} worker{'s' if workers > 1 else ''}", walkers)
        results["checkpoint_bytes_per_walker"] = len(pickle.dumps(walkers._checkpoints)) / args.walkers
        backend.shutdown()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
