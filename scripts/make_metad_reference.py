"""A converged phi/psi reference for alanine dipeptide, rare basins included: well-tempered metadynamics, then
sampling under the frozen bias, reweighted.  Uses OpenMM's own ``app.Metadynamics``, not this project's sampler.

Usage::

    python scripts/make_metad_reference.py --setup amber14-obc2 --seeds 1 2 --build-ns 3 --sample-ns 6 \\
        --out openmm_forecast/resources/reference/amber14-obc2-metad
    python scripts/make_metad_reference.py --summarize openmm_forecast/resources/reference/amber14-obc2-metad

Per seed, in two phases, each resumable (a killed run continues from its last checkpoint):

1. *Build*: well-tempered metadynamics on phi and psi (OpenMM ``Metadynamics``: Gaussian width 0.35 rad, height
   1 kJ/mol every 1 ps, bias factor 6, 300 K) for ``--build-ns``.  Writes ``seed<S>_bias.npy`` (the bias grid,
   kJ/mol, OpenMM's layout: ``bias[i_psi, i_phi]``) and the state (XML) every 100 ps.
2. *Sample*: plain Langevin dynamics of the System plus that bias, FROZEN (a ``CustomCVForce`` with the same
   periodic ``Continuous2DFunction`` table that Metadynamics builds: ``barriers.tabulated_torsion_bias``) for ``--sample-ns``, phi, psi and the bias
   ``V`` every ``--frame-ps``.  A frame's weight in the unbiased ensemble is ``exp(V / kT)`` (exact for a fixed
   bias).  Writes ``seed<S>_samples.npz`` (``phi_psi`` degrees (n, 2), ``bias_kJ`` (n,), ``weights`` (n,)
   normalised to mean 1) in parts as it goes.

``--summarize`` prints and writes ``summary.json``: basin populations (:data:`openmm_forecast.analysis.BASINS`)
per seed and pooled, with a block-bootstrap interval per seed (blocks of 100 ps: longer than the correlation
of the biased dynamics) and the spread between seeds, and the JS divergence between the seeds' reweighted
histograms (the reference's own convergence evidence).  The setup's defaults: LangevinMiddleIntegrator, 2 fs,
HBonds, friction 1/ps.  Platform: the fastest measured configuration, process pinned to one core when that wins.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

KT_300_KJ = 0.0083144626 * 300.0


def _positions_phi_psi(context):
    from openmm_forecast.analysis import phi_psi_from_positions
    from openmm import unit

    positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return phi_psi_from_positions(positions[None])[0]


def _simulation(molecular_system, configuration, seed, state_file):
    simulation = molecular_system.create_simulation(platform=configuration, seed=seed,
                                                    minimize=not os.path.exists(state_file))
    if os.path.exists(state_file):
        simulation.loadState(state_file)
    return simulation


def _save_atomic(path, write):
    write(path + ".tmp")
    os.replace(path + ".tmp", path)


def run_seed(args, seed):
    import openmm_forecast  # noqa: F401 (torch before openmm)
    import torch
    from openmm import app, unit

    from openmm_forecast import build_system
    from openmm_forecast.barriers import tabulated_torsion_bias, torsion_force
    from openmm_forecast.platforms import fastest_configuration, pin_to_one_core, pinned_core
    from openmm_forecast.systems import PHI_ATOMS, PSI_ATOMS

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    prefix = os.path.join(args.out, f"seed{seed}")
    progress_file, state_file = prefix + "_progress.json", prefix + "_state.xml"
    progress = json.load(open(progress_file)) if os.path.exists(progress_file) else {"built_ps": 0.0}
    configuration, _ = fastest_configuration(build_system(args.setup))
    if configuration.pinned and pinned_core() is None:
        pin_to_one_core()
    steps_per_ps = None
    chunk_ps = 100.0
    start = time.time()
    bias_file = prefix + "_bias.npy"
    if progress["built_ps"] < args.build_ns * 1000.0:
        molecular_system = build_system(args.setup)
        bias_dir = prefix + "_biasdir"  # Metadynamics' own files: a restarted build loads them as its history
        os.makedirs(bias_dir, exist_ok=True)
        variables = [app.BiasVariable(torsion_force(atoms), -np.pi, np.pi, 0.35, periodic=True, gridWidth=72)
                     for atoms in (PHI_ATOMS, PSI_ATOMS)]
        meta = app.Metadynamics(molecular_system.system, variables, molecular_system.temperature, 6.0,
                                1.0 * unit.kilojoule_per_mole, 500, saveFrequency=500, biasDir=bias_dir)
        simulation = _simulation(molecular_system, configuration, seed, state_file)
        steps_per_ps = int(round(1.0 / molecular_system.timestep.value_in_unit(unit.picosecond)))
        while progress["built_ps"] < args.build_ns * 1000.0:
            meta.step(simulation, int(chunk_ps * steps_per_ps))
            progress["built_ps"] += chunk_ps
            free_energy = meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)
            # getFreeEnergy() = -(gamma / (gamma - 1)) x bias, gamma the bias factor
            _save_atomic(bias_file, lambda p: np.save(open(p, "wb"), -free_energy * (6.0 - 1.0) / 6.0))
            _save_atomic(state_file, simulation.saveState)
            _save_atomic(progress_file, lambda p: json.dump(progress, open(p, "w")))
            print(f"seed {seed}: built {progress['built_ps'] / 1000:.1f} ns ({time.time() - start:.0f} s)", flush=True)
        del simulation, meta
    molecular_system = build_system(args.setup)
    molecular_system.system.addForce(tabulated_torsion_bias(np.load(bias_file), (PHI_ATOMS, PSI_ATOMS), 31))
    simulation = _simulation(molecular_system, configuration, seed, state_file)
    steps_per_ps = int(round(1.0 / molecular_system.timestep.value_in_unit(unit.picosecond)))
    samples_file = prefix + "_samples.npz"
    phi_psi, bias = [], []
    if os.path.exists(samples_file):
        old = np.load(samples_file)
        phi_psi, bias = list(old["phi_psi"]), list(old["bias_kJ"])
    frame_steps = int(round(args.frame_ps * steps_per_ps))
    n_frames = int(round(args.sample_ns * 1000.0 / args.frame_ps))
    while len(phi_psi) < n_frames:
        for _ in range(min(int(chunk_ps / args.frame_ps), n_frames - len(phi_psi))):
            simulation.step(frame_steps)
            phi_psi.append(_positions_phi_psi(simulation.context))
            bias.append(simulation.context.getState(getEnergy=True, groups={31}).getPotentialEnergy()
                        .value_in_unit(unit.kilojoule_per_mole))
        bias_array = np.array(bias)
        weights = np.exp((bias_array - bias_array.max()) / KT_300_KJ)
        _save_atomic(samples_file, lambda p: np.savez(open(p, "wb"), phi_psi=np.array(phi_psi, dtype=np.float32),
                                                      bias_kJ=bias_array, weights=weights / weights.mean(),
                                                      frame_ps=args.frame_ps))
        _save_atomic(state_file, simulation.saveState)
        print(f"seed {seed}: sampled {len(phi_psi) * args.frame_ps / 1000:.2f} ns ({time.time() - start:.0f} s)",
              flush=True)


def weighted_populations(phi_psi, weights):
    """Every basin's weighted population, and ``other`` (:func:`openmm_forecast.analysis.basin_populations`)."""
    from openmm_forecast.analysis import basin_populations

    return {name: value["population"] for name, value in basin_populations(phi_psi, weights=weights).items()}


