"""Evaluation of forecasters on held-out NVE segments, against the baselines.

For every forecaster (learned models, learned surrogate Systems integrated with velocity Verlet, and the
baselines ``constant``, ``ballistic``, ``verlet`` and, on request, ``surrogate``) and every span ``k * stride`` it supports, from start states of held-out segments:

- position RMSD in A (no alignment: forecasts and data share the lab frame) and velocity RMSE in nm/ps,
  both ``sqrt(mean over atoms of |error|^2)`` per forecast;
- potential-energy error ``|U(x') - U(x_true)|`` and total-energy change ``|H' - H|`` in kJ/mol, with
  ``H = U + K`` of the start state; ``U`` from the data's OpenMM System rebuilt with
  :func:`openmm_forecast.systems.build_system` from the data file's metadata;
- the fraction of forecasts with ``|H' - H|`` within 1 kT and 2 kT, the median ``|H' - H|`` and the mean
  signed ``H' - H`` (the bias: MSE-trained maps lose energy);
- the Metropolis acceptance ``<min(1, exp(-(H' - H)/kT))>``, flagged ``metropolis_meaningful`` only for
  maps certified volume-preserving and time-reversible (:func:`~openmm_forecast.forecasters.base.is_structure_preserving`):
  for any other map a high number certifies nothing (a map that loses energy reads close to 1);
- with constraints, the same after projecting the forecast onto them (``applyConstraints``, then
  ``applyVelocityConstraints``), as the accelerator would;
- an energy budget of the error (projected forecasts, when there are constraints): per force term of the
  System (``bond``, ``angle``, ``torsion``, ``nonbonded``, ``implicit_solvent``; evaluated on copies of its
  standard forces, one force group per term; other forces such as a ``TorchForce`` are left out) and
  ``kinetic``, the mean and mean absolute value of ``E_term(forecast) - E_term(true state)``, kJ/mol;
- wall-clock time per call at batch sizes 1, 16 and 256 (forces at the start states are passed to the
  forecasters that read them, computed once, outside the timing: the accelerator has them already).

Held-out segments: when the data file is one a model was trained on, only the validation segments
recorded in the model's metadata are used; a separate file (generated with another seed) is used whole.
"""

import json
import logging
import os
import time

import numpy as np
from openmm import unit

from ._io import check_output_directory, write_json
from ._runtime import openmm as mm
from ._runtime import package_versions
from .data import data_fingerprint, frame_step, load_trajectory
from .errors import DataFileError, ModelMismatchError
from .forecasters import Forecaster, load_forecaster
from .forecasters.registry import integrates_surrogate, shipped_model_card
from .platforms import get_platform
from .plotting import _pyplot
from .systems import build_system
from .units import kT_kJ

logger = logging.getLogger(__name__)

BASELINE_NAMES = ("constant", "ballistic", "verlet", "surrogate")
"""Baselines ``evaluate`` knows: ``verlet`` integrates the data's own System at the data's NVE time step;
``surrogate`` integrates amber14 in vacuum at 2 fs (the accelerator's default physical proposal)."""

DEFAULT_BASELINES = ("constant", "ballistic", "verlet")


def rms_error(a, b):
    """Per-forecast root-mean-square error over atoms: ``sqrt(mean_i |a_i - b_i|^2)``.

    Parameters
    ----------
    a, b : numpy.ndarray, shape (..., N, 3)

    Returns
    -------
    numpy.ndarray, shape (...)
    """
    return np.sqrt(((np.asarray(a) - np.asarray(b)) ** 2).sum(-1).mean(-1))


def kinetic_energy(velocities, masses):
    """Kinetic energy in kJ/mol of velocities (nm/ps, shape (..., N, 3)) for masses in amu (N,)."""
    return 0.5 * np.einsum("...ij,i->...", np.asarray(velocities) ** 2, np.asarray(masses))


def _summary(values):
    """mean, rms (root mean square: the statistic of training's validation metrics), median, p95 and max."""
    values = np.asarray(values, dtype=float)
    return {
        "mean": float(np.mean(values)),
        "rms": float(np.sqrt(np.mean(values**2))),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": float(np.max(values)),
    }


