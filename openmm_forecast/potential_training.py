"""Fitting ANI-architecture potentials to the energies and forces of a reference OpenMM System.

:func:`fit_potential` runs the whole recipe of ``openmm-forecast fit-potential``:

1. configurations: Langevin MD of the sampling setup (``setup``), without constraints, at each configured
   temperature (300 K states for accuracy where MD goes, 600-900 K states to cover barriers and
   stretched bonds) plus randomly displaced copies of those frames (so that MD with the fitted
   potential is pushed back, not out, when it strays);
2. labels: the reference System's potential energy (kJ/mol) and forces (kJ/mol/nm) of every frame
   (``reference_setup``, by default the sampling setup; an expensive reference such as ``gfn2-xtb``
   then labels configurations that a cheap setup sampled).  Frames whose reference cannot be evaluated
   (an SCF failure) are dropped and counted;
3. a time-ordered split: the last ``validation_fraction`` of each trajectory is held out (displaced
   frames follow the frame they were made from), so validation frames are not near-copies of training
   frames;
4. training with the loss ``energy_weight * <(dE - <dE>)^2> / s_E^2 + force_weight * <dF^2> / s_F^2``
   (dE, dF: energy and force errors; <dE> the batch mean; s_E: std of training energies, s_F: rms
   training force), Adam, learning rate reduced on plateaus, early stopping, a checkpoint after every
   epoch that a rerun of the same command resumes from.  The energy constant is left out of the loss
   (fitting it with the fluctuations stalls force learning: its gradient is ~500x the force term's)
   and set exactly afterwards by :func:`calibrate_energy_offset`;
5. export of the best (lowest validation loss) model with :func:`~openmm_forecast.potentials.save_potential`
   and held-out errors measured on the exported file, plus a short MD run with it (stability check).

Everything lands in the run directory: ``config.yaml`` (effective configuration), ``dataset.npz``,
``checkpoint.pt``, ``potential.pt``, ``metrics.json`` and ``training.png``.
"""

import copy
import dataclasses
import json
import logging
import math
import os
import platform as platform_module
import time

import numpy as np
import torch
from openmm import unit
from tqdm.auto import tqdm

from ._io import atomic_write_path, load_npz, write_json
from ._runtime import openmm as mm
from .config import check_field, from_mapping, read_yaml_mapping, to_plain_dict, write_yaml
from .errors import CheckpointError, UnsupportedSystemError, is_potential_evaluation_failure
from .potentials import HARTREE_TO_KJ_PER_MOL, build_ani_potential, load_potential, save_potential
from .systems import SETUPS, build_system, system_fingerprint

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# configuration


@dataclasses.dataclass
class SamplingConfig:
    """How the training configurations are generated (Langevin MD of the reference, no constraints).

    ``states`` is a list of ``{temperature_K: float, frames: int}``, one independent trajectory each.
    """

    states: list = dataclasses.field(
        default_factory=lambda: [
            {"temperature_K": 300.0, "frames": 8000},
            {"temperature_K": 600.0, "frames": 3000},
            {"temperature_K": 900.0, "frames": 2000},
        ]
    )
    frame_interval_ps: float = 0.05
    equilibration_ps: float = 5.0
    timestep_fs: float = 0.5
    friction_per_ps: float = 1.0
    distorted_frames: int = 2000
    displacements_nm: list = dataclasses.field(default_factory=lambda: [0.003, 0.006, 0.01])
    platform: str = "Reference"


@dataclasses.dataclass
class ModelConfig:
    """Architecture (see :func:`openmm_forecast.potentials.build_ani_model`) and export dtype."""

    ensemble_size: int = 2
    hidden_layers: list = dataclasses.field(default_factory=lambda: [128, 96, 64])
    activation: str = "gelu"
    radial_cutoff_A: float = 5.2
    angular_cutoff_A: float = 3.5
    radial_shifts: int = 16
    angular_shifts: int = 8
    angular_sections: int = 4
    output_scale_hartree: float = 0.01
    export_dtype: str = "float64"


@dataclasses.dataclass
class PotentialTrainingConfig:
    """Optimisation settings; ``max_minutes`` bounds the wall time of the training loop."""

    validation_fraction: float = 0.1
    batch_size: int = 32
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5
    lr_factor: float = 0.5
    lr_patience: int = 2
    max_epochs: int = 200
    max_minutes: float = 20.0
    patience: int = 6
    energy_weight: float = 0.2
    force_weight: float = 1.0
    threads: int = 1


