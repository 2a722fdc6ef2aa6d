"""The fitted ANI-1x surrogate (issue 17, item 2): thermal samples of ANI-1x alanine dipeptide, then the fit.

    .venv/bin/python scripts/make_ani1x_surrogate.py sample [--chains 3 --frames-per-chain 400]
    .venv/bin/python scripts/make_ani1x_surrogate.py fit --family amber --no-augment
    .venv/bin/python scripts/make_ani1x_surrogate.py augment --family amber
    .venv/bin/python scripts/make_ani1x_surrogate.py fit [--family ...] [--ship]
    .venv/bin/python scripts/make_ani1x_surrogate.py refine --family rbf --learn-from accepted [--ship]
    .venv/bin/python scripts/make_ani1x_surrogate.py check openmm_forecast/resources/surrogates/fit-ani1x.xml

``sample``: Langevin MD of the ``ani1x`` setup itself (2 fs, HBonds, 300 K, friction 1/ps; seeds 1, 2, ...,
each minimised and equilibrated 5 ps), a frame every 50 fs labelled with ANI-1x's energy and forces; one file per
chain in runs/ani1x-surrogate/ (resumable: a chain already written is not sampled again).  About 13 ms per
ANI-1x step on one core: a chain of 400 frames is ~6 minutes.

``augment``: configurations of a fitted surrogate's own Langevin MD (300 K, 100 fs apart, runs started from
training frames of ANI-1x) labelled with ANI-1x energies and forces (one evaluation each, no ANI-1x MD): cheap
coverage of the region the surrogate's jumps visit (runs/ani1x-surrogate/augment.npz).

``refine``: the self-learning warm-up (:func:`openmm_forecast.surrogate_fitting.self_learning_refinement`) from
``fit-<family>``: chains of 500 fs jumps (full momentum refresh) from training frames, each jump one ANI-1x
energy and forces; the states they evaluated (``--learn-from proposals``) or accepted join the training frames and
the surrogate is refitted, ``--rounds`` times (runs/ani1x-surrogate/fit-<family>-refined-<learn-from>).

``check``: stability (100 ps of each surrogate's own Langevin MD from held-out frames: bonds kept, energy finite)
and cost per 2 fs step on the Reference and CPU platforms of surrogate files.

``fit``: :func:`openmm_forecast.surrogate_fitting.fit_surrogate` on the pooled chains and augmented frames, the
last chain (pure ANI-1x MD) held out, writing runs/ani1x-surrogate/fit-<family>/surrogate.xml and report.json;
``--ship`` copies them to openmm_forecast/resources/surrogates/fit-ani1x.xml/.json.
"""

import argparse
import glob
import json
import os
import shutil
import sys
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from openmm_forecast import build_system  # noqa: E402
from openmm_forecast.surrogate_fitting import FAMILIES  # noqa: E402

RUN = "runs/ani1x-surrogate"


def sample(args):
    from openmm_forecast.surrogate_fitting import sample_target

    os.makedirs(RUN, exist_ok=True)
    target = build_system("ani1x")
    for chain in range(args.chains):
        path = os.path.join(RUN, f"chain{chain + 1}.npz")
        if os.path.exists(path):
            print(f"{path} exists: kept", flush=True)
            continue
        start = time.time()
        positions, energies, forces = sample_target(target, args.frames_per_chain, n_chains=1,
                                                    frame_interval_ps=0.05, equilibration_ps=5.0,
                                                    seed=1 + chain, progress=False)
        np.savez(path + ".partial.npz", positions=positions, energies=energies, forces=forces,
                 fingerprint=np.array(target.fingerprint()))
        os.replace(path + ".partial.npz", path)
        print(f"{path}: {len(positions)} frames in {time.time() - start:.0f} s", flush=True)


SPREAD_HELD_OUT_STARTS = 8
"""Starts of ``spread.npz`` (scripts/make_ani1x_spread.py) held out with the last chain when ``--spread`` is given."""


