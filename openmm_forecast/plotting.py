"""Figures (PNG, matplotlib's Agg backend, no display needed)."""

import numpy as np

from .analysis import BASINS, DEFAULT_BINS, DEFAULT_RANGE, ramachandran_histogram


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _intervals(interval):
    """[lo, hi) pieces of a possibly wrapping basin interval (degrees)."""
    lo, hi = interval
    return [(lo, hi)] if lo <= hi else [(lo, 180.0), (-180.0, hi)]


def plot_ramachandran(phi_psi_by_label, path, bins=DEFAULT_BINS, range=DEFAULT_RANGE, basins=BASINS, max_kT=None,
                      columns=None):
    """Side-by-side Ramachandran free-energy surfaces, F = -ln p in kT, on one colour scale.

    Each panel shows ``F = -ln p_bin - F_min`` with ``p_bin`` the probability of a bin of the normalised
    2D histogram (:func:`~openmm_forecast.analysis.ramachandran_histogram`) and ``F_min`` the lowest
    value over all panels, so that equal colours mean equal probability in every panel.  Unvisited bins
    are white.  Basin boundaries are dashed and labelled.

    Parameters
    ----------
    phi_psi_by_label : dict
        ``{label: phi_psi}``, each of shape (n_frames, 2) in degrees, or ``{label: (phi_psi, weights)}`` for
        reweighted frames; one panel each, in order.
    path : str or os.PathLike
        Output PNG file.
    bins, range
        Histogram bins per angle and range in degrees (defaults 36 and [-180, 180)).
    basins : sequence of Basin
        Boundaries to draw (default :data:`~openmm_forecast.analysis.BASINS`).
    max_kT : float, optional
        Top of the colour scale in kT (default: the highest visited bin over all panels).
    columns : int, optional
        Panels per row (default: all in one row); a peptide's residues, one row per run, for example.

    Returns
    -------
    str
        ``path``.
    """
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    if not phi_psi_by_label:
        raise ValueError("plot_ramachandran needs at least one phi/psi array")
    lo, hi = range
    frames = {label: x if isinstance(x, tuple) else (x, None) for label, x in phi_psi_by_label.items()}
    with np.errstate(divide="ignore"):
        surfaces = {label: -np.log(ramachandran_histogram(phi_psi, bins, range, weights))
                    for label, (phi_psi, weights) in frames.items()}
    f_min = min(np.min(f) for f in surfaces.values())
    f_top = max(np.max(f[np.isfinite(f)]) for f in surfaces.values()) - f_min
    vmax = f_top if max_kT is None else float(max_kT)
    vmax = max(vmax, 1e-6)

    n = len(surfaces)
    n_columns = n if columns is None else max(1, min(int(columns), n))
    n_rows = -(-n // n_columns)
    fig, axes = plt.subplots(n_rows, n_columns, figsize=(4.4 * n_columns + 1.2, 4.4 * n_rows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    viridis = plt.get_cmap("viridis")
    cmap = viridis.with_extremes(over=viridis(1.0), bad="white")
    edges = np.linspace(lo, hi, bins + 1)
    image = None
    for ax, (label, f) in zip(axes.flat, surfaces.items()):
        shifted = np.ma.masked_invalid(f - f_min)
        # pcolormesh takes C[y, x]: rows psi, columns phi.
        image = ax.pcolormesh(edges, edges, shifted.T, cmap=cmap, vmin=0.0, vmax=vmax, shading="flat")
        for basin in basins:
            for phi_lo, phi_hi in _intervals(basin.phi):
                for psi_lo, psi_hi in _intervals(basin.psi):
                    ax.add_patch(Rectangle((phi_lo, psi_lo), phi_hi - phi_lo, psi_hi - psi_lo, fill=False,
                                           edgecolor="0.15", linestyle="--", linewidth=0.9))
            (phi_lo, phi_hi), (psi_lo, psi_hi) = (max(_intervals(i), key=lambda p: p[1] - p[0])
                                                  for i in (basin.phi, basin.psi))
            ax.text(phi_lo + 4, psi_hi - 4, basin.name.replace("alpha_", "α").replace("beta", "β"),
                    ha="left", va="top", fontsize=9, color="0.1")
        phi_psi, weights = frames[label]
        what = "frames" if weights is None else "frames, reweighted"
        ax.set_title(f"{label}\n{len(phi_psi):,} {what}", fontsize=10)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ticks = np.arange(lo, hi + 1, 90)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel("φ (degrees)")
        ax.set_ylabel("ψ (degrees)")
    colorbar = fig.colorbar(image, ax=axes.ravel().tolist(), extend="max" if max_kT is not None else "neither",
                            shrink=0.9)
    colorbar.set_label("F = −ln p + const (kT)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