TERM_NAMES = {
    "HarmonicBondForce": "bond",
    "HarmonicAngleForce": "angle",
    "PeriodicTorsionForce": "torsion",
    "RBTorsionForce": "torsion",
    "CMAPTorsionForce": "torsion",
    "NonbondedForce": "nonbonded",
    "CustomNonbondedForce": "nonbonded",
    "GBSAOBCForce": "implicit_solvent",
    "CustomGBForce": "implicit_solvent",
}
"""Energy-budget term of each OpenMM force class; other classes keep their class name."""


class EnergyBudget:
    """Potential energy per force term, on a private System holding copies of the System's standard forces.

    Each force whose class is in :data:`TERM_NAMES` is copied (``XmlSerializer.clone``, one force at a
    time) into a new System with the same particles and constraints, in one force group per term.  Other
    forces (an openmm-torch ``TorchForce``, a ``PythonForce``, custom forces) are left out and named in
    :attr:`left_out`: the budget then does not add up to the total.

    Parameters
    ----------
    system : openmm.System
        Not modified.
    platform : str

    Raises
    ------
    ValueError
        No force of the System has a budget term.
    """

    def __init__(self, system, platform="Reference"):
        copy = mm.System()
        for index in range(system.getNumParticles()):
            copy.addParticle(system.getParticleMass(index))
        for index in range(system.getNumConstraints()):
            copy.addConstraint(*system.getConstraintParameters(index))
        self.groups, self.left_out = {}, []
        for force in system.getForces():
            name = type(force).__name__
            if name in ("CMMotionRemover", "MonteCarloBarostat"):
                continue
            if name not in TERM_NAMES:
                self.left_out.append(name)
                continue
            term = TERM_NAMES[name]
            self.groups.setdefault(term, len(self.groups))
            clone = mm.XmlSerializer.clone(force)
            clone.setForceGroup(self.groups[term])
            copy.addForce(clone)
        if not self.groups:
            raise ValueError(f"no force of the System has an energy-budget term (forces: {', '.join(self.left_out)})")
        self.context = mm.Context(copy, mm.VerletIntegrator(0.001), get_platform(platform))

    def terms(self, positions):
        """``{term: energies}`` in kJ/mol of positions (nm, shape (n, N, 3)); each array of shape (n,)."""
        out = {term: np.empty(len(positions)) for term in self.groups}
        for i, x in enumerate(positions):
            self.context.setPositions(x)
            for term, group in self.groups.items():
                state = self.context.getState(getEnergy=True, groups={group})
                out[term][i] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        return out


def energy_budget(budget, px, pv, true_x, true_v, masses):
    """Mean and mean absolute error of each energy term and of the kinetic energy (kJ/mol).

    Parameters
    ----------
    budget : EnergyBudget
    px, pv, true_x, true_v : numpy.ndarray, shape (n, N, 3)
        Forecast and true states (nm, nm/ps).
    masses : numpy.ndarray, shape (N,)

    Returns
    -------
    dict
        ``{term: {'mean': float, 'mean_abs': float}}``, terms of the System and 'kinetic'.
    """
    predicted, true = budget.terms(px), budget.terms(true_x)
    errors = {term: predicted[term] - true[term] for term in predicted}
    errors["kinetic"] = kinetic_energy(pv, masses) - kinetic_energy(true_v, masses)
    return {term: {"mean": float(np.mean(e)), "mean_abs": float(np.mean(np.abs(e)))} for term, e in errors.items()}


