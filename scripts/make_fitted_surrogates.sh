#!/usr/bin/env bash
# Fitted surrogates (issue 10, item 5): amber-form Systems learned from each expensive target's own MD, shipped
# as openmm_forecast/resources/surrogates/fit-<target>.xml with the fit's report beside it (.json).
#
#   scripts/make_fitted_surrogates.sh            (run from anywhere; works in the repository root)
#
# For each target: Langevin MD of the target itself (2 fs, HBonds, 300 K, friction 1/ps; seeds 1..CHAINS, each
# minimised and equilibrated 5 ps), a frame every FRAME_PS, labelled with the target's energy and forces; then
# fit-surrogate's least-squares fit (the last 20 % of the last chain held out). Resumable: samples.npz in the run
# directory is reused. Environment: OPENMM_FORECAST (the CLI), TARGETS (default "amber14-obc2 gfn2-xtb";
# gfn2-xtb needs the xtb extra).
set -euo pipefail
cd "$(dirname "$0")/.."
CLI="${OPENMM_FORECAST:-openmm-forecast}"
TARGETS="${TARGETS:-amber14-obc2 gfn2-xtb}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p openmm_forecast/resources/surrogates
for target in $TARGETS; do
    case "$target" in
        amber14-obc2) setup=(--setup amber14-obc2); sampling=(--frames 3000 --chains 3 --frame-interval 0.1) ;;
        gfn2-xtb) setup=(--setup gfn2-xtb); sampling=(--frames 1000 --chains 2 --frame-interval 0.05) ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
    out="runs/fit-surrogate/$target"
    "$CLI" fit-surrogate "${setup[@]}" "${sampling[@]}" --out "$out" --overwrite --no-progress
    cp "$out/surrogate.xml" "openmm_forecast/resources/surrogates/fit-$target.xml"
    cp "$out/report.json" "openmm_forecast/resources/surrogates/fit-$target.json"
done

# The barrier-lowered OBC2 surrogate of the demo (issue 18): 5 ns of metadynamics on fit-amber14-obc2, 0.8 of its
# phi/psi free energy surface removed (~2 min).  Measured with ghmc at 2 ps jumps on OBC2: acceptance ~0.3, alpha_L
# entered several times a minute per walker (plain MD: about once in 15 ns).
if [[ " $TARGETS " == *" amber14-obc2 "* ]]; then
    out="runs/lower-barriers/amber14-obc2"
    "$CLI" lower-barriers --setup amber14-obc2 --surrogate openmm_forecast/resources/surrogates/fit-amber14-obc2.xml \
        --ns 5 --strength 0.8 --out "$out" --overwrite --no-progress
    cp "$out/surrogate.xml" openmm_forecast/resources/surrogates/fit-amber14-obc2-lowered.xml
    cp "$out/report.json" openmm_forecast/resources/surrogates/fit-amber14-obc2-lowered.json
fi
