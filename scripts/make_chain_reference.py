"""A phi/psi reference for a target too costly for metadynamics (ANI-1x): long exact generalised-HMC chains.

Usage::

    taskset -c 1 python scripts/make_chain_reference.py --setup ani1x --surrogate fit-ani1x --jump-fs 500 \\
        --walkers 4 --ns 40 --out openmm_forecast/resources/reference/ani1x-chain
    python scripts/make_chain_reference.py --summarize openmm_forecast/resources/reference/ani1x-chain

Why a chain and not the target's own metadynamics (``scripts/make_metad_reference.py``): ANI-1x costs about 7 ms
per step on one CPU core, so the 6 ns of metadynamics that made the OBC2 reference would take 12 hours per seed.
The chain of ``ForecastAccelerator(acceptance="ghmc")`` (:mod:`openmm_forecast.cycles`) pays one target energy per
jump and samples the target's Boltzmann distribution EXACTLY whatever the surrogate (velocity Verlet on a fixed
System is volume-preserving and reversible; a bad surrogate costs acceptance only): tested on toys with known
distributions in ``tests/test_cycles.py``.  Its samples therefore need no weights (``weights`` are all 1 in the
files, so that the metadynamics reference's readers work unchanged).  It is the project's own sampler, so this
reference is checked against plain MD of the target where plain MD can reach (see the reference's README).

``--walkers`` independent chains (seeds 1, 2, ...) run batched in one process (one core: pin it with taskset),
in chunks of ``--chunk-ps``; after every chunk each chain's frames (``seed<S>_samples.npz``: ``phi_psi`` degrees
(n, 2) float32, ``weights`` (n,), ``frame_ps``; and ``seed<S>_phipsi.npy``, the same angles for JS) and one
checkpoint of all chains (``checkpoint.pkl``) are written atomically, so a killed run continues where it was and
the frames so far are always usable.  ``progress.json`` holds the settings, the acceptance and the wall time.

``--summarize`` writes ``summary.json`` as for the metadynamics reference (basin populations per chain with
block-bootstrap intervals, blocks of ``--block-ps``: longer than the chain's correlation time of the basin
populations, which the summary also reports; the mean of the chains; the JS between the two halves of the
chains).
"""

import argparse
import json
import os
import pickle
import sys
import time

import numpy as np


def _save_atomic(path, write):
    write(path + ".tmp")
    os.replace(path + ".tmp", path)


def run(args):
    import openmm_forecast  # noqa: F401 (torch before openmm)
    import torch
    from openmm import unit

    from openmm_forecast import ForecastWalkers, GHMCCycle, build_system
    from openmm_forecast.platforms import PlatformConfiguration, fastest_configuration

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    progress_file = os.path.join(args.out, "progress.json")
    checkpoint_file = os.path.join(args.out, "checkpoint.pkl")
    settings = {"setup": args.setup, "surrogate": args.surrogate, "jump_fs": args.jump_fs, "walkers": args.walkers,
                "frame_ps": args.frame_ps, "velocity_memory": args.velocity_memory, "temperature_K": 300.0}
    progress = json.load(open(progress_file)) if os.path.exists(progress_file) else {"settings": settings}
    if progress["settings"] != settings:
        sys.exit(f"{progress_file} was made with {progress['settings']}, not {settings}: use another --out")
    molecular_system = build_system(args.setup)
    if "platform" in progress:  # a checkpoint loads only on the platform that wrote it
        recorded = progress["platform"]
        configuration = PlatformConfiguration.create(recorded["platform"], recorded["properties"], recorded["pinned"])
    else:
        configuration, _ = fastest_configuration(molecular_system)
    seeds = list(range(1, args.walkers + 1))
    walkers = ForecastWalkers(molecular_system, args.surrogate, seeds=seeds, platform=configuration,
                              forecaster_options={"stride_ps": args.jump_fs * unit.femtosecond, "max_frames": 1},
                              acceptance=GHMCCycle(velocity_memory=args.velocity_memory))
    frames = {seed: [] for seed in seeds}
    for seed in seeds:
        path = os.path.join(args.out, f"seed{seed}_samples.npz")
        if os.path.exists(path):
            frames[seed] = list(np.load(path)["phi_psi"])
    if os.path.exists(checkpoint_file):
        with open(checkpoint_file, "rb") as handle:
            walkers.restore(pickle.load(handle))
    elif any(frames.values()):
        sys.exit(f"frames in {args.out} but no checkpoint.pkl: remove them or the folder")
    progress.setdefault("wall_s", 0.0)
    progress["platform"] = configuration.as_dict()
    chunk = int(round(args.chunk_ps / args.frame_ps))
    target = int(round(args.ns * 1000.0 / args.frame_ps))
    while len(frames[seeds[0]]) < target:
        start = time.perf_counter()
        samples = walkers.sample(interval=args.frame_ps * unit.picosecond,
                                 n_samples=min(chunk, target - len(frames[seeds[0]])), progress=False)
        progress["wall_s"] += time.perf_counter() - start
        angles = samples.phi_psi(molecular_system.topology)
        for i, seed in enumerate(seeds):
            frames[seed].extend(angles[i].astype(np.float32))
            phi_psi = np.array(frames[seed], dtype=np.float32)
            _save_atomic(os.path.join(args.out, f"seed{seed}_samples.npz"),
                         lambda p: np.savez(open(p, "wb"), phi_psi=phi_psi, weights=np.ones(len(phi_psi)),
                                            frame_ps=args.frame_ps))
            _save_atomic(os.path.join(args.out, f"seed{seed}_phipsi.npy"), lambda p: np.save(open(p, "wb"), phi_psi))
        _save_atomic(checkpoint_file, lambda p: pickle.dump(walkers.checkpoint(), open(p, "wb")))
        stats = walkers.stats().as_dict()  # since this process started
        progress["jumps_this_process"] = stats["jumps_attempted"]
        progress["acceptance_this_process"] = stats["acceptance_rate"]
        progress["ns_per_chain"] = len(frames[seeds[0]]) * args.frame_ps / 1000.0
        _save_atomic(progress_file, lambda p: json.dump(progress, open(p, "w"), indent=2))
        print(f"{progress['ns_per_chain']:.2f} ns per chain, acceptance {progress['acceptance_this_process']:.3f}, "
              f"{progress['wall_s']:.0f} s", flush=True)