class EnergyEvaluator:
    """Potential energies and constraint projections with a private OpenMM Context.

    Parameters
    ----------
    system : openmm.System
        Not modified (the Context holds its own copy of the parameters; no ``copy.deepcopy``, which crashes
        on a System holding an openmm-torch ``TorchForce``).
    platform : str
        OpenMM platform name (default 'Reference').
    tolerance : float
        Constraint tolerance of the projections.
    """

    def __init__(self, system, platform="Reference", tolerance=1e-8):
        self.integrator = mm.VerletIntegrator(0.001)
        self.integrator.setConstraintTolerance(tolerance)
        self.context = mm.Context(system, self.integrator, get_platform(platform))
        self.has_constraints = system.getNumConstraints() > 0
        self.tolerance = tolerance

    def potential(self, positions):
        """Potential energies in kJ/mol of positions (nm, shape (..., N, 3)); shape (...)."""
        positions = np.asarray(positions)
        flat = positions.reshape(-1, *positions.shape[-2:])
        out = np.empty(len(flat))
        for i, x in enumerate(flat):
            self.context.setPositions(x)
            out[i] = self.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        return out.reshape(positions.shape[:-2])

    def forces(self, positions):
        """Forces in kJ/mol/nm at positions (nm, shape (..., N, 3)); same shape."""
        positions = np.asarray(positions)
        flat = positions.reshape(-1, *positions.shape[-2:])
        out = np.empty(flat.shape)
        per_nm = unit.kilojoule_per_mole / unit.nanometer
        for i, x in enumerate(flat):
            self.context.setPositions(x)
            out[i] = self.context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(per_nm)
        return out.reshape(positions.shape)

    def project(self, positions, velocities):
        """Project states onto the constraints (positions, then velocities); returns copies."""
        positions, velocities = np.asarray(positions), np.asarray(velocities)
        shape = positions.shape
        flat_x, flat_v = positions.reshape(-1, *shape[-2:]), velocities.reshape(-1, *shape[-2:])
        out_x, out_v = np.empty_like(flat_x), np.empty_like(flat_v)
        for i in range(len(flat_x)):
            self.context.setPositions(flat_x[i])
            self.context.setVelocities(flat_v[i])
            self.context.applyConstraints(self.tolerance)
            self.context.applyVelocityConstraints(self.tolerance)
            state = self.context.getState(getPositions=True, getVelocities=True)
            out_x[i] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            out_v[i] = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        return out_x.reshape(shape), out_v.reshape(shape)


def molecular_system_from_metadata(metadata, potential_file=None):
    """Rebuild the data's setup (:func:`~openmm_forecast.systems.build_system`) from a data file's metadata.

    Raises
    ------
    DataFileError
        The rebuilt System differs from the one that generated the data (fingerprints differ), so its
        energies would not be the data's.
    """
    molecular_system = build_system(
        metadata["setup"],
        temperature=float(metadata["temperature_K"]) * unit.kelvin,
        timestep=float(metadata["timestep_ps"]) * unit.picosecond,
        friction=float(metadata["friction_per_ps"]) / unit.picosecond,
        constraints=metadata["constraints"],
        potential_file=potential_file,
    )
    recorded = metadata.get("system_fingerprint")
    if recorded is not None and molecular_system.fingerprint() != recorded:
        raise DataFileError(
            f"the {metadata['setup']!r} System rebuilt here differs from the one that generated the data "
            "(system fingerprints differ: another OpenMM or force-field version?); energies would not be comparable"
        )
    return molecular_system


def held_out_segments(forecasters, path, n_segments, fingerprint=None):
    """Segments of a data file that no learned forecaster was trained on.

    A file a model was trained on contributes only the validation segments recorded in its metadata
    (``extra['split']``), plus the segments a later generation run appended to it (recognised by the
    fingerprint of the file's first ``n_segments``, which the split records); for several such models, the
    segments held out from all of them.

    Parameters
    ----------
    forecasters : iterable of Forecaster
    path : str or os.PathLike
        The NVE data file.
    n_segments : int
        Its committed segments.
    fingerprint : str, optional
        Its :func:`~openmm_forecast.data.data_fingerprint`, when already known.

    Returns
    -------
    segments : numpy.ndarray of int
    how : str
        'separate file', 'validation split of the training file', or 'validation split of the training
        file and the segments appended to it since'.
    """
    fingerprints = {n_segments: fingerprint or data_fingerprint(path)}

    def fingerprint_of_first(n):
        if n not in fingerprints:
            fingerprints[n] = data_fingerprint(path, n)
        return fingerprints[n]

    segments = set(range(n_segments))
    how = "separate file"
    for forecaster in forecasters:
        meta = forecaster.metadata
        splits = meta.extra.get("split", {})
        for trained in (meta.data_fingerprint or "").split("+"):
            split = splits.get(trained)
            n_trained = split.get("n_segments") if split else None
            if trained == fingerprints[n_segments]:
                n_trained = n_segments
            elif n_trained is None or n_trained >= n_segments or fingerprint_of_first(n_trained) != trained:
                continue
            if split is None:
                raise ModelMismatchError(
                    f"forecaster {meta.architecture!r} was trained on this data file and records no validation "
                    "split for it; evaluate on a held-out file (generated with another seed)"
                )
            segments &= set(split["validation_segments"]) | set(range(n_trained, n_segments))
            if how == "separate file":
                how = "validation split of the training file"
            if n_trained < n_segments:
                how = "validation split of the training file and the segments appended to it since"
    if not segments:
        raise DataFileError("no segment of this data file is held out from every forecaster given")
    return np.array(sorted(segments)), how


