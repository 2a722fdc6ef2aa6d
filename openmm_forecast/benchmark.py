"""Side-by-side benchmark: plain OpenMM MD against forecast-accelerated walkers, same wall-clock budget.

Protocol (:func:`run_benchmark`)
--------------------------------
1. *Same process, interleaved.*  The plain arm (:class:`~openmm_forecast.walkers.PlainWalkers`:
   ``n_walkers`` replicas integrated by OpenMM on the fastest platform for the system) and the hybrid
   arm (:class:`~openmm_forecast.walkers.ForecastWalkers`: the same replicas, same seeds, same potential,
   same platform, forecast jumps batched over walkers) alternate in slices of wall clock (10 s by
   default, plain first; :func:`run_interleaved`) until each has used the same budget, so that both see
   the same machine load; an arm's clock counts only its own slices.  Both start from the same
   minimised structure with the same seeded velocities.  Setting up the Contexts (and minimising) is not
   timed; everything after the first step is, including the first forecaster calls (TorchScript warm-up)
   and reading states at every sample.
2. *Sampling.*  phi/psi of every walker every ``sample_interval`` of simulated time (1 ps by default: the
   frame interval of the shared reference runs).
3. *Accuracy.*  Jensen-Shannon divergence of the pooled phi/psi histogram (36 x 36 bins, natural log; see
   :mod:`openmm_forecast.analysis`) against the reference (the pooled shared 200 ns plain-MD runs by
   default), after every sampling round: the convergence curve JS(wall clock).
4. *Speed-ups.*  ``speedup_ns_per_day`` is simulated time per wall-clock time, hybrid over plain.
   ``speedup_time_to_js`` is the wall clock plain MD needs to reach the JS the hybrid reached at the end
   of its budget, over the hybrid's wall clock.  When plain MD reaches that level within its budget, the
   time is read off its convergence curve (``estimated: false``).  Otherwise it is estimated: the
   simulated length one plain trajectory needs to reach that JS, from the reference runs' own curve of
   mean window JS against window length (interpolated log-log; extrapolated as a power law beyond the
   longest window), divided by the plain arm's measured ns/day (``estimated: true``, with the method).
   The windows are part of the pooled reference they are compared with, which lowers their JS at long
   windows: the estimate errs in plain MD's favour.

Units: ns, ps, seconds, degrees.
"""

import glob
import hashlib
import logging
import os
import platform as platform_module

import numpy as np
from openmm import unit

from ._io import check_output_directory, load_npy, write_json
from .analysis import (
    DEFAULT_BINS,
    DEFAULT_RANGE,
    MIN_PHI_PSI_FRAMES,
    check_phi_psi,
    analysis_definitions,
    basin_populations,
    count_transitions,
    js_divergence,
    ramachandran_histogram,
    window_js,
    wrap_degrees,
)
from .checkpoint import forecaster_fingerprint
from .errors import DataFileError
from .systems import resource_path
from .walkers import ForecastWalkers, PlainWalkers

logger = logging.getLogger(__name__)

REFERENCE_ENV = "OPENMM_FORECAST_REFERENCE"
"""Environment variable naming the default reference (a directory of phi/psi .npy runs or one file)."""

REPORT_FORMAT = 1

REQUIRED_ARM_KEYS = ("simulated_ns", "wall_seconds", "ns_per_day", "js_to_reference", "basins", "transitions")
"""Keys every arm (``plain``, ``hybrid``) of a report has."""


# --------------------------------------------------------------------------------------------------
# Machine and reference
# --------------------------------------------------------------------------------------------------


def machine_info():
    """The machine and software a benchmark ran on, as JSON types.

    Returns
    -------
    dict
        ``cpu_model``, ``cpu_cores`` (logical cores visible), ``gpus`` (CUDA device names seen by torch),
        ``openmm_platforms`` (available), ``python``, and ``versions`` of openmm, torch, numpy and
        openmm-forecast.
    """
    import torch

    from . import __version__
    from ._runtime import openmm as mm
    from .platforms import available_platforms

    cpu_model = platform_module.processor() or platform_module.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "cpu_model": cpu_model,
        "cpu_cores": os.cpu_count(),
        "gpus": gpus,
        "openmm_platforms": available_platforms(),
        "os": platform_module.platform(),
        "python": platform_module.python_version(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"openmm": mm.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "openmm_forecast": __version__},
    }


