#!/usr/bin/env bash
# The three seed forecaster architectures (mdtrajnet, asteroid, multiscale_ode) trained on ANI-1x's OWN dynamics
# (issue 17, item 4) and measured briefly as benchmark arms on --setup ani1x.  They are expected to lose; the
# point is that they exist, run, and have honest numbers (docs/results/2026-12-07-ani1x-forecasters/).
#
#   scripts/make_ani1x_forecasters.sh            (run from anywhere; works in the repository root)
#
# 1. NVE data of the ani1x setup (alanine dipeptide, ANI-1x through openmm-torch, HBonds, 300 K, CPU platform,
#    one thread; velocity Verlet 0.5 fs, a frame every 10 fs, 0.1 ps segments = the configs' 10 fs stride x
#    5 frames plus a history of 2, one segment every 0.2 ps of a Langevin chain after 2 ps of equilibration):
#    training seed 41 (ANI1X_SEGMENTS segments, default 85: what 15 minutes of one shared core gave at
#    ~20-40 ms per ANI-1x step), held-out seed 43 (ANI1X_HELDOUT, default 8).  ANI-1x costs 7-40 ms per step
#    here, so the data are ~1000 times smaller than the amber14-vacuum data of make_default_forecaster.sh.
#    Generation is resumable: a rerun extends or completes the files.
# 2. Training with configs/forecaster_<arch>_ani1x.yaml (max_minutes 6 each, one thread, resumable: a rerun of a
#    finished run does nothing).
# 3. A brief benchmark per architecture on --setup ani1x (2 walkers, 60 s of wall clock per arm, no reference):
#    plain MD against the network under the rules that accept a non-structure-preserving network
#    (tolerance, dynamics); metropolis and ghmc are refused for such a network unless
#    --allow-inexact-metropolis, which is NOT given: the refusal is recorded in runs/ani1x-forecasters/refusals.txt.
#    Each refusal check is run once (its .log.txt is kept).
#    A benchmark whose report.json exists is not run again.
#
# multiscale_ode_lr2e-4 is multiscale_ode with learning rate 0.0002: at the amber config's 0.001 it diverged on
# these data after epoch 1.
#
# Environment: OPENMM_FORECAST (the CLI), ARCHITECTURES (default "mdtrajnet asteroid multiscale_ode
# multiscale_ode_lr2e-4"),
# ANI1X_SEGMENTS, ANI1X_HELDOUT, WALL_SECONDS (default 60), CORE (default 0: everything runs pinned to it).
set -euo pipefail
cd "$(dirname "$0")/.."
CLI="${OPENMM_FORECAST:-openmm-forecast}"
ARCHITECTURES="${ARCHITECTURES:-mdtrajnet asteroid multiscale_ode multiscale_ode_lr2e-4}"
CORE="${CORE:-0}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENMM_CPU_THREADS=1
run() { taskset -c "$CORE" "$CLI" "$@"; }
out=runs/ani1x-forecasters
mkdir -p "$out"
common=(--setup ani1x --mode nve --constraints HBonds --temperature 300 --platform CPU --threads 1
        --segment-fs 100 --frame-interval-fs 10 --nve-timestep-fs 0.5 --spacing-ps 0.2 --equilibration-ps 2
        --no-progress)
run generate "${common[@]}" --seed 41 --segments "${ANI1X_SEGMENTS:-85}" --out "$out/ani1x-train.h5"
run generate "${common[@]}" --seed 43 --segments "${ANI1X_HELDOUT:-8}" --out "$out/ani1x-heldout.h5"
for arch in $ARCHITECTURES; do
    run train --config "configs/forecaster_${arch}_ani1x.yaml"
done
for arch in $ARCHITECTURES; do
    model="$out/${arch}/model.pt"
    if [ ! -f "$out/bench-${arch}/report.json" ]; then
        run benchmark --setup ani1x --no-reference --platform CPU --threads 1 --pin no --walkers 2 \
            --wall-seconds "${WALL_SECONDS:-60}" --no-progress --overwrite \
            --arm plain --arm "${arch}=${model}:tolerance" --arm "${arch}-dyn=${model}:dynamics" \
            --out "$out/bench-${arch}"
    fi
    for rule in metropolis ghmc; do
        # Expected to be refused (exit code != 0) without --allow-inexact-metropolis; record the message.
        log="$out/refused-${arch}-${rule}.log"
        [ -f "$log.txt" ] && continue
        if run benchmark --setup ani1x --no-reference --platform CPU --threads 1 --pin no --walkers 1 \
                --wall-seconds 5 --no-progress --overwrite --arm plain --arm "${arch}=${model}:${rule}" \
                --out "$out/refused-${arch}-${rule}" > "$log" 2>&1; then
            echo "${arch} ${rule}: NOT refused (see $log)" > "$log.txt"
        else
            echo "${arch} ${rule}: refused: $(grep -v '^\s*$' "$log" | tail -1)" > "$log.txt"
        fi
    done
done
cat "$out"/refused-*.log.txt > "$out/refusals.txt"
cat "$out/refusals.txt"