def _time_calls(forecaster, positions, velocities, n_frames, batch, forces=None, min_seconds=0.5, max_calls=50):
    """Median wall-clock seconds of one ``forecast`` call with ``batch`` walkers."""
    reps = int(np.ceil(batch / len(positions)))
    x = np.concatenate([positions] * reps)[:batch]
    v = np.concatenate([velocities] * reps)[:batch]
    f = None if forces is None else np.concatenate([forces] * reps)[:batch]
    forecaster.forecast(x, v, n_frames, forces=f)  # warm-up (TorchScript optimisation, caches)
    times, started = [], time.perf_counter()
    while len(times) < max_calls and (len(times) < 3 or time.perf_counter() - started < min_seconds):
        start = time.perf_counter()
        forecaster.forecast(x, v, n_frames, forces=f)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def evaluate(
    models,
    data,
    out=None,
    *,
    baselines=DEFAULT_BASELINES,
    max_samples=500,
    seed=1,
    timing=True,
    timing_batch_sizes=(1, 16, 256),
    platform="Reference",
    device="cpu",
    potential_file=None,
    progress=True,
):
    """Evaluate forecasters and baselines on held-out NVE segments (metrics: see the module docstring).

    Parameters
    ----------
    models : str, os.PathLike, Forecaster, or a list of them
        Learned forecasters (model files, shipped model names, or Forecaster objects), and learned surrogate
        Systems (a shipped name such as ``'fit-amber14-obc2'`` or a ``.xml`` file, see
        :mod:`openmm_forecast.surrogate_fitting`; or a shipped model that is one, ``'ala2-amber14-obc2'``):
        velocity Verlet on them (2 fs, or the card's step), at the stride and spans of the first model file
        (or of the data).  May be empty when only baselines are evaluated
        (``stride_ps``/``max_frames`` then come from the data, see below).
    data : str or os.PathLike
        An NVE data file (:func:`~openmm_forecast.data.generate_nve_segments`).
    out : str or os.PathLike, optional
        Directory for ``report.json``, ``rmsd_vs_span.png``, ``energy_change_hist.png`` and
        ``energy_vs_span.png``.
    baselines : sequence of str
        Baselines to evaluate at the stride and spans of the first model (:data:`BASELINE_NAMES`; default
        :data:`DEFAULT_BASELINES`).
    max_samples : int
        Most start states (drawn at random, with ``seed``, from all valid starts of held-out segments).
    seed : int
    timing : bool
        Measure the wall-clock time per call.
    timing_batch_sizes : sequence of int
    platform : str
        OpenMM platform for energies and the ``verlet`` baseline.
    device : str
        Where learned models run.
    potential_file : str, optional
        For data of the 'ml' setup: the potential to rebuild its System.
    progress : bool
        Show a tqdm progress bar over forecasters.

    Returns
    -------
    dict
        The report (also written to ``out/report.json``): ``data``, ``spans_ps``, ``reference`` (the
        data's own total-energy change) and ``forecasters`` ``{name: {metadata, spans: [...], timing}}``.
        The returned dict also holds every forecast's ``|H' - H|`` (key ``_abs_dH`` of each span entry),
        which ``report.json`` leaves out.
    """
    from tqdm.auto import tqdm

    unknown = [name for name in baselines if name not in BASELINE_NAMES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {', '.join(map(repr, unknown))}; choose from {', '.join(BASELINE_NAMES)}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise ValueError(f"max_samples must be an integer >= 1, got {max_samples!r}")
    if out is not None:  # before the work: a bad output path must not cost the evaluation
        check_output_directory(out)
        os.makedirs(out, exist_ok=True)
    if isinstance(models, (str, os.PathLike, Forecaster)):
        models = [models]
    surrogates = [model for model in models if not isinstance(model, Forecaster) and integrates_surrogate(model)]
    learned = {}
    for model in models:
        if model in surrogates:
            continue  # built below, for the data's System
        forecaster = model if isinstance(model, Forecaster) else load_forecaster(model, device=device)
        # label: the architecture name, made unique with the model's file or position when needed
        label = forecaster.metadata.architecture
        if label in learned or label in baselines:
            label = f"{label} ({os.fspath(model) if not isinstance(model, Forecaster) else len(learned)})"
        learned[label] = forecaster

    trajectory = load_trajectory(data)
    if trajectory.mode != "nve":
        raise DataFileError(f"{data} holds {trajectory.mode} data; evaluation needs NVE segments")
    meta = trajectory.metadata
    fingerprint = data_fingerprint(data)
    for label, forecaster in learned.items():
        forecaster.check_compatible(trajectory.elements, setup=meta["setup"])
    molecular_system = molecular_system_from_metadata(meta, potential_file=potential_file)

    if learned:
        first = next(iter(learned.values())).metadata
        stride_ps, max_frames = first.stride_ps, first.max_frames
    else:
        stride_ps = float(meta["frame_interval_ps"])
        max_frames = int(meta["n_frames_per_segment"]) - 1
    for surrogate in surrogates:  # learned parameters, but no training split: the whole file is held out from them
        name = os.path.basename(os.fspath(surrogate))
        learned[name if shipped_model_card(surrogate) else f"{name} (learned surrogate)"] = load_forecaster(
            surrogate, molecular_system, stride_ps=stride_ps, max_frames=max_frames)
    forecasters = dict(learned)
    for name in baselines:
        kwargs = {"stride_ps": stride_ps, "max_frames": max_frames}
        if name == "verlet":
            kwargs.update(timestep=float(meta["nve_timestep_ps"]) * unit.picosecond, platform=platform)
        forecasters[name] = load_forecaster(name, molecular_system, **kwargs)

    frame_interval = float(meta["frame_interval_ps"])
    n_frames = int(meta["n_frames_per_segment"])
    layout = {}
    before, after = 0, 0
    for label, forecaster in forecasters.items():
        fm = forecaster.metadata
        step = frame_step(fm.stride_ps, frame_interval)
        layout[label] = step
        before = max(before, (fm.history - 1) * step)
        after = max(after, fm.max_frames * step)
    if before + after > n_frames - 1:
        raise DataFileError(
            f"segments of {n_frames} frames ({(n_frames - 1) * frame_interval * 1000:g} fs) are too short for "
            f"forecasts spanning {(before + after) * frame_interval * 1000:g} fs (history included)"
        )
    segments, how = held_out_segments(learned.values(), data, len(trajectory), fingerprint)
    frames = np.arange(before, n_frames - after)
    starts = np.stack(np.broadcast_arrays(segments[:, None], frames[None, :]), -1).reshape(-1, 2)
    if len(starts) > max_samples:
        pick = np.random.default_rng(seed).choice(len(starts), max_samples, replace=False)
        starts = starts[np.sort(pick)]
    seg, frame = starts[:, 0], starts[:, 1]
    positions, velocities = trajectory.positions, trajectory.velocities
    masses = trajectory.masses
    kT = kT_kJ(float(meta["temperature_K"]))

    energy = EnergyEvaluator(molecular_system.system, platform=platform)
    try:
        budget = EnergyBudget(molecular_system.system, platform=platform)
    except ValueError as error:
        logger.warning("no energy budget: %s", error)
        budget = None
    if budget is not None and budget.left_out:
        logger.warning("the energy budget leaves out %s: its terms do not add up to dH", ", ".join(budget.left_out))
    x0, v0 = positions[seg, frame], velocities[seg, frame]
    h0 = energy.potential(x0) + kinetic_energy(v0, masses)
    # forces at the start states, for forecasters that read them (the accelerator has them from its energy check)
    f0 = energy.forces(x0) if any(f.uses_forces for f in forecasters.values()) else None
    cache = {}

    def truth(offset):
        """True states ``offset`` data frames after the starts, with their potential energies."""
        if offset not in cache:
            x, v = positions[seg, frame + offset], velocities[seg, frame + offset]
            cache[offset] = (x, v, energy.potential(x))
        return cache[offset]

    report = {
        "data": {
            "path": os.path.abspath(os.fspath(data)),
            "fingerprint": fingerprint,
            "setup": meta["setup"],
            "potential": meta.get("potential"),
            "constraints": meta.get("constraints"),
            "temperature_K": float(meta["temperature_K"]),
            "nve_timestep_ps": float(meta["nve_timestep_ps"]),
            "frame_interval_ps": frame_interval,
            "data_seed": meta.get("seed"),
            "held_out": how,
            "n_segments_used": int(len(segments)),
            "n_samples": int(len(starts)),
            "seed": seed,
        },
        "kT_kJ_per_mol": kT,
        "platform": platform,
        "versions": package_versions(),
        "reference": {},
        "forecasters": {},
    }
    for label, forecaster in tqdm(list(forecasters.items()), desc="evaluate", disable=not progress):
        fm = forecaster.metadata
        step = layout[label]
        history_offsets = np.arange(-(fm.history - 1), 1) * step
        x_in = positions[seg[:, None], frame[:, None] + history_offsets[None, :]]
        v_in = velocities[seg[:, None], frame[:, None] + history_offsets[None, :]]
        f_in = f0 if forecaster.uses_forces else None
        start = time.perf_counter()
        chunks = [
            forecaster.forecast(
                x_in[i : i + 64], v_in[i : i + 64], fm.max_frames, forces=None if f_in is None else f_in[i : i + 64]
            )
            for i in range(0, len(x_in), 64)
        ]
        pred_x, pred_v = np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
        seconds = time.perf_counter() - start
        finite = np.isfinite(pred_x).all(axis=(2, 3)) & np.isfinite(pred_v).all(axis=(2, 3))
        spans = []
        for k in range(1, fm.max_frames + 1):
            true_x, true_v, true_u = truth(k * step)
            px, pv = pred_x[:, k - 1], pred_v[:, k - 1]
            ok = finite[:, k - 1]
            entry = {
                "span_ps": k * fm.stride_ps,
                "n_finite": int(ok.sum()),
                **_state_metrics(px[ok], pv[ok], true_x[ok], true_v[ok], true_u[ok], h0[ok], masses, kT, energy),
            }
            qx, qv = px[ok], pv[ok]
            if energy.has_constraints:
                qx, qv = energy.project(qx, qv)
                entry["projected"] = _state_metrics(
                    qx, qv, true_x[ok], true_v[ok], true_u[ok], h0[ok], masses, kT, energy
                )
            if budget is not None and len(qx):
                entry["energy_budget_kJ"] = energy_budget(budget, qx, qv, true_x[ok], true_v[ok], masses)
            spans.append(entry)
        result = {
            "metadata": json.loads(fm.to_json()),
            # Volume-preserving and reversible (surrogate, verlet): only then is acceptance min(1, exp(-dH/kT))
            # an exact Metropolis rate; for a learned forecaster the dH columns are a guard's view only.
            "structure_preserving": forecaster.structure_preserving,
            "metropolis_meaningful": forecaster.structure_preserving,
            "uses_forces": forecaster.uses_forces,
            "spans": spans,
            "forecast_seconds_all_samples": seconds,
        }
        if timing:
            result["timing"] = {
                f"batch_{b}_seconds_per_call": _time_calls(forecaster, x_in, v_in, fm.max_frames, b, forces=f_in)
                for b in timing_batch_sizes
            }
        if label in learned and "validation" in fm.extra:
            result["training_validation"] = fm.extra["validation"]
        report["forecasters"][label] = result
        # Metadata of a learned model holds the whole training config: keep the report readable.
        result["metadata"]["extra"] = {
            key: value
            for key, value in result["metadata"]["extra"].items()
            if key in ("hyperparameters", "dtype", "timestep_ps", "steps_per_stride", "uses_forces",
                       "structure_preserving")
        }

    for offset in sorted(cache):
        true_x, true_v, true_u = cache[offset]
        dh = np.abs(true_u + kinetic_energy(true_v, masses) - h0)
        report["reference"][f"{offset * frame_interval:.6g}"] = {
            "span_ps": offset * frame_interval,
            "data_total_energy_change_kJ": _summary(dh),
            "within_1kT": float(np.mean(dh <= kT)),
        }
    report["spans_ps"] = sorted({round(s["span_ps"], 12) for r in report["forecasters"].values() for s in r["spans"]})
    if out is not None:
        write_report(report, out)
    return report


def _state_metrics(px, pv, true_x, true_v, true_u, h0, masses, kT, energy):
    """Error metrics of forecast states against the true states (see the module docstring)."""
    if len(px) == 0:
        return {"position_rmsd_A": None}
    u = energy.potential(px)
    signed = u + kinetic_energy(pv, masses) - h0
    dh = np.abs(signed)
    with np.errstate(over="ignore"):
        acceptance = np.minimum(1.0, np.exp(-signed / kT))
    return {
        "position_rmsd_A": _summary(10.0 * rms_error(px, true_x)),
        "velocity_rmse_nm_per_ps": _summary(rms_error(pv, true_v)),
        "potential_energy_error_kJ": _summary(np.abs(u - true_u)),
        "total_energy_change_kJ": _summary(dh),
        "dH_median_abs_kJ": float(np.median(dh)),
        "dH_mean_kJ": float(np.mean(signed)),
        "within_1kT": float(np.mean(dh <= kT)),
        "within_2kT": float(np.mean(dh <= 2 * kT)),
        "metropolis_acceptance": float(np.mean(acceptance)),
        "_abs_dH": dh.tolist(),
    }


def write_report(report, out):
    """Write ``report.json`` (atomically, first) and the plots into directory ``out``; returns the report path."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "report.json")
    write_json(path, _without_raw(report))
    plot_rmsd_vs_span(report, os.path.join(out, "rmsd_vs_span.png"))
    plot_energy_change(report, os.path.join(out, "energy_change_hist.png"))
    plot_energy_vs_span(report, os.path.join(out, "energy_vs_span.png"))
    return path


def _without_raw(value):
    """The report without the per-sample arrays (keys starting with '_')."""
    if isinstance(value, dict):
        return {k: _without_raw(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_without_raw(v) for v in value]
    return value


def plot_rmsd_vs_span(report, path):
    """Mean position RMSD (A, log scale) against span (fs) for every forecaster of a report."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    floor = 1e-5  # A: round-off (the exact integrator) is drawn here, not lost off the log scale
    for label, result in report["forecasters"].items():
        spans = [s for s in result["spans"] if s.get("position_rmsd_A")]
        values = [s["position_rmsd_A"]["mean"] for s in spans]
        if values and max(values) < floor:
            label = f"{label} (< {floor:g} A, drawn at {floor:g})"
        ax.plot(
            [1000 * s["span_ps"] for s in spans], np.maximum(values, floor),
            marker="o", label=label, linestyle="--" if label.split()[0] in BASELINE_NAMES else "-",
        )
    ax.set_yscale("log")
    ax.set_xlabel("span (fs)")
    ax.set_ylabel("position RMSD (A), mean over forecasts")
    ax.set_title(f"{report['data']['setup']}, {report['data']['n_samples']} held-out starts")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_energy_change(report, path):
    """Histograms of |H' - H| (kJ/mol, log bins) at the shortest and longest span, per forecaster."""
    plt = _pyplot()
    kT = report["kT_kJ_per_mol"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    bins = np.logspace(-4, 4, 65)
    for ax, which in zip(axes, (0, -1)):
        span_ps = None
        for label, result in report["forecasters"].items():
            spans = result["spans"]
            entry = spans[which]
            raw = entry.get("projected", entry).get("_abs_dH")
            if not raw:
                continue
            span_ps = entry["span_ps"]
            ax.hist(np.clip(raw, 1e-4, 1e4), bins=bins, histtype="step", label=f"{label} ({1000 * span_ps:g} fs)")
        for n, style in ((1, ":"), (2, "--")):
            ax.axvline(n * kT, color="k", linestyle=style, linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("|H' - H| (kJ/mol; projected onto constraints when there are some)")
        ax.set_title("shortest span" if which == 0 else "longest span")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("forecasts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_energy_vs_span(report, path):
    """Fraction within 1 kT and mean ``H' - H`` (kJ/mol) against span (fs), projected when there are constraints."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, result in report["forecasters"].items():
        spans = [s for s in result["spans"] if s.get("position_rmsd_A")]
        entries = [s.get("projected", s) for s in spans]
        fs = [1000 * s["span_ps"] for s in spans]
        style = "--" if label.split()[0] in BASELINE_NAMES else "-"
        left.plot(fs, [e["within_1kT"] for e in entries], marker="o", linestyle=style, label=label)
        right.plot(fs, [e["dH_mean_kJ"] for e in entries], marker="o", linestyle=style, label=label)
    kT = report["kT_kJ_per_mol"]
    for sign in (-1, 1):
        right.axhline(sign * 0.5 * kT, color="k", linestyle=":", linewidth=0.8)
    left.set_ylim(0, 1.02)
    left.set_ylabel("fraction with |H' - H| <= 1 kT")
    right.set_ylabel("mean H' - H (kJ/mol); dotted: +-0.5 kT")
    for ax in (left, right):
        ax.set_xlabel("span (fs)")
        ax.grid(True, alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle(f"{report['data']['setup']}, {report['data']['n_samples']} held-out starts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
