"""Benchmark: plain OpenMM MD, hydrogen mass repartitioning and forecast-accelerated walkers, same wall clock.

Protocol (:func:`run_benchmark`)
--------------------------------
1. *Arms* (:class:`BenchmarkArm`).  Each arm is ``n_walkers`` replicas of one System: plain MD
   (:class:`~openmm_forecast.walkers.PlainWalkers`; for example at 2 fs, or with hydrogen mass
   repartitioning at 4 fs) or guarded jumps of one proposal with one acceptance rule
   (:class:`~openmm_forecast.walkers.ForecastWalkers`: a learned forecaster, the surrogate, the ``verlet``
   baseline; tolerance or Metropolis), or well-tempered metadynamics of the target on phi/psi, reweighted
   (:class:`MetadynamicsWalkers`: what a user would run instead), or Langevin MD of a surrogate with every
   sample reweighted to the target by one target energy (:class:`~openmm_forecast.reweighting.ReweightedWalkers`).
   The first arm is the *baseline* the others are compared with
   (plain MD at the setup's time step, normally).  All arms simulate the same molecule under the same
   potential and temperature, with the same seeds, each on its fastest platform configuration, measured on
   its own System before the run (:func:`choose_platforms`: platform, ``Threads``, and whether the process
   is pinned to one core; all named in the report, with the plain arms' speed in the run against it).
2. *Same process, interleaved.*  The arms alternate in slices of wall clock (10 s by default, in the
   order given; :func:`run_interleaved`) until each has used the same budget, so that all see the same
   machine load; an arm's clock counts only its own slices.  All start from the same minimised structure
   with velocities from the same seeds.  Setting up the Contexts (and minimising) is not timed;
   everything after the first step is, including the first forecaster calls (TorchScript warm-up) and
   reading states at every sample.
3. *Sampling.*  phi/psi and the kinetic temperature of every walker every ``sample_interval`` of
   simulated time (1 ps by default: the frame interval of the shipped references).  phi/psi of every residue
   that has both (JS, the bar and the deciding observable use the first; every residue's populations and
   efficiency are reported), and the user's torsions.  A reweighted arm's (metad, reweighted surrogate)
   populations, JS and efficiency are weighted.
4. *Accuracy.*  Jensen-Shannon divergence of the pooled phi/psi histogram (36 x 36 bins, natural log; see
   :mod:`openmm_forecast.analysis`) against a reference of the *same potential* (the shipped plain-MD runs
   of the setup by default: :func:`default_reference_path`), after every sampling round: the convergence
   curve JS(wall clock).  Next to each arm's final JS, plain MD's own noise at the same length
   (:func:`plain_noise_js`: as many windows as walkers, each as long as the arm's trajectories, cut from the
   reference runs).
5. *Time to the JS bar.*  The bar is the JS the baseline reaches at the end of its budget (default) or a
   fixed value (``js_bar``).  Each arm's time to the bar is the wall clock of the first point of its
   convergence curve at or below the bar (``reached: false`` when it never gets there within its budget:
   then only a bound on its speed-up is known).  For the baseline, a fixed bar it does not reach is
   estimated: the simulated length one plain trajectory needs to reach it, from the reference runs' own
   curve of mean window JS against window length (interpolated log-log; extrapolated as a power law beyond
   the longest window), over the baseline's measured ns/day (``estimated: true``; the windows are part of
   the pooled reference they are compared with, which lowers their JS: the estimate errs in the
   baseline's favour).  ``speedup_time_to_bar`` is the baseline's time over the arm's.
6. *Efficiency, the deciding measure.*  Effective samples per wall-clock (and CPU) second of every basin's
   indicator (:mod:`openmm_forecast.efficiency`: pymbar's statistical inefficiency of all walkers, pooled
   mean; a leave-one-walker-out jackknife interval; for a reweighted arm the ESS of weighted samples); each arm
   against every plain-MD and metadynamics arm with the ratio's interval; the winner is
   the arm whose interval lies above all others' (``efficiency.winner``; none otherwise).
7. *Other speed-ups* (each arm against the baseline): ``speedup_ns_per_day`` (simulated time per wall
   clock; in Metropolis mode a rejected jump's span counts as simulated, so compare times to JS), and
   ``time_to_js`` / ``speedup_time_to_js``: the wall clock the baseline needs to reach the JS this arm
   reached at the end of its budget (measured, or estimated as above), over the arm's wall clock.

Interrupted (Ctrl-C, SIGTERM), a benchmark keeps what it measured: the arms' samples up to the signal are
analysed as above and written (``report.json`` with ``"partial": true`` and ``interrupted_by``, the phi/psi
and plots), then the interruption goes on (the CLI exits 130 or 143).

Units: ns, ps, seconds, degrees, K.
"""

import dataclasses
import glob
import logging
import os
import platform as platform_module
import re
import signal
import time

import numpy as np
from openmm import unit

from ._io import check_output_directory, file_sha256, load_npy, load_npz, write_json
from .analysis import (
    BASINS,
    DEFAULT_BINS,
    DEFAULT_RANGE,
    MIN_PHI_PSI_FRAMES,
    TORSION_STATES,
    backbone_torsion_pairs,
    ramachandran_angles,
    torsion_angles,
    torsion_state_labels,
    torsion_state_populations,
    check_phi_psi,
    analysis_definitions,
    assign_basins,
    basin_populations,
    count_transitions,
    js_divergence,
    ramachandran_histogram,
    window_js,
    wrap_degrees,
)
from .checkpoint import forecaster_fingerprint
from .efficiency import compare, efficiency, kish_ess, winner
from .errors import DataFileError, SamplingInterrupted, UsageError
from .shipped import resource_path
from .systems import SETUPS
from .units import whole_steps
from .walkers import ForecastWalkers, PlainWalkers, PluginWalkers

logger = logging.getLogger(__name__)

REFERENCE_ENV = "OPENMM_FORECAST_REFERENCE"
"""Environment variable naming the default reference (a directory of phi/psi .npy runs or one file)."""

REPORT_FORMAT = 3
"""Format of ``report.json``: 3 declares the winner by effective samples per second (``efficiency``; the first arm to
the JS bar is ``first_to_bar``); 2 held any number of arms under ``arms`` (1 had ``plain`` and ``hybrid``)."""

REQUIRED_ARM_KEYS = ("kind", "simulated_ns", "wall_seconds", "ns_per_day", "js_to_reference", "basins",
                     "transitions", "mean_temperature_K", "time_to_bar")
"""Keys every arm of a report (``report['arms'][name]``) has."""

SHIPPED_REFERENCES = {"amber14-vacuum": "reference", "amber14-obc2": "reference/amber14-obc2",
                      "ani1x": "reference/ani1x-chain"}
"""Reference of each setup shipped in ``openmm_forecast/resources`` (key: :func:`reference_key`; provenance in
``resources/reference/README.md``), all at 300 K.  amber14: plain MD, LangevinMiddleIntegrator, 2 fs, HBonds;
ani1x: exact generalised-HMC chains (``scripts/make_chain_reference.py``), because plain ANI-1x MD reaches
nanoseconds only in hours."""

SHIPPED_REFERENCE_TEMPERATURE_K = 300.0

CHAIN_REFERENCES = ("ani1x",)
"""Keys of :data:`SHIPPED_REFERENCES` whose runs are Markov chains, not plain MD: their frames give the distribution
(JS, populations) but not plain MD's time course, so no plain-MD time or noise is estimated from them."""

SHIPPED_POPULATIONS = {"amber14-obc2": "reference/amber14-obc2-metad/summary.json",
                       "ani1x": "reference/ani1x-chain/summary.json"}
"""Converged basin populations shipped per :func:`reference_key` (amber14-obc2: OpenMM metadynamics, then
sampling under the frozen bias, reweighted: ``scripts/make_metad_reference.py``; ani1x: exact generalised-HMC
chains, ``scripts/make_chain_reference.py``; provenance in ``resources/reference/README.md``)."""

ENGINES = ("python", "plugin")
"""What drives a hybrid arm's jumps: the Python driver (:class:`~openmm_forecast.walkers.ForecastWalkers`, batched
forecasts) or the C++ plugin (:class:`~openmm_forecast.walkers.PluginWalkers`: a ``ForecastIntegrator`` per walker
under ``Simulation.step``)."""

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


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

    from ._runtime import package_versions
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
        "versions": package_versions(),
    }


def reference_key(molecular_system):
    """The key of :data:`SHIPPED_REFERENCES` a system's potential would have.

    The setup name, except for ``ml``: there the name of the shipped potential it was built from
    (recognised by its file name and SHA-256, so a copy of the shipped file counts; another file, or
    ``ani2x``, has no key: None).  Hydrogen masses do not matter (they leave the configurational
    distribution unchanged).
    """
    if molecular_system.setup != "ml":
        return molecular_system.setup
    match = re.match(r"TorchScript (\S+)\.pt \(sha256 ([0-9a-f]{16})\)", molecular_system.potential)
    if match is None:
        return None
    from .errors import ModelFileError
    from .potentials import shipped_potential

    name, digest = match.groups()
    try:
        path = shipped_potential(name)
    except ModelFileError:
        return None
    return name if file_sha256(path).startswith(digest) else None


def shipped_reference(key):
    """Path of the shipped reference for a :func:`reference_key` (None when none ships for it)."""
    if key not in SHIPPED_REFERENCES:
        return None
    path = resource_path(SHIPPED_REFERENCES[key])
    return path if glob.glob(os.path.join(path, "*.npy")) else None


def default_reference_path(molecular_system):
    """The reference a benchmark of ``molecular_system`` uses unless told otherwise.

    ``$OPENMM_FORECAST_REFERENCE`` when set, else the shipped plain-MD runs of the same potential
    (:data:`SHIPPED_REFERENCES`).  Looked up at call time only.

    Raises
    ------
    DataFileError
        No reference ships for this setup (and the variable is not set): names the setups that have one
        and what to pass instead.
    """
    if os.environ.get(REFERENCE_ENV):
        return os.environ[REFERENCE_ENV]
    key = reference_key(molecular_system)
    path = shipped_reference(key)
    if path is None:
        what = f"setup {molecular_system.setup!r}" + (
            f" with potential {molecular_system.potential!r}" if molecular_system.setup == "ml" else "")
        raise DataFileError(
            f"no reference ships for {what} (shipped: {', '.join(SHIPPED_REFERENCES)}); a JS against another "
            "potential's distribution would measure that difference, not convergence. Pass --reference (plain-MD "
            "phi/psi of this potential, e.g. made with scripts/make_reference.py), or --no-reference to measure "
            "speed, acceptance and temperature only"
        )
    return path


