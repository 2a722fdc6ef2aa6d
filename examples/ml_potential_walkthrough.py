"""Walk-through: an ML potential for alanine dipeptide, then plain MD against accelerated MD with it.

Steps (each prints what it did):

1. Fit a small ANI-architecture potential to amber14 (vacuum) energies and forces with the machinery of
   ``openmm-forecast fit-potential`` (:func:`openmm_forecast.fit_potential`): a few minutes on one CPU
   core with the reduced settings below (configs/potential_ala2.yaml is the full recipe).  Skip it with
   ``--potential-file`` to use a potential you already have (for example runs/potential_ala2/potential.pt).
2. Build the 'ml' setup with it: ``build_system('ml', potential_file=...)`` (an openmm-torch TorchForce;
   same topology, HBonds constraints, 2 fs, 300 K).
3. Benchmark, in this process and for the same wall-clock budget each: plain OpenMM MD with the ML
   potential, and forecast-accelerated walkers (:func:`openmm_forecast.benchmark.run_benchmark`).  The forecaster
   must be made for the 'ml' setup: pass ``--model`` with one trained on NVE data of that setup
   (``openmm-forecast generate --setup ml --potential-file ...`` then ``openmm-forecast train``).  The
   default is the ``ballistic`` baseline over one 2 fs step (free flight, velocities unchanged): the
   energy guard accepts a fraction of those jumps and restores the rest, which shows the machinery at
   work on the ML potential, not a speed-up (a jump costs an energy evaluation, as much as the MD step it
   replaces).  The ``verlet`` baseline drives it too (exact dynamics, every jump accepted), at the price
   of one ML force evaluation per 0.25 fs inside each jump.
4. Compare: speeds, acceptance and temperatures; JS divergences only with ``--reference`` (plain-MD phi/psi of
   this very potential, e.g. from ``scripts/make_reference.py``): against another potential's runs they would
   measure the fitted potential's error as well as the sampling.

Run: .venv/bin/python examples/ml_potential_walkthrough.py [--potential-file FILE] [--model MODEL]
Outputs: runs/ml_walkthrough/ (potential/, benchmark/report.json, ramachandran.png; convergence.png with --reference).
"""

import argparse
import json
import os

import torch
from openmm import unit

import openmm_forecast
from openmm_forecast.benchmark import BenchmarkArm, format_summary, run_benchmark
from openmm_forecast.potential_training import config_from_dict

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--out", default="runs/ml_walkthrough", help="output directory (default %(default)s)")
parser.add_argument("--potential-file", default=None, help="an existing potential (skips the fit)")
parser.add_argument("--fit-minutes", type=float, default=3.0, help="training time of the fit (default %(default)s)")
parser.add_argument("--model", default="ballistic", help="forecaster for the 'ml' setup (default: ballistic baseline)")
parser.add_argument("--walkers", type=int, default=4, help="replicas per arm (default %(default)s)")
parser.add_argument("--wall-seconds", type=float, default=60.0, help="wall clock per arm (default %(default)s)")
parser.add_argument("--reference", default=None, help="reference phi/psi of this potential (default: none, the fitted "
                    "potential has no shipped reference: speed and acceptance only)")
args = parser.parse_args()
torch.set_num_threads(1)

# 1. Fit a small potential (resumable: rerunning continues from the checkpoint in the run directory).
potential_file = args.potential_file
if potential_file is None:
    config = config_from_dict({
        "setup": "amber14-vacuum",
        "run_dir": os.path.join(args.out, "potential"),
        "sampling": {"states": [{"temperature_K": 300.0, "frames": 1500}, {"temperature_K": 600.0, "frames": 800}],
                     "distorted_frames": 500},
        "model": {"ensemble_size": 1, "hidden_layers": [64, 48, 32]},
        "training": {"max_minutes": args.fit_minutes, "max_epochs": 60, "patience": 6},
        "md_check": {"time_ps": 2.0},
    })
    metrics = openmm_forecast.potential_training.fit_potential(config)
    potential_file = metrics["potential_file"]
    print("fitted potential:", potential_file)
    print(json.dumps({k: metrics["validation"][k] for k in ("energy_rmse_kJ_per_mol", "force_rmse_kJ_per_mol_nm")},
                     indent=1))
    if "md_check" in metrics:
        print("short MD with it stable:", metrics["md_check"]["stable"])

# 2. The 'ml' setup: alanine dipeptide driven by the fitted potential through openmm-torch.
system = openmm_forecast.build_system("ml", potential_file=potential_file)
print(f"setup {system.setup}: {system.n_atoms} atoms, potential {system.potential}")

# 3. Plain MD and accelerated walkers, same wall clock, same process.
options = {"stride_ps": 0.002, "max_frames": 1} if args.model in ("verlet", "ballistic", "constant") else None
arms = [BenchmarkArm("plain", system), BenchmarkArm("hybrid", system, args.model, options)]
report = run_benchmark(
    arms, os.path.join(args.out, "benchmark"), n_walkers=args.walkers, wall_seconds=args.wall_seconds,
    reference=args.reference or False, sample_interval=1.0 * unit.picosecond,
)

# 4. Compare.
print(format_summary(report))
print("basin populations (plain, hybrid):")
for basin in ("beta", "alpha_R", "alpha_L"):
    print(f"  {basin:8s} {report['arms']['plain']['basins'][basin]['population']:.3f}  "
          f"{report['arms']['hybrid']['basins'][basin]['population']:.3f}")
print("report and plots in", os.path.join(args.out, "benchmark"))