def _populations(phi_psi):
    """Every basin's population, and ``other`` (:func:`openmm_forecast.analysis.basin_populations`)."""
    from openmm_forecast.analysis import basin_populations

    return {name: value["population"] for name, value in basin_populations(phi_psi).items()}


def summarize(directory, block_ps, n_boot=1000):
    from openmm_forecast.analysis import BASINS, assign_basins, js_divergence
    from openmm_forecast.efficiency import statistical_inefficiency

    files = sorted((f for f in os.listdir(directory) if f.endswith("_samples.npz")),
                   key=lambda name: int(name[4:].split("_")[0]))
    if len(files) < 2:
        sys.exit(f"fewer than two seed*_samples.npz in {directory}")
    rng = np.random.default_rng(0)
    per_seed, angles = {}, []
    for name in files:
        data = np.load(os.path.join(directory, name))
        phi_psi = data["phi_psi"].astype(float)
        block = max(1, int(round(block_ps / float(data["frame_ps"]))))
        n_blocks = len(phi_psi) // block
        if n_blocks < 4:
            sys.exit(f"{name}: {len(phi_psi)} frames make fewer than 4 blocks of {block_ps} ps")
        boots = [_populations(phi_psi[(rng.integers(0, n_blocks, n_blocks)[:, None] * block
                                       + np.arange(block)).reshape(-1)]) for _ in range(n_boot)]
        seed = name.split("_")[0]
        per_seed[seed] = {basin: {"population": value,
                                  "interval_95": [float(np.percentile([b[basin] for b in boots], 2.5)),
                                                  float(np.percentile([b[basin] for b in boots], 97.5))]}
                          for basin, value in _populations(phi_psi).items()}
        per_seed[seed]["frames"] = int(len(phi_psi))
        per_seed[seed]["ns"] = float(len(phi_psi) * float(data["frame_ps"]) / 1000.0)
        angles.append(phi_psi)
    labels = [assign_basins(a) for a in angles]
    n = min(len(a) for a in angles)
    frame_ps = float(np.load(os.path.join(directory, files[0]))["frame_ps"])
    correlation = {basin.name: float(statistical_inefficiency(np.array([(lab[:n] == i) for lab in labels]))
                                     * frame_ps)
                   for i, basin in enumerate(BASINS)}
    seeds = list(per_seed)
    pooled = {basin: float(np.mean([per_seed[s][basin]["population"] for s in seeds]))
              for basin in per_seed[seeds[0]] if basin not in ("frames", "ns")}
    half = len(angles) // 2
    edges = np.linspace(-180, 180, 37)

    def histogram(group):
        stacked = np.concatenate(group)
        return np.histogram2d(stacked[:, 0], stacked[:, 1], bins=[edges, edges])[0]

    with open(os.path.join(directory, "progress.json")) as handle:
        settings = json.load(handle)
    summary = {"method": __doc__.split("\n\n")[0], "label": "exact ghmc chains", "settings": settings,
               "block_ps": block_ps, "statistical_inefficiency_ps": correlation,
               "per_seed": per_seed, "pooled_mean_of_seeds": pooled,
               "spread_between_seeds": {b: float(np.std([per_seed[s][b]["population"] for s in seeds], ddof=1))
                                        for b in pooled},
               "js_between_halves": float(js_divergence(histogram(angles[:half]), histogram(angles[half:])))}
    with open(os.path.join(directory, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print(json.dumps(summary, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", default="ani1x")
    parser.add_argument("--surrogate", default="fit-ani1x")
    parser.add_argument("--jump-fs", type=float, default=500.0)
    parser.add_argument("--velocity-memory", type=float, default=None,
                        help="a of the partial momentum refresh (0: full refresh, plain HMC; default: "
                        "exp(-friction x jump), as the benchmark's ghmc arms)")
    parser.add_argument("--walkers", type=int, default=4)
    parser.add_argument("--ns", type=float, default=40.0, help="simulated ns per chain")
    parser.add_argument("--frame-ps", type=float, default=1.0)
    parser.add_argument("--chunk-ps", type=float, default=1000.0, help="simulated ps per chain between saves")
    parser.add_argument("--out", default="runs/chain-reference")
    parser.add_argument("--summarize", default=None, metavar="DIR")
    parser.add_argument("--block-ps", type=float, default=2000.0)
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize, args.block_ps)
    else:
        run(args)


if __name__ == "__main__":
    main()