def reference_populations(molecular_system):
    """The shipped converged basin populations for a system's potential at 300 K, or None.

    Returns
    -------
    dict or None
        ``{basin: {"population", "standard_error", "interval"}}`` (the mean of the independent seeds; its standard
        error from their 95 % block-bootstrap intervals, combined; the interval spanning theirs) of every basin
        some seed visited (a basin none visited is left out: its population is unknown), ``"source"`` and
        ``"method"`` (how it was sampled, for plots).
    """
    key = reference_key(molecular_system)
    temperature_K = molecular_system.temperature.value_in_unit(unit.kelvin)
    if key not in SHIPPED_POPULATIONS or abs(temperature_K - SHIPPED_REFERENCE_TEMPERATURE_K) > 1e-6:
        return None
    path = resource_path(SHIPPED_POPULATIONS[key])
    if not os.path.isfile(path):
        return None
    import json

    with open(path) as handle:
        summary = json.load(handle)
    seeds = list(summary["per_seed"].values())
    result = {"source": os.path.relpath(path, resource_path("")),
              "method": summary.get("label", "metadynamics, reweighted")}
    for basin, population in summary["pooled_mean_of_seeds"].items():
        if all(seed[basin]["population"] == 0 for seed in seeds):  # never visited: unknown, not zero
            continue
        intervals = np.array([seed[basin]["interval_95"] for seed in seeds])
        error = float(np.sqrt(np.sum(((intervals[:, 1] - intervals[:, 0]) / 3.92) ** 2)) / len(seeds))
        result[basin] = {"population": population, "standard_error": error,
                         "interval": [float(intervals[:, 0].min()), float(intervals[:, 1].max())]}
    return result


def reference_frames(source):
    """Reweighted phi/psi of a converged reference (``source`` of :func:`reference_populations`), for plots.

    Returns
    -------
    phi_psi : numpy.ndarray, shape (n_frames, 2)
        Degrees, every seed's samples.
    weights : numpy.ndarray, shape (n_frames,)
        ``exp(V / kT)`` normalised within each seed, so that every seed weighs the same.
    """
    directory = os.path.dirname(resource_path(source))
    frames = [load_npz(name, ("phi_psi", "weights"), "reweighted phi/psi of the converged reference")
              for name in sorted(glob.glob(os.path.join(directory, "seed*_samples.npz")))]
    if not frames:
        raise DataFileError(f"no seed*_samples.npz in {directory}")
    return (np.concatenate([f["phi_psi"] for f in frames]).astype(float),
            np.concatenate([f["weights"] / f["weights"].sum() for f in frames]))


def _populations_against(summary, populations):
    """Each basin's population of an arm against the converged reference: difference and z-score (the arm's
    standard error from its effective samples, combined with the reference's)."""
    result = {}
    for name, reference in populations.items():
        if name in ("source", "method") or name not in summary["basins"] or summary["efficiency"] is None:
            continue
        if name not in summary["efficiency"]:
            continue
        arm = summary["basins"][name]["population"]
        error = summary["efficiency"][name]["standard_error"]
        combined = float(np.hypot(error, reference["standard_error"]))
        result[name] = {"arm": arm, "arm_standard_error": error, "reference": reference["population"],
                        "reference_standard_error": reference["standard_error"],
                        "z": (arm - reference["population"]) / combined if combined > 0 else None}
    return result


def _shipped_key(reference_path):
    """The :data:`SHIPPED_REFERENCES` key of a reference path, or None for a user's own reference."""
    path = os.path.abspath(reference_path)
    keys = [key for key in SHIPPED_REFERENCES if os.path.abspath(resource_path(SHIPPED_REFERENCES[key])) == path]
    return keys[0] if keys else None


def reference_is_plain_md(reference_path):
    """True unless ``reference_path`` is a shipped reference made of chains (:data:`CHAIN_REFERENCES`); a user's
    own reference is plain MD, as ``--reference`` documents."""
    return _shipped_key(reference_path) not in CHAIN_REFERENCES


def _reference_mismatch(molecular_system, reference_path):
    """A note when a shipped reference was sampled under other conditions than ``molecular_system`` (else None).

    Only the shipped references have known conditions (:data:`SHIPPED_REFERENCES`: potential and 300 K); of a
    user's own reference nothing is known, so nothing is compared.
    """
    key = _shipped_key(reference_path)
    if key is None:
        return None
    differences = []
    if reference_key(molecular_system) != key:
        differences.append(f"potential (setup {molecular_system.setup!r}, reference {key!r})")
    temperature_K = molecular_system.temperature.value_in_unit(unit.kelvin)
    if abs(temperature_K - SHIPPED_REFERENCE_TEMPERATURE_K) > 1e-6:
        differences.append(f"temperature {temperature_K:g} K")
    if not differences:
        return None
    return (f"this run differs from the shipped reference ({key}, {SHIPPED_REFERENCE_TEMPERATURE_K:g} K) in "
            f"{', '.join(differences)}: its JS also measures that difference, and the times to JS compare the arms "
            "against another ensemble's distribution")


BENCHMARK_OUTPUTS = ("report.json", "ramachandran.png", "convergence.png")
"""Files :func:`run_benchmark` always writes into its output directory (with ``<arm>_phipsi.npy`` per arm)."""


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


def run_interleaved(arms, sample_interval, wall_seconds, slice_seconds=10.0, progress=None, failures=None,
                    cpu_seconds=None):
    """Sample several sets of walkers for the same wall-clock budget each, alternating in slices.

    Each arm's clock counts only its own slices, so the arms share whatever load the machine has.  An arm
    whose dynamics blow up (OpenMM's "Particle coordinate is NaN") stops there and keeps the slices it
    finished; the others go on.

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
    failures : dict, optional
        Filled with ``{name: message}`` for each arm that blew up.
    cpu_seconds : dict, optional
        Filled with ``{name: seconds}``: CPU time of the process (all its threads) during each arm's slices.

    Returns
    -------
    dict
        ``{name: WalkerSamples}``, in the order of ``arms``.

    Raises
    ------
    PotentialEvaluationError
        An arm blew up before it finished one slice (nothing of it to report).
    SamplingInterrupted
        On Ctrl-C or SIGTERM, carrying ``{name: WalkerSamples}`` of every arm with a complete sample so far (the
        interrupted slice's included).
    """
    from tqdm.auto import tqdm

    from ._runtime import openmm as mm
    from .errors import PotentialEvaluationError, is_blow_up
    from .walkers import WalkerSamples

    slice_seconds = wall_seconds if slice_seconds is None else float(slice_seconds)
    if not slice_seconds > 0:
        raise ValueError(f"slice_seconds must be > 0 or None, got {slice_seconds}")
    pieces = {name: [] for name in arms}
    used = dict.fromkeys(arms, 0.0)
    disable = None if progress is None else not progress
    try:
        with tqdm(total=len(arms) * wall_seconds, unit="s", desc="benchmark", disable=disable) as bar:
            while any(used[name] < wall_seconds for name in arms):
                for name, walkers in arms.items():
                    if used[name] >= wall_seconds:
                        continue
                    budget = min(slice_seconds, wall_seconds - used[name])
                    cpu_start = time.process_time()
                    try:
                        piece = walkers.sample(sample_interval, wall_seconds=budget, progress=False)
                    except SamplingInterrupted as interruption:
                        if interruption.samples is not None:  # the interrupted slice's complete samples
                            pieces[name].append(interruption.samples)
                        raise
                    except mm.OpenMMException as error:
                        if not is_blow_up(error):
                            raise
                        message = f"blew up after {used[name]:.1f} s of its budget: {str(error).strip()}"
                        if not pieces[name]:
                            raise PotentialEvaluationError(f"arm {name!r} {message}") from error
                        logger.warning("arm %r %s; it stops there, the other arms go on", name, message)
                        if failures is not None:
                            failures[name] = message
                        used[name] = wall_seconds
                        continue
                    pieces[name].append(piece)
                    used[name] += piece.wall_s[-1]
                    if cpu_seconds is not None:
                        cpu_seconds[name] = cpu_seconds.get(name, 0.0) + time.process_time() - cpu_start
                    bar.n = round(sum(min(value, wall_seconds) for value in used.values()), 1)
                    bar.refresh()
                    bar.set_postfix_str(f"{name} {used[name]:.0f}/{wall_seconds:g} s")
    except KeyboardInterrupt as interruption:
        sampled = {name: WalkerSamples.concatenate(parts) for name, parts in pieces.items() if parts}
        raise SamplingInterrupted(SamplingInterrupted.signal_of(interruption), sampled) from interruption
    return {name: WalkerSamples.concatenate(parts) for name, parts in pieces.items()}


# --------------------------------------------------------------------------------------------------
# Analysis of one arm
# --------------------------------------------------------------------------------------------------