def load_samples(augmented=True, spread=False):
    """Pooled (positions, energies, forces): the chains, then the surrogate-sampled frames (if any), then with
    ``spread`` the ANI-1x frames of every basin (scripts/make_ani1x_spread.py) but their last
    :data:`SPREAD_HELD_OUT_STARTS` starts, then the held-out frames (those starts, and the last chain: pure ANI-1x
    MD), and the number of held-out frames."""
    paths = sorted(glob.glob(os.path.join(RUN, "chain*.npz")))
    if len(paths) < 2:
        sys.exit(f"need at least two chains in {RUN}: run the 'sample' step first")
    extra = os.path.join(RUN, "augment.npz")
    train = [np.load(p) for p in paths[:-1] + ([extra] if augmented and os.path.exists(extra) else [])]
    held = [np.load(paths[-1])]
    if spread:
        path = os.path.join(RUN, "spread.npz")
        if not os.path.exists(path):
            sys.exit(f"--spread: no {path}; run scripts/make_ani1x_spread.py first")
        frames = np.load(path)
        out = frames["start"] > frames["start"].max() - SPREAD_HELD_OUT_STARTS
        keys = ("positions", "energies", "forces")
        train.append({key: frames[key][~out] for key in keys})
        held.insert(0, {key: frames[key][out] for key in keys})
    data = train + held
    arrays = tuple(np.concatenate([d[key] for d in data]) for key in ("positions", "energies", "forces"))
    return arrays, sum(len(d["energies"]) for d in held)


def augment(args):
    """ANI-1x labels for configurations of the surrogate's own Langevin MD started from ANI-1x frames."""
    from openmm import unit

    from openmm_forecast._runtime import openmm as mm
    from openmm_forecast.potential_training import label_configurations

    (positions, _, _), n_validation = load_samples(augmented=False)
    starts = positions[:-n_validation]
    surrogate = mm.XmlSerializer.deserialize(open(os.path.join(RUN, f"fit-{args.family}", "surrogate.xml")).read())
    rng = np.random.default_rng(5)
    frames = []
    per_run = args.frames // args.runs
    for run in range(args.runs):
        integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
        integrator.setRandomNumberSeed(100 + run)
        context = mm.Context(surrogate, integrator, mm.Platform.getPlatformByName("Reference"))
        context.setPositions(starts[rng.integers(len(starts))])
        context.setVelocitiesToTemperature(300 * unit.kelvin, 100 + run)
        for _ in range(per_run):
            integrator.step(50)
            frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    frames = np.array(frames)
    start = time.time()
    energies, forces = label_configurations(build_system("ani1x").system, frames)
    print(f"{len(frames)} surrogate frames labelled by ANI-1x in {time.time() - start:.0f} s", flush=True)
    np.savez(os.path.join(RUN, "augment.npz"), positions=frames, energies=energies, forces=forces)


def step_cost_ms(system, positions, steps=500, platform="Reference"):
    """CPU milliseconds per 2 fs velocity Verlet step of ``system`` on ``platform`` (CPU: one thread; median of 3)."""
    from openmm import unit

    from openmm_forecast._runtime import openmm as mm
    from openmm_forecast.integrators import velocity_verlet_integrator

    integrator = velocity_verlet_integrator(2 * unit.femtosecond)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName(platform),
                         {"Threads": "1"} if platform == "CPU" else {})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(10)
    times = []
    for _ in range(3):
        start = time.process_time()
        integrator.step(steps)
        times.append((time.process_time() - start) / steps * 1e3)
    return float(np.median(times))


def fit(args):
    from openmm import unit

    from openmm_forecast.surrogate_fitting import fit_surrogate

    (positions, energies, forces), n_validation = load_samples(augmented=not args.no_augment, spread=args.spread)
    target = build_system("ani1x")
    base = build_system("amber14-vacuum", constraints=target.constraints).system
    out = os.path.join(RUN, f"fit-{args.family}" + ("-spread" if args.spread else ""))
    system, report = fit_surrogate(target, positions, energies, forces, base, family=args.family,
                                   validation_fraction=n_validation / len(energies), predict_jumps=[jump * unit.femtosecond for jump in args.jumps],
                                   predict_frames=args.predict_frames, progress=True)
    finish(args, out, system, report, target, base, positions[0])