@dataclasses.dataclass
class StabilityCheckConfig:
    """Plain Langevin MD with the exported potential (``time_ps: 0`` skips it)."""

    time_ps: float = 10.0
    temperature_K: float = 300.0
    timestep_fs: float = 2.0
    constraints: str = "HBonds"
    frame_interval_ps: float = 0.1
    minimize_iterations: int = 200


@dataclasses.dataclass
class PotentialFitConfig:
    """Configuration of :func:`fit_potential` (YAML sections of the same names; unknown keys rejected).

    ``setup`` samples the configurations; ``reference_setup`` (default: the same) labels them.
    """

    setup: str = "amber14-vacuum"
    reference_setup: str = None
    run_dir: str = "runs/potential"
    seed: int = 1
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: PotentialTrainingConfig = dataclasses.field(default_factory=PotentialTrainingConfig)
    md_check: StabilityCheckConfig = dataclasses.field(default_factory=StabilityCheckConfig)

    def to_dict(self):
        """Plain nested dict (YAML/JSON serialisable)."""
        return to_plain_dict(self)


def _validate(config):
    sampling, training = config.sampling, config.training
    for index, state in enumerate(sampling.states):
        if not isinstance(state, dict) or set(state) != {"temperature_K", "frames"}:
            raise ValueError(f"sampling.states[{index}] must be {{temperature_K: float, frames: int}}, got {state!r}")
        if not state["temperature_K"] > 0 or not isinstance(state["frames"], int) or state["frames"] < 2:
            raise ValueError(f"sampling.states[{index}] needs temperature_K > 0 and frames >= 2, got {state!r}")
    if not sampling.states:
        raise ValueError("sampling.states must list at least one {temperature_K, frames}")
    sampling.states = [{"temperature_K": float(s["temperature_K"]), "frames": s["frames"]} for s in sampling.states]
    if not config.model.hidden_layers or any(not isinstance(w, int) or w < 1 for w in config.model.hidden_layers):
        raise ValueError(f"model.hidden_layers must be positive integers, got {config.model.hidden_layers}")
    if sampling.distorted_frames < 0 or (sampling.distorted_frames and not sampling.displacements_nm):
        raise ValueError("sampling.distorted_frames must be >= 0, with at least one entry in displacements_nm")
    if any(not (isinstance(d, (int, float)) and d > 0) for d in sampling.displacements_nm):
        raise ValueError(f"sampling.displacements_nm must be positive numbers, got {sampling.displacements_nm}")
    sampling.displacements_nm = [float(d) for d in sampling.displacements_nm]
    for name in ("frame_interval_ps", "timestep_fs"):
        check_field(sampling, name, float, lambda v: v > 0, "> 0", where=f"sampling.{name}")
    steps = sampling.frame_interval_ps * 1000.0 / sampling.timestep_fs
    if abs(steps - round(steps)) > 1e-6:
        raise ValueError("sampling.frame_interval_ps must be a multiple of sampling.timestep_fs")
    check_field(training, "validation_fraction", float, lambda v: 0 < v < 1, "in (0, 1)",
                where="training.validation_fraction")
    for name in ("max_epochs", "threads"):
        check_field(training, name, int, lambda v: v >= 1, ">= 1", where=f"training.{name}")
    check_field(training, "batch_size", int, lambda v: v >= 2,
                ">= 2 (the energy loss compares energies within a batch)", where="training.batch_size")
    if training.energy_weight < 0 or training.force_weight < 0 or training.energy_weight + training.force_weight == 0:
        raise ValueError("training.energy_weight and force_weight must be >= 0, not both 0")
    if config.model.export_dtype not in ("float32", "float64"):
        raise ValueError(f"model.export_dtype must be 'float32' or 'float64', got {config.model.export_dtype!r}")
    check_field(config.md_check, "time_ps", float, lambda v: v >= 0, ">= 0", where="md_check.time_ps")
    if config.reference_setup is not None and config.reference_setup not in SETUPS:
        raise ValueError(f"reference_setup must be one of {', '.join(SETUPS)} (or left out), got {config.reference_setup!r}")


def config_from_dict(data):
    """Validated :class:`PotentialFitConfig` from a nested dict (missing keys take their defaults).

    Raises
    ------
    ValueError
        For unknown keys, wrong types or out-of-range values (the message names the key).
    """
    config = from_mapping(PotentialFitConfig, data or {}, "config", check_types=True)
    _validate(config)
    return config


