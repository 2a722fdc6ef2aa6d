"""Generate a plain-MD phi/psi reference for a setup: independent seeds, one process each, one frame per ps.

Usage::

    python scripts/make_reference.py --setup amber14-obc2 --ns 5 --seeds 1 2 --out openmm_forecast/resources/reference/amber14-obc2
    python scripts/make_reference.py --setup ani1x --ns 1 --seeds 1 2 --out runs/ref-ml

Each seed writes ``OUT/ala2_<setup>_seed<S>_<ns>ns_phipsi_1ps.npy`` (float32 degrees, shape (n_frames, 2),
phi = atoms 4-6-8-14, psi = 6-8-14-16) and a ``.json`` beside it with the settings, platform, machine and wall
time.  The run is the setup's default dynamics (LangevinMiddleIntegrator, 300 K, friction 1/ps, 2 fs, HBonds),
minimised, equilibrated for ``--equilibration-ps`` (default 100), platform chosen with
:func:`openmm_forecast.fastest_platform` unless ``--platform`` is given.  A partial file is rewritten
(atomically) every ``--save-every-ps`` so that a killed run keeps what it computed; a rerun resumes nothing
(it refuses to overwrite a finished file).
"""

import argparse
import json
import multiprocessing
import os
import platform as host
import sys
import time

import numpy as np

PHI_PSI_ATOMS = ((4, 6, 8, 14), (6, 8, 14, 16))


def dihedrals_degrees(positions_nm, quads=PHI_PSI_ATOMS):
    """Dihedral angles (degrees, [-180, 180)) of ``positions_nm`` (n_frames, n_atoms, 3) for atom quadruples."""
    out = []
    for a, b, c, d in quads:
        b0 = positions_nm[:, a] - positions_nm[:, b]
        b1 = positions_nm[:, c] - positions_nm[:, b]
        b2 = positions_nm[:, d] - positions_nm[:, c]
        b1n = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
        v = b0 - np.sum(b0 * b1n, axis=1, keepdims=True) * b1n
        w = b2 - np.sum(b2 * b1n, axis=1, keepdims=True) * b1n
        x = np.sum(v * w, axis=1)
        y = np.sum(np.cross(b1n, v) * w, axis=1)
        out.append(np.degrees(np.arctan2(y, x)))
    angles = np.stack(out, axis=1)
    return (angles + 180.0) % 360.0 - 180.0


def _save(path, array):
    partial = f"{path}.partial-{os.getpid()}.npy"
    np.save(partial, array.astype(np.float32))
    os.replace(partial, path)


def run_seed(args, seed):
    import openmm_forecast  # noqa: F401  (torch before openmm)
    import torch
    from openmm import unit

    from openmm_forecast import build_system
    from openmm_forecast.platforms import fastest_platform

    torch.set_num_threads(1)
    kwargs = {"potential_file": args.potential_file} if args.potential_file else {}
    molecular_system = build_system(args.setup, **kwargs)
    platform = args.platform or fastest_platform(molecular_system)
    platform_name = platform if isinstance(platform, str) else platform.label
    simulation = molecular_system.create_simulation(platform=platform, seed=seed)
    steps_per_ps = int(round(1.0 / molecular_system.timestep.value_in_unit(unit.picosecond)))
    stem = f"ala2_{args.setup if not args.potential_file else args.potential_file}_seed{seed}_{args.ns:g}ns_phipsi_1ps"
    path = os.path.join(args.out, stem + ".npy")
    if os.path.exists(path):
        raise SystemExit(f"{path} exists; remove it or choose another --out (nothing overwritten)")
    start = time.perf_counter()
    simulation.step(int(round(args.equilibration_ps * steps_per_ps)))
    n_frames = int(round(args.ns * 1000))
    frames = np.empty((n_frames, 2))
    buffer = []
    done = 0
    partial_path = os.path.join(args.out, stem + ".partial.npy")
    last_save = 0
    for frame in range(n_frames):
        simulation.step(steps_per_ps)
        buffer.append(simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        if len(buffer) == 100 or frame == n_frames - 1:
            frames[done : done + len(buffer)] = dihedrals_degrees(np.asarray(buffer))
            done += len(buffer)
            buffer.clear()
            if done - last_save >= args.save_every_ps:
                _save(partial_path, frames[:done])
                last_save = done
                elapsed = time.perf_counter() - start
                print(f"seed {seed}: {done}/{n_frames} ps, {elapsed:.0f} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    _save(path, frames)
    if os.path.exists(partial_path):
        os.remove(partial_path)
    info = {
        "setup": args.setup,
        "potential_file": args.potential_file,
        "seed": seed,
        "simulated_ns": args.ns,
        "equilibration_ps": args.equilibration_ps,
        "frames": n_frames,
        "frame_interval_ps": 1.0,
        "platform": platform_name,
        "integrator": "LangevinMiddleIntegrator 300 K, friction 1/ps, 2 fs, HBonds (the setup's defaults)",
        "wall_seconds": wall,
        "machine": f"{host.processor() or host.machine()}, {os.cpu_count()} cores",
        "openmm_forecast_fingerprint": molecular_system.fingerprint(),
    }
    with open(os.path.join(args.out, stem + ".json"), "w") as handle:
        json.dump(info, handle, indent=2)
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", required=True)
    parser.add_argument("--potential-file", default=None)
    parser.add_argument("--ns", type=float, required=True, help="simulated ns per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--equilibration-ps", type=float, default=100.0)
    parser.add_argument("--save-every-ps", type=int, default=200)
    parser.add_argument("--platform", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(len(args.seeds)) as pool:
        infos = pool.starmap(run_seed, [(args, seed) for seed in args.seeds])
    print(json.dumps(infos, indent=2))


if __name__ == "__main__":
    main()