def refine(args):
    """Self-learning warm-up from the fitted surrogate of ``--family``: chains of ANI-1x-tested jumps, refits."""
    from openmm import unit

    from openmm_forecast._runtime import openmm as mm
    from openmm_forecast.surrogate_fitting import self_learning_refinement

    (positions, energies, forces), n_validation = load_samples(augmented=False, spread=args.spread)
    target = build_system("ani1x")
    base = build_system("amber14-vacuum", constraints=target.constraints).system
    fitted = f"fit-{args.family}" + ("-spread" if args.spread else "")
    start = os.path.join(RUN, fitted)
    surrogate = mm.XmlSerializer.deserialize(open(os.path.join(start, "surrogate.xml")).read())
    with open(os.path.join(start, "report.json")) as handle:
        start_report = json.load(handle)
    split = len(energies) - n_validation
    system, report = self_learning_refinement(
        target, base, (positions[:split], energies[:split], forces[:split]),
        (positions[split:], energies[split:], forces[split:]), args.jump * unit.femtosecond, surrogate_system=surrogate,
        family=args.family, rounds=args.rounds, jumps_per_round=args.jumps_per_round, n_chains=args.chains,
        learn_from=args.learn_from, predict_jumps=[jump * unit.femtosecond for jump in args.jumps],
        predict_frames=args.predict_frames, progress=True)
    first = report["self_learning"]["rounds"][0]
    first["validation"] = {k: start_report["after"]["validation"][k] for k in ("energy_std", "force_rmse")}
    first["predicted_acceptance"] = {k: v["acceptance"] for k, v in start_report["predicted_acceptance"].items()}
    for entry in report["self_learning"]["rounds"]:
        print(json.dumps(entry))
    finish(args, os.path.join(RUN, f"{fitted}-refined-{args.learn_from}"), system, report, target, base,
           positions[0])


def finish(args, out, system, report, target, base, x0):
    """Cost per step, provenance; writes OUT/surrogate.xml and report.json; ``--ship`` copies them."""
    from openmm import unit

    from openmm_forecast._runtime import openmm as mm

    x0 = x0 * unit.nanometer
    report["cost_ms_per_step"] = {"surrogate": step_cost_ms(system, x0), "amber14_vacuum": step_cost_ms(base, x0),
                                  "ani1x": step_cost_ms(target.system, x0, steps=50)}
    report["target"] = {"setup": "ani1x", "potential": target.potential, "fingerprint": target.fingerprint()}
    report["samples"] = {"chains": len(glob.glob(os.path.join(RUN, "chain*.npz"))), "frame_interval_ps": 0.05,
                         "spread": bool(getattr(args, "spread", False)),
                         "spread_held_out_starts": SPREAD_HELD_OUT_STARTS if getattr(args, "spread", False) else 0}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "surrogate.xml"), "w") as handle:
        handle.write(mm.XmlSerializer.serialize(system))
    with open(os.path.join(out, "report.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    print(json.dumps({key: report[key] for key in ("family", "rounds", "fit_seconds", "after", "cost_ms_per_step")},
                     indent=1))
    for jump, prediction in report.get("predicted_acceptance", {}).items():
        print(f"{jump} fs: predicted acceptance {prediction['acceptance']:.3f} +- {prediction['stderr']:.3f}, std dH "
              f"{prediction['dH_std_kJ']:.2f} kJ/mol (surrogate's own {prediction['surrogate_dH_std_kJ']:.2f})")
    if args.ship:
        target_dir = "openmm_forecast/resources/surrogates"
        shutil.copy(os.path.join(out, "surrogate.xml"), os.path.join(target_dir, "fit-ani1x.xml"))
        shutil.copy(os.path.join(out, "report.json"), os.path.join(target_dir, "fit-ani1x.json"))
        print(f"shipped as {target_dir}/fit-ani1x.xml")