def load_config(path):
    """Read and validate a ``fit-potential`` YAML file (see :func:`config_from_dict`)."""
    return config_from_dict(read_yaml_mapping(path, "fit-potential settings"))


# ----------------------------------------------------------------------------------------------------
# data


def _reference_system(setup):
    """The reference setup without constraints (constrained bonds are missing from amber's bond terms)."""
    reference = build_system(setup, constraints=None)
    if reference.system.usesPeriodicBoundaryConditions():
        raise UnsupportedSystemError(
            f"setup {setup!r} is periodic; ANI potentials here are for isolated molecules (no periodic boundaries)"
        )
    return reference


def sample_configurations(molecular_system, temperature_K, n_frames, *, frame_interval_ps, equilibration_ps,
                          timestep_fs, friction_per_ps, seed, platform="Reference"):
    """Positions of a Langevin trajectory of ``molecular_system`` at ``temperature_K``.

    The structure is minimised, equilibrated ``equilibration_ps``, then ``n_frames`` frames are taken
    every ``frame_interval_ps``.

    Returns
    -------
    numpy.ndarray
        Positions in nm, shape (n_frames, n_atoms, 3), float64.
    """
    integrator = mm.LangevinMiddleIntegrator(
        temperature_K * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(int(seed))
    context = mm.Context(molecular_system.system, integrator, mm.Platform.getPlatformByName(platform))
    context.setPositions(molecular_system.positions)
    mm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(temperature_K * unit.kelvin, int(seed))
    integrator.step(int(round(equilibration_ps * 1000.0 / timestep_fs)))
    interval = int(round(frame_interval_ps * 1000.0 / timestep_fs))
    frames = np.empty((n_frames, molecular_system.n_atoms, 3))
    for index in range(n_frames):
        integrator.step(interval)
        frames[index] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return frames


def label_configurations(system, positions, platform="Reference"):
    """Potential energies and forces of an OpenMM System at each configuration.

    A configuration where the potential cannot be evaluated (a
    :class:`~openmm_forecast.errors.PotentialEvaluationError`, e.g. an SCF failure) gets NaN labels.

    Parameters
    ----------
    system : openmm.System
    positions : numpy.ndarray
        Shape (n_frames, n_atoms, 3), nm.

    Returns
    -------
    energies : numpy.ndarray
        Shape (n_frames,), kJ/mol.
    forces : numpy.ndarray
        Shape (n_frames, n_atoms, 3), kJ/mol/nm.
    """
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName(platform))
    energies = np.empty(len(positions))
    forces = np.empty(positions.shape)
    for index, frame in enumerate(positions):
        context.setPositions(frame)
        try:
            state = context.getState(getEnergy=True, getForces=True)
        except mm.OpenMMException as error:
            if not is_potential_evaluation_failure(error):
                raise
            logger.info("configuration %d not labelled: %s", index, error)
            energies[index], forces[index] = np.nan, np.nan
            continue
        energies[index] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces[index] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energies, forces


