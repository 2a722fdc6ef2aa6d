#!/usr/bin/env bash
# Reproduce the shipped default forecaster openmm_forecast/resources/models/ala2-amber14-vacuum.pt and the
# comparison in docs/forecasters.md, from nothing, on a CPU (one thread per step; about 85 minutes here,
# of which mdtrajnet trains 66):
#
#   scripts/make_default_forecaster.sh            (run from anywhere; works in the repository root)
#
# 1. NVE data (amber14-vacuum alanine dipeptide, HBonds, 300 K, velocity Verlet 0.5 fs, a frame every 10 fs,
#    0.2 ps segments started every 1 ps of a Langevin chain): a training file (seed 11, 1200 segments)
#    and a held-out file (seed 12, 200 segments).
# 2. Training of each architecture with configs/forecaster_<arch>.yaml (bounded by max_minutes; the
#    mdtrajnet config exports the best model to the shipped path).  Running the script again resumes
#    each run from its checkpoint (and, for a run stopped by max_minutes, trains that much longer).
# 3. Evaluation of all models and the baselines on the held-out file: runs/default/evaluation/.
#
# Environment: ARCHITECTURES (default "mdtrajnet asteroid multiscale_ode"), OPENMM_FORECAST (the CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
CLI="${OPENMM_FORECAST:-openmm-forecast}"
ARCHITECTURES="${ARCHITECTURES:-mdtrajnet asteroid multiscale_ode}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p runs/default
common=(--mode nve --setup amber14-vacuum --constraints HBonds --temperature 300 --platform Reference
        --segment-fs 200 --frame-interval-fs 10 --nve-timestep-fs 0.5 --spacing-ps 1 --equilibration-ps 100
        --no-progress)
"$CLI" generate "${common[@]}" --seed 11 --segments 1200 --out runs/default/ala2-nve-train.h5
"$CLI" generate "${common[@]}" --seed 12 --segments 200 --out runs/default/ala2-nve-heldout.h5
models=()
for arch in $ARCHITECTURES; do
    "$CLI" train --config "configs/forecaster_${arch}.yaml"
    models+=(--model "runs/default/${arch}/model.pt")
done
"$CLI" evaluate "${models[@]}" --data runs/default/ala2-nve-heldout.h5 --out runs/default/evaluation \
    --max-samples 500 --threads 1
