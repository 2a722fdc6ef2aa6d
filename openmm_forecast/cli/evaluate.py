"""``openmm-forecast evaluate``: errors, energy changes and speed of forecasters on held-out NVE data."""

from ._common import SEED, add_threads_argument, apply_threads, integer


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate forecasters and baselines on held-out NVE segments",
        description="Position RMSD, velocity RMSE, |U' - U|, |H' - H| (raw and projected onto constraints), "
        "fractions within 1 and 2 kT, mean H' - H, Metropolis acceptance, an energy budget per force term and time per "
        "call, for each model and the constant, ballistic and verlet baselines, at every span. Writes "
        "OUT/report.json, OUT/rmsd_vs_span.png, OUT/energy_change_hist.png and OUT/energy_vs_span.png.",
    )
    parser.add_argument(
        "--model", action="append", default=[],
        help="model file or shipped model name, or a learned surrogate System (a shipped name such as fit-amber14-obc2 "
        "or a .xml file from fit-surrogate: velocity Verlet at 2 fs on it) (repeatable; none: baselines only, at the "
        "data's frame interval)",
    )
    parser.add_argument("--data", required=True, help="NVE data file (a held-out file, or a model's training file)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--baselines", default="constant,ballistic,verlet",
        help="comma-separated baselines (constant, ballistic, verlet: the data's System at its NVE time step, "
        "surrogate: amber14 in vacuum at 2 fs), or 'none' (default %(default)s)",
    )
    parser.add_argument("--max-samples", type=integer(1), default=500, help="most start states (default %(default)s)")
    parser.add_argument("--seed", type=SEED, default=1, help="seed of the start-state draw (default %(default)s)")
    parser.add_argument("--no-timing", action="store_true", help="skip the wall-clock measurements")
    parser.add_argument("--timing-batch-sizes", default="1,16,256", type=batch_sizes,
                        help="comma-separated batch sizes of the timing (default %(default)s)")
    parser.add_argument("--platform", default="Reference", help="OpenMM platform for energies and verlet")
    parser.add_argument("--potential-file", default=None,
                        help="for data of the 'ml' setup: its TorchScript potential (a path or a shipped name)")
    parser.add_argument("--device", default="cpu", help="torch device of the learned models (default cpu)")
    add_threads_argument(parser)
    parser.set_defaults(func=run)


def batch_sizes(text):
    """``type=`` of ``--timing-batch-sizes``: comma-separated integers >= 1."""
    return [integer(1)(item) for item in text.split(",") if item.strip()]


def run(args):
    from ..evaluation import evaluate

    apply_threads(args)
    baselines = [] if args.baselines.strip() == "none" else [b.strip() for b in args.baselines.split(",") if b.strip()]
    report = evaluate(
        args.model, args.data, args.out, baselines=baselines, max_samples=args.max_samples, seed=args.seed,
        timing=not args.no_timing, platform=args.platform, device=args.device,
        timing_batch_sizes=args.timing_batch_sizes,
        potential_file=args.potential_file,
    )
    print(f"{'forecaster':<24}{'span fs':>8}{'RMSD A':>10}{'|dH| med':>10}{'<1kT':>7}{'proj |dH|':>10}{'<1kT':>7}"
          f"{'<dH>':>8}")
    for label, result in report["forecasters"].items():
        for span in result["spans"]:
            if span.get("position_rmsd_A") is None:
                print(f"{label:<24}{1000 * span['span_ps']:>8.4g}   no finite forecast")
                continue
            projected = span.get("projected", span)
            print(
                f"{label:<24}{1000 * span['span_ps']:>8.4g}{span['position_rmsd_A']['mean']:>10.4f}"
                f"{span['total_energy_change_kJ']['median']:>10.3g}{span['within_1kT']:>7.2f}"
                f"{projected['total_energy_change_kJ']['median']:>10.3g}{projected['within_1kT']:>7.2f}"
                f"{projected['dH_mean_kJ']:>8.3g}"
            )
    print(f"report: {args.out}/report.json")
    return 0
