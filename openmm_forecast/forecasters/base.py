"""The forecaster interface: a learned (or exact) flow map of the full state over a span of time.

A forecaster maps the current state of a molecule (positions and velocities, and optionally a short
history of past states) to the states at ``n_frames`` future times ``t + k * stride`` for
``k = 1 .. n_frames``, batched over independent walkers.  Every forecaster, learned or baseline, has the
same call signature (:meth:`Forecaster.forecast`) and the same metadata (:class:`ForecasterMetadata`).

Units: positions in nm, velocities in nm/ps, times in ps, masses in amu, energies in kJ/mol.
Arrays are float64 NumPy arrays at this boundary; torch lives inside the models.
"""

import abc
import dataclasses
import json

import numpy as np
from openmm import unit

from ..errors import ModelMismatchError
from ..units import positive

METADATA_FORMAT = 1


MAX_PLAIN_STRIDE_PS = 1.0
"""Largest stride accepted as a plain number of ps; a longer one must be a Quantity (``10`` meant as fs is 10 ps)."""


def stride_in_ps(stride):
    """A forecast stride in ps from a time Quantity, or a plain number of ps in (0, :data:`MAX_PLAIN_STRIDE_PS`].

    Plain numbers above 1 ps are refused as implausible (a stride is a few fs to a few hundred fs; the CLI's
    ``--stride`` is in fs): ``stride_ps=10`` would silently mean 10 ps per frame.
    """
    if unit.is_quantity(stride):
        return float(positive(stride, unit.picosecond, "stride_ps"))
    if isinstance(stride, bool) or not isinstance(stride, (int, float, np.integer, np.floating)):
        raise TypeError(f"stride_ps must be a time Quantity or a number of ps, got {stride!r}")
    stride = float(stride)
    if not (stride > 0 and np.isfinite(stride)):
        raise ValueError(f"stride_ps must be finite and > 0 ps, got {stride}")
    if stride > MAX_PLAIN_STRIDE_PS:
        raise ValueError(
            f"stride_ps={stride:g} is read as ps ({stride * 1000:g} fs per forecast frame), an implausible stride; "
            f"give a Quantity (e.g. {stride:g}*unit.femtosecond) or a plain number of ps <= {MAX_PLAIN_STRIDE_PS:g}"
        )
    return stride


