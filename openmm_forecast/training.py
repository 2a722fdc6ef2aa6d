"""Training learned forecasters on NVE trajectory segments.

A training run reads one or more NVE data files (:func:`openmm_forecast.data.generate_nve_segments`),
splits them **by segment** into training and validation sets (a segment is never in both), and fits a
registered architecture (:func:`openmm_forecast.forecasters.available_architectures`) to map the state
at a frame of a segment (and ``history - 1`` earlier states) to the states ``k * stride`` later,
``k = 1 .. max_frames``.

Loss (dimensionless, in units of kT per degree of freedom)
-----------------------------------------------------------
With masses ``m_i`` (amu), position errors ``dx`` (nm), velocity errors ``dv`` (nm/ps) and a time scale
``tau`` (ps, default: the stride),

``L = w_x <mu dx^2> / (kT tau^2) + w_v <m dv^2> / kT + w_K <(K' - K)^2> / kT^2
+ w_E <dH^2> / kT^2 + w_B mean_k(<dH>^2) / kT^2``

where ``<.>`` averages over samples, frames, atoms and components and ``K`` is the kinetic energy of a
frame (kJ/mol).  Velocity errors are mass-weighted: ``m dv^2 / 2`` is the kinetic energy they carry.
Position errors are weighted by ``mu = m`` (``position_weighting: mass``) or by the mean mass for every
atom (``uniform``): the energy a position error costs goes through the forces and force constants, which
are not proportional to the mass, and the uniform weight is what the position RMSD measures.  The
``tau`` scaling makes a position error ``dx`` cost as much as a velocity error ``dx / tau``.  The last,
optional term is a cheap energy-aware penalty (kinetic energies need no force field).  The last two
(``energy_weight``, ``energy_bias_weight``) weigh errors by what they cost in total energy, ``dH`` being
an estimate of ``H(forecast) - H(target)`` from the System's bonds and angles (exact) and the forces at
the target (first order): see :mod:`openmm_forecast.energy_loss`.

Forces: architectures that read the start forces (``uses_forces``) and the energy terms need the forces
of every data frame; they are computed once with the data's System (rebuilt from the file's metadata,
Reference platform) and cached in the run directory (``forces-<fingerprint>.npy``).

Augmentation: random rotations of a whole window about its current centroid (for architectures that are
not rotation-equivariant), and time reversal (a window played backwards with negated velocities is
again a valid NVE trajectory: velocity Verlet/RATTLE is time-reversible).

A run directory holds ``config.yaml`` (the effective configuration, with data fingerprints and package
versions), ``metrics.json`` (one entry per epoch), ``checkpoint.pt`` (resumable: model, optimizer,
scheduler, epoch, random states, best metric) and ``model.pt`` (the best model so far, written by
:func:`openmm_forecast.forecasters.save_forecaster` with its metadata).
"""

import copy
import dataclasses
import hashlib
import logging
import math
import os
import random
import time

import numpy as np
import torch

