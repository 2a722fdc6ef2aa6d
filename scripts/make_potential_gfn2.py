"""Make the shipped ``ala2-ani-gfn2`` potential: fit-potential to GFN2-xTB, then ship it with its provenance.

Usage: python scripts/make_potential_gfn2.py [--config configs/potential_ala2_gfn2.yaml] [--run-dir DIR] [--no-ship]

1. ``fit_potential`` with the config: amber14-vacuum samples the configurations, GFN2-xTB (tblite, the
   ``gfn2-xtb`` setup) labels them, one ANI model is trained (resumable: rerun the same command);
2. for perspective, amber14-vacuum's own errors against xTB on the same held-out configurations (energy
   errors after removing their mean: the two energy zeros differ);
3. ``RUN_DIR/potential.pt`` is copied to ``openmm_forecast/resources/potentials/ala2-ani-gfn2.pt`` with the
   held-out errors, the MD check, the timings and the recipe in its ``metadata.json``.

Writes ``RUN_DIR/ship_report.json`` and prints it.  One thread: OMP_NUM_THREADS (tblite) defaults to 1 here,
torch's threads come from the config.  Needs the xtb extra (``pip install 'openmm-forecast[xtb]'``).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite's OpenMP runtime loads

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from openmm_forecast import build_system  # noqa: E402
from openmm_forecast._io import atomic_write_path, write_json  # noqa: E402
from openmm_forecast.potential_training import fit_potential, label_configurations, load_config  # noqa: E402
from openmm_forecast.systems import resource_path  # noqa: E402
from openmm_forecast.xtb import tblite_version  # noqa: E402

NAME = "ala2-ani-gfn2"


def amber_against_reference(positions, energies, forces):
    """amber14-vacuum (no constraints) errors against the reference labels: energy (mean removed) and forces."""
    amber_e, amber_f = label_configurations(build_system("amber14-vacuum", constraints=None).system, positions)
    error_e = amber_e - energies
    return {
        "configurations": int(len(positions)),
        "energy_rmse_after_mean_shift_kJ_per_mol": float(np.std(error_e)),
        "force_rmse_kJ_per_mol_nm": float(np.sqrt(np.mean((amber_f - forces) ** 2))),
        "force_rms_reference_kJ_per_mol_nm": float(np.sqrt(np.mean(forces**2))),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/potential_ala2_gfn2.yaml")
    parser.add_argument("--run-dir", default=None, help="output directory (default: run_dir of the config)")
    parser.add_argument("--no-ship", action="store_true", help="fit and compare only; do not write the shipped file")
    args = parser.parse_args()
    config = load_config(args.config)
    run_dir = args.run_dir or config.run_dir
    started = time.perf_counter()
    metrics = fit_potential(config, run_dir=run_dir)
    with np.load(os.path.join(run_dir, "dataset.npz")) as data:
        held_out = data["validation"]
        names = [str(name) for name in data["source_names"]]
        source = data["source"][held_out]
        positions, energies, forces = (data[key][held_out] for key in ("positions", "energies", "forces"))
    amber = {"all": amber_against_reference(positions, energies, forces)}
    for code, name in enumerate(names):
        if (source == code).any():
            amber[name] = amber_against_reference(positions[source == code], energies[source == code],
                                                  forces[source == code])
    md_check = dict(metrics.get("md_check", {}))
    own_md = md_check.pop("errors_on_own_trajectory", None)
    report = {
        "name": NAME,
        "recipe": f"python scripts/make_potential_gfn2.py --config {args.config} (seed {config.seed}; one thread)",
        "reference": f"GFN2-xTB, tblite {tblite_version()}, vacuum (setup {metrics['reference_setup']}); "
                     f"configurations sampled with {metrics['sampling_setup']}",
        "timings_s": {
            "sampling": metrics["sampling_seconds"], "labelling": metrics["labelling_seconds"],
            "training": metrics["training"]["train_seconds"], "script_wall": time.perf_counter() - started,
            "note": "wall clock on the shared 2-core development CPU under heavy load (load average ~20)",
        },
        "unlabelled_configurations": metrics["unlabelled_configurations"],
        "training": metrics["training"],
        "train_configurations": metrics["train_configurations"],
        "held_out": {"all": metrics["validation"], **metrics["validation_by_source"]},
        "amber14_vacuum_against_reference_on_held_out": amber,
        "md_check": md_check,
        "errors_on_own_md": own_md,
    }
    write_json(os.path.join(run_dir, "ship_report.json"), report)
    if not args.no_ship:
        extra = {"metadata.json": ""}
        module = torch.jit.load(os.path.join(run_dir, "potential.pt"), map_location="cpu", _extra_files=extra)
        metadata = json.loads(extra["metadata.json"])
        metadata.update(report)
        path = resource_path(f"potentials/{NAME}.pt")
        with atomic_write_path(path) as temporary:
            torch.jit.save(module, temporary, _extra_files={"metadata.json": json.dumps(metadata, indent=1)})
        report["shipped"] = path
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