@dataclasses.dataclass
class ForecasterMetadata:
    """What a forecaster is for.

    Attributes
    ----------
    architecture : str
        Registered architecture name ('mdtrajnet', 'asteroid', 'multiscale_ode', 'constant', ...).
    elements : list of str
        Element symbol of every atom, in the order the model expects.
    stride_ps : float
        Time between successive forecast frames, in ps.
    max_frames : int
        Most frames one call returns; the longest jump is ``max_frames * stride_ps``.
    history : int
        Number of states the model reads (1: the current state only; >1: the current state and
        ``history - 1`` earlier ones, ``stride_ps`` apart, oldest first).
    setup : str or None
        Name of the system setup the model was trained on (None: not tied to one).
    potential : str or None
        Description of the potential whose dynamics the model learned.
    constraints : str or None
        Constraints of the training dynamics ('HBonds', 'none', ...; None: not recorded, not checked).
    temperature_K : float or None
        Temperature of the training states, in K.
    data_fingerprint : str or None
        Fingerprint of the training data (see :mod:`openmm_forecast.data`).
    system_fingerprint : str or None
        Fingerprint of the OpenMM System that generated the data.
    extra : dict
        Anything else (training config, metrics, versions).
    """

    architecture: str
    elements: list
    stride_ps: float
    max_frames: int = 1
    history: int = 1
    setup: str = None
    potential: str = None
    constraints: str = None
    temperature_K: float = None
    data_fingerprint: str = None
    system_fingerprint: str = None
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.elements = [str(e) for e in self.elements]
        if not self.elements:
            raise ValueError("a forecaster needs at least one atom (elements is empty)")
        if not (self.stride_ps > 0 and np.isfinite(self.stride_ps)):
            raise ValueError(f"stride_ps must be finite and > 0, got {self.stride_ps}")
        if int(self.max_frames) < 1 or int(self.history) < 1:
            raise ValueError(f"max_frames and history must be >= 1, got {self.max_frames}, {self.history}")
        self.max_frames, self.history = int(self.max_frames), int(self.history)

    @property
    def n_atoms(self):
        """Number of atoms the model expects."""
        return len(self.elements)

    def spans_ps(self):
        """Jump spans this forecaster supports, in ps: ``[stride, 2 stride, ..., max_frames stride]``."""
        return [k * self.stride_ps for k in range(1, self.max_frames + 1)]

    def to_json(self):
        """Serialize to a JSON string (with a format version)."""
        return json.dumps({"format": METADATA_FORMAT, **dataclasses.asdict(self)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """Inverse of :meth:`to_json`; unknown keys are refused."""
        data = json.loads(text)
        data.pop("format", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown forecaster metadata keys: {sorted(unknown)}")
        return cls(**data)


def is_structure_preserving(metadata):
    """Whether a forecaster is certified symplectic (volume-preserving) and time-reversible by construction,
    so that the accelerator's Metropolis mode is exact with it (``metadata.extra['structure_preserving']``)."""
    return bool(metadata.extra.get("structure_preserving", False))


def uses_forces(metadata):
    """Whether a forecaster reads the forces at the start state (``metadata.extra['uses_forces']``)."""
    return bool(metadata.extra.get("uses_forces", False))


class Forecaster(abc.ABC):
    """Base class of every forecaster.

    Subclasses implement :meth:`_forecast`; :meth:`forecast` validates shapes and refuses non-finite
    inputs.  Outputs are *not* checked here: the accelerator's guards do that, and count it.
    """

    metadata: ForecasterMetadata

    @property
    def name(self):
        """Architecture name (from the metadata)."""
        return self.metadata.architecture

    @property
    def structure_preserving(self):
        """Whether the forecast is a volume-preserving, time-reversible map of (positions, velocities)
        (``metadata.extra['structure_preserving']``; False when absent).  Only then does the Metropolis
        rule sample the Boltzmann distribution exactly: the surrogate and verlet forecasters are, and of the
        learned ones only the ``symplectic`` architecture (see :func:`is_structure_preserving`)."""
        return is_structure_preserving(self.metadata)

    @property
    def uses_forces(self):
        """Whether :meth:`forecast` needs ``forces`` (see :func:`uses_forces`)."""
        return uses_forces(self.metadata)

    def forecast(self, positions, velocities, n_frames=None, forces=None):
        """Forecast future states.

        Parameters
        ----------
        positions : numpy.ndarray, shape (n_walkers, history, n_atoms, 3)
            Positions in nm; the last entry along axis 1 is the current state, earlier ones are
            ``stride_ps`` apart.  A (n_walkers, n_atoms, 3) array is accepted when history is 1.
        velocities : numpy.ndarray, same shape
            Velocities in nm/ps.
        n_frames : int, optional
            Number of future frames (default: ``metadata.max_frames``); 1 <= n_frames <= max_frames.
        forces : numpy.ndarray, shape (n_walkers, n_atoms, 3) or like ``positions``, optional
            Forces in kJ/mol/nm at the current state (with a history, only the last entry is read).
            Required by forecasters that use them (:attr:`uses_forces`), ignored by the others.

        Returns
        -------
        positions : numpy.ndarray, shape (n_walkers, n_frames, n_atoms, 3)
            Positions in nm at ``t + k * stride_ps``, ``k = 1 .. n_frames``.
        velocities : numpy.ndarray, shape (n_walkers, n_frames, n_atoms, 3)
            Velocities in nm/ps at the same times.
        """
        meta = self.metadata
        n_frames = meta.max_frames if n_frames is None else int(n_frames)
        if not 1 <= n_frames <= meta.max_frames:
            raise ValueError(f"n_frames must be in [1, {meta.max_frames}] for this forecaster, got {n_frames}")
        positions = np.asarray(positions, dtype=np.float64)
        velocities = np.asarray(velocities, dtype=np.float64)
        if positions.ndim == 3:
            positions, velocities = positions[:, None], velocities[:, None]
        expected = (meta.history, meta.n_atoms, 3)
        if positions.ndim != 4 or positions.shape[1:] != expected or velocities.shape != positions.shape:
            raise ModelMismatchError(
                f"forecaster {meta.architecture!r} expects positions and velocities of shape "
                f"(n_walkers, {meta.history}, {meta.n_atoms}, 3), got {positions.shape} and {velocities.shape}"
            )
        if not (np.isfinite(positions).all() and np.isfinite(velocities).all()):
            raise ValueError("positions or velocities given to the forecaster contain NaN or Inf")
        if not self.uses_forces:
            return self._forecast(positions, velocities, n_frames)
        if forces is None:
            raise ValueError(
                f"forecaster {meta.architecture!r} reads the forces at the start state: pass forces (kJ/mol/nm)"
            )
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape == positions.shape:
            forces = forces[:, -1]
        if forces.shape != (positions.shape[0], meta.n_atoms, 3):
            raise ModelMismatchError(
                f"forecaster {meta.architecture!r} expects forces of shape ({positions.shape[0]}, {meta.n_atoms}, 3) "
                f"or like the positions, got {forces.shape}"
            )
        if not np.isfinite(forces).all():
            raise ValueError("forces given to the forecaster contain NaN or Inf")
        return self._forecast(positions, velocities, n_frames, forces=forces)

    @abc.abstractmethod
    def _forecast(self, positions, velocities, n_frames):
        """Forecast from validated float64 arrays of shape (n_walkers, history, n_atoms, 3).

        Forecasters that use forces (:attr:`uses_forces`) take a keyword ``forces``, a validated float64
        array of shape (n_walkers, n_atoms, 3) in kJ/mol/nm.
        """

    def check_compatible(self, elements, setup=None, system_fingerprint=None):
        """Refuse a system this forecaster was not made for.

        Parameters
        ----------
        elements : list of str
            Element symbols of the atoms the forecaster would drive.
        setup : str, optional
            Setup name of the system; checked when both it and the model's setup are known.
        system_fingerprint : str, optional
            Not required to match (a different time step or platform changes nothing the model sees);
            recorded for provenance only.

        Raises
        ------
        ModelMismatchError
            Wrong atom count, wrong elements (or order), or a different setup.
        """
        meta = self.metadata
        elements = [str(e) for e in elements]
        if len(elements) != meta.n_atoms:
            raise ModelMismatchError(
                f"forecaster {meta.architecture!r} was built for {meta.n_atoms} atoms, "
                f"but the system has {len(elements)}"
            )
        if elements != meta.elements:
            first = next(i for i, (a, b) in enumerate(zip(elements, meta.elements)) if a != b)
            raise ModelMismatchError(
                f"forecaster {meta.architecture!r} expects elements {''.join(meta.elements)}, but the system "
                f"has {''.join(elements)} (first difference at atom {first}: model {meta.elements[first]}, "
                f"system {elements[first]})"
            )
        if setup is not None and meta.setup is not None and setup != meta.setup:
            raise ModelMismatchError(
                f"forecaster {meta.architecture!r} was trained on setup {meta.setup!r}, not {setup!r}"
            )
