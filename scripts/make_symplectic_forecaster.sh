#!/usr/bin/env bash
# The structure-preserving forecaster `symplectic` (issue 9, item 2c) on alanine dipeptide, from nothing, on a
# CPU (one thread per step), and the measurements in docs/forecasters.md ("Structure-preserving forecaster"):
#
#   scripts/make_symplectic_forecaster.sh          (run from anywhere; works in the repository root)
#
# 1. UNCONSTRAINED NVE data (amber14-vacuum, constraints none, 300 K, Langevin 1 fs between segments,
#    velocity Verlet 0.25 fs, a frame every 10 fs, 0.2 ps segments every 0.5 ps): training file seed 21
#    (1500 segments), held-out file seed 22 (200 segments).
# 2. Two ways of training the same architecture: trajectory matching with the ordinary trainer
#    (configs/forecaster_symplectic.yaml, 25 minutes of training time), and force/energy matching of its
#    potential (scripts/fit_symplectic_potential.py, 6 minutes).
# 3. `evaluate` of both on the held-out file, and the Metropolis acceptance at 20 fs in the accelerator
#    against the verlet proposal (scripts/symplectic_metropolis.py).
# Nothing is shipped: neither model is accepted by the Metropolis test (see docs/forecasters.md).
set -euo pipefail
cd "$(dirname "$0")/.."
CLI="${OPENMM_FORECAST:-openmm-forecast}"
PYTHON="${PYTHON:-python}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
out=runs/symplectic
mkdir -p "$out"
common=(--mode nve --setup amber14-vacuum --constraints none --timestep 1 --temperature 300 --platform Reference
        --segment-fs 200 --frame-interval-fs 10 --nve-timestep-fs 0.25 --spacing-ps 0.5 --equilibration-ps 50
        --no-progress)
"$CLI" generate "${common[@]}" --seed 21 --segments 1500 --out "$out/ala2-nve-none-train.h5"
"$CLI" generate "${common[@]}" --seed 22 --segments 200 --out "$out/ala2-nve-none-heldout.h5"
"$CLI" train --config configs/forecaster_symplectic.yaml
"$PYTHON" scripts/fit_symplectic_potential.py --data "$out/ala2-nve-none-train.h5" --out "$out/fit_a.pt" --minutes 6 \
    --frames-per-segment 5
"$CLI" evaluate --model "$out/ala2-amber14-vacuum-symplectic.pt" --data "$out/ala2-nve-none-heldout.h5" \
    --out "$out/eval_traj" --baselines ballistic,verlet --max-samples 300 --threads 1
"$CLI" evaluate --model "$out/fit_a.pt" --data "$out/ala2-nve-none-heldout.h5" --out "$out/eval_fit" \
    --baselines verlet --max-samples 300 --threads 1
"$PYTHON" scripts/symplectic_metropolis.py --model "$out/fit_a.pt" --out "$out/metropolis_fit.json" --cycles 100 \
    --verlet-fs 1,2
"$PYTHON" scripts/symplectic_metropolis.py --model "$out/ala2-amber14-vacuum-symplectic.pt" \
    --out "$out/metropolis_traj.json" --cycles 100 --verlet-fs 1