def generate_dataset(config, progress=True):
    """Configurations, labels and the train/validation split described by ``config``.

    Returns
    -------
    dict
        ``positions`` (M, N, 3) nm, ``energies`` (M,) kJ/mol, ``forces`` (M, N, 3) kJ/mol/nm,
        ``source`` (M,) int index into ``source_names`` (e.g. '300K', 'distorted'),
        ``validation`` (M,) bool, ``elements`` (N,) str, ``fingerprint`` of the reference System,
        ``unlabelled`` (configurations dropped: the reference failed there), ``sampling_seconds`` and
        ``labelling_seconds`` (wall clock).
    """
    sampling = config.sampling
    started = time.perf_counter()
    sampler = _reference_system(config.setup)
    reference = sampler if config.reference_setup in (None, config.setup) else _reference_system(config.reference_setup)
    rng = np.random.default_rng(config.seed)
    positions, source, validation, names = [], [], [], []
    states = tqdm(sampling.states, desc="sampling", disable=not progress)
    for index, state in enumerate(states):
        frames = sample_configurations(
            sampler, state["temperature_K"], state["frames"], frame_interval_ps=sampling.frame_interval_ps,
            equilibration_ps=sampling.equilibration_ps, timestep_fs=sampling.timestep_fs,
            friction_per_ps=sampling.friction_per_ps, seed=config.seed * 1000 + index + 1, platform=sampling.platform,
        )
        n_validation = max(1, int(round(state["frames"] * config.training.validation_fraction)))
        names.append(f"{state['temperature_K']:g}K")
        positions.append(frames)
        source.append(np.full(len(frames), index))
        validation.append(np.arange(len(frames)) >= len(frames) - n_validation)
    positions, source, validation = np.concatenate(positions), np.concatenate(source), np.concatenate(validation)
    if sampling.distorted_frames:
        parents = rng.integers(0, len(positions), sampling.distorted_frames)
        sigma = np.resize(np.asarray(sampling.displacements_nm, dtype=float), sampling.distorted_frames)
        distorted = positions[parents] + rng.normal(size=positions[parents].shape) * sigma[:, None, None]
        names.append("distorted")
        positions = np.concatenate([positions, distorted])
        source = np.concatenate([source, np.full(len(distorted), len(names) - 1)])
        validation = np.concatenate([validation, validation[parents]])
    sampled = time.perf_counter()
    energies, forces = label_configurations(reference.system, positions, platform=sampling.platform)
    labelled = np.isfinite(energies) & np.isfinite(forces).all(axis=(1, 2))
    return {
        "positions": positions[labelled], "energies": energies[labelled], "forces": forces[labelled],
        "source": source[labelled], "validation": validation[labelled], "source_names": np.array(names),
        "elements": np.array(reference.elements), "fingerprint": np.array(system_fingerprint(reference.system)),
        "unlabelled": np.array(int((~labelled).sum())), "sampling_seconds": np.array(sampled - started),
        "labelling_seconds": np.array(time.perf_counter() - sampled),
    }


def _data_key(config):
    """What the dataset depends on: a dataset made for another key must not be reused."""
    key = {"setup": config.setup, "seed": config.seed, "sampling": dataclasses.asdict(config.sampling),
           "validation_fraction": config.training.validation_fraction}
    if config.reference_setup not in (None, config.setup):  # (keys of datasets made before it existed stay valid)
        key["reference_setup"] = config.reference_setup
    return json.dumps(key, sort_keys=True)


def load_or_generate_dataset(config, run_dir, progress=True):
    """``run_dir/dataset.npz`` if it was made for this configuration, else generate and write it.

    Raises
    ------
    CheckpointError
        If ``run_dir`` holds a dataset generated with different settings (use another run_dir).
    """
    path = os.path.join(run_dir, "dataset.npz")
    key = _data_key(config)
    if os.path.exists(path):
        data = load_npz(path, what="the dataset fit-potential generated for this run_dir")
        if str(data.pop("key", None)) != key:
            raise CheckpointError(
                f"{path} was generated with other setup/seed/sampling settings; use a new run_dir or delete it"
            )
        return data
    data = generate_dataset(config, progress=progress)
    with atomic_write_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, key=np.array(key), **data)  # a file object: np.savez would append .npz to a name
    return data


# ----------------------------------------------------------------------------------------------------
# training


def energies_and_forces(potential, positions, create_graph=False):
    """Energies (B,) kJ/mol and forces (B, N, 3) kJ/mol/nm of a potential (module or TorchScript).

    ``positions`` is a tensor of shape (B, N, 3) in nm; forces are minus the autograd gradient.
    """
    positions = positions.detach().requires_grad_(True)
    energies = potential.energies(positions)
    (gradient,) = torch.autograd.grad(energies.sum(), positions, create_graph=create_graph)
    return energies, -gradient


def calibrate_energy_offset(potential, positions, energies_kJ, batch_size=256):
    """Shift the self energies so that the mean energy error on (positions nm, energies kJ/mol) is zero.

    Training fits energies only up to a constant (the loss uses batch-centred energy errors: the
    constant is stiff and noisy for the optimiser); this sets the constant exactly, before training
    (so that the untrained model starts near the data) and after.  The offset is split over the
    elements in proportion to their atom counts (the minimum-norm least-squares split: with a single
    composition only the total is determined).

    Returns
    -------
    float
        The offset added, kJ/mol.
    """
    predicted = []
    for start in range(0, len(positions), batch_size):
        chunk = torch.as_tensor(np.asarray(positions[start:start + batch_size]), dtype=potential.angstrom_per_nm.dtype)
        with torch.no_grad():
            predicted.append(potential.energies(chunk).double().numpy())
    offset_kJ = float(np.mean(np.asarray(energies_kJ) - np.concatenate(predicted)))
    model = potential.model
    counts = torch.stack([(potential.atomic_numbers[0] == z).sum() for z in model.atomic_numbers]).double()
    with torch.no_grad():  # minimum-norm split of the offset over the elements present
        shift = counts * (offset_kJ / HARTREE_TO_KJ_PER_MOL) / counts.pow(2).sum()
        model.energy_shifter.self_energies.add_(shift.to(model.energy_shifter.self_energies.dtype))
    return offset_kJ