def _reference_mismatch(molecular_system, shipped):
    """A note when the reference was sampled under other conditions than ``molecular_system`` (None otherwise).

    The shipped reference is amber14 in vacuum at 300 K; of another reference only its potential is
    known to be the user's concern, so only the setup is compared.
    """
    differences = []
    if molecular_system.setup != "amber14-vacuum":
        differences.append(f"setup {molecular_system.setup!r}")
    temperature_K = molecular_system.temperature.value_in_unit(unit.kelvin)
    if shipped and abs(temperature_K - 300.0) > 1e-6:
        differences.append(f"temperature {temperature_K:g} K")
    if not differences:
        return None
    reference = "the shipped reference (amber14-vacuum, 300 K)" if shipped else "the reference"
    return (f"this run differs from {reference} in {', '.join(differences)}: its JS also measures that difference, "
            "and the time-to-JS compares both arms against another ensemble's distribution")


BENCHMARK_OUTPUTS = ("report.json", "ramachandran.png", "convergence.png", "plain_phipsi.npy", "hybrid_phipsi.npy")
"""Files :func:`run_benchmark` writes into its output directory."""


def default_reference_path():
    """The default reference: ``$OPENMM_FORECAST_REFERENCE``, else the two 100 ns amber14-vacuum runs shipped in
    ``openmm_forecast/resources/reference`` (see its README.md).  Looked up at call time only."""
    if os.environ.get(REFERENCE_ENV):
        return os.environ[REFERENCE_ENV]
    return resource_path("reference")


def load_reference_runs(path):
    """Independent reference runs of phi/psi (degrees), from a directory of .npy files or one file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy`` file of shape (n_frames, 2), or a directory whose ``.npy`` files of that shape are each
        one independent run (files of other shapes are skipped; phi/psi arrays are validated as by
        :func:`~openmm_forecast.analysis.load_phi_psi`: degrees, at least two frames, finite).

    Returns
    -------
    runs : list of numpy.ndarray
        Each of shape (n_frames, 2), degrees, in time order.
    files : list of str

    Raises
    ------
    DataFileError
        Missing path, no phi/psi array in it, or a phi/psi array that fails
        :func:`~openmm_forecast.analysis.check_phi_psi` (radians, one frame, non-finite), or a file that is not
        a .npy file.
    """
    if path is None:
        raise DataFileError(
            "no reference phi/psi given and none found: pass --reference (a directory of phi/psi .npy runs, "
            f"shape (n_frames, 2) in degrees, one frame per ps, or one such file) or set ${REFERENCE_ENV}"
        )
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataFileError(f"reference {path!r} does not exist (pass --reference or set ${REFERENCE_ENV})")
    files = sorted(glob.glob(os.path.join(path, "*.npy"))) if os.path.isdir(path) else [path]
    runs, used = [], []
    for name in files:
        array = load_npy(name, "reference phi/psi in degrees, shape (n_frames, 2)")
        if array.ndim == 2 and array.shape[1] == 2:
            runs.append(wrap_degrees(check_phi_psi(array, f"reference file {name}", min_frames=MIN_PHI_PSI_FRAMES)))
            used.append(os.path.abspath(name))
    if not runs:
        raise DataFileError(f"{path!r} holds no phi/psi array of shape (n_frames, 2) in a .npy file")
    return runs, used


