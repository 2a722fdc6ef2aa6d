"""``openmm-forecast fit-potential``: fit an ANI potential to a reference setup's energies and forces."""

import json


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "fit-potential",
        help="fit an ANI-architecture ML potential to a reference setup (TorchScript for the 'ml' setup)",
        description="Sample configurations of the config's setup (Langevin MD at several temperatures plus "
        "displaced frames), label them with its energies and forces (or those of the config's reference_setup, "
        "e.g. gfn2-xtb), train a torchani ANI model and export it "
        "as RUN_DIR/potential.pt (nm -> kJ/mol, loadable by openmm-torch and build_system('ml', potential_file=...)). "
        "Writes RUN_DIR/config.yaml, dataset.npz, checkpoint.pt, metrics.json, history.json and training.png. "
        "Rerunning the same command resumes from the checkpoint.",
    )
    parser.add_argument("--config", required=True, help="YAML configuration (see configs/potential_ala2.yaml)")
    parser.add_argument("--run-dir", default=None, help="output directory (default: run_dir of the config)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args):
    from ..potential_training import fit_potential, load_config

    config = load_config(args.config)
    metrics = fit_potential(config, run_dir=args.run_dir, progress=not args.no_progress)
    summary = {
        "potential_file": metrics["potential_file"],
        "validation": {k: metrics["validation"][k] for k in ("energy_rmse_kJ_per_mol", "force_rmse_kJ_per_mol_nm")},
        "training": metrics["training"],
    }
    if "md_check" in metrics:
        summary["md_check_stable"] = metrics["md_check"]["stable"]
    print(json.dumps(summary, indent=1))
    return 0