def summarize(directory, block_ps=100.0, n_boot=1000):
    from openmm_forecast.analysis import js_divergence

    files = sorted(f for f in os.listdir(directory) if f.endswith("_samples.npz"))
    if not files:
        sys.exit(f"no seed*_samples.npz in {directory}")
    rng = np.random.default_rng(0)
    per_seed, histograms = {}, []
    edges = np.linspace(-180, 180, 37)
    for name in files:
        data = np.load(os.path.join(directory, name))
        phi_psi, weights = data["phi_psi"].astype(float), data["weights"]
        block = max(1, int(round(block_ps / float(data["frame_ps"]))))
        n_blocks = len(phi_psi) // block
        boots = []
        for _ in range(n_boot):
            pick = rng.integers(0, n_blocks, n_blocks)
            index = (pick[:, None] * block + np.arange(block)).reshape(-1)
            boots.append(weighted_populations(phi_psi[index], weights[index]))
        point = weighted_populations(phi_psi, weights)
        per_seed[name.split("_")[0]] = {
            basin: {"population": value, "interval_95": [float(np.percentile([b[basin] for b in boots], 2.5)),
                                                         float(np.percentile([b[basin] for b in boots], 97.5))]}
            for basin, value in point.items()}
        per_seed[name.split("_")[0]]["frames"] = int(len(phi_psi))
        per_seed[name.split("_")[0]]["effective_frames_kish"] = float(weights.sum() ** 2 / (weights ** 2).sum())
        histograms.append(np.histogram2d(phi_psi[:, 0], phi_psi[:, 1], bins=[edges, edges], weights=weights)[0])
    seeds = list(per_seed)
    pooled = {basin: float(np.mean([per_seed[s][basin]["population"] for s in seeds]))
              for basin in per_seed[seeds[0]] if basin not in ("frames", "effective_frames_kish")}
    summary = {"method": __doc__.split("\n\n")[0], "per_seed": per_seed, "pooled_mean_of_seeds": pooled,
               "spread_between_seeds": {b: float(np.std([per_seed[s][b]["population"] for s in seeds], ddof=1))
                                        if len(seeds) > 1 else None for b in pooled},
               "js_between_seeds": float(js_divergence(histograms[0], histograms[1])) if len(histograms) > 1 else None}
    with open(os.path.join(directory, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print(json.dumps(summary, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", default="amber14-obc2")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--build-ns", type=float, default=3.0)
    parser.add_argument("--sample-ns", type=float, default=6.0)
    parser.add_argument("--frame-ps", type=float, default=0.5)
    parser.add_argument("--out", default="runs/metad-reference")
    parser.add_argument("--summarize", default=None, metavar="DIR")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    for seed in args.seeds:
        run_seed(args, seed)


if __name__ == "__main__":
    main()