from ._io import atomic_write_path, write_json
from ._runtime import package_versions
from .config import check_field, from_mapping, read_yaml_mapping, to_plain_dict, write_yaml
from .data import data_fingerprint, frame_step, load_trajectory
from .energy_loss import BondedEnergy, energy_change_estimate, energy_loss_terms
from .errors import CheckpointError, DataFileError
from .evaluation import EnergyEvaluator, molecular_system_from_metadata
from .forecasters import TorchForecaster, build_forecaster, load_forecaster, save_forecaster
from .forecasters.registry import shipped_model_card
from .forecasters.symmetry import random_rotations
from .units import kT_kJ

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclasses.dataclass
class TrainingConfig:
    """Settings of a training run (see ``configs/forecaster_*.yaml``).

    Attributes
    ----------
    data : list of str
        NVE data files (all with the same atoms, setup, frame interval and frames per segment).
    out : str
        Run directory (created; an existing checkpoint there is resumed when ``resume`` is True).
    architecture : str
        Registered learned architecture.
    hyperparameters : dict
        Passed to the architecture's builder.
    stride_ps : float
        Time between forecast frames in ps: a whole multiple of the data's frame interval.
    max_frames : int
        Frames per forecast (the longest jump is ``max_frames * stride_ps``).
    history : int
        States the model reads (1: the current state only).
    validation_fraction : float
        Fraction of the segments held out for validation, in (0, 1).
    split_seed : int
        Seed of the segment split (independent of ``seed``).
    seed : int
        Seed of initialisation, shuffling and augmentation.
    epochs : int
        Maximum number of epochs (also the length of the cosine schedule).
    samples_per_epoch : int or None
        Training samples drawn (without replacement) per epoch; None: all.
    batch_size : int
    learning_rate : float
        Peak learning rate of AdamW.
    weight_decay : float
    lr_schedule : {'cosine', 'constant', 'plateau'}
        Cosine decay to ``min_lr_fraction * learning_rate`` after linear warm-up; constant after warm-up;
        or halving when the validation loss stalls for ``plateau_patience`` epochs.
    warmup_steps : int
    min_lr_fraction : float
    plateau_patience : int
    gradient_clip : float or None
        Maximum gradient norm (None: no clipping).
    position_weight, velocity_weight, kinetic_energy_weight : float
        ``w_x``, ``w_v``, ``w_K`` of the loss (see the module docstring).
    energy_weight, energy_bias_weight : float
        ``w_E``, ``w_B`` of the energy-aware terms (see the module docstring; 0: not computed).
    position_weighting : {'mass', 'uniform'}
        Atom weights ``mu`` of the position term (see the module docstring).
    loss_time_ps : float or None
        ``tau`` of the loss in ps (None: ``stride_ps``).
    augment_rotations : bool or 'auto'
        Random rotation of each window; 'auto': only for architectures that are not rotation-equivariant
        by construction (their ``rotation_equivariant`` flag).
    augment_time_reversal : bool
        Play half of the windows backwards with negated velocities.
    early_stopping_patience : int or None
        Stop after this many epochs without a better validation loss (None: never).
    max_minutes : float or None
        Training time budget in wall-clock minutes, summed over resumed calls: training stops (after a
        validation) once it is spent.  With ``lr_schedule: cosine`` the decay then follows whichever of
        steps/total steps and time/budget is further along, so a time-bounded run ends at a low rate
        (and is not bit-for-bit reproducible; without ``max_minutes`` it is).
    validation_max_samples : int
        Most validation samples (a fixed subset, drawn with ``split_seed``).
    device : str
        'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:1', ...
    dtype : {'float32', 'float64'}
    num_threads : int or None
        ``torch.set_num_threads`` (None: leave torch's default).
    resume : bool
        Continue from ``out/checkpoint.pt`` when it exists.
    export : str or None
        Also write the best model to this path (for example a shipped model file).
    init_from : str or None
        Fine-tuning (the MDtrajNet-1 protocol: pretrain broadly, fine-tune on short trajectories of the
        target potential): start from the weights of this model file or shipped model name instead of a
        random initialisation.  Its architecture, hyperparameters, elements, stride and history must match
        this run's; its setup and potential may differ (that is the point).  Ignored when resuming.
    progress : bool
        Show a tqdm progress bar.
    """

    data: list
    out: str
    architecture: str
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    stride_ps: float = 0.01
    max_frames: int = 5
    history: int = 1
    validation_fraction: float = 0.1
    split_seed: int = 1
    seed: int = 1
    epochs: int = 100
    samples_per_epoch: int = None
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_fraction: float = 0.01
    plateau_patience: int = 5
    gradient_clip: float = 1.0
    position_weight: float = 1.0
    velocity_weight: float = 1.0
    kinetic_energy_weight: float = 0.0
    energy_weight: float = 0.0
    energy_bias_weight: float = 0.0
    position_weighting: str = "mass"
    loss_time_ps: float = None
    augment_rotations: object = "auto"
    augment_time_reversal: bool = True
    early_stopping_patience: int = None
    max_minutes: float = None
    validation_max_samples: int = 2000
    device: str = "auto"
    dtype: str = "float32"
    num_threads: int = None
    resume: bool = True
    export: str = None
    init_from: str = None
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [self.data]
        if not isinstance(self.data, (list, tuple)) or not self.data:
            raise ValueError(f"data must be a data file or a non-empty list of them, got {self.data!r}")
        self.data = [os.fspath(path) for path in self.data]
        self.out = os.fspath(self.out)
        if not isinstance(self.hyperparameters, dict):
            raise ValueError(f"hyperparameters must be a mapping, got {self.hyperparameters!r}")
        check_field(self, "stride_ps", float, lambda v: v > 0 and math.isfinite(v), "finite and > 0 (ps)")
        for name in ("max_frames", "history", "epochs", "batch_size", "validation_max_samples"):
            check_field(self, name, int, lambda v: v >= 1, "an integer >= 1")
        for name in ("split_seed", "seed", "warmup_steps"):
            check_field(self, name, int, lambda v: v >= 0, "an integer >= 0")
        check_field(self, "plateau_patience", int, lambda v: v >= 1, "an integer >= 1")
        check_field(self, "validation_fraction", float, lambda v: 0 < v < 1, "in (0, 1)")
        check_field(self, "learning_rate", float, lambda v: 0 < v < 1, "in (0, 1)")
        check_field(self, "weight_decay", float, lambda v: v >= 0, ">= 0")
        check_field(self, "min_lr_fraction", float, lambda v: 0 <= v <= 1, "in [0, 1]")
        for name in ("position_weight", "velocity_weight", "kinetic_energy_weight", "energy_weight",
                     "energy_bias_weight"):
            check_field(self, name, float, lambda v: v >= 0 and math.isfinite(v), "finite and >= 0")
        if self.position_weight + self.velocity_weight == 0:
            raise ValueError("position_weight and velocity_weight cannot both be 0")
        check_field(self, "samples_per_epoch", int, lambda v: v >= 1, "an integer >= 1 or null", optional=True)
        check_field(self, "gradient_clip", float, lambda v: v > 0, "> 0 or null", optional=True)
        check_field(
            self, "loss_time_ps", float, lambda v: v > 0 and math.isfinite(v), "> 0 (ps) or null", optional=True
        )
        check_field(self, "early_stopping_patience", int, lambda v: v >= 1, "an integer >= 1 or null", optional=True)
        check_field(self, "max_minutes", float, lambda v: v > 0, "> 0 or null", optional=True)
        check_field(self, "num_threads", int, lambda v: v >= 1, "an integer >= 1 or null", optional=True)
        if self.augment_rotations != "auto" and not isinstance(self.augment_rotations, bool):
            raise ValueError(f"augment_rotations must be true, false or 'auto', got {self.augment_rotations!r}")
        for name in ("augment_time_reversal", "resume", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.position_weighting not in ("mass", "uniform"):
            raise ValueError(f"position_weighting must be 'mass' or 'uniform', got {self.position_weighting!r}")
        if self.lr_schedule not in ("cosine", "constant", "plateau"):
            raise ValueError(f"lr_schedule must be 'cosine', 'constant' or 'plateau', got {self.lr_schedule!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]', got {self.device!r}")
        if self.export is not None:
            self.export = os.fspath(self.export)

    @classmethod
    def from_dict(cls, values):
        """Build from a mapping, refusing unknown keys (with the list of known ones)."""
        return from_mapping(cls, values, "training config")

    @classmethod
    def from_yaml(cls, path, **overrides):
        """Read a YAML config file; ``overrides`` replace its keys (unknown keys are refused)."""
        values = read_yaml_mapping(path, "training settings")
        values.update(overrides)
        return cls.from_dict(values)

    def to_dict(self):
        """Plain-Python copy (JSON/YAML serialisable)."""
        return to_plain_dict(self)


# --------------------------------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------------------------------- #


def split_segments(n_segments, validation_fraction, seed):
    """Split segment indices into training and validation sets.

    Parameters
    ----------
    n_segments : int
        Number of segments (>= 2).
    validation_fraction : float
        Fraction for validation; at least one segment goes to each set.
    seed : int
        Seed of the permutation.

    Returns
    -------
    train, validation : numpy.ndarray of int
        Sorted, disjoint, together ``0 .. n_segments - 1``.
    """
    if n_segments < 2:
        raise DataFileError(f"a training/validation split needs at least 2 segments, got {n_segments}")
    n_val = min(n_segments - 1, max(1, int(round(validation_fraction * n_segments))))
    order = np.random.default_rng(seed).permutation(n_segments)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclasses.dataclass
class SegmentData:
    """NVE segments of one or more files, stacked along the segment axis.

    Attributes
    ----------
    positions, velocities : numpy.ndarray, shape (n_segments, n_frames, N, 3)
        nm and nm/ps.
    frame_interval_ps : float
    masses : numpy.ndarray, shape (N,)
        amu.
    metadata : dict
        Metadata of the first file.
    fingerprints : list of str
        :func:`~openmm_forecast.data.data_fingerprint` of each file.
    file_of_segment : numpy.ndarray of int, shape (n_segments,)
        Index of the file (in ``paths``) each segment comes from.
    paths : list of str
    seeds : list of int or None
        Generation seed of each file (from its metadata).
    """

    positions: np.ndarray
    velocities: np.ndarray
    frame_interval_ps: float
    masses: np.ndarray
    metadata: dict
    fingerprints: list
    file_of_segment: np.ndarray
    paths: list
    seeds: list = None

    @property
    def n_segments(self):
        return self.positions.shape[0]

    @property
    def n_frames(self):
        return self.positions.shape[1]

    def frame_step(self, stride_ps):
        """Frames per stride; refuses a stride that is not a whole multiple of the frame interval."""
        return frame_step(stride_ps, self.frame_interval_ps)


_MATCHING_KEYS = ("elements", "setup", "potential", "constraints", "temperature_K", "system_fingerprint")


def load_segments(paths):
    """Read NVE data files into one :class:`SegmentData`.

    Raises
    ------
    DataFileError
        A file that is not NVE data, or files that differ in atoms, setup, potential, constraints,
        temperature, System, frame interval or frames per segment.
    """
    positions, velocities, fingerprints, owners, seeds = [], [], [], [], []
    first = None
    for index, path in enumerate(paths):
        trajectory = load_trajectory(path)
        if trajectory.mode != "nve":
            raise DataFileError(
                f"{path} holds {trajectory.mode} data; forecasters are trained on NVE segments "
                "(openmm-forecast generate --mode nve)"
            )
        if len(trajectory) == 0:
            raise DataFileError(f"{path} holds no committed segments")
        meta = trajectory.metadata
        if first is None:
            first = meta
        else:
            for key in _MATCHING_KEYS + ("frame_interval_ps", "n_frames_per_segment"):
                if meta.get(key) != first.get(key):
                    raise DataFileError(
                        f"{path} differs from {paths[0]} in {key} ({meta.get(key)!r} vs {first.get(key)!r}); "
                        "train on files of one system and one frame layout"
                    )
        positions.append(trajectory.positions)
        velocities.append(trajectory.velocities)
        fingerprints.append(data_fingerprint(path))
        seeds.append(meta.get("seed"))
        owners.append(np.full(len(trajectory), index))
    return SegmentData(
        positions=np.concatenate(positions),
        velocities=np.concatenate(velocities),
        frame_interval_ps=float(first["frame_interval_ps"]),
        masses=np.asarray(first["masses_amu"], dtype=float),
        metadata=first,
        fingerprints=fingerprints,
        file_of_segment=np.concatenate(owners),
        paths=list(paths),
        seeds=seeds,
    )


def sample_starts(segments, n_frames, step, history, max_frames):
    """All (segment, frame) pairs with ``history - 1`` strides before and ``max_frames`` strides after.

    Parameters
    ----------
    segments : array of int
        Segment indices to draw from.
    n_frames : int
        Frames per segment.
    step : int
        Data frames per stride.
    history, max_frames : int

    Returns
    -------
    numpy.ndarray of int, shape (n_samples, 2)
        Columns: segment index, index of the current frame.
    """
    first = (history - 1) * step
    last = n_frames - 1 - max_frames * step
    if last < first:
        raise DataFileError(
            f"segments of {n_frames} frames are too short for history {history} and {max_frames} frames of "
            f"{step} data frames each (need {(history - 1 + max_frames) * step + 1} frames)"
        )
    frames = np.arange(first, last + 1)
    segments = np.asarray(segments)
    return np.stack(np.broadcast_arrays(segments[:, None], frames[None, :]), axis=-1).reshape(-1, 2)


def gather_windows(positions, velocities, starts, step, history, max_frames, forces=None):
    """Windows of ``history + max_frames`` states, ``step`` data frames apart.

    Parameters
    ----------
    positions, velocities : torch.Tensor, shape (n_segments, n_frames, N, 3)
    starts : torch.Tensor of int64, shape (B, 2)
        (segment, current frame) pairs (see :func:`sample_starts`).
    forces : torch.Tensor, shape (n_segments, n_frames, N, 3), optional
        kJ/mol/nm; gathered too when given.

    Returns
    -------
    positions, velocities : torch.Tensor, shape (B, history + max_frames, N, 3)
        The first ``history`` states are the input (oldest first), the rest the targets.
    forces : torch.Tensor, same shape
        Only when ``forces`` is given.
    """
    offsets = torch.arange(-(history - 1), max_frames + 1, device=starts.device) * step
    frames = starts[:, 1:2] + offsets[None, :]
    segments = starts[:, 0:1].expand_as(frames)
    if forces is None:
        return positions[segments, frames], velocities[segments, frames]
    return positions[segments, frames], velocities[segments, frames], forces[segments, frames]


def augment(positions, velocities, history, generator, rotations=False, time_reversal=False, forces=None):
    """Randomly rotate and/or time-reverse windows (see :func:`gather_windows`).

    A reversed window is the same trajectory played backwards with negated velocities (forces, which
    depend on positions only, keep their sign); the input is then the last ``history`` states of the
    reversed sequence.  Rotations turn a window about the centroid of its current state
    (``history - 1``).  Random numbers come from ``generator`` (CPU).  ``forces`` (optional, same shape)
    are transformed along and returned third.
    """
    batch = positions.shape[0]
    if time_reversal:
        flip = (torch.rand(batch, generator=generator) < 0.5).to(positions.device)
        positions = torch.where(flip[:, None, None, None], positions.flip(1), positions)
        velocities = torch.where(flip[:, None, None, None], -velocities.flip(1), velocities)
        if forces is not None:
            forces = torch.where(flip[:, None, None, None], forces.flip(1), forces)
    if rotations:
        rotation = random_rotations(batch, generator, positions.dtype, positions.device)
        centre = positions[:, history - 1 : history].mean(dim=2, keepdim=True)
        positions = torch.einsum("btnj,bij->btni", positions - centre, rotation) + centre
        velocities = torch.einsum("btnj,bij->btni", velocities, rotation)
        if forces is not None:
            forces = torch.einsum("btnj,bij->btni", forces, rotation)
    if forces is None:
        return positions, velocities
    return positions, velocities, forces


def flow_map_loss(pred_x, pred_v, true_x, true_v, masses, kT, tau_ps, weights, position_masses=None,
                  true_forces=None, bonded=None):
    """The training loss (see the module docstring) and its parts.

    Parameters
    ----------
    pred_x, pred_v, true_x, true_v : torch.Tensor, shape (B, K, N, 3)
        nm and nm/ps.
    masses : torch.Tensor, shape (N,)
        amu.
    kT : float
        kJ/mol.
    tau_ps : float
    weights : tuple of float
        (w_x, w_v, w_K) or (w_x, w_v, w_K, w_E, w_B).
    position_masses : torch.Tensor, shape (N,), optional
        Atom weights ``mu`` of the position term in amu (default: ``masses``).
    true_forces : torch.Tensor, shape (B, K, N, 3), optional
        Forces at the targets, kJ/mol/nm: needed when w_E or w_B > 0.
    bonded : openmm_forecast.energy_loss.BondedEnergy, optional
        Needed when w_E or w_B > 0.

    Returns
    -------
    loss : torch.Tensor (scalar)
    parts : dict of float
        'position', 'velocity', 'kinetic_energy', 'energy', 'energy_bias' (unweighted terms; the last
        three when their weight is > 0), and 'mean_dH_kJ' (the estimated bias) with the energy terms.
    """
    m = masses[None, None, :, None]
    mu = m if position_masses is None else position_masses[None, None, :, None]
    position = (mu * (pred_x - true_x) ** 2).mean() / (kT * tau_ps**2)
    velocity = (m * (pred_v - true_v) ** 2).mean() / kT
    w_x, w_v, w_k, w_e, w_b = (tuple(weights) + (0.0, 0.0))[:5]
    loss = w_x * position + w_v * velocity
    parts = {"position": float(position.detach()), "velocity": float(velocity.detach())}
    if w_k > 0:
        kinetic = 0.5 * ((m * pred_v**2).sum(dim=(2, 3)) - (m * true_v**2).sum(dim=(2, 3)))
        kinetic = (kinetic**2).mean() / kT**2
        loss = loss + w_k * kinetic
        parts["kinetic_energy"] = float(kinetic.detach())
    if w_e > 0 or w_b > 0:
        if true_forces is None or bonded is None:
            raise ValueError("the energy terms of the loss need the forces at the targets and the bonded terms")
        dh = energy_change_estimate(pred_x, pred_v, true_x, true_v, true_forces, masses, bonded)
        energy, bias = energy_loss_terms(dh, kT)
        loss = loss + w_e * energy + w_b * bias
        parts.update(energy=float(energy.detach()), energy_bias=float(bias.detach()),
                     mean_dH_kJ=float(dh.detach().mean()))
    return loss, parts


# --------------------------------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------------------------------- #


def resolve_device(name):
    """'auto' -> cuda when available, else cpu; other names as given (torch.device)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but torch sees no CUDA device here")
    return device


class _Schedule:
    """Learning-rate factor per optimizer step: linear warm-up, then cosine or constant.

    ``time_fraction`` (set by the trainer: training time / budget) advances the cosine when it is
    further along than the step count.
    """

    def __init__(self, kind, warmup_steps, total_steps, min_fraction):
        self.kind, self.warmup, self.total, self.min_fraction = kind, warmup_steps, total_steps, min_fraction
        self.time_fraction = 0.0

    def __call__(self, step):
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind != "cosine":
            return 1.0
        progress = min(1.0, max(self.time_fraction, (step - self.warmup) / max(1, self.total - self.warmup)))
        return self.min_fraction + (1 - self.min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """One training run (see :func:`train`).

    Parameters
    ----------
    config : TrainingConfig
    """

    def __init__(self, config):
        self.config = config
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        self.data = load_segments(config.data)
        meta = self.data.metadata
        self.step = self.data.frame_step(config.stride_ps)
        self.kT = kT_kJ(float(meta["temperature_K"]))
        self.tau_ps = config.loss_time_ps or config.stride_ps
        self.train_segments, self.val_segments = split_segments(
            self.data.n_segments, config.validation_fraction, config.split_seed
        )
        shape = (self.data.n_frames, self.step, config.history, config.max_frames)
        self.train_starts = torch.as_tensor(sample_starts(self.train_segments, *shape))
        val_starts = sample_starts(self.val_segments, *shape)
        if len(val_starts) > config.validation_max_samples:
            keep = np.random.default_rng(config.split_seed).choice(
                len(val_starts), config.validation_max_samples, replace=False
            )
            val_starts = val_starts[np.sort(keep)]
        self.val_starts = torch.as_tensor(val_starts)

        torch.manual_seed(config.seed)
        try:
            metadata_kwargs = dict(
                elements=list(meta["elements"]),
                stride_ps=config.stride_ps,
                max_frames=config.max_frames,
                history=config.history,
                setup=meta.get("setup"),
                potential=meta.get("potential"),
                constraints=meta.get("constraints", "none"),
                temperature_K=float(meta["temperature_K"]),
                data_fingerprint="+".join(self.data.fingerprints),
                system_fingerprint=meta.get("system_fingerprint"),
            )
            self.forecaster = build_forecaster(
                config.architecture, metadata_kwargs, device=self.device, dtype=config.dtype, **config.hyperparameters
            )
        except TypeError as error:
            raise ValueError(f"bad hyperparameters for architecture {config.architecture!r}: {error}") from error
        self.model = self.forecaster.module
        self.initialised_from = self._initialise_from(config.init_from) if config.init_from else None
        self.rotate = config.augment_rotations
        if self.rotate == "auto":
            self.rotate = not self.forecaster.metadata.extra.get("rotation_equivariant", False)
        self.dtype = next(self.model.parameters()).dtype
        self.positions = torch.as_tensor(self.data.positions, dtype=self.dtype, device=self.device)
        self.velocities = torch.as_tensor(self.data.velocities, dtype=self.dtype, device=self.device)
        self.masses = torch.as_tensor(self.data.masses, dtype=self.dtype, device=self.device)
        self.uses_forces = self.forecaster.uses_forces
        energy_terms = config.energy_weight > 0 or config.energy_bias_weight > 0
        self.forces, self.bonded = None, None
        if self.uses_forces or energy_terms:
            self.forces = torch.as_tensor(self._data_forces(), dtype=self.dtype, device=self.device)
        if energy_terms:
            system = molecular_system_from_metadata(meta).system
            self.bonded = BondedEnergy(system, dtype=self.dtype).to(self.device)
        self.position_masses = self.masses if config.position_weighting == "mass" else torch.full_like(
            self.masses, float(self.masses.mean())
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        n_train = len(self.train_starts) if config.samples_per_epoch is None else min(
            config.samples_per_epoch, len(self.train_starts)
        )
        self.samples_per_epoch = n_train
        self.steps_per_epoch = math.ceil(n_train / config.batch_size)
        schedule = _Schedule(
            "constant" if config.lr_schedule == "plateau" else config.lr_schedule,
            config.warmup_steps, config.epochs * self.steps_per_epoch, config.min_lr_fraction,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = 0
        self.global_step = 0
        self.best_loss = math.inf
        self.best_epoch = None
        self.best_state = None
        self.best_metrics = None
        self.bad_epochs = 0
        self.lr_scale = 1.0
        self.train_seconds = 0.0
        self.history = []
        self.checkpoint_path = os.path.join(config.out, "checkpoint.pt")
        self.model_path = os.path.join(config.out, "model.pt")

    # ------------------------------------------------------------------------------------------- #

    def _batch(self, starts):
        """Windows (positions, velocities, forces or None) of the samples ``starts``."""
        c = self.config
        starts = starts.to(self.device)
        windows = gather_windows(
            self.positions, self.velocities, starts, self.step, c.history, c.max_frames, forces=self.forces
        )
        return windows if self.forces is not None else (*windows, None)

    def _loss(self, x, v, f):
        """Loss, its parts and the forecasts (positions, velocities) of windows ``x, v`` (forces ``f``)."""
        c = self.config
        if self.uses_forces:
            pred_x, pred_v = self.model(x[:, : c.history], v[:, : c.history], c.max_frames, f[:, c.history - 1])
        else:
            pred_x, pred_v = self.model(x[:, : c.history], v[:, : c.history], c.max_frames)
        weights = (c.position_weight, c.velocity_weight, c.kinetic_energy_weight, c.energy_weight,
                   c.energy_bias_weight)
        loss, parts = flow_map_loss(
            pred_x, pred_v, x[:, c.history :], v[:, c.history :], self.masses, self.kT, self.tau_ps, weights,
            self.position_masses, true_forces=None if f is None else f[:, c.history :], bonded=self.bonded,
        )
        return loss, parts, pred_x, pred_v

    def _data_forces(self):
        """Forces (kJ/mol/nm) of every data frame, shape (n_segments, n_frames, N, 3): cached in the run directory."""
        key = hashlib.sha256("+".join(self.data.fingerprints).encode()).hexdigest()[:16]
        path = os.path.join(self.config.out, f"forces-{key}.npy")
        if os.path.exists(path):
            forces = np.load(path)
            if forces.shape == self.data.positions.shape:
                return forces
        started = time.monotonic()
        system = molecular_system_from_metadata(self.data.metadata).system
        forces = EnergyEvaluator(system).forces(self.data.positions)
        logger.info("forces of %d data frames computed in %.1f s", forces.shape[0] * forces.shape[1],
                    time.monotonic() - started)
        os.makedirs(self.config.out, exist_ok=True)
        with atomic_write_path(path) as temporary:
            with open(temporary, "wb") as handle:
                np.save(handle, forces)
        return forces

    def _out_of_time(self):
        return self.config.max_minutes is not None and self.train_seconds >= 60.0 * self.config.max_minutes

    def train_epoch(self, bar=None):
        """One pass over (a random subset of) the training samples; returns mean loss parts.

        The pass ends early when the time budget (``max_minutes``) is spent.
        """
        c = self.config
        self.model.train()
        order = torch.randperm(len(self.train_starts), generator=self.generator)[: self.samples_per_epoch]
        totals, count = {}, 0
        for first in range(0, len(order), c.batch_size):
            if self._out_of_time():
                break
            step_start = time.monotonic()
            starts = self.train_starts[order[first : first + c.batch_size]]
            x, v, f = self._batch(starts)
            if f is None:
                x, v = augment(x, v, c.history, self.generator, self.rotate, c.augment_time_reversal)
            else:
                x, v, f = augment(x, v, c.history, self.generator, self.rotate, c.augment_time_reversal, forces=f)
            loss, parts, _, _ = self._loss(x, v, f)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {float(loss)} at epoch {self.epoch + 1}, step {self.global_step}; "
                    "lower learning_rate or set gradient_clip"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.gradient_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.gradient_clip)
            self.optimizer.step()
            self.train_seconds += time.monotonic() - step_start
            if c.max_minutes is not None:
                self.scheduler.lr_lambdas[0].time_fraction = self.train_seconds / (60.0 * c.max_minutes)
            self.scheduler.step()
            self.global_step += 1
            n = len(starts)
            count += n
            for key, value in {"loss": float(loss.detach()), **parts}.items():
                totals[key] = totals.get(key, 0.0) + value * n
            if bar is not None:
                bar.set_postfix(loss=f"{float(loss.detach()):.3g}", refresh=False)
                bar.update(1)
        return {key: value / max(count, 1) for key, value in totals.items()}

    @torch.no_grad()
    def validate(self):
        """Validation loss and per-span position RMSD (A) and velocity RMSE (nm/ps), with ballistic."""
        c = self.config
        self.model.eval()
        totals, count = {}, 0
        sq_x = torch.zeros(c.max_frames, dtype=torch.float64)
        sq_v = torch.zeros(c.max_frames, dtype=torch.float64)
        sq_ballistic = torch.zeros(c.max_frames, dtype=torch.float64)
        spans = torch.arange(1, c.max_frames + 1, device=self.device, dtype=self.dtype) * c.stride_ps
        for first in range(0, len(self.val_starts), 256):
            starts = self.val_starts[first : first + 256]
            x, v, f = self._batch(starts)
            loss, parts, pred_x, pred_v = self._loss(x, v, f)
            true_x, true_v = x[:, c.history :], v[:, c.history :]
            n = len(starts)
            count += n
            for key, value in {"loss": float(loss.detach()), **parts}.items():
                totals[key] = totals.get(key, 0.0) + value * n
            ballistic = x[:, c.history - 1 : c.history] + v[:, c.history - 1 : c.history] * spans[None, :, None, None]
            sq_x += ((pred_x - true_x) ** 2).sum(-1).mean(-1).sum(0).double().cpu()
            sq_v += ((pred_v - true_v) ** 2).sum(-1).mean(-1).sum(0).double().cpu()
            sq_ballistic += ((ballistic - true_x) ** 2).sum(-1).mean(-1).sum(0).double().cpu()
        metrics = {key: value / count for key, value in totals.items()}
        metrics["spans_ps"] = [float(s) for s in spans.cpu()]
        metrics["position_rmsd_A"] = [10.0 * math.sqrt(s / count) for s in sq_x.tolist()]
        metrics["velocity_rmse_nm_per_ps"] = [math.sqrt(s / count) for s in sq_v.tolist()]
        metrics["ballistic_position_rmsd_A"] = [10.0 * math.sqrt(s / count) for s in sq_ballistic.tolist()]
        metrics["n_samples"] = count
        return metrics

    # ------------------------------------------------------------------------------------------- #

    def effective_config(self):
        """The config as run, with the data fingerprints, sizes and package versions (for config.yaml)."""
        return {
            **self.config.to_dict(),
            "_provenance": {
                "data_fingerprints": self.data.fingerprints,
                "n_segments": int(self.data.n_segments),
                "n_train_segments": int(len(self.train_segments)),
                "n_validation_segments": int(len(self.val_segments)),
                "n_train_samples": int(len(self.train_starts)),
                "n_validation_samples": int(len(self.val_starts)),
                "frame_interval_ps": self.data.frame_interval_ps,
                "frames_per_stride": self.step,
                "rotation_augmentation": self.rotate,
                "device": str(self.device),
                "versions": package_versions(),
            },
        }

    def split_record(self):
        """The validation segments of each data file:
        ``{fingerprint: {'file', 'seed', 'n_segments', 'validation_segments', 'split_seed'}}`` (the file's
        generation seed; validation segments are drawn from the training files with ``split_seed``).

        Segment indices are those of the file itself (0-based), so that an evaluation on the same file
        can use exactly the held-out segments; ``n_segments`` (how many the file held) lets it recognise the
        file after a later generation run extended it.
        """
        record = {}
        for index, (path, fingerprint) in enumerate(zip(self.data.paths, self.data.fingerprints)):
            mine = np.flatnonzero(self.data.file_of_segment == index)
            first = int(mine[0])
            local = [int(s) - first for s in self.val_segments if self.data.file_of_segment[s] == index]
            record[fingerprint] = {"file": os.path.basename(path), "seed": self.data.seeds[index],
                                   "n_segments": len(mine), "validation_segments": local,
                                   "split_seed": self.config.split_seed}
        return record

    def _rng_state(self):
        state = {
            "generator": self.generator.get_state(),
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def save_checkpoint(self):
        """Write ``checkpoint.pt`` atomically (temporary file, then rename)."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "data_fingerprints": self.data.fingerprints,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "best_metrics": self.best_metrics,
            "bad_epochs": self.bad_epochs,
            "lr_scale": self.lr_scale,
            "train_seconds": self.train_seconds,
            "history": self.history,
            "rng": self._rng_state(),
        }
        with atomic_write_path(self.checkpoint_path) as temporary:
            torch.save(payload, temporary)

    _RESUMABLE_CHANGES = (
        "epochs", "max_minutes", "early_stopping_patience", "progress", "resume", "num_threads", "export", "device",
        "init_from",
    )

    def load_checkpoint(self):
        """Restore everything from ``checkpoint.pt`` (refusing one from another config or data)."""
        try:
            payload = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        except Exception as error:
            raise CheckpointError(f"cannot read the training checkpoint {self.checkpoint_path}: {error}") from error
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{self.checkpoint_path} is not a training checkpoint of this openmm-forecast")
        old, new = payload["config"], self.config.to_dict()
        changed = [k for k in new if k not in self._RESUMABLE_CHANGES and old.get(k) != new[k]]
        if changed:
            raise CheckpointError(
                f"{self.checkpoint_path} was written with different settings ({', '.join(changed)}); "
                "use another run directory (out) or set resume: false to start over"
            )
        if payload["data_fingerprints"] != self.data.fingerprints:
            raise CheckpointError(
                f"{self.checkpoint_path} was trained on different data (fingerprints differ); use another run "
                "directory or the original data files"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        for key in (
            "epoch", "global_step", "best_loss", "best_epoch", "best_state", "best_metrics", "bad_epochs", "lr_scale",
            "train_seconds", "history",
        ):
            setattr(self, key, payload[key])
        rng = payload["rng"]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if self.config.epochs != old["epochs"] and self.config.lr_schedule == "cosine":
            self.scheduler.lr_lambdas[0].total = self.config.epochs * self.steps_per_epoch
            logger.warning(
                "epochs changed from %s to %s on resume: the cosine schedule is stretched", old["epochs"], self.config.epochs
            )
        logger.info(
            "resumed %s at epoch %d (best validation loss %.4g)", self.checkpoint_path, self.epoch, self.best_loss
        )

    def export(self):
        """Write the best model (with metadata) to ``model.pt`` (and ``config.export``); returns the path."""
        if self.best_state is None:
            return None
        module = copy.deepcopy(self.model)
        module.load_state_dict(self.best_state)
        module.eval()
        metadata = copy.deepcopy(self.forecaster.metadata)
        metadata.extra.update(
            training=self.effective_config(),
            validation={"epoch": self.best_epoch, **self.best_metrics},
            split=self.split_record(),
            initialised_from=self.initialised_from,
        )
        forecaster = TorchForecaster(module.cpu(), metadata)
        save_forecaster(forecaster, self.model_path)
        if self.config.export:
            save_forecaster(forecaster, self.config.export)
        return self.model_path

    def _initialise_from(self, name_or_path):
        """Copy the weights of a trained model (file or shipped name) into the new model; return its provenance."""
        if shipped_model_card(os.fspath(name_or_path)) is not None:
            raise ValueError(
                f"init_from {name_or_path!r} is a learned surrogate System integrated with velocity Verlet, not a "
                "trained network: there are no weights to start from"
            )
        source = load_forecaster(name_or_path)
        ours, theirs = self.forecaster.metadata, source.metadata
        for field in ("architecture", "elements", "stride_ps", "history"):
            if getattr(ours, field) != getattr(theirs, field):
                raise ValueError(
                    f"init_from {name_or_path!r} has {field} {getattr(theirs, field)!r}, but this run has "
                    f"{getattr(ours, field)!r}: fine-tuning needs the same architecture, atoms, stride and history"
                )
        hyper = theirs.extra.get("hyperparameters")
        if hyper is not None and hyper != ours.extra.get("hyperparameters"):
            raise ValueError(
                f"init_from {name_or_path!r} was built with hyperparameters {hyper}, this run with "
                f"{ours.extra.get('hyperparameters')}: use the same 'hyperparameters' to fine-tune it"
            )
        dtype = next(self.model.parameters()).dtype
        state = {name: value.to(dtype) if value.is_floating_point() else value
                 for name, value in source.module.state_dict().items()}
        self.model.load_state_dict(state, strict=True)
        logger.info("initialised from %s (setup %s, potential %s)", name_or_path, theirs.setup, theirs.potential)
        return {"model": os.fspath(name_or_path), "setup": theirs.setup, "potential": theirs.potential,
                "data_fingerprint": theirs.data_fingerprint}

    def _write_metrics(self):
        summary = {"epochs": self.history, "best_epoch": self.best_epoch, "best_validation_loss": self.best_loss}
        write_json(os.path.join(self.config.out, "metrics.json"), summary)

    def run(self, callback=None):
        """Train until ``epochs``, early stopping, ``max_minutes`` or ``callback`` returning True.

        Parameters
        ----------
        callback : callable, optional
            ``callback(trainer, metrics)`` after every epoch (after the checkpoint is written); a True
            return value stops the run (it can be resumed).

        Returns
        -------
        dict
            'model' (path of the best model), 'best_epoch', 'best_validation', 'epochs_run', 'stopped'.
        """
        from tqdm.auto import tqdm

        c = self.config
        os.makedirs(c.out, exist_ok=True)
        if c.resume and os.path.exists(self.checkpoint_path):
            self.load_checkpoint()
        write_yaml(os.path.join(c.out, "config.yaml"), self.effective_config())
        stopped = "epochs"
        bar = tqdm(
            total=(c.epochs - self.epoch) * self.steps_per_epoch, desc=f"train {c.architecture}",
            disable=not c.progress, unit="batch",
        )
        try:
            while self.epoch < c.epochs and not self._out_of_time():
                epoch_start = time.monotonic()
                train_metrics = self.train_epoch(bar)
                val_metrics = self.validate()
                self.epoch += 1
                improved = val_metrics["loss"] < self.best_loss
                if improved:
                    self.best_loss, self.best_epoch, self.bad_epochs = val_metrics["loss"], self.epoch, 0
                    self.best_state = {k: t.detach().cpu().clone() for k, t in self.model.state_dict().items()}
                    self.best_metrics = val_metrics
                else:
                    self.bad_epochs += 1
                if c.lr_schedule == "plateau" and self.bad_epochs and self.bad_epochs % c.plateau_patience == 0:
                    self.lr_scale *= 0.5
                    self.scheduler.base_lrs = [c.learning_rate * self.lr_scale for _ in self.scheduler.base_lrs]
                entry = {
                    "epoch": self.epoch,
                    "step": self.global_step,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "seconds": time.monotonic() - epoch_start,
                    "train_seconds_total": self.train_seconds,
                    "train": train_metrics,
                    "validation": val_metrics,
                }
                self.history.append(entry)
                if improved:  # before the checkpoint: a run interrupted in between repeats this epoch and exports
                    self.export()
                self.save_checkpoint()
                self._write_metrics()
                bar.set_postfix(
                    val=f"{val_metrics['loss']:.3g}",
                    rmsd_A=f"{val_metrics['position_rmsd_A'][-1]:.3g}",
                    refresh=True,
                )
                logger.info(
                    "epoch %d: train loss %.4g, validation loss %.4g, RMSD at %g fs %.4f A (ballistic %.4f A)",
                    self.epoch, train_metrics["loss"], val_metrics["loss"], 1000 * val_metrics["spans_ps"][-1],
                    val_metrics["position_rmsd_A"][-1], val_metrics["ballistic_position_rmsd_A"][-1],
                )
                if callback is not None and callback(self, entry):
                    stopped = "callback"
                    break
                if c.early_stopping_patience is not None and self.bad_epochs >= c.early_stopping_patience:
                    stopped = "early_stopping"
                    break
                if self._out_of_time():
                    stopped = "max_minutes"
                    break
        finally:
            bar.close()
        return {
            "model": self.model_path if self.best_state is not None else None,
            "best_epoch": self.best_epoch,
            "best_validation": self.best_metrics,
            "epochs_run": self.epoch,
            "stopped": stopped,
        }


def train(config, callback=None):
    """Train a forecaster.

    Parameters
    ----------
    config : TrainingConfig, dict or str
        The settings, a mapping of them, or a YAML file.
    callback : callable, optional
        See :meth:`Trainer.run`.

    Returns
    -------
    dict
        See :meth:`Trainer.run`; 'model' is the path of the best model file in the run directory.
    """
    if isinstance(config, (str, os.PathLike)):
        config = TrainingConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = TrainingConfig.from_dict(config)
    return Trainer(config).run(callback=callback)
