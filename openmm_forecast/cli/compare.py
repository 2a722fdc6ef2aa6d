"""``openmm-forecast compare A B --out DIR``: compare the Ramachandran sampling of two runs.

Writes ``DIR/report.json`` (Jensen-Shannon divergence, basin populations and free energies, committed
transitions, frame counts, and the definitions behind them) and ``DIR/ramachandran.png`` (free-energy
surfaces side by side).  Inputs are anything :func:`openmm_forecast.analysis.load_phi_psi` reads.
"""

import logging
import os

from ._common import add_overwrite_argument, integer

logger = logging.getLogger(__name__)

OUTPUTS = ("report.json", "ramachandran.png")
"""Files ``compare`` writes into ``--out``."""


def add_parser(subparsers):
    """Register the ``compare`` command."""
    parser = subparsers.add_parser(
        "compare",
        help="compare the phi/psi distributions of two runs (JS divergence, basins, plot)",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("a", help="first run: .npy (phi/psi in degrees or positions in nm), .pdb, .h5, .dcd, ...")
    parser.add_argument("b", help="second run, same formats")
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--labels", nargs=2, metavar=("A", "B"), default=None,
                        help="names of the runs in the report and plot (default: file names)")
    parser.add_argument("--topology", default=None, help="topology (PDB) for coordinate files without one")
    parser.add_argument("--bins", type=integer(1, 3600), default=None,
                        help="histogram bins per angle (default 36, 10 degrees; at most 3600, 0.1 degree)")
    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def run(args):
    """Execute ``compare``; returns the exit code."""
    from ..analysis import (
        DEFAULT_BINS,
        DEFAULT_RANGE,
        analysis_definitions,
        basin_populations,
        count_transitions,
        js_divergence_phi_psi,
        load_phi_psi,
    )
    from .._io import check_output_directory, write_json
    from ..plotting import plot_ramachandran

    bins = DEFAULT_BINS if args.bins is None else args.bins
    labels = args.labels or [os.path.splitext(os.path.basename(p))[0] for p in (args.a, args.b)]
    if labels[0] == labels[1]:
        labels = [f"A: {labels[0]}", f"B: {labels[1]}"]
    check_output_directory(args.out, "--out", OUTPUTS, args.overwrite, hint="choose another --out or pass --overwrite")
    runs = {label: load_phi_psi(path, topology=args.topology) for label, path in zip(labels, (args.a, args.b))}
    os.makedirs(args.out, exist_ok=True)

    js = js_divergence_phi_psi(runs[labels[0]], runs[labels[1]], bins, DEFAULT_RANGE)
    report = {
        "labels": labels,
        "inputs": {label: os.path.abspath(path) for label, path in zip(labels, (args.a, args.b))},
        "js_divergence": js,
        "n_frames": {label: len(x) for label, x in runs.items()},
        "basins": {label: basin_populations(x) for label, x in runs.items()},
        "transitions": {label: count_transitions(x) for label, x in runs.items()},
        "definitions": analysis_definitions(bins, DEFAULT_RANGE),
    }
    report_path = os.path.join(args.out, "report.json")
    write_json(report_path, report, indent=2)
    plot_path = plot_ramachandran(runs, os.path.join(args.out, "ramachandran.png"), bins=bins)
    logger.info("JS divergence %s vs %s: %.5f (%d x %d bins, natural log)", labels[0], labels[1], js, bins, bins)
    print(f"JS divergence: {js:.6f}\nreport: {report_path}\nplot: {plot_path}")
    return 0
