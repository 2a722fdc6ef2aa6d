#!/usr/bin/env bash
# Force-informed, energy-aware forecasters (issue 9): data, training and the evaluation against the shipped model.
#
#   scripts/make_force_forecasters.sh            (run from anywhere; works in the repository root)
#
# 1. NVE data (alanine dipeptide, HBonds, 300 K, velocity Verlet 0.5 fs, a frame every 10 fs, 0.2 ps segments):
#    amber14-vacuum: training seed 21 (VAC_SEGMENTS segments, one every 1 ps of a Langevin chain), held-out
#    seed 23 (300); amber14-obc2: training seed 31 (OBC2_SEGMENTS, one every 0.2 ps), held-out seed 33 (150).
#    Validation: a split by segment of the training file (split_seed 1), recorded in the model's metadata with
#    the seeds.  Generation is resumable: a rerun extends or completes the files.
# 2. Training with configs/forecaster_mdtrajnet_forces_{vacuum,obc2}.yaml (bounded by max_minutes, resumable).
#    The forces of every data frame are computed once (cached in the run directory).
# 3. Evaluation of the new model and the shipped ala2-amber14-vacuum, in one run, on the held-out file:
#    runs/forecast/evaluation-vacuum/; for OBC2 the new model against the learned surrogate fit-amber14-obc2
#    (velocity Verlet 2 fs on it) and the amber14-vacuum surrogate: runs/forecast/evaluation-obc2/.
#
# Environment: OPENMM_FORECAST (the CLI), VAC_SEGMENTS (default 12000), OBC2_SEGMENTS (default 1500),
# SETUPS (default "vacuum obc2").
set -euo pipefail
cd "$(dirname "$0")/.."
CLI="${OPENMM_FORECAST:-openmm-forecast}"
SETUPS="${SETUPS:-vacuum obc2}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p runs/forecast
common=(--mode nve --constraints HBonds --temperature 300 --platform Reference --segment-fs 200
        --frame-interval-fs 10 --nve-timestep-fs 0.5 --equilibration-ps 100 --no-progress)
for setup in $SETUPS; do
    if [ "$setup" = vacuum ]; then
        "$CLI" generate "${common[@]}" --setup amber14-vacuum --spacing-ps 1 --seed 21 \
            --segments "${VAC_SEGMENTS:-12000}" --out runs/forecast/vac-train.h5
        "$CLI" generate "${common[@]}" --setup amber14-vacuum --spacing-ps 1 --seed 23 --segments 300 \
            --out runs/forecast/vac-heldout.h5
    else
        "$CLI" generate "${common[@]}" --setup amber14-obc2 --spacing-ps 0.2 --seed 31 \
            --segments "${OBC2_SEGMENTS:-1500}" --out runs/forecast/obc2-train.h5
        "$CLI" generate "${common[@]}" --setup amber14-obc2 --spacing-ps 0.2 --seed 33 --segments 150 \
            --out runs/forecast/obc2-heldout.h5
    fi
    "$CLI" train --config "configs/forecaster_mdtrajnet_forces_${setup}.yaml"
done
case " $SETUPS " in *" vacuum "*)
    "$CLI" evaluate --model runs/forecast/mdtrajnet-forces-vacuum/model.pt --model ala2-amber14-vacuum \
        --data runs/forecast/vac-heldout.h5 --out runs/forecast/evaluation-vacuum --max-samples 500 --threads 1 ;;
esac
case " $SETUPS " in *" obc2 "*)
    "$CLI" evaluate --model runs/forecast/mdtrajnet-forces-obc2/model.pt --model fit-amber14-obc2 \
        --baselines constant,ballistic,verlet,surrogate --data runs/forecast/obc2-heldout.h5 --out runs/forecast/evaluation-obc2 --max-samples 500 --threads 1 ;;
esac