def check(args):
    """Stability and cost of surrogate files: ``--ps`` of velocity Verlet (2 fs, the jumps' integrator, no
    thermostat) from a held-out ANI-1x frame; Langevin MD of each (300 K, 1/ps, 2 fs, Reference) for ``--ps`` from
    held-out ANI-1x frames, every bond of the molecule kept within 0.05 nm of its start and no two atoms closer
    than 0.07 nm, energy finite; ms per 2 fs Verlet step on Reference and CPU (one thread)."""
    from openmm import unit

    from openmm_forecast._runtime import openmm as mm
    from openmm_forecast.integrators import velocity_verlet_integrator

    target = build_system("ani1x")
    bonds = np.array([(a.index, b.index) for a, b in target.topology.bonds()])
    starts = np.load(sorted(glob.glob(os.path.join(RUN, "chain*.npz")))[-1])["positions"]
    for path in args.surrogates:
        system = mm.XmlSerializer.deserialize(open(path).read())
        costs = {platform: round(step_cost_ms(system, starts[0] * unit.nanometer, platform=platform), 4)
                 for platform in ("Reference", "CPU")}
        print(f"{path}: ms per 2 fs step {costs} (load average {os.getloadavg()[0]:.1f})", flush=True)
        integrator = velocity_verlet_integrator(2 * unit.femtosecond)  # what a jump integrates, here for 100 ps
        context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
        context.setPositions(starts[0])
        context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
        for picosecond in range(int(args.ps)):
            try:
                integrator.step(500)
            except mm.OpenMMException:
                break
        kinetic = context.getState(getEnergy=True).getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        dof = 3 * system.getNumParticles() - system.getNumConstraints()
        print(f"  velocity Verlet from held-out frame 0: {picosecond + 1} ps, temperature at the end "
              f"{2 * kinetic / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)):.0f} K",
              flush=True)
        for seed in args.seeds:
            integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
            integrator.setRandomNumberSeed(seed)
            context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
            x0 = starts[(seed * 97) % len(starts)]
            context.setPositions(x0)
            context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
            length0 = np.linalg.norm(x0[bonds[:, 0]] - x0[bonds[:, 1]], axis=1)
            worst, closest, energies, verdict = 0.0, np.inf, [], "intact"
            for picosecond in range(int(args.ps)):
                try:
                    integrator.step(500)
                except mm.OpenMMException as error:
                    verdict = f"failed at {picosecond} ps: {error}"
                    break
                state = context.getState(getPositions=True, getEnergy=True)
                x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
                if not (np.isfinite(x).all() and np.isfinite(energies[-1])):
                    verdict = f"non-finite at {picosecond} ps"
                    break
                worst = max(worst, float(np.abs(np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1) - length0).max()))
                closest = min(closest, float((np.linalg.norm(x[:, None] - x[None], axis=-1) + np.eye(len(x))).min()))
                if worst > 0.05 or closest < 0.07:
                    verdict = f"broken at {picosecond} ps"
                    break
            print(f"  seed {seed}: {verdict} after {len(energies)} ps; largest bond change {worst:.3f} nm, closest "
                  f"atoms {closest:.3f} nm, energy {np.mean(energies):.0f} +- {np.std(energies):.0f} kJ/mol", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--chains", type=int, default=3)
    s.add_argument("--frames-per-chain", type=int, default=400)
    s.set_defaults(func=sample)
    f = sub.add_parser("fit")
    f.add_argument("--family", default="amber", choices=sorted(FAMILIES))
    f.add_argument("--no-augment", action="store_true", help="leave out the surrogate-sampled frames")
    f.add_argument("--spread", action="store_true", help="add the ANI-1x frames of every basin of spread.npz "
                   "(scripts/make_ani1x_spread.py), its last starts held out with the last chain")
    f.add_argument("--jumps", type=float, nargs="*", default=[20.0, 100.0, 500.0])
    f.add_argument("--predict-frames", type=int, default=150)
    f.add_argument("--ship", action="store_true")
    f.set_defaults(func=fit)
    r = sub.add_parser("refine", help="self-learning warm-up from fit-FAMILY (its surrogate.xml and report.json)")
    r.add_argument("--family", default="rbf", choices=sorted(FAMILIES))
    r.add_argument("--jump", type=float, default=500.0, help="fs per jump of the warm-up chains")
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--jumps-per-round", type=int, default=400)
    r.add_argument("--chains", type=int, default=8)
    r.add_argument("--learn-from", default="proposals", choices=("proposals", "accepted"))
    r.add_argument("--spread", action="store_true", help="start from fit-FAMILY-spread, with spread.npz's frames")
    r.add_argument("--jumps", type=float, nargs="*", default=[100.0, 500.0, 1000.0])
    r.add_argument("--predict-frames", type=int, default=150)
    r.add_argument("--ship", action="store_true")
    r.set_defaults(func=refine)
    c = sub.add_parser("check", help="stability (Langevin MD) and cost per step of surrogate files")
    c.add_argument("surrogates", nargs="+")
    c.add_argument("--ps", type=float, default=100.0)
    c.add_argument("--seeds", type=int, nargs="*", default=[1, 2])
    c.set_defaults(func=check)
    g = sub.add_parser("augment")
    g.add_argument("--family", default="amber", help="the fit whose surrogate samples the configurations")
    g.add_argument("--frames", type=int, default=1600)
    g.add_argument("--runs", type=int, default=16)
    g.set_defaults(func=augment)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