def reference_window_curve(runs, n_points=16, min_frames=10):
    """Mean JS divergence of windows of the reference runs against their pool, by window length.

    Parameters
    ----------
    runs : list of numpy.ndarray
        Independent runs, each (n_frames, 2) degrees.
    n_points : int
        Window lengths, geometrically spaced from ``min_frames`` to the longest run's half length
        (whole runs when a run is shorter than 2 ``min_frames``).
    min_frames : int

    Returns
    -------
    frames : numpy.ndarray of int, shape (n,)
        Window lengths in frames (increasing).
    mean_js : numpy.ndarray, shape (n,)
        Mean JS over all whole windows of that length in all runs (windows never straddle two runs).
    """
    pooled = np.concatenate(runs)
    longest = max(len(run) for run in runs)
    top = max(longest // 2, min(min_frames, longest))
    frames = np.unique(np.round(np.geomspace(min(min_frames, top), top, n_points)).astype(int))
    curve = []
    for length in frames:
        values = np.concatenate([window_js(run, pooled, length) for run in runs if len(run) >= length])
        curve.append(float(values.mean()))
    return frames, np.array(curve)


def length_for_js(frames, mean_js, target):
    """Window length (frames, float) at which a decreasing JS-vs-length curve reaches ``target``.

    Log-log interpolation between the curve's points; beyond its longest window, a power law fitted to
    its last three points (or its last two) is extrapolated.

    Returns
    -------
    length : float
        Frames (``inf`` when the curve does not decrease at its end and stays above ``target``).
    method : str
        'interpolated' or 'extrapolated (power law)' or 'shortest window' (target above the whole curve).
    """
    frames = np.asarray(frames, dtype=float)
    mean_js = np.asarray(mean_js, dtype=float)
    if target >= mean_js[0]:
        return float(frames[0]), "shortest window"
    below = np.nonzero(mean_js <= target)[0]
    if below.size:
        i = below[0]
        x0, x1, y0, y1 = np.log(frames[i - 1]), np.log(frames[i]), np.log(mean_js[i - 1]), np.log(mean_js[i])
        fraction = (np.log(target) - y0) / (y1 - y0) if y1 != y0 else 1.0
        return float(np.exp(x0 + fraction * (x1 - x0))), "interpolated"
    tail = slice(-3, None) if len(frames) >= 3 else slice(-2, None)
    slope, intercept = np.polyfit(np.log(frames[tail]), np.log(mean_js[tail]), 1)
    if slope >= 0:
        return float("inf"), "extrapolated (power law; the curve does not decrease: unreachable)"
    return float(np.exp((np.log(target) - intercept) / slope)), "extrapolated (power law)"


def run_interleaved(arms, sample_interval, wall_seconds, slice_seconds=10.0, progress=None):
    """Sample several sets of walkers for the same wall-clock budget each, alternating in slices.

    Each arm's clock counts only its own slices, so the arms share whatever load the machine has.

    Parameters
    ----------
    arms : dict
        ``{name: walkers}`` (objects with :meth:`~openmm_forecast.walkers.PlainWalkers.sample`).
    sample_interval : openmm.unit.Quantity
    wall_seconds : float
        Budget of each arm; each stops at its first sample at or after it.
    slice_seconds : float or None
        Wall clock per slice (None: each arm's whole budget in one slice, one arm after the other).
    progress : bool, optional

    Returns
    -------
    dict
        ``{name: WalkerSamples}``, in the order of ``arms``.
    """
    from tqdm.auto import tqdm

    from .walkers import WalkerSamples

    slice_seconds = wall_seconds if slice_seconds is None else float(slice_seconds)
    if not slice_seconds > 0:
        raise ValueError(f"slice_seconds must be > 0 or None, got {slice_seconds}")
    pieces = {name: [] for name in arms}
    used = dict.fromkeys(arms, 0.0)
    disable = None if progress is None else not progress
    with tqdm(total=len(arms) * wall_seconds, unit="s", desc="benchmark", disable=disable) as bar:
        while any(used[name] < wall_seconds for name in arms):
            for name, walkers in arms.items():
                if used[name] >= wall_seconds:
                    continue
                budget = min(slice_seconds, wall_seconds - used[name])
                piece = walkers.sample(sample_interval, wall_seconds=budget, progress=False)
                pieces[name].append(piece)
                used[name] += piece.wall_s[-1]
                bar.n = round(sum(min(value, wall_seconds) for value in used.values()), 1)
                bar.refresh()
                bar.set_postfix_str(f"{name} {used[name]:.0f}/{wall_seconds:g} s")
    return {name: WalkerSamples.concatenate(parts) for name, parts in pieces.items()}


# --------------------------------------------------------------------------------------------------
# Analysis of one arm
# --------------------------------------------------------------------------------------------------


def convergence_curve(phi_psi, reference_histogram, bins=DEFAULT_BINS, angle_range=DEFAULT_RANGE):
    """JS divergence against the reference after every sampling round, all walkers pooled.

    Parameters
    ----------
    phi_psi : numpy.ndarray, shape (n_walkers, n_samples, 2)
        Degrees.
    reference_histogram : numpy.ndarray, shape (bins, bins)
    bins, angle_range
        Histogram bins per angle and range in degrees (those of ``reference_histogram``).

    Returns
    -------
    numpy.ndarray, shape (n_samples,)
        JS after rounds 1, 2, ..., n_samples (each round adds one frame of every walker).
    """
    lo, hi = angle_range
    n_walkers, n_samples = phi_psi.shape[:2]
    edges = np.linspace(lo, hi, bins + 1)
    wrapped = wrap_degrees(phi_psi)
    i = np.clip(np.searchsorted(edges, wrapped[..., 0], side="right") - 1, 0, bins - 1)
    j = np.clip(np.searchsorted(edges, wrapped[..., 1], side="right") - 1, 0, bins - 1)
    counts = np.zeros((bins, bins))
    js = np.empty(n_samples)
    for sample in range(n_samples):
        np.add.at(counts, (i[:, sample], j[:, sample]), 1.0)
        js[sample] = js_divergence(counts, reference_histogram)
    return js


def summarize_arm(samples, reference_histogram, topology, wall_budget_s, extra=None):
    """Numbers of one arm: time, speed, JS, basins, transitions, and its convergence curve.

    Returns
    -------
    summary : dict
        JSON types; the keys of :data:`REQUIRED_ARM_KEYS` and more.
    phi_psi : numpy.ndarray, shape (n_walkers, n_samples, 2)
    js_curve : numpy.ndarray, shape (n_samples,)
    """
    phi_psi = samples.phi_psi(topology)
    pooled = phi_psi.reshape(-1, 2)
    js_curve = convergence_curve(phi_psi, reference_histogram)
    wall = float(samples.wall_s[-1])
    simulated_ns = samples.simulated_ps / 1000.0
    per_walker = [count_transitions(run) for run in phi_psi]
    counts = {a: {b: sum(t["counts"][a][b] for t in per_walker) for b in per_walker[0]["counts"][a]}
              for a in per_walker[0]["counts"]}
    summary = {
        "walkers": int(samples.n_walkers),
        "samples_per_walker": int(len(samples.time_ps)),
        "sample_interval_ps": float(samples.interval_ps),
        "simulated_ns": simulated_ns,
        "simulated_ns_per_walker": simulated_ns / samples.n_walkers,
        "wall_seconds": wall,
        "wall_budget_seconds": float(wall_budget_s),
        "ns_per_day": simulated_ns / wall * 86400.0,
        "js_to_reference": float(js_curve[-1]),
        "basins": basin_populations(pooled),
        "transitions": {"total": int(sum(t["total"] for t in per_walker)), "counts": counts,
                        "note": "counted within each walker's trajectory, then summed over walkers"},
    }
    summary.update(extra or {})
    return summary, phi_psi, js_curve


def time_to_js(target_js, plain_js, plain_wall_s, plain_ns_per_day, hybrid_wall_s, reference_curve,
               frame_interval_ps):
    """Wall clock plain MD needs to reach ``target_js``, measured or estimated, and the speed-up.

    Parameters
    ----------
    target_js : float
        The JS the hybrid reached at the end of its budget.
    plain_js, plain_wall_s : numpy.ndarray, shape (n_samples,)
        The plain arm's convergence curve and the wall clock of each of its points.
    plain_ns_per_day : float
    hybrid_wall_s : float
    reference_curve : tuple of numpy.ndarray
        ``(frames, mean_js)`` from :func:`reference_window_curve`.
    frame_interval_ps : float
        Time between reference frames, ps.

    Returns
    -------
    dict
        ``target_js``, ``hybrid_wall_seconds``, ``plain_wall_seconds``, ``speedup``, ``estimated`` and
        ``method`` (and, when estimated, ``plain_simulated_ns_needed``).
    """
    result = {"target_js": float(target_js), "hybrid_wall_seconds": float(hybrid_wall_s)}
    reached = np.nonzero(np.asarray(plain_js) <= target_js)[0]
    if reached.size:
        plain_time = float(plain_wall_s[reached[0]])
        result.update(estimated=False, method="measured: first point of the plain convergence curve at or below "
                      "the hybrid's final JS")
    else:
        frames, mean_js = reference_curve
        length_frames, how = length_for_js(frames, mean_js, target_js)
        needed_ns = length_frames * frame_interval_ps / 1000.0
        method = (f"estimated: plain MD did not reach the hybrid's JS within its budget; simulated length for "
                  f"that JS from the reference runs' mean-window-JS-vs-length curve ({how}), over the plain "
                  "arm's measured ns/day")
        plain_time = needed_ns / plain_ns_per_day * 86400.0
        ran_s = float(plain_wall_s[-1]) if len(plain_wall_s) else 0.0
        if plain_time < ran_s:  # the walkers share one start: they need more than independent windows
            plain_time = ran_s
            method += ("; that estimate is below the wall clock plain MD already ran without reaching the JS, "
                       "which is used instead (a lower bound)")
        result.update(estimated=True, method=method, plain_simulated_ns_needed=needed_ns)
    result["plain_wall_seconds"] = plain_time
    result["speedup"] = plain_time / hybrid_wall_s if np.isfinite(plain_time) else None
    return result


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def plot_convergence(curves, path, target_js=None, noise_js=None):
    """JS divergence against the reference versus wall-clock time, log-log, one line per arm.

    Parameters
    ----------
    curves : dict
        ``{label: (wall_s, js)}``, arrays of equal length.
    path : str or os.PathLike
    target_js : float, optional
        Drawn as a dotted horizontal line (the hybrid's final JS).
    noise_js : float, optional
        Drawn as a dashed line (JS between independent reference runs: plain MD's own noise).
    """
    from .plotting import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
    for label, (wall, js) in curves.items():
        ax.plot(wall, np.maximum(js, 1e-6), label=label, linewidth=1.6)
    if target_js is not None:
        ax.axhline(target_js, color="0.3", linestyle=":", linewidth=1, label=f"hybrid final JS {target_js:.4f}")
    if noise_js is not None:
        ax.axhline(noise_js, color="0.5", linestyle="--", linewidth=1, label=f"reference run vs run {noise_js:.4f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall-clock time (s)")
    ax.set_ylabel("JS divergence to reference (nat)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


def run_benchmark(molecular_system, forecaster, out, *, n_walkers=8, wall_seconds=60.0, reference=None,
                  sample_interval=1.0 * unit.picosecond, reference_interval=1.0 * unit.picosecond, seed=1,
                  platform=None, forecaster_options=None, slice_seconds=10.0, progress=None, overwrite=False,
                  **accelerator_options):
    """Run plain MD and the accelerated walkers for the same wall-clock budget; write the report and plots.

    Parameters
    ----------
    molecular_system : MolecularSystem
        The system both arms simulate (same potential, platform, time step, thermostat).
    forecaster : Forecaster or str
        For :class:`~openmm_forecast.walkers.ForecastWalkers`.
    out : str or os.PathLike
        Output directory: ``report.json``, ``ramachandran.png``, ``convergence.png`` and the phi/psi of both
        arms (``plain_phipsi.npy``, ``hybrid_phipsi.npy``, shape (n_walkers, n_samples, 2), degrees).
    n_walkers : int
    wall_seconds : float
        Wall-clock budget of each arm, seconds.
    reference : str or os.PathLike, optional
        Reference phi/psi (see :func:`load_reference_runs`); default :func:`default_reference_path`.
    sample_interval : openmm.unit.Quantity
        Simulated time between phi/psi samples (default 1 ps, the reference's frame interval: finite-sample
        JS depends on the number of frames, so compare like with like).
    reference_interval : openmm.unit.Quantity
        Time between the reference's frames (1 ps for the shared runs); converts its window-JS curve to ns.
    seed : int
        First walker seed (walkers use ``seed, seed + 1, ...`` in both arms).
    platform : str or openmm.Platform, optional
        Default: the fastest for the system.
    forecaster_options : dict, optional
        ``load_forecaster`` arguments for baselines (``stride_ps``, ``max_frames``).
    slice_seconds : float or None
        The arms alternate in slices of this much wall clock (default 10 s), so that both see the same
        machine load; None runs plain MD for its whole budget, then the hybrid.
    progress : bool, optional
    overwrite : bool
        Replace the outputs (:data:`BENCHMARK_OUTPUTS`) of an earlier benchmark in ``out``; by default such a
        directory is refused before any work.
    **accelerator_options
        :class:`~openmm_forecast.accelerator.AcceleratorOptions` fields.

    Returns
    -------
    dict
        The report (also in ``out/report.json``).
    """
    from .platforms import fastest_platform, get_platform
    from .plotting import plot_ramachandran

    if not wall_seconds > 0:
        raise ValueError(f"wall_seconds must be > 0, got {wall_seconds}")
    check_output_directory(out, "out", BENCHMARK_OUTPUTS, overwrite, hint="choose another out or pass overwrite")
    reference_path = default_reference_path() if reference is None else reference
    runs, files = load_reference_runs(reference_path)
    pooled_reference = np.concatenate(runs)
    reference_histogram = ramachandran_histogram(pooled_reference)
    interval_ps = float(sample_interval.value_in_unit(unit.picosecond))
    reference_interval_ps = float(reference_interval.value_in_unit(unit.picosecond))
    os.makedirs(out, exist_ok=True)
    platform = fastest_platform(molecular_system) if platform is None else get_platform(platform)

    model_sha256 = _model_file_sha256(forecaster)
    plain = PlainWalkers(molecular_system, n_walkers, seed=seed, platform=platform)
    hybrid = ForecastWalkers(molecular_system, forecaster, n_walkers, seed=seed, platform=platform,
                             forecaster_options=forecaster_options, **accelerator_options)
    plain_samples, hybrid_samples = run_interleaved(
        {"plain": plain, "hybrid": hybrid}, sample_interval, wall_seconds, slice_seconds, progress).values()

    topology = molecular_system.topology
    plain_summary, plain_phi_psi, plain_js = summarize_arm(
        plain_samples, reference_histogram, topology, wall_seconds, {"platform": platform.getName()})
    stats = hybrid.stats().as_dict()
    meta = hybrid.forecaster.metadata
    hybrid_summary, hybrid_phi_psi, hybrid_js = summarize_arm(
        hybrid_samples, reference_histogram, topology, wall_seconds,
        {"platform": platform.getName(), "acceptance_rate": stats["acceptance_rate"],
         "jumped_fraction": stats["jumped_fraction"], "forecast_calls": hybrid.forecast_calls,
         "mean_batch_size": stats["jumps_attempted"] / hybrid.forecast_calls if hybrid.forecast_calls else None,
         "stats": stats})
    np.save(os.path.join(out, "plain_phipsi.npy"), plain_phi_psi)
    np.save(os.path.join(out, "hybrid_phipsi.npy"), hybrid_phi_psi)

    frame_curve = reference_window_curve(runs)
    detail = time_to_js(hybrid_summary["js_to_reference"], plain_js, plain_samples.wall_s,
                        plain_summary["ns_per_day"], hybrid_summary["wall_seconds"], frame_curve,
                        reference_interval_ps)
    noise = js_divergence(ramachandran_histogram(runs[0]), ramachandran_histogram(runs[1])) if len(runs) > 1 else None
    report = {
        "format": REPORT_FORMAT,
        "machine": machine_info(),
        "setup": molecular_system.setup,
        "potential": molecular_system.potential,
        "timestep_ps": molecular_system.timestep.value_in_unit(unit.picosecond),
        "temperature_K": molecular_system.temperature.value_in_unit(unit.kelvin),
        "walkers": int(n_walkers),
        "seeds": list(hybrid.seeds),
        "forecaster": {"name": os.fspath(forecaster) if isinstance(forecaster, (str, os.PathLike)) else None,
                       "architecture": meta.architecture, "fingerprint": forecaster_fingerprint(hybrid.forecaster),
                       "file_sha256": model_sha256,
                       "stride_ps": meta.stride_ps, "max_frames": meta.max_frames, "history": meta.history,
                       "setup": meta.setup, "options": dict(forecaster_options or {})},
        "accelerator_options": {k: (str(v) if unit.is_quantity(v) else v) for k, v in accelerator_options.items()},
        "protocol": ("same process, same seeds, platform and potential; the arms alternate in slices of "
                     f"{slice_seconds if slice_seconds is not None else wall_seconds:g} s of wall clock (plain "
                     "first) until each has used its budget (each stops at its first sample at or after it; an "
                     "arm's clock counts only its own slices); Context creation and minimisation untimed; phi/psi "
                     "of every walker every sample_interval_ps"),
        "slice_seconds": slice_seconds,
        "sample_interval_ps": interval_ps,
        "plain": plain_summary,
        "hybrid": hybrid_summary,
        "speedup_ns_per_day": hybrid_summary["ns_per_day"] / plain_summary["ns_per_day"],
        "speedup_time_to_js": detail["speedup"],
        "time_to_js": detail,
        "reference": {
            "path": os.path.abspath(reference_path), "files": files, "frames": int(len(pooled_reference)),
            "frame_interval_ps": reference_interval_ps, "js_between_runs": noise,
            "window_js_curve": {"frames": frame_curve[0].tolist(), "mean_js": frame_curve[1].tolist()},
        },
        "definitions": analysis_definitions(),
    }
    note = _reference_mismatch(molecular_system, shipped=os.path.abspath(reference_path) == resource_path("reference"))
    if note:
        report["reference"]["note"] = note
        logger.warning("%s", note)
    write_json(os.path.join(out, "report.json"), report, indent=2)
    plot_ramachandran(
        {f"reference ({len(pooled_reference) * reference_interval_ps / 1000:g} ns)": pooled_reference,
         f"plain MD ({plain_summary['simulated_ns']:.3g} ns)": plain_phi_psi.reshape(-1, 2),
         f"hybrid ({hybrid_summary['simulated_ns']:.3g} ns)": hybrid_phi_psi.reshape(-1, 2)},
        os.path.join(out, "ramachandran.png"),
    )
    plot_convergence({f"plain MD ({platform.getName()})": (plain_samples.wall_s, plain_js),
                      f"hybrid ({meta.architecture})": (hybrid_samples.wall_s, hybrid_js)},
                     os.path.join(out, "convergence.png"), target_js=detail["target_js"], noise_js=noise)
    return report


def _model_file_sha256(forecaster):
    """SHA-256 of the model file a forecaster name or path refers to (weights included), else None."""
    from .forecasters.registry import MODEL_SUFFIX, models_directory, shipped_models

    if not isinstance(forecaster, (str, os.PathLike)):
        return None
    path = os.fspath(forecaster)
    if not os.path.isfile(path):
        path = os.path.join(models_directory(), path + MODEL_SUFFIX) if path in shipped_models() else None
    if path is None:
        return None
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def format_summary(report):
    """A few lines for the terminal: machine, speeds, JS, acceptance and the two speed-ups."""
    m, p, h, t = report["machine"], report["plain"], report["hybrid"], report["time_to_js"]
    speedup = report["speedup_time_to_js"]
    lines = [
        f"machine: {m['cpu_model']} ({m['cpu_cores']} cores){', GPU ' + ', '.join(m['gpus']) if m['gpus'] else ', no GPU'}; "
        f"OpenMM {m['versions']['openmm']}, torch {m['versions']['torch']}",
        f"setup {report['setup']}, {report['walkers']} walkers, forecaster {report['forecaster']['architecture']}",
        f"plain MD ({p['platform']}): {p['simulated_ns']:.3f} ns in {p['wall_seconds']:.1f} s = {p['ns_per_day']:.0f} ns/day, "
        f"JS {p['js_to_reference']:.4f}, {p['transitions']['total']} transitions",
        f"hybrid: {h['simulated_ns']:.3f} ns in {h['wall_seconds']:.1f} s = {h['ns_per_day']:.0f} ns/day, "
        f"JS {h['js_to_reference']:.4f}, {h['transitions']['total']} transitions, acceptance "
        f"{h['acceptance_rate'] if h['acceptance_rate'] is None else format(h['acceptance_rate'], '.3f')}",
        f"speed-up in ns/day (hybrid / plain): {report['speedup_ns_per_day']:.3f}",
        f"speed-up in time to the hybrid's JS: "
        f"{'n/a' if speedup is None else format(speedup, '.3g')} ({'ESTIMATED' if t['estimated'] else 'measured'})",
    ]
    return "\n".join(lines)