def _metrics(potential, positions, energies, forces, batch_size=256):
    """RMSE/MAE of energies (kJ/mol) and forces (kJ/mol/nm) of ``potential`` on labelled data (numpy)."""
    predicted_e, predicted_f = [], []
    for start in range(0, len(positions), batch_size):
        chunk = torch.as_tensor(positions[start:start + batch_size])
        e, f = energies_and_forces(potential, chunk)
        predicted_e.append(e.detach().double().numpy())
        predicted_f.append(f.detach().double().numpy())
    error_e = np.concatenate(predicted_e) - energies
    error_f = np.concatenate(predicted_f) - forces
    return {
        "configurations": int(len(positions)),
        "energy_rmse_kJ_per_mol": float(np.sqrt(np.mean(error_e**2))),
        "energy_mae_kJ_per_mol": float(np.mean(np.abs(error_e))),
        "energy_mean_error_kJ_per_mol": float(np.mean(error_e)),
        "energy_std_reference_kJ_per_mol": float(np.std(energies)),
        "force_rmse_kJ_per_mol_nm": float(np.sqrt(np.mean(error_f**2))),
        "force_mae_kJ_per_mol_nm": float(np.mean(np.abs(error_f))),
        "force_rms_reference_kJ_per_mol_nm": float(np.sqrt(np.mean(forces**2))),
    }