def convergence_curve(phi_psi, reference_histogram, bins=DEFAULT_BINS, angle_range=DEFAULT_RANGE, weights=None):
    """JS divergence against the reference after every sampling round, all walkers pooled.

    Parameters
    ----------
    phi_psi : numpy.ndarray, shape (n_walkers, n_samples, 2)
        Degrees.
    reference_histogram : numpy.ndarray, shape (bins, bins)
    bins, angle_range
        Histogram bins per angle and range in degrees (those of ``reference_histogram``).
    weights : numpy.ndarray, shape (n_walkers, n_samples), optional
        Weights of reweighted frames (default: all equal).

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
    weights = np.ones((n_walkers, n_samples)) if weights is None else weights
    for sample in range(n_samples):
        np.add.at(counts, (i[:, sample], j[:, sample]), weights[:, sample])
        js[sample] = js_divergence(counts, reference_histogram)
    return js


def plain_noise_js(runs, n_walkers, frames_per_walker, n_draws=200, seed=0, bins=DEFAULT_BINS,
                   angle_range=DEFAULT_RANGE):
    """Plain MD's own JS at an arm's length: windows of the reference runs, pooled like the arm's walkers.

    Each draw takes ``n_walkers`` disjoint windows of ``frames_per_walker`` consecutive frames (windows never
    straddle two runs), pools them, and computes their JS against (a) the pool of all reference frames
    (``in_pool``: the windows are part of it, which lowers their JS) and (b) the pool of every other
    reference frame (``held_out``: a smaller reference, which raises it).  The two bracket the JS an
    independent plain-MD run of that length and walker count, started in equilibrium, would have.

    Parameters
    ----------
    runs : list of numpy.ndarray
        Reference runs, each (n_frames, 2) degrees, frames at the arm's sample interval.
    n_walkers, frames_per_walker : int
    n_draws : int
        Random draws of windows (fixed ``seed``: the same numbers for the same inputs).
    bins, angle_range
        Histogram settings (those of the arms' JS).

    Returns
    -------
    dict or None
        ``walkers``, ``frames_per_walker``, ``windows_available``, ``draws``, and ``in_pool`` and
        ``held_out`` with ``mean``, ``p05``, ``p95`` of the JS; None when the runs hold fewer than
        ``n_walkers + 1`` such windows.
    """
    frames = int(frames_per_walker)
    if frames < 1 or n_walkers < 1:
        return None
    lo, hi = angle_range
    edges = np.linspace(lo, hi, bins + 1)

    def counts(phi_psi):
        wrapped = wrap_degrees(phi_psi)
        histogram, _, _ = np.histogram2d(wrapped[:, 0], wrapped[:, 1], bins=[edges, edges])
        return histogram

    blocks = np.array([counts(run[i * frames:(i + 1) * frames]) for run in runs for i in range(len(run) // frames)])
    if len(blocks) < n_walkers + 1:
        return None
    total = sum(counts(run) for run in runs)
    rng = np.random.default_rng(seed)
    in_pool, held_out = [], []
    for _ in range(int(n_draws)):
        window = blocks[rng.choice(len(blocks), size=n_walkers, replace=False)].sum(axis=0)
        in_pool.append(js_divergence(window, total))
        held_out.append(js_divergence(window, total - window))

    def spread(values):
        return {"mean": float(np.mean(values)), "p05": float(np.percentile(values, 5)),
                "p95": float(np.percentile(values, 95))}

    return {"walkers": int(n_walkers), "frames_per_walker": frames, "windows_available": int(len(blocks)),
            "draws": int(n_draws), "in_pool": spread(in_pool), "held_out": spread(held_out),
            "method": "JS of n_walkers disjoint reference windows of the arm's length per walker, pooled, against "
                      "all reference frames (in_pool, biased low) and against the other frames (held_out, biased "
                      "high)"}


def arm_efficiency(phi_psi, wall_seconds, cpu_seconds=None, weights=None):
    """Effective samples per second of every basin's indicator (see :mod:`openmm_forecast.efficiency`).

    Parameters
    ----------
    phi_psi : numpy.ndarray, shape (n_walkers, n_samples, 2)
        Degrees.
    wall_seconds : float
    cpu_seconds : float, optional
    weights : numpy.ndarray, shape (n_walkers, n_samples), optional
        Weights of reweighted samples (the ESS of weighted samples, :func:`~openmm_forecast.efficiency.
        weighted_inefficiency`).

    Returns
    -------
    dict or None
        ``{basin: {**Efficiency.as_dict() per wall-clock second, "per_cpu_second": {"ess_per_second",
        "interval"}}}``; None with fewer than two samples per walker.
    """
    n_walkers, n_samples = phi_psi.shape[:2]
    if n_samples < 2:
        return None
    labels = assign_basins(phi_psi.reshape(-1, 2)).reshape(n_walkers, n_samples)
    result = {}
    for index, basin in enumerate(BASINS):
        per_wall = efficiency(labels == index, wall_seconds, observable=f"{basin.name} indicator", weights=weights)
        result[basin.name] = per_wall.as_dict()
        if cpu_seconds:
            per_cpu = dataclasses.replace(per_wall, seconds=cpu_seconds)
            result[basin.name]["per_cpu_second"] = {
                "ess_per_second": per_cpu.ess_per_second, "seconds": cpu_seconds,
                "interval": None if per_cpu.interval is None else list(per_cpu.interval)}
    return result


def summarize_arm(samples, reference_histogram, topology, wall_budget_s, extra=None, cpu_seconds=None,
                  weights=None, torsions=()):
    """Numbers of one arm: time, speed, JS, temperature, basins, transitions, and its convergence curve.

    Parameters
    ----------
    samples : WalkerSamples
    reference_histogram : numpy.ndarray, shape (bins, bins), or None
        None: no reference (JS entries are None, the curve is empty).
    topology : openmm.app.Topology
    wall_budget_s : float
    extra : dict, optional
        Merged into the summary.
    cpu_seconds : float, optional
        CPU time of the arm (for its efficiency per CPU second).
    weights : numpy.ndarray, shape (n_walkers, n_samples), optional
        Weights of reweighted samples (a metadynamics arm): JS, populations and efficiency are weighted;
        transitions are those of the biased trajectories.
    torsions : sequence of Torsion
        The user's torsions: populations and effective samples per second of each of their states.

    Returns
    -------
    summary : dict
        JSON types; the keys of :data:`REQUIRED_ARM_KEYS` (``time_to_bar`` is added by
        :func:`run_benchmark`) and more.  JS, ``basins``, ``transitions`` and ``efficiency`` are those of the first
        residue with phi and psi (a dipeptide's only one); a molecule with several has them all under ``residues``
        (``{residue: {"basins", "transitions", "efficiency"}}``), the user's torsions under ``torsions``.
    phi_psi : numpy.ndarray, shape (n_walkers, n_samples, n_residues, 2)
    js_curve : numpy.ndarray, shape (n_samples,), or None
    """
    n_samples, n_walkers = samples.positions_nm.shape[:2]
    pairs = backbone_torsion_pairs(topology)
    flat = np.swapaxes(samples.positions_nm, 0, 1).reshape((n_walkers * n_samples,) + samples.positions_nm.shape[2:])
    all_phi_psi = ramachandran_angles(flat, pairs).reshape(n_walkers, n_samples, len(pairs), 2)
    phi_psi = all_phi_psi[:, :, 0]
    pooled = phi_psi.reshape(-1, 2)
    js_curve = None if reference_histogram is None else convergence_curve(phi_psi, reference_histogram,
                                                                           weights=weights)
    wall = float(samples.wall_s[-1])
    simulated_ns = samples.simulated_ps / 1000.0
    per_walker = [count_transitions(run) for run in phi_psi]
    counts = {a: {b: sum(t["counts"][a][b] for t in per_walker) for b in per_walker[0]["counts"][a]}
              for a in per_walker[0]["counts"]}
    temperatures = np.asarray(samples.temperature_K, dtype=float)
    summary = {
        "walkers": int(samples.n_walkers),
        "samples_per_walker": int(len(samples.time_ps)),
        "sample_interval_ps": float(samples.interval_ps),
        "simulated_ns": simulated_ns,
        "simulated_ns_per_walker": simulated_ns / samples.n_walkers,
        "wall_seconds": wall,
        "cpu_seconds": cpu_seconds,
        "wall_budget_seconds": float(wall_budget_s),
        "ns_per_day": simulated_ns / wall * 86400.0,
        "js_to_reference": None if js_curve is None else float(js_curve[-1]),
        "mean_temperature_K": float(temperatures.mean()),
        "temperature_std_K": float(temperatures.std()),
        "temperature_note": "kinetic temperature of the velocities the Context holds at each sample (half-step "
                            "velocities for LangevinMiddleIntegrator, as StateDataReporter reads them), all walkers",
        "basins": basin_populations(pooled, weights=None if weights is None else weights.reshape(-1)),
        "transitions": {"total": int(sum(t["total"] for t in per_walker)), "counts": counts,
                        "note": "counted within each walker's trajectory, then summed over walkers"},
        "efficiency": arm_efficiency(phi_psi, wall, cpu_seconds, weights),
        "residue": pairs[0].label,
    }
    flat_weights = None if weights is None else weights.reshape(-1)
    if len(pairs) > 1:
        summary["residues"] = {pair.label: {
            "basins": basin_populations(all_phi_psi[:, :, r].reshape(-1, 2), weights=flat_weights),
            "transitions": int(sum(count_transitions(run)["total"] for run in all_phi_psi[:, :, r])),
            "efficiency": arm_efficiency(all_phi_psi[:, :, r], wall, cpu_seconds, weights)}
            for r, pair in enumerate(pairs)}
    if torsions:
        angles = torsion_angles(flat, [t.atoms for t in torsions]).reshape(n_walkers, n_samples, len(torsions))
        summary["torsions"] = {}
        for t, torsion in enumerate(torsions):
            labels = torsion_state_labels(angles[:, :, t])
            summary["torsions"][torsion.name] = {
                **torsion.as_dict(), "populations": torsion_state_populations(angles[:, :, t], flat_weights),
                "efficiency": None if n_samples < 2 else {
                    state: efficiency(labels == index, wall, observable=f"{torsion.name} {state} indicator",
                                      weights=weights).as_dict() for index, (state, _) in enumerate(TORSION_STATES)}}
    summary.update(extra or {})
    return summary, all_phi_psi, js_curve


def time_to_js(target_js, js_curve, wall_s, ns_per_day=None, reference_curve=None, frame_interval_ps=None):
    """Wall clock an arm needs to reach ``target_js``: read off its convergence curve, else estimated or unknown.

    Parameters
    ----------
    target_js : float
    js_curve, wall_s : numpy.ndarray, shape (n_samples,)
        The arm's convergence curve and the wall clock of each of its points.
    ns_per_day : float, optional
        The arm's measured speed; with ``reference_curve``, allows an estimate when the curve never gets
        to ``target_js`` (for the plain-MD baseline only: the reference runs' curve describes plain MD).
    reference_curve : tuple of numpy.ndarray, optional
        ``(frames, mean_js)`` from :func:`reference_window_curve`.
    frame_interval_ps : float, optional
        Time between reference frames, ps.

    Returns
    -------
    dict
        ``target_js``, ``wall_seconds`` (None when not reached and not estimated), ``reached`` (within
        the run), ``estimated`` and ``method`` (and, when estimated, ``simulated_ns_needed``).
    """
    result = {"target_js": float(target_js)}
    reached = np.nonzero(np.asarray(js_curve) <= target_js)[0]
    if reached.size:
        result.update(wall_seconds=float(wall_s[reached[0]]), reached=True, estimated=False,
                      method="measured: first point of the convergence curve at or below the target")
        return result
    ran_s = float(wall_s[-1]) if len(wall_s) else 0.0
    if reference_curve is None or ns_per_day is None:
        result.update(wall_seconds=None, reached=False, estimated=False,
                      method=f"not reached within the run ({ran_s:.1f} s of wall clock)")
        return result
    frames, mean_js = reference_curve
    length_frames, how = length_for_js(frames, mean_js, target_js)
    needed_ns = length_frames * frame_interval_ps / 1000.0
    method = (f"estimated: not reached within the run; simulated length for that JS from the reference runs' "
              f"mean-window-JS-vs-length curve ({how}), over the arm's measured ns/day")
    seconds = needed_ns / ns_per_day * 86400.0
    if seconds < ran_s:  # the walkers share one start: they need more than independent windows
        seconds = ran_s
        method += ("; that estimate is below the wall clock the arm already ran without reaching the JS, which is "
                   "used instead (a lower bound)")
    result.update(wall_seconds=seconds if np.isfinite(seconds) else None, reached=False, estimated=True,
                  method=method, simulated_ns_needed=needed_ns)
    return result


# --------------------------------------------------------------------------------------------------
# Arms
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BenchmarkArm:
    """One arm of a benchmark: walkers of one System, advanced by plain MD or by guarded jumps.

    Attributes
    ----------
    name : str
        Key in the report and file-name stem (letters, digits, ``_ . + -``; unique within a benchmark).
    molecular_system : MolecularSystem
        What the arm simulates (for hydrogen mass repartitioning: ``build_system(..., hydrogen_mass=...,
        timestep=4 * unit.femtosecond)``).
    forecaster : Forecaster or str, optional
        The proposal of a hybrid arm (a forecaster, or a name or path for ``load_forecaster``); None for
        plain MD.
    forecaster_options : dict, optional
        ``load_forecaster`` arguments for baselines and the surrogate (``stride_ps``, ``max_frames``, ...).
    accelerator_options : dict
        :class:`~openmm_forecast.accelerator.AcceleratorOptions` fields of a hybrid arm (the acceptance
        rule: ``metropolis``, ``energy_tolerance_kT``, ...).
    metadynamics : dict, optional
        Given (``{}`` for the defaults of :data:`METADYNAMICS`, or some of its keys): the arm is well-tempered
        metadynamics of the target itself, reweighted (:class:`MetadynamicsWalkers`), what a user would run
        instead of a sampler that needs no reweighting.
    engine : str
        A hybrid arm's driver (:data:`ENGINES`): ``'python'`` (default) or ``'plugin'`` (the C++
        ``ForecastIntegrator``: the forecaster is what it takes as its proposal, a surrogate System or a TorchScript
        model; its jump is ``stride_ps * max_frames`` of ``forecaster_options``, one frame, and its surrogate step
        their ``timestep``).  A plugin arm whose library is not built is refused at creation (PluginError).
    reweighted_surrogate : str or openmm.System, optional
        Given (a shipped fitted surrogate, a ``.xml`` file, a System): the arm is Langevin MD of that surrogate
        with every sample reweighted to the target by ``exp(-(U_t - U_s) / kT)``, one target energy per sample
        (:class:`~openmm_forecast.reweighting.ReweightedWalkers`).
    """

    name: str
    molecular_system: object
    forecaster: object = None
    forecaster_options: dict = None
    accelerator_options: dict = dataclasses.field(default_factory=dict)
    metadynamics: dict = None
    engine: str = "python"
    reweighted_surrogate: object = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _ARM_NAME.match(self.name):
            raise ValueError(f"arm name {self.name!r} must start with a letter or digit and hold only letters, digits "
                             "and _ . + - (it names files)")
        if self.forecaster is None and (self.forecaster_options or self.accelerator_options):
            raise ValueError(f"arm {self.name!r} is plain MD (no forecaster): it takes no forecaster or accelerator "
                             "options")
        if self.metadynamics is not None:
            if self.forecaster is not None:
                raise ValueError(f"arm {self.name!r}: metadynamics is an arm of its own, not an option of a forecaster")
            unknown = set(self.metadynamics) - set(METADYNAMICS)
            if unknown:
                raise ValueError(f"arm {self.name!r}: unknown metadynamics settings {sorted(unknown)}; known: "
                                 f"{sorted(METADYNAMICS)}")
        if self.reweighted_surrogate is not None and (self.forecaster is not None or self.metadynamics is not None
                                                      or self.engine != "python"):
            raise ValueError(f"arm {self.name!r}: a reweighted surrogate is an arm of its own (no forecaster, "
                             "metadynamics or plugin)")
        if self.engine not in ENGINES:
            raise ValueError(f"arm {self.name!r}: engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "plugin":
            if self.forecaster is None:
                raise ValueError(f"arm {self.name!r}: only an arm with a proposal (a hybrid arm) runs on the plugin")
            check_plugin(f"arm {self.name!r} (engine 'plugin')")

    @property
    def kind(self):
        """'plain' (OpenMM alone), 'metad' (metadynamics of the target, reweighted), 'reweighted' (a surrogate's
        MD, reweighted) or 'hybrid' (forecast jumps)."""
        if self.metadynamics is not None:
            return "metad"
        if self.reweighted_surrogate is not None:
            return "reweighted"
        return "plain" if self.forecaster is None else "hybrid"

    @property
    def acceptance(self):
        """Name of a hybrid arm's acceptance rule ('tolerance', 'metropolis', ...); None for plain MD."""
        if self.forecaster is None:
            return None
        rule = self.accelerator_options.get("acceptance")
        if rule is not None:
            return rule if isinstance(rule, str) else getattr(rule, "name", type(rule).__name__)
        return "metropolis" if self.accelerator_options.get("metropolis") else "tolerance"

    @property
    def timestep_fs(self):
        return self.molecular_system.timestep.value_in_unit(unit.femtosecond)

    @property
    def hydrogen_mass_amu(self):
        mass = self.molecular_system.hydrogen_mass
        return None if mass is None else float(mass.value_in_unit(unit.dalton))

    def label(self, forecaster=None):
        """Short description for plots and summaries."""
        if self.kind == "metad":
            settings = {**METADYNAMICS, **self.metadynamics}
            return (f"{self.name}: well-tempered metadynamics {self.timestep_fs:g} fs (bias factor "
                    f"{settings['bias_factor']:g}), reweighted")
        if self.kind == "reweighted":
            what = self.reweighted_surrogate
            what = os.fspath(what) if isinstance(what, (str, os.PathLike)) else "a System"
            return f"{self.name}: MD of {what} {self.timestep_fs:g} fs, reweighted to the target"
        if self.forecaster is None:
            hmr = f", H {self.hydrogen_mass_amu:g} amu" if self.hydrogen_mass_amu is not None else ""
            return f"{self.name}: plain MD {self.timestep_fs:g} fs{hmr}"
        if forecaster is not None:
            what = forecaster.metadata.architecture
        else:
            what = os.fspath(self.forecaster) if isinstance(self.forecaster, (str, os.PathLike)) else "a System"
        return f"{self.name}: {what} + {self.acceptance}" + (" (plugin)" if self.engine == "plugin" else "")

    def create_walkers(self, n_walkers, seed, platform, backend=None):
        """The arm's walkers (PlainWalkers, MetadynamicsWalkers, ReweightedWalkers, ForecastWalkers or PluginWalkers)
        with seeds ``seed,
        seed + 1, ...``; with a :class:`~openmm_forecast.distributed.RayBackend`, the same walkers in Ray actors."""
        if backend is not None:
            if self.kind in ("metad", "reweighted"):
                raise UsageError(f"arm {self.name!r}: {self.kind} walkers run only in-process (--backend local)")
            if self.engine == "plugin":
                raise UsageError(f"arm {self.name!r}: plugin walkers run only in-process (--backend local)")
            return backend.walkers(self.molecular_system, n_walkers, seed=seed, platform=platform,
                                   forecaster=self.forecaster, forecaster_options=self.forecaster_options,
                                   **self.accelerator_options)
        if self.kind == "metad":
            return MetadynamicsWalkers(self.molecular_system, n_walkers, seed=seed, platform=platform,
                                       **self.metadynamics)
        if self.kind == "reweighted":
            from .reweighting import ReweightedWalkers

            return ReweightedWalkers(self.molecular_system, self.reweighted_surrogate, n_walkers, seed=seed,
                                     platform=platform)
        if self.forecaster is None:
            return PlainWalkers(self.molecular_system, n_walkers, seed=seed, platform=platform)
        if self.engine == "plugin":
            return PluginWalkers(self.molecular_system, self.forecaster, n_walkers, seed=seed, platform=platform,
                                 **self._plugin_options())
        return ForecastWalkers(self.molecular_system, self.forecaster, n_walkers, seed=seed, platform=platform,
                               forecaster_options=self.forecaster_options, **self.accelerator_options)


    def _plugin_options(self):
        """ForecastIntegrator options of a plugin arm: the accelerator options, and the jump (``stride_ps *
        max_frames``) and surrogate step (``timestep``) of the forecaster options."""
        options = dict(self.accelerator_options)
        forecaster = self.forecaster_options or {}
        unknown = set(forecaster) - {"stride_ps", "max_frames", "timestep"}
        if unknown:
            raise ValueError(f"arm {self.name!r}: the plugin takes no forecaster options {sorted(unknown)} (its "
                             "proposal is a surrogate System or a TorchScript model)")
        if "stride_ps" in forecaster:
            stride = forecaster["stride_ps"]
            stride = stride if unit.is_quantity(stride) else stride * unit.picosecond
            options["jump"] = stride * forecaster.get("max_frames", 1)
        if "timestep" in forecaster:
            options["surrogate_step"] = forecaster["timestep"]
        return options


def check_plugin(where):
    """Refuse a plugin arm when the plugin library does not load, naming ``where`` (an arm or a flag).

    Raises
    ------
    PluginError
        The library is not built or the loader refused it; the message names ``where`` and how to build it.
    """
    from .errors import PluginError
    from .plugin import load_plugin

    try:
        load_plugin()
    except PluginError as error:
        raise PluginError(f"{where} runs on the C++ plugin, which is not available: {error}") from error


METADYNAMICS = {"bias_factor": 6.0, "height_kJ": 1.0, "width_deg": 20.0, "deposit_ps": 1.0, "grid": 72,
                "shared_bias": True}
"""Default settings of a ``metad`` arm: those of the shipped converged reference (``scripts/make_metad_reference.py``:
Gaussians of 1 kJ/mol and 0.35 rad (20 degrees) every ps, bias factor 6, 72 x 72 grid), with one bias shared by
all walkers (multiple-walker metadynamics, what one runs with several walkers)."""


class MetadynamicsWalkers(PlainWalkers):
    """Well-tempered metadynamics of the target itself (OpenMM's ``app.Metadynamics``) on the phi/psi of the first
    residue of :func:`~openmm_forecast.analysis.backbone_torsion_pairs`: one bias that every walker deposits into
    (multiple walkers, ``shared_bias=True``), or one independent bias per walker.

    With a shared bias, each walker's Context receives the whole bias (every walker's Gaussians) at its own deposits;
    its weight is computed right after its deposit, with ``c(t)`` of that same bias, so sample at a multiple of
    ``deposit_ps``.  Walkers that share a bias are not independent: the leave-one-walker-out intervals of the
    efficiency are then optimistic; ``shared_bias=False`` gives independent walkers.

    Reweighting: the time-dependent bias with Tiwary and Parrinello's ``c(t)`` (J. Phys. Chem. B 119, 736, 2015):
    a sample taken at time ``t`` at collective variables ``s`` has weight ``exp((V(s, t) - c(t)) / kT)`` with
    ``c(t) = kT ln( sum_s exp(-F(s, t) / kT) / sum_s exp(-F(s, t) / (gamma kT)) )`` over the grid (periodic
    duplicate row and column left out), ``F = -gamma / (gamma - 1) V`` the free energy estimate and ``gamma`` the
    bias factor.  Every sample counts, from the first deposit on (no frozen-bias phase: the arm's budget is one
    wall clock, like every other arm's).

    Parameters
    ----------
    molecular_system : MolecularSystem
        Not modified: every walker gets a copy of its System plus its own bias force.
    n_walkers, seeds, seed, platform
        As for :class:`~openmm_forecast.walkers.PlainWalkers`.
    bias_factor, height_kJ, width_deg, deposit_ps, grid, shared_bias
        See :data:`METADYNAMICS`.

    Attributes
    ----------
    log_weights : list of numpy.ndarray
        ``(V - c) / kT`` of every walker, shape (n_walkers,), one entry per sample taken (appended at the end of
        each :meth:`step`, i.e. at the state the sample records).
    torsions : TorsionPair
    """

    def __init__(self, molecular_system, n_walkers=None, *, seeds=None, seed=1, platform=None,
                 bias_factor=METADYNAMICS["bias_factor"], height_kJ=METADYNAMICS["height_kJ"],
                 width_deg=METADYNAMICS["width_deg"], deposit_ps=METADYNAMICS["deposit_ps"], grid=METADYNAMICS["grid"],
                 shared_bias=METADYNAMICS["shared_bias"]):
        from openmm import app

        from ._runtime import openmm as mm
        from .analysis import backbone_torsion_pairs
        from .barriers import torsion_force

        pairs = backbone_torsion_pairs(molecular_system.topology)
        if not pairs:
            raise ValueError("metadynamics needs a residue with a backbone phi and psi to bias")
        self.torsions = pairs[0]
        if seeds is None:
            seeds = [seed + i for i in range(int(n_walkers))]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must differ between walkers, got {list(seeds)}")
        self.kT_kJ = float((unit.MOLAR_GAS_CONSTANT_R * molecular_system.temperature).value_in_unit(
            unit.kilojoule_per_mole))
        self.bias_factor = float(bias_factor)
        frequency = whole_steps(float(deposit_ps), molecular_system.timestep.value_in_unit(unit.picosecond),
                                "deposit_ps")
        self.metadynamics, simulations = [], []
        for group in [seeds] if shared_bias else [[walker_seed] for walker_seed in seeds]:
            system = mm.XmlSerializer.clone(molecular_system.system)
            variables = [app.BiasVariable(torsion_force(atoms), -np.pi, np.pi, np.radians(width_deg), periodic=True,
                                          gridWidth=int(grid)) for atoms in (self.torsions.phi, self.torsions.psi)]
            meta = app.Metadynamics(system, variables, molecular_system.temperature, self.bias_factor,
                                    height_kJ * unit.kilojoule_per_mole, frequency)
            self.metadynamics += [meta] * len(group)
            simulations += self._create_simulations(dataclasses.replace(molecular_system, system=system), None,
                                                    group, group[0], platform, True)
        self.simulations = simulations
        self.seeds = [int(s) for s in seeds]
        self.molecular_system = molecular_system
        self.log_weights = []

    def step(self, n_steps):
        log_weights = []
        for simulation, meta in zip(self.simulations, self.metadynamics):
            meta.step(simulation, int(n_steps))
            log_weights.append(self._log_weight(simulation, meta))  # now: a shared bias changes with the next walker
        self.log_weights.append(np.array(log_weights))

    def _log_weight(self, simulation, meta):
        """``(V(s, t) - c(t)) / kT`` of one walker's current state."""
        from scipy.special import logsumexp

        group = meta._force.getForceGroup()  # the group Metadynamics chose for its bias (its own attribute)
        bias = simulation.context.getState(getEnergy=True, groups={group}).getPotentialEnergy().value_in_unit(
            unit.kilojoule_per_mole)
        free = meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)[:-1, :-1] / self.kT_kJ
        c = logsumexp(-free) - logsumexp(-free / self.bias_factor)
        return bias / self.kT_kJ - c

    def weights(self, n_samples):
        """Weights of the first ``n_samples`` samples, shape (n_walkers, n_samples), scaled to a maximum of 1."""
        log_weights = np.array(self.log_weights[:n_samples]).T
        return np.exp(log_weights - log_weights.max())


def choose_platforms(arms, platform=None, pin="auto"):
    """The platform configuration of every arm, chosen by timing the arm's own System on this machine.

    The baseline's System is timed in every candidate configuration (:func:`~openmm_forecast.platforms.
    candidate_configurations`: Reference, CPU with one thread and with one per core, GPU platforms; pinned to
    one core and not), and whether the run pins its process follows its fastest one (all arms run in one
    thread, so pinning is one decision for all).  Every other System (HMR's masses, for instance) is timed in
    the candidates of that pinning state.

    Parameters
    ----------
    arms : list of BenchmarkArm
    platform : str or openmm.Platform or PlatformConfiguration, optional
        Given: every arm runs on it, nothing is measured.
    pin : 'auto' or bool
        'auto': pin when the measured best configuration is pinned (with ``platform`` given: no pinning);
        True / False: only pinned / unpinned candidates.

    Returns
    -------
    configurations : dict
        ``{arm name: PlatformConfiguration}``.
    timings : dict
        ``{arm name: [PlatformTiming.as_dict(), ...]}`` behind each choice (empty lists for a given platform).
    pinned : bool
        Whether the run must pin its thread to one core before it creates the Contexts.
    """
    from .platforms import PlatformConfiguration, candidate_configurations, fastest_configuration, get_platform

    if pin not in ("auto", True, False):
        raise ValueError(f"pin must be 'auto', True or False, got {pin!r}")
    if platform is not None:
        configuration = platform if isinstance(platform, PlatformConfiguration) else PlatformConfiguration.create(
            get_platform(platform).getName(), pinned=pin is True)
        return ({arm.name: configuration for arm in arms}, {arm.name: [] for arm in arms}, configuration.pinned)
    baseline = arms[0].molecular_system
    _, base_timings = fastest_configuration(baseline, candidate_configurations(None if pin == "auto" else pin))
    pinned = min(base_timings, key=lambda c: base_timings[c].us_per_step).pinned
    configurations, timings = {}, {}
    for arm in arms:
        system = arm.molecular_system
        if system.fingerprint() == baseline.fingerprint():
            measured = base_timings
            usable = {c: t for c, t in measured.items() if c.pinned == pinned}
            best = min(usable, key=lambda c: usable[c].us_per_step)
        else:
            best, measured = fastest_configuration(system, candidate_configurations(pinned))
        configurations[arm.name] = best
        timings[arm.name] = [t.as_dict() for t in measured.values()]
    return configurations, timings, pinned


def _platform_report(arm, described, configuration, timings, samples):
    """What an arm ran on (``described``: :func:`~openmm_forecast.platforms.describe_platform` of its first
    Context, read during the run), what was measured to choose it, and (plain MD) how fast it ran against that."""
    properties = " ".join(f"{k}={v}" for k, v in described["properties"].items()
                          if k in ("Threads", "Precision", "DeviceIndex"))
    label = described["name"] + (f" {properties}" if properties else "") + (
        f", pinned to core {described['pinned_core']}" if described["pinned_core"] is not None else ", not pinned")
    result = {"platform": label, "platform_configuration": described,
              "platform_choice": {"chosen": configuration.as_dict(), "by": "measurement" if timings else "given",
                                  "timings": timings}}
    if timings:
        same_pinning = [t["us_per_step"] for t in timings if t["pinned"] == configuration.pinned]
        result["platform_choice"]["best_us_per_step"] = min(same_pinning)
    if arm.kind == "plain" and timings and len(samples.time_ps):
        steps = samples.simulated_ps / arm.molecular_system.timestep.value_in_unit(unit.picosecond)
        in_run = float(samples.wall_s[-1]) * 1e6 / steps
        ratio = result["platform_choice"]["best_us_per_step"] / in_run
        result.update(us_per_step_in_run=in_run, speed_vs_best_measured=ratio)
        if ratio < 0.8:
            logger.warning("arm %r ran at %.0f us/step, %.2fx the best configuration measured before the run (%.0f "
                           "us/step): the machine's load changed, or sampling costs more than it should", arm.name,
                           in_run, ratio, result["platform_choice"]["best_us_per_step"])
    return result


def _check_arms(arms):
    """Refuse an empty list, duplicate names, or arms that simulate different molecules or temperatures."""
    if not arms:
        raise ValueError("a benchmark needs at least one arm")
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must differ, got {names}")
    first = arms[0].molecular_system
    for arm in arms[1:]:
        other = arm.molecular_system
        if other.elements != first.elements:
            raise ValueError(f"arm {arm.name!r} simulates another molecule than arm {arms[0].name!r}")
        if reference_key(other) != reference_key(first) or other.setup != first.setup:
            raise ValueError(f"arm {arm.name!r} has another potential ({other.setup}: {other.potential}) than arm "
                             f"{arms[0].name!r} ({first.setup}: {first.potential}); one reference cannot judge both")
        if abs(other.temperature.value_in_unit(unit.kelvin) - first.temperature.value_in_unit(unit.kelvin)) > 1e-9:
            raise ValueError(f"arm {arm.name!r} runs at {other.temperature}, arm {arms[0].name!r} at "
                             f"{first.temperature}: the arms must sample the same ensemble")


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def plot_convergence(curves, path, target_js=None, noise_js=None, target_label="JS bar"):
    """JS divergence against the reference versus wall-clock time, log-log, one line per arm.

    Parameters
    ----------
    curves : dict
        ``{label: (wall_s, js)}``, arrays of equal length.
    path : str or os.PathLike
    target_js : float, optional
        Drawn as a dotted horizontal line (the JS bar), labelled ``target_label``.
    noise_js : float, optional
        Drawn as a dashed line (JS between independent reference runs: plain MD's own noise).
    """
    from .plotting import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
    for label, (wall, js) in curves.items():
        ax.plot(wall, np.maximum(js, 1e-6), label=label, linewidth=1.6)
    if target_js is not None:
        ax.axhline(target_js, color="0.3", linestyle=":", linewidth=1, label=f"{target_label} {target_js:.4f}")
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


def run_benchmark(arms, out, *, n_walkers=8, wall_seconds=60.0, reference=None, js_bar=None,
                  sample_interval=1.0 * unit.picosecond, reference_interval=1.0 * unit.picosecond, seed=1,
                  platform=None, pin="auto", slice_seconds=10.0, progress=None, overwrite=False,
                  efficiency_observable="beta", backend=None, torsions=()):
    """Run every arm for the same wall-clock budget, interleaved; write the report and plots.

    Parameters
    ----------
    arms : list of BenchmarkArm
        The first is the baseline the others are compared with (normally plain MD at the setup's time
        step).  All simulate the same molecule, potential and temperature.
    out : str or os.PathLike
        Output directory: ``report.json``, ``ramachandran.png``, ``convergence.png`` (with a reference) and
        ``<arm>_phipsi.npy`` per arm (shape (n_walkers, n_samples, 2), degrees; (n_walkers, n_samples, n_residues, 2)
        for several residues), with ``<arm>_weights.npy`` (n_walkers, n_samples) for a reweighted (metad) arm.
    n_walkers : int
    wall_seconds : float
        Wall-clock budget of each arm, seconds.
    reference : str or os.PathLike or False, optional
        Reference phi/psi of the same potential (see :func:`load_reference_runs`; of the first residue with phi and
        psi); default :func:`default_reference_path` (refuses the shipped setups with no shipped reference; the
        user's own molecule, which has none, is compared without: arms against each other in one run); False:
        none (no JS, no bar: speed, acceptance, temperature, populations and effective samples per second).
    js_bar : float, optional
        The JS every arm's time is measured to; default: the baseline's final JS.
    sample_interval : openmm.unit.Quantity
        Simulated time between phi/psi samples (default 1 ps, the reference's frame interval: finite-sample
        JS depends on the number of frames, so compare like with like).  A whole number of every arm's
        time steps.
    reference_interval : openmm.unit.Quantity
        Time between the reference's frames (1 ps for the shipped runs); converts its window-JS curve to ns.
    seed : int
        First walker seed (walkers use ``seed, seed + 1, ...`` in every arm).
    platform : str or openmm.Platform or PlatformConfiguration, optional
        Platform of every arm; default: each arm's fastest configuration, measured on its own System
        (:func:`choose_platforms`).
    pin : 'auto' or bool
        Pin the process's thread to one core (see :func:`choose_platforms`; 'auto': when that is faster).
    slice_seconds : float or None
        The arms alternate in slices of this much wall clock (default 10 s), so that all see the same
        machine load; None runs each arm for its whole budget, one after the other.
    progress : bool, optional
    overwrite : bool
        Replace the outputs (:data:`BENCHMARK_OUTPUTS`) of an earlier benchmark in ``out``; by default such a
        directory is refused before any work.
    efficiency_observable : str
        The basin whose indicator's effective samples per second decide the winner (default 'beta'; of the first
        residue with phi and psi).
    backend : RayBackend, optional
        Run the walkers in Ray actors (:mod:`openmm_forecast.distributed`; give ``platform``: the driver's
        timings say nothing of the actors'); default: in this process.  Each arm's summary records where each
        walker ran (``walkers_ran_on``).
    torsions : sequence of Torsion
        The user's torsions, reported in every arm (populations and effective samples per second of their states).

    Returns
    -------
    dict
        The report (also in ``out/report.json``; see docs/benchmark.md for its keys).

    Raises
    ------
    SamplingInterrupted
        Ctrl-C or SIGTERM during the sampling, after the report of what was measured (``"partial": true``; arms
        without a sample in ``arms_not_sampled``) was written; nothing is written when no arm had a sample.
    """
    from .platforms import pin_to_one_core, pinned_core, restore_affinity
    from .plotting import plot_ramachandran

    arms = list(arms)
    _check_arms(arms)
    if efficiency_observable not in [basin.name for basin in BASINS]:
        raise ValueError(f"efficiency_observable must be one of {[basin.name for basin in BASINS]}, got "
                         f"{efficiency_observable!r}")
    if not wall_seconds > 0:
        raise ValueError(f"wall_seconds must be > 0, got {wall_seconds}")
    check_output_directory(out, "out", BENCHMARK_OUTPUTS, overwrite, hint="choose another out or pass overwrite")
    if js_bar is not None and not 0 < js_bar < np.log(2):
        raise ValueError(f"js_bar must be in (0, ln 2), got {js_bar}")
    baseline = arms[0]
    system = baseline.molecular_system
    own_molecule = reference is None and not os.environ.get(REFERENCE_ENV) and system.setup not in SETUPS
    if reference is False or own_molecule:
        if js_bar is not None:
            raise ValueError("js_bar needs a reference")
        reference_path, runs, files = None, None, []
        logger.warning("%s: the arms are compared with each other (populations, effective samples per second with "
                       "intervals), no JS and no time to a bar", "no reference exists for your own molecule (pass "
                       "--reference to give one)" if own_molecule else "no reference")
    else:
        reference_path = default_reference_path(system) if reference is None else reference
        runs, files = load_reference_runs(reference_path)
    pooled_reference = None if runs is None else np.concatenate(runs)
    reference_histogram = None if runs is None else ramachandran_histogram(pooled_reference)
    interval_ps = float(sample_interval.value_in_unit(unit.picosecond))
    reference_interval_ps = float(reference_interval.value_in_unit(unit.picosecond))
    configurations, platform_timings, pinned = choose_platforms(arms, platform, pin)
    affinity_before = pin_to_one_core() if pinned and pinned_core() is None else None
    failures, cpu_seconds, interruption = {}, {}, None
    try:  # Contexts created while pinned keep their worker threads on that core
        walkers = {arm.name: arm.create_walkers(n_walkers, seed, configurations[arm.name], backend) for arm in arms}
        described = {name: arm_walkers.describe_platform()
                     for name, arm_walkers in walkers.items()}
        samples = run_interleaved(walkers, sample_interval, wall_seconds, slice_seconds, progress, failures,
                                  cpu_seconds)
    except SamplingInterrupted as stop:  # Ctrl-C or SIGTERM: report what was measured, then stop as asked
        if not stop.samples:
            raise
        samples, interruption = stop.samples, stop
        logger.warning("%s: a partial report of %s in %s", signal.Signals(stop.signum).name,
                       ", ".join(f"{name} ({part.wall_s[-1]:.0f} s)" for name, part in samples.items()), out)
    finally:
        if affinity_before is not None:
            restore_affinity(affinity_before)
    not_sampled = [arm.name for arm in arms if arm.name not in samples]
    arms = [arm for arm in arms if arm.name in samples]  # all of them, unless interrupted (the baseline is first)

    os.makedirs(out, exist_ok=True)  # only now: a benchmark refused or interrupted before a sample leaves none
    topology = system.topology
    summaries, phi_psis, curves, weights = {}, {}, {}, {}
    for arm in arms:
        arm_walkers = walkers[arm.name]
        extra = {"kind": arm.kind, "label": None, "blew_up": failures.get(arm.name), "timestep_fs": arm.timestep_fs,
                 "walkers_ran_on": arm_walkers.placement(),
                 "hydrogen_mass_amu": arm.hydrogen_mass_amu, "potential": arm.molecular_system.potential,
                 **_platform_report(arm, described[arm.name], configurations[arm.name], platform_timings[arm.name],
                                    samples[arm.name])}
        forecaster, weights[arm.name] = None, None
        if arm.kind in ("metad", "reweighted"):
            weights[arm.name] = arm_walkers.weights(len(samples[arm.name].time_ps))
            kish_fraction = kish_ess(weights[arm.name]) / weights[arm.name].size
        if arm.kind == "metad":
            extra["metadynamics"] = {
                "settings": {**METADYNAMICS, **arm.metadynamics}, "residue": arm_walkers.torsions.label,
                "torsions": arm_walkers.torsions.as_dict(),
                "bias": "one bias shared by all walkers (their intervals are optimistic)" if {
                    **METADYNAMICS, **arm.metadynamics}["shared_bias"] else "one independent bias per walker",
                "reweighting": "time-dependent bias, Tiwary-Parrinello c(t): weight exp((V(s,t) - c(t)) / kT), every "
                               "sample from the first deposit on",
                "kish_ess_fraction": kish_fraction}
        if arm.kind == "reweighted":
            extra["reweighting"] = {
                "surrogate": arm_walkers.surrogate_name,
                "surrogate_sha256": _model_file_sha256(arm.reweighted_surrogate),
                "weight": "exp(-(U_target - U_surrogate) / kT) of every sample, self-normalised",
                "target_evaluations": arm_walkers.target_evaluations,
                "infinite_target_energies": arm_walkers.infinite_target_energies,
                "kish_ess_fraction": kish_fraction}
            if kish_fraction < MIN_KISH_FRACTION:
                logger.warning("arm %r: the weights' effective fraction is %.3f: a few samples carry the estimate and "
                               "its intervals are optimistic; reweight a surrogate fitted to the target (fit-surrogate)",
                               arm.name, kish_fraction)
        if arm.kind == "hybrid":
            stats = arm_walkers.stats().as_dict()
            calls = arm_walkers.forecast_calls
            name = os.fspath(arm.forecaster) if isinstance(arm.forecaster, (str, os.PathLike)) else None
            if arm.engine == "plugin":
                settings = arm_walkers.settings
                proposal = {"name": name, "file": settings["forecasterFile"], "architecture": "surrogate" if
                            settings["forecasterFile"].endswith(".xml") else "torchscript",
                            "file_sha256": file_sha256(settings["forecasterFile"]),
                            "jump_ps": float(settings["jump"]) or None,
                            "surrogate_step_ps": float(settings["surrogateStepSize"]) or float(settings["stepSize"]),
                            "surrogate_platform": settings["surrogatePlatform"],
                            "options": _plain_options(arm.forecaster_options or {})}
            else:
                forecaster = arm_walkers.forecaster
                meta = forecaster.metadata
                proposal = {"name": name, "architecture": meta.architecture,
                            "fingerprint": forecaster_fingerprint(forecaster),
                            "file_sha256": _model_file_sha256(arm.forecaster), "stride_ps": meta.stride_ps,
                            "max_frames": meta.max_frames, "history": meta.history, "setup": meta.setup,
                            "options": _plain_options(arm.forecaster_options or {}),
                            "structure_preserving": forecaster.structure_preserving,
                            **{key: meta.extra[key] for key in ("surrogate", "surrogate_fingerprint")
                               if key in meta.extra}}
            extra.update(
                engine=arm.engine, acceptance=arm.acceptance, acceptance_rate=stats["acceptance_rate"],
                jumped_fraction=stats["jumped_fraction"], forecast_calls=calls,
                mean_batch_size=stats["jumps_attempted"] / calls if calls else None, stats=stats,
                forecaster=proposal, accelerator_options=_plain_options(arm.accelerator_options),
                acceptance_rule=repr(arm_walkers.rule),
            )
        extra["label"] = arm.label(forecaster)
        summaries[arm.name], phi_psis[arm.name], curves[arm.name] = summarize_arm(
            samples[arm.name], reference_histogram, topology, wall_seconds, extra, cpu_seconds.get(arm.name),
            weights[arm.name], torsions)
        n_residues = phi_psis[arm.name].shape[2]
        np.save(os.path.join(out, f"{arm.name}_phipsi.npy"),
                phi_psis[arm.name][:, :, 0] if n_residues == 1 else phi_psis[arm.name])
        if weights[arm.name] is not None:  # the phi/psi of a reweighted arm are its biased samples
            np.save(os.path.join(out, f"{arm.name}_weights.npy"), weights[arm.name])

    plain_md = runs is not None and reference_is_plain_md(reference_path)
    bar = _compare_arms(arms, summaries, curves, samples, runs, js_bar, interval_ps, reference_interval_ps, plain_md)
    populations = reference_populations(system)
    if populations is not None:
        for summary in summaries.values():
            summary["basins_vs_reference"] = _populations_against(summary, populations)
    reference_report = None
    if runs is not None:
        frame_curve = reference_window_curve(runs)
        noise = js_divergence(ramachandran_histogram(runs[0]), ramachandran_histogram(runs[1])) if len(runs) > 1 else None
        reference_report = {
            "path": os.path.abspath(reference_path), "files": files, "frames": int(len(pooled_reference)),
            "frame_interval_ps": reference_interval_ps, "js_between_runs": noise,
            "window_js_curve": {"frames": frame_curve[0].tolist(), "mean_js": frame_curve[1].tolist()},
            "plain_md": plain_md,
        }
        note = _reference_mismatch(system, reference_path)
        if note:
            reference_report["note"] = note
            logger.warning("%s", note)
    report = {
        "format": REPORT_FORMAT,
        "partial": interruption is not None,
        "interrupted_by": None if interruption is None else signal.Signals(interruption.signum).name,
        "arms_not_sampled": not_sampled,
        "pinned": bool(pinned),
        "machine": machine_info(),
        "setup": system.setup,
        "potential": system.potential,
        "temperature_K": system.temperature.value_in_unit(unit.kelvin),
        "walkers": int(n_walkers),
        "seeds": list(walkers[baseline.name].seeds),
        "backend": {"backend": "local"} if backend is None else backend.describe(),
        "baseline": baseline.name,
        "arms": summaries,
        "js_bar": bar,
        "efficiency": _compare_efficiency(arms, summaries, efficiency_observable),
        "first_to_bar": _first_to_bar(summaries, bar),
        "protocol": ("same process, same seeds, potential and temperature in every arm, each arm on its fastest "
                     "platform configuration measured before the run (platform_choice); the arms alternate "
                     f"in slices of {slice_seconds if slice_seconds is not None else wall_seconds:g} s of wall clock "
                     "(in the order of 'arms') until each has used its budget (each stops at its first sample at or "
                     "after it; an arm's clock counts only its own slices); Context creation and minimisation "
                     "untimed; phi/psi and kinetic temperature of every walker every sample_interval_ps"),
        "slice_seconds": slice_seconds,
        "sample_interval_ps": interval_ps,
        "reference": reference_report,
        "reference_populations": populations,
        "definitions": analysis_definitions(),
    }
    write_json(os.path.join(out, "report.json"), report, indent=2)
    panels = {} if pooled_reference is None else {
        f"reference ({len(pooled_reference) * reference_interval_ps / 1000:g} ns)": pooled_reference}
    if populations is not None:
        directory = os.path.dirname(resource_path(populations["source"]))
        if runs is None or directory != os.path.abspath(reference_path):  # ani1x: one set of frames serves both
            panels[f"converged reference ({populations['method']})"] = reference_frames(populations["source"])
    residues = [pair.label for pair in backbone_torsion_pairs(topology)]
    for name, summary in summaries.items():
        for r, residue in enumerate(residues):
            frames = phi_psis[name][:, :, r].reshape(-1, 2)
            label = f"{name} ({summary['simulated_ns']:.3g} ns)" + (f": {residue}" if len(residues) > 1 else "")
            panels[label] = frames if weights[name] is None else (frames, weights[name].reshape(-1))
    plot_ramachandran(panels, os.path.join(out, "ramachandran.png"), columns=len(residues) if len(residues) > 1 else None)
    if runs is not None:
        plot_convergence({summaries[name]["label"]: (samples[name].wall_s, curves[name]) for name in summaries},
                         os.path.join(out, "convergence.png"), target_js=bar["value"],
                         noise_js=reference_report["js_between_runs"])
    if interruption is not None:
        raise interruption
    return report


def _compare_arms(arms, summaries, curves, samples, runs, js_bar, interval_ps, reference_interval_ps, plain_md=True):
    """Add time to the bar, speed-ups and plain-MD noise to every arm's summary; return the bar's description.

    ``plain_md`` False (a chain reference, :data:`CHAIN_REFERENCES`): the reference runs say nothing of plain MD's
    time course, so no time is estimated from them and no plain-MD noise is given."""
    baseline = summaries[arms[0].name]
    for summary in summaries.values():
        summary["speedup_ns_per_day"] = summary["ns_per_day"] / baseline["ns_per_day"]
    if runs is None:
        for summary in summaries.values():
            summary.update(time_to_bar=None, speedup_time_to_bar=None, plain_noise_same_length=None)
        return {"value": None, "rule": None, "description": "no reference: no JS bar"}
    if js_bar is None:
        bar = {"value": baseline["js_to_reference"], "rule": "baseline_final",
               "description": f"the JS the baseline arm {arms[0].name!r} reaches at the end of its budget"}
    else:
        bar = {"value": float(js_bar), "rule": "fixed", "description": f"fixed JS {js_bar:g}"}
    frame_curve = reference_window_curve(runs) if plain_md else None
    base_name = arms[0].name
    base_wall = samples[base_name].wall_s
    baseline["time_to_bar"] = time_to_js(bar["value"], curves[base_name], base_wall, baseline["ns_per_day"],
                                         frame_curve, reference_interval_ps)
    base_time = baseline["time_to_bar"]["wall_seconds"]
    same_interval = abs(interval_ps - reference_interval_ps) < 1e-9
    for arm in arms:
        summary = summaries[arm.name]
        if arm is not arms[0]:
            summary["time_to_bar"] = time_to_js(bar["value"], curves[arm.name], samples[arm.name].wall_s)
            detail = time_to_js(summary["js_to_reference"], curves[base_name], base_wall, baseline["ns_per_day"],
                                frame_curve, reference_interval_ps)
            summary["time_to_js"] = detail
            summary["speedup_time_to_js"] = (detail["wall_seconds"] / summary["wall_seconds"]
                                             if detail["wall_seconds"] is not None else None)
        arm_time = summary["time_to_bar"]["wall_seconds"]
        summary["speedup_time_to_bar"] = base_time / arm_time if base_time is not None and arm_time else None
        if arm_time is None and base_time is not None:
            summary["speedup_time_to_bar_at_most"] = base_time / summary["wall_seconds"]
        noise = (plain_noise_js(runs, summary["walkers"], summary["samples_per_walker"])
                 if same_interval and plain_md else None)
        summary["plain_noise_same_length"] = noise
        if noise is not None:
            summary["js_within_plain_noise"] = bool(summary["js_to_reference"] <= noise["held_out"]["p95"])
    return bar


MIN_KISH_FRACTION = 0.1
"""Below this fraction of Kish effective samples, a reweighted-surrogate arm is warned about: measured on ACE-ALA3-NME in
OBC2 with the unfitted ``derived`` surrogate (fraction 0.03), its beta populations lay 0.4-0.6 below plain MD's and
HMR's, several of its own standard errors away."""

MAX_REFERENCE_Z = 3.0
"""An arm whose population of the deciding basin lies more than this many combined standard errors from the converged
reference is off it: its effective samples measure the spread of a wrong answer (an arm that never reached the basin,
or reweighting that has not converged), so it takes no part in choosing the winner."""


def _compare_efficiency(arms, summaries, observable):
    """Effective samples per second of one basin's indicator: every arm, each against every plain-MD and metadynamics
    arm (what a user would run instead), and the winner, declared only when its interval lies above every other
    arm's, among the arms whose population agrees with the converged reference where one exists
    (:data:`MAX_REFERENCE_Z`)."""
    from .efficiency import Efficiency

    per_arm = {name: Efficiency.from_dict(s["efficiency"][observable]) for name, s in summaries.items()
               if s.get("efficiency") is not None}
    plain = [arm.name for arm in arms if arm.kind in ("plain", "metad") and arm.name in per_arm]
    z = {name: (summaries[name].get("basins_vs_reference") or {}).get(observable, {}).get("z") for name in per_arm}
    off = {name for name, value in z.items() if value is not None and abs(value) > MAX_REFERENCE_Z}
    best = winner({name: e for name, e in per_arm.items() if name not in off})
    return {
        "observable": f"{observable} indicator",
        "per": "wall-clock second of the arm (all its walkers); per CPU second in each arm's efficiency",
        "confidence": next(iter(per_arm.values())).confidence if per_arm else None,
        "ess_per_second": {name: {"value": e.ess_per_second, "interval": e.interval and list(e.interval),
                                  "at_bound": e.at_bound, "population_z": z[name], "off_reference": name in off}
                           for name, e in per_arm.items()},
        "against": {name: {other: compare(e, per_arm[other]) for other in plain if other != name}
                    for name, e in per_arm.items()},
        "winner": best,
        "rule": "the arm with the most effective samples per second, only when its interval lies above every other "
                f"arm's interval; arms whose population lies more than {MAX_REFERENCE_Z:g} combined standard errors "
                "from the converged reference (off_reference) take no part; otherwise none",
    }


def _first_to_bar(summaries, bar):
    """The arm that reached the JS bar first (None without a bar or when none reached it)."""
    if bar["value"] is None:
        return None
    reached = {name: s["time_to_bar"]["wall_seconds"] for name, s in summaries.items()
               if s["time_to_bar"] and s["time_to_bar"]["reached"]}
    if not reached:
        return None
    name = min(reached, key=reached.get)
    return {"arm": name, "by": "shortest wall clock to the JS bar", "wall_seconds": reached[name]}


def _plain_options(options):
    """Options as JSON types: quantities and objects (a surrogate System, an acceptance rule) as text."""
    return {key: value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
            for key, value in options.items()}


def _model_file_sha256(forecaster):
    """SHA-256 of the model file a forecaster name or path refers to (weights included; for a learned surrogate's
    card, its System file), else None."""
    from .forecasters.registry import MODEL_SUFFIX, models_directory, shipped_model_card, shipped_models
    from .forecasters.surrogate import SURROGATE_SUFFIX, surrogates_directory

    if not isinstance(forecaster, (str, os.PathLike)):
        return None
    path = os.fspath(forecaster)
    card = shipped_model_card(path) if not os.path.isfile(path) else None
    if card is not None:
        path = os.path.join(surrogates_directory(), card["surrogate"] + SURROGATE_SUFFIX)
    elif not os.path.isfile(path):
        path = os.path.join(models_directory(), path + MODEL_SUFFIX) if path in shipped_models() else None
    return None if path is None else file_sha256(path)


def _number(value, spec):
    return "n/a" if value is None else format(value, spec)


def format_summary(report):
    """A few lines for the terminal: machine, the bar, each arm's speed, JS, temperature, acceptance, time to bar."""
    m = report["machine"]
    bar = report["js_bar"]
    lines = [
        f"machine: {m['cpu_model']} ({m['cpu_cores']} cores){', GPU ' + ', '.join(m['gpus']) if m['gpus'] else ', no GPU'}; "
        f"OpenMM {m['versions']['openmm']}, torch {m['versions']['torch']}",
        f"{'setup ' + report['setup'] if report['setup'] else 'your System (' + report['potential'] + ')'}, "
        f"{report['walkers']} walkers per arm; JS bar: "
        + ("none (no reference)" if bar["value"] is None else f"{bar['value']:.4f} ({bar['description']})"),
    ]
    for name, arm in report["arms"].items():
        line = (f"{arm['label']} ({arm['platform']}): {arm['simulated_ns']:.3f} ns in {arm['wall_seconds']:.1f} s = "
                f"{arm['ns_per_day']:.0f} ns/day, T {arm['mean_temperature_K']:.1f} K")
        if arm["kind"] == "hybrid":
            line += f", acceptance {_number(arm['acceptance_rate'], '.3f')}"
        if arm.get("blew_up"):
            line += f", BLEW UP ({arm['blew_up']})"
        if arm["js_to_reference"] is not None:
            noise = arm["plain_noise_same_length"]
            line += f", JS {arm['js_to_reference']:.4f}"
            if noise is not None:
                line += f" (plain MD at this length: {noise['in_pool']['mean']:.4f}-{noise['held_out']['p95']:.4f})"
            reach = arm["time_to_bar"]
            if reach["wall_seconds"] is None:
                line += ", bar not reached"
                if arm.get("speedup_time_to_bar_at_most") is not None:
                    line += f" (speed-up < {arm['speedup_time_to_bar_at_most']:.3g}x)"
            else:
                line += (f", bar after {reach['wall_seconds']:.1f} s{' (ESTIMATED)' if reach['estimated'] else ''}")
                if name != report["baseline"]:
                    line += f" = {_number(arm['speedup_time_to_bar'], '.3g')}x faster than {report['baseline']}"
        lines.append(line)
    first = report["first_to_bar"]
    if first is not None:
        lines.append(f"first to the JS bar: {report['arms'][first['arm']]['label']} ({first['wall_seconds']:.1f} s)")
    elif bar["value"] is not None:
        lines.append("first to the JS bar: none (no arm reached it)")
    lines.extend(format_efficiency(report))
    lines.extend(format_residues(report))
    populations = report.get("reference_populations")
    if populations:
        lines.append(f"basin populations against the converged reference ({populations['source']}), z = difference "
                     "over the combined standard error:")
        for name, arm in report["arms"].items():
            against = arm.get("basins_vs_reference") or {}
            lines.append(f"  {name}: " + ", ".join(
                f"{basin} {value['arm']:.3f} (ref {value['reference']:.3f}, z {_number(value['z'], '+.1f')})"
                for basin, value in against.items() if basin != "other"))
    return "\n".join(lines)


def format_residues(report):
    """Lines, for a molecule with several residues or the user's torsions: every residue's basin populations (with
    standard errors from their effective samples) and every torsion state's, per arm."""
    lines = []
    for name, arm in report["arms"].items():
        parts = []
        for residue, numbers in (arm.get("residues") or {}).items():
            errors = numbers["efficiency"] or {}
            parts.append(f"{residue} " + " ".join(
                f"{basin} {value['population']:.3f}" + (f"+-{errors[basin]['standard_error']:.3f}" if basin in errors
                                                        else "") for basin, value in numbers["basins"].items()))
        for torsion, numbers in (arm.get("torsions") or {}).items():
            parts.append(f"{torsion} " + " ".join(f"{state} {value['population']:.3f}"
                                                 for state, value in numbers["populations"].items()))
        if parts:
            lines.append(f"  {name}: " + "; ".join(parts))
    return ["populations per residue and torsion (+- standard error from the effective samples):"] + lines if lines \
        else []


def format_efficiency(report):
    """Lines: effective samples per second of the deciding observable, ratios with intervals, the winner."""
    section = report["efficiency"]
    if not section["ess_per_second"]:
        return ["efficiency: not measured (fewer than two samples per walker); winner: none"]
    lines = [f"effective samples per second of the {section['observable']} "
             f"({section['confidence']:.0%} intervals across walkers):"]
    for name, value in section["ess_per_second"].items():
        interval = value["interval"]
        line = f"  {name}: {value['value']:.3g}" + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")
        if value.get("at_bound"):
            line += " (g at its floor: interval from the walkers' means)"
        if value.get("off_reference"):
            line += f" (OFF the converged population, z {value['population_z']:+.1f}: not a candidate)"
        for other, ratio in section["against"][name].items():
            span = ratio["ratio_interval"]
            line += f"; {ratio['ratio']:.3g}x {other}"
            if span is not None:
                line += f" ({span[0]:.2g}-{'inf' if span[1] is None else format(span[1], '.2g')})"
            line += "" if ratio["distinct"] else " (within the intervals)"
        lines.append(line)
    best = section["winner"]
    lines.append(f"winner: {report['arms'][best]['label']} (effective samples per second, outside the intervals)"
                 if best else "winner: none outside the intervals (no arm's interval lies above all others')")
    return lines
