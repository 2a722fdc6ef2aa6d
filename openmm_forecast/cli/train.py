"""``openmm-forecast train``: train a learned forecaster from a YAML config (see configs/forecaster_*.yaml)."""

import json


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a learned forecaster on NVE data (YAML config)",
        description="Train a forecaster architecture on NVE segments (openmm-forecast generate --mode nve). "
        "Writes RUN/config.yaml, RUN/metrics.json, RUN/checkpoint.pt (resumable: run the same command again) "
        "and RUN/model.pt (the best model, loadable with load_forecaster).",
    )
    parser.add_argument("--config", required=True, help="YAML training config (unknown keys are refused)")
    parser.add_argument("--out", default=None, help="run directory (overrides the config's 'out')")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key; VALUE is read as YAML (repeatable), e.g. --set max_minutes=10",
    )
    parser.set_defaults(func=run)


def parse_overrides(items):
    """``['key=value', ...]`` -> dict, values parsed as YAML."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def run(args):
    from ..training import TrainingConfig, train

    overrides = parse_overrides(args.set)
    if args.out is not None:
        overrides["out"] = args.out
    config = TrainingConfig.from_yaml(args.config, **overrides)
    result = train(config)
    best = result["best_validation"] or {}
    print(json.dumps({
        "model": result["model"],
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "stopped": result["stopped"],
        "validation_position_rmsd_A": best.get("position_rmsd_A"),
        "ballistic_position_rmsd_A": best.get("ballistic_position_rmsd_A"),
        "spans_ps": best.get("spans_ps"),
    }, indent=1))
    return 0 if result["model"] else 1