def train_potential(potential, train, validation, settings, checkpoint_path=None, progress=True):
    """Train a :class:`~openmm_forecast.potentials.TorchANIPotential` on labelled configurations.

    This is also the fine-tuning entry point: pass a potential that was trained before.

    Parameters
    ----------
    potential : TorchANIPotential
        Trained in place (its dtype is kept; float32 is faster on a CPU).
    train, validation : tuple of numpy.ndarray
        (positions (M, N, 3) nm, energies (M,) kJ/mol, forces (M, N, 3) kJ/mol/nm).
    settings : PotentialTrainingConfig
    checkpoint_path : str, optional
        Written after every epoch; when it exists at the start, training resumes from it.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``history`` (per-epoch losses and validation RMSEs), ``best_epoch``, ``stop_reason``,
        ``epochs``, ``train_seconds``, ``energy_offset_kJ_per_mol``.  ``potential`` holds the best
        (lowest validation loss) weights, its energy constant calibrated on ``train``.
    """
    dtype = potential.angstrom_per_nm.dtype
    tensors = [torch.as_tensor(np.asarray(array), dtype=dtype) for array in train]
    val_positions, val_energies, val_forces = (torch.as_tensor(np.asarray(a), dtype=dtype) for a in validation)
    energy_scale = float(tensors[1].std().clamp_min(1e-6))
    force_scale = float(tensors[2].pow(2).mean().sqrt().clamp_min(1e-6))
    optimizer = torch.optim.Adam(potential.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=settings.lr_factor, patience=settings.lr_patience, min_lr=settings.min_learning_rate
    )
    state = {"epoch": 0, "best_loss": math.inf, "best_epoch": 0, "best_model": None, "history": [],
             "train_seconds": 0.0}
    if checkpoint_path and os.path.exists(checkpoint_path):
        try:
            checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
            potential.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
        except Exception as error:
            raise CheckpointError(f"cannot resume from {checkpoint_path}: {error}") from error
        state = checkpoint["state"]
        logger.info("resuming from %s after epoch %d", checkpoint_path, state["epoch"])

    def loss_from_errors(energy_error, force_error):
        """Weighted loss of energy errors (centred here: the offset is calibrated after training) and force errors."""
        energy_error = energy_error - energy_error.mean()
        energy_term = (energy_error / energy_scale).pow(2).mean()
        force_term = (force_error / force_scale).pow(2).mean()
        return settings.energy_weight * energy_term + settings.force_weight * force_term

    def validate():
        """Loss, centred energy RMSE and force RMSE of the whole validation set (centred once, over all of
        it: chunks hold mostly one temperature, and centring each would hide offsets between them)."""
        energy_errors, force_errors = [], []
        for start in range(0, len(val_positions), 256):
            sl = slice(start, start + 256)
            e, f = energies_and_forces(potential, val_positions[sl], create_graph=False)
            energy_errors.append(e.detach() - val_energies[sl])
            force_errors.append(f.detach() - val_forces[sl])
        energy_error, force_error = torch.cat(energy_errors), torch.cat(force_errors)
        centred = energy_error - energy_error.mean()
        loss = loss_from_errors(energy_error, force_error)
        return float(loss), float(centred.pow(2).mean().sqrt()), float(force_error.pow(2).mean().sqrt())

    stop_reason = "max_epochs"
    start_time = time.perf_counter() - state["train_seconds"]
    bar = tqdm(total=settings.max_epochs, initial=state["epoch"], desc="training", unit="epoch", disable=not progress)
    if state["epoch"] - state["best_epoch"] >= settings.patience:
        stop_reason = "early_stopping"
    elif state["train_seconds"] >= 60.0 * settings.max_minutes:  # a rerun of a finished fit trains no further
        stop_reason = "max_minutes"
    while state["epoch"] < settings.max_epochs and stop_reason == "max_epochs":
        generator = torch.Generator().manual_seed(1000003 * (state["epoch"] + 1))
        order = torch.randperm(len(tensors[0]), generator=generator)
        potential.train()
        running, batches, out_of_time = 0.0, 0, False
        for start in range(0, len(order), settings.batch_size):
            if time.perf_counter() - start_time >= 60.0 * settings.max_minutes:
                out_of_time = True
                break
            index = order[start:start + settings.batch_size]
            predicted_e, predicted_f = energies_and_forces(potential, tensors[0][index], create_graph=True)
            loss = loss_from_errors(predicted_e - tensors[1][index], predicted_f - tensors[2][index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
            batches += 1
        if batches == 0:  # the budget ran out between epochs: record that, so a rerun trains no further
            stop_reason = "max_minutes"
            state["train_seconds"] = time.perf_counter() - start_time
            if checkpoint_path:
                _save_checkpoint(checkpoint_path, potential, optimizer, scheduler, state)
            break
        potential.eval()
        val_loss, val_energy_rmse, val_force_rmse = validate()
        scheduler.step(val_loss)
        state["epoch"] += 1
        state["history"].append({
            "epoch": state["epoch"], "train_loss": running / max(batches, 1), "validation_loss": val_loss,
            "validation_energy_rmse_centered_kJ_per_mol": val_energy_rmse,
            "validation_force_rmse_kJ_per_mol_nm": val_force_rmse,
            "learning_rate": optimizer.param_groups[0]["lr"], "batches": batches,
        })
        if val_loss < state["best_loss"]:
            best_model = copy.deepcopy(potential.state_dict())
            state.update(best_loss=val_loss, best_epoch=state["epoch"], best_model=best_model)
        state["train_seconds"] = time.perf_counter() - start_time
        if out_of_time:
            stop_reason = "max_minutes"
        elif state["epoch"] - state["best_epoch"] >= settings.patience:
            stop_reason = "early_stopping"
        if checkpoint_path:
            _save_checkpoint(checkpoint_path, potential, optimizer, scheduler, state)
        logger.info("epoch %d: validation loss %.4g, energy RMSE %.3g kJ/mol, force RMSE %.4g kJ/mol/nm",
                    state["epoch"], val_loss, val_energy_rmse, val_force_rmse)
        bar.update(1)
        bar.set_postfix(loss=f"{val_loss:.4f}", E=f"{val_energy_rmse:.2f}", F=f"{val_force_rmse:.1f}")
    bar.close()
    if state["best_model"] is not None:
        potential.load_state_dict(state["best_model"])
    offset = calibrate_energy_offset(potential, train[0], train[1])
    return {"history": state["history"], "best_epoch": state["best_epoch"], "stop_reason": stop_reason,
            "epochs": state["epoch"], "train_seconds": state["train_seconds"], "energy_offset_kJ_per_mol": offset}


def _save_checkpoint(path, potential, optimizer, scheduler, state):
    with atomic_write_path(path) as temporary:
        torch.save({"model": potential.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "state": state}, temporary)


# ----------------------------------------------------------------------------------------------------
# checks and the whole recipe


def md_stability_check(potential_file, reference_setup, settings, seed=1, platform="Reference", progress=True):
    """Plain Langevin MD with a potential file; report whether it stayed a molecule.

    The structure is first minimised with the ML potential (at most ``settings.minimize_iterations``
    steps: a poor potential may have no nearby minimum).  Frames every ``settings.frame_interval_ps`` are
    checked: finite positions, every topology bond within 0.7-1.4x its length at the start; the frames
    are also labelled with the reference setup, giving the potential's errors where its own MD goes.

    Parameters
    ----------
    potential_file : str
        TorchScript potential (see :func:`~openmm_forecast.potentials.save_potential`).
    reference_setup : str
        Setup whose energies and forces the frames are compared with.
    settings : StabilityCheckConfig
        Time, temperature, time step, constraints and frame interval of the run.
    seed : int
        Thermostat and velocity seed.
    platform : str
        OpenMM platform.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``stable`` (bool), ``simulated_ps``, bond-length ratio extremes, ``ms_per_step``,
        ``errors_on_own_trajectory`` (energy/force errors against the reference, when frames exist).
    """
    molecular_system = build_system(
        "ml", potential_file=potential_file, temperature=settings.temperature_K * unit.kelvin,
        timestep=settings.timestep_fs * unit.femtosecond,
        constraints=None if settings.constraints == "none" else settings.constraints,
    )
    simulation = molecular_system.create_simulation(platform=platform, seed=seed, minimize=False)
    simulation.minimizeEnergy(maxIterations=settings.minimize_iterations)
    simulation.context.setVelocitiesToTemperature(settings.temperature_K * unit.kelvin, int(seed))
    bonds = np.array([(bond[0].index, bond[1].index) for bond in molecular_system.topology.bonds()])

    def positions_nm():
        return simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    def bond_lengths(x):
        return np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1)

    start_lengths = bond_lengths(positions_nm())
    interval = max(1, int(round(settings.frame_interval_ps * 1000.0 / settings.timestep_fs)))
    n_frames = int(round(settings.time_ps * 1000.0 / settings.timestep_fs)) // interval
    frames, ratio_min, ratio_max, stable, started = [], np.inf, 0.0, True, time.perf_counter()
    for _ in tqdm(range(n_frames), desc="MD check", leave=False, disable=not progress):
        simulation.step(interval)
        x = positions_nm()
        ratios = bond_lengths(x) / start_lengths
        if not np.all(np.isfinite(x)) or ratios.min() < 0.7 or ratios.max() > 1.4:
            stable = False
            break
        ratio_min, ratio_max = min(ratio_min, ratios.min()), max(ratio_max, ratios.max())
        frames.append(x)
    elapsed = time.perf_counter() - started
    report = {
        "stable": bool(stable), "simulated_ps": len(frames) * interval * settings.timestep_fs / 1000.0,
        "requested_ps": settings.time_ps, "bond_ratio_min": float(ratio_min), "bond_ratio_max": float(ratio_max),
        "ms_per_step": 1000.0 * elapsed / max(1, len(frames) * interval), "platform": platform,
        "temperature_K": settings.temperature_K, "timestep_fs": settings.timestep_fs,
        "constraints": settings.constraints,
    }
    if frames:
        frames = np.array(frames)
        energies, forces = label_configurations(_reference_system(reference_setup).system, frames)
        labelled = np.isfinite(energies)
        module, _ = load_potential(potential_file)
        errors = _metrics(module, frames[labelled], energies[labelled], forces[labelled])
        errors["unlabelled"] = int((~labelled).sum())
        errors["energy_rmse_after_mean_shift_kJ_per_mol"] = float(np.sqrt(max(
            errors["energy_rmse_kJ_per_mol"] ** 2 - errors["energy_mean_error_kJ_per_mol"] ** 2, 0.0)))
        report["errors_on_own_trajectory"] = errors
    return report


def _plot(path, history, errors_e, errors_f):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    epochs = [h["epoch"] for h in history]
    axes[0].semilogy(epochs, [h["train_loss"] for h in history], label="train loss")
    axes[0].semilogy(epochs, [h["validation_loss"] for h in history], label="validation loss")
    axes[0].set_xlabel("epoch")
    axes[0].legend()
    for axis, (reference, predicted), label in zip(axes[1:], (errors_e, errors_f),
                                                   ("energy (kJ/mol)", "force component (kJ/mol/nm)")):
        axis.plot(reference, predicted, ",", alpha=0.5)
        low, high = float(np.min(reference)), float(np.max(reference))
        axis.plot([low, high], [low, high], "k-", lw=0.5)
        axis.set_xlabel(f"reference {label}")
        axis.set_ylabel(f"ANI {label}")
        axis.set_title("held-out configurations")
        axis.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def fit_potential(config, run_dir=None, progress=True):
    """Generate data, train, export and check an ANI potential (the ``fit-potential`` command).

    Parameters
    ----------
    config : PotentialFitConfig
    run_dir : str, optional
        Overrides ``config.run_dir``.  Rerunning with the same configuration resumes.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        The metrics written to ``run_dir/metrics.json``.

    Raises
    ------
    CheckpointError
        If ``run_dir`` holds results of a run with other data or model settings.
    """
    run_dir = run_dir or config.run_dir
    reference_setup = config.reference_setup or config.setup
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.yaml")
    effective = dict(config.to_dict(), run_dir=run_dir)
    if os.path.exists(config_path):
        previous = read_yaml_mapping(config_path, "fit-potential settings")
        for section in ("setup", "reference_setup", "seed", "sampling", "model"):
            if previous.get(section) != effective[section]:
                raise CheckpointError(
                    f"{run_dir} holds a run with a different {section!r}; use another run_dir to start afresh"
                )
    write_yaml(config_path, effective)

    threads = torch.get_num_threads()
    torch.set_num_threads(config.training.threads)
    try:
        data = load_or_generate_dataset(config, run_dir, progress=progress)
        elements = [str(e) for e in data["elements"]]
        is_val = data["validation"]
        train = tuple(data[k][~is_val] for k in ("positions", "energies", "forces"))
        validation = tuple(data[k][is_val] for k in ("positions", "energies", "forces"))
        architecture = {k: v for k, v in dataclasses.asdict(config.model).items() if k != "export_dtype"}
        architecture["hidden_layers"] = tuple(architecture["hidden_layers"])
        potential = build_ani_potential(elements, dtype="float32", seed=config.seed, **architecture)
        calibrate_energy_offset(potential, train[0], train[1])
        result = train_potential(
            potential, train, validation, config.training,
            checkpoint_path=os.path.join(run_dir, "checkpoint.pt"), progress=progress,
        )
        export = copy.deepcopy(potential).to(torch.float64 if config.model.export_dtype == "float64" else torch.float32)
        potential_file = os.path.join(run_dir, "potential.pt")
        save_potential(export, potential_file, {
            "reference_setup": reference_setup, "sampling_setup": config.setup,
            "reference_fingerprint": str(data["fingerprint"]),
            "architecture": dataclasses.asdict(config.model), "training_configurations": int(len(train[0])),
            "best_epoch": result["best_epoch"],
            "versions": {"torch": torch.__version__, "torchani": _version("torchani"), "openmm": mm.__version__},
        })
        module, _ = load_potential(potential_file)
        metrics = {
            "potential_file": os.path.abspath(potential_file), "reference_setup": reference_setup,
            "sampling_setup": config.setup, "unlabelled_configurations": int(data.get("unlabelled", 0)),
            "sampling_seconds": float(data.get("sampling_seconds", float("nan"))),
            "labelling_seconds": float(data.get("labelling_seconds", float("nan"))),
            "machine": platform_module.processor() or platform_module.machine(),
            "torch_threads": config.training.threads,
            "training": {k: v for k, v in result.items() if k != "history"},
            "train_configurations": int(len(train[0])),
            "validation": _metrics(module, *validation),
            "validation_by_source": {},
        }
        for code, name in enumerate(data["source_names"]):
            selected = data["source"][is_val] == code
            if selected.any():
                metrics["validation_by_source"][str(name)] = _metrics(
                    module, *(array[selected] for array in validation))
        write_json(os.path.join(run_dir, "history.json"), result["history"])
        sample = np.random.default_rng(0).permutation(len(validation[0]))[:500]
        predicted_e, predicted_f = energies_and_forces(module, torch.as_tensor(validation[0][sample]))
        _plot(os.path.join(run_dir, "training.png"), result["history"],
              (validation[1][sample], predicted_e.detach().numpy()),
              (validation[2][sample].ravel(), predicted_f.detach().numpy().ravel()))
        write_json(os.path.join(run_dir, "metrics.json"), metrics)
        if config.md_check.time_ps > 0:
            metrics["md_check"] = md_stability_check(
                potential_file, reference_setup, config.md_check, seed=config.seed, progress=progress)
            write_json(os.path.join(run_dir, "metrics.json"), metrics)
    finally:
        torch.set_num_threads(threads)
    return metrics


def _version(package):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
