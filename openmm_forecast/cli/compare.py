"""``openmm-forecast compare A B --out DIR``: compare the Ramachandran sampling of two runs.

Writes ``DIR/report.json`` (Jensen-Shannon divergence, basin populations and free energies, committed
transitions, frame counts, and the definitions behind them) and ``DIR/ramachandran.png`` (free-energy
surfaces side by side).  Every residue with a backbone phi and psi gets its numbers and its panel (one row of
panels per run); ``--torsion`` adds torsions of the user's choice (their gauche+/trans/gauche- populations).
Inputs are anything :func:`openmm_forecast.analysis.load_angles` reads.
"""

import logging
import os

import argparse

from ._common import add_overwrite_argument, integer

logger = logging.getLogger(__name__)

OUTPUTS = ("report.json", "ramachandran.png")
"""Files ``compare`` writes into ``--out``."""


def torsion_argument(spec):
    """argparse type of ``--torsion``: an :class:`~openmm_forecast.analysis.Torsion`."""
    from ..analysis import Torsion

    try:
        return Torsion.parse(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    parser.add_argument("--torsion", action="append", default=[], metavar="[NAME=]I,J,K,L", type=torsion_argument,
                        help="a torsion to report besides phi/psi (0-based atom indices; repeatable; coordinate inputs "
                        "only): populations of its gauche+ [0, 120), trans [120, -120) and gauche- [-120, 0) states")
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
        load_angles,
        torsion_state_populations,
    )
    from .._io import check_output_directory, write_json
    from ..errors import UsageError
    from ..plotting import plot_ramachandran

    bins = DEFAULT_BINS if args.bins is None else args.bins
    labels = args.labels or [os.path.splitext(os.path.basename(p))[0] for p in (args.a, args.b)]
    if labels[0] == labels[1]:
        labels = [f"A: {labels[0]}", f"B: {labels[1]}"]
    check_output_directory(args.out, "--out", OUTPUTS, args.overwrite, hint="choose another --out or pass --overwrite")
    runs = {label: load_angles(path, topology=args.topology, torsions=args.torsion)
            for label, path in zip(labels, (args.a, args.b))}
    a, b = runs.values()
    if len(a.labels) != len(b.labels):
        raise UsageError(f"{labels[0]} has {len(a.labels)} residues with phi/psi ({', '.join(a.labels)}), {labels[1]} "
                         f"{len(b.labels)} ({', '.join(b.labels)}): compare runs of the same molecule")
    residues = a.labels if a.labels[0] not in ("phi/psi", "pair 1") else b.labels
    os.makedirs(args.out, exist_ok=True)

    def per_residue(function):
        """``function(phi_psi of one residue)`` per run: one value for one residue, else ``{residue: value}``."""
        if len(residues) == 1:
            return {label: function(run.phi_psi[:, 0]) for label, run in runs.items()}
        return {label: {residue: function(run.phi_psi[:, i]) for i, residue in enumerate(residues)}
                for label, run in runs.items()}

    js_each = [js_divergence_phi_psi(a.phi_psi[:, i], b.phi_psi[:, i], bins, DEFAULT_RANGE) for i in range(len(residues))]
    js = float(sum(js_each) / len(js_each))
    report = {
        "labels": labels,
        "inputs": {label: os.path.abspath(path) for label, path in zip(labels, (args.a, args.b))},
        "residues": residues,
        "js_divergence": js,
        "n_frames": {label: len(x.phi_psi) for label, x in runs.items()},
        "basins": per_residue(basin_populations),
        "transitions": per_residue(count_transitions),
        "definitions": analysis_definitions(bins, DEFAULT_RANGE),
    }
    if len(residues) > 1:
        report["js_divergence_per_residue"] = dict(zip(residues, js_each))
        report["definitions"]["js_divergence_several_residues"] = "the mean over residues of each residue's JS"
    if args.torsion:
        report["torsions"] = {torsion.name: {**torsion.as_dict(), "populations": {
            label: torsion_state_populations(run.torsions[torsion.name]) for label, run in runs.items()}}
            for torsion in args.torsion}
    report_path = os.path.join(args.out, "report.json")
    write_json(report_path, report, indent=2)
    panels = {label if len(residues) == 1 else f"{label}: {residue}": run.phi_psi[:, i]
              for label, run in runs.items() for i, residue in enumerate(residues)}
    plot_path = plot_ramachandran(panels, os.path.join(args.out, "ramachandran.png"), bins=bins,
                                  columns=len(residues) if len(residues) > 1 else None)
    logger.info("JS divergence %s vs %s: %.5f (%d x %d bins, natural log)", labels[0], labels[1], js, bins, bins)
    print(f"JS divergence: {js:.6f}" + (" (mean over residues: " + ", ".join(
        f"{residue} {value:.4f}" for residue, value in zip(residues, js_each)) + ")" if len(residues) > 1 else "")
        + f"\nreport: {report_path}\nplot: {plot_path}")
    return 0
