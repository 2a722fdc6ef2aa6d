"""Trajectory data: generation with OpenMM, resumable HDF5 storage, reading.

Two kinds of data file are written, both with positions, velocities and energies:

``nvt`` (:func:`generate_nvt`)
    One Langevin (``LangevinMiddleIntegrator``) chain at the setup's temperature, a frame every
    ``interval``: equilibrium samples.  The velocities are those the integrator reports, half a time step
    away from the positions (fine for sampling; use ``nve`` data for synchronous pairs).
``nve`` (:func:`generate_nve_segments`)
    Short constant-energy segments integrated with velocity Verlet
    (:func:`~openmm_forecast.integrators.velocity_verlet_integrator`) from thermalised states taken from a
    Langevin chain every ``spacing``: the exact Hamiltonian flow over a span, the targets a forecaster
    learns.  Each segment runs in a second Context; the Langevin chain continues from where it was, so the
    offshoots never perturb it.

Both start the same way: minimise the setup's positions, draw velocities at the temperature with
``seed``, equilibrate for ``equilibration``.

HDF5 layout (units: nm, nm/ps, ps, kJ/mol, amu)
------------------------------------------------
Root attributes:

``metadata``
    JSON object: ``format``, ``format_version``, ``mode`` ('nvt' or 'nve'), ``setup``, ``potential``,
    ``temperature_K``, ``timestep_ps`` (of the Langevin chain), ``friction_per_ps``, ``constraints``,
    ``n_atoms``, ``elements``, ``masses_amu``, ``box_vectors_nm`` (3 x 3, or null without periodicity),
    ``system_fingerprint``, ``seed``, ``equilibration_ps``, ``platform``, ``platform_properties``,
    ``openmm_version``, ``openmm_forecast_version``; for ``nvt`` also ``interval_ps``, ``interval_steps``;
    for ``nve`` also ``nve_timestep_ps``, ``segment_length_ps``, ``frame_interval_ps``,
    ``frame_interval_steps``, ``n_frames_per_segment``, ``spacing_ps``, ``spacing_steps``,
    ``com_velocity_removed``.
``commit``
    JSON object ``{"n_committed": int, "checkpoint": name or null, "checkpoint_sha256": str or null}``:
    the number of complete frames (nvt) or segments (nve) and the dataset holding the OpenMM checkpoint
    of the Langevin chain at that point.  Anything in the datasets beyond ``n_committed`` is an
    unfinished write: readers ignore it and the next commit drops it.

Datasets (float64, chunked, resizable along the first axis), ``n`` = frames (nvt) or segments (nve),
``F`` = frames per segment, ``N`` = atoms:

=======================  ==================  =====================================================
name                     nvt shape           nve shape
=======================  ==================  =====================================================
``positions``            (n, N, 3) nm        (n, F, N, 3) nm
``velocities``           (n, N, 3) nm/ps     (n, F, N, 3) nm/ps
``potential_energy``     (n,) kJ/mol         (n, F) kJ/mol
``kinetic_energy``       (n,) kJ/mol         (n, F) kJ/mol
``times``                (n,) ps [1]_        (F,) ps, time of each frame since the segment start
``segment_start_times``  --                  (n,) ps, Langevin-chain time of each segment start [1]_
``checkpoint_0``,        uint8 bytes of ``Context.createCheckpoint()`` (two slots, written alternately)
``checkpoint_1``
=======================  ==================  =====================================================

.. [1] Time of the Langevin chain since the velocities were drawn (equilibration included).

Resuming
--------
Frames are kept in memory and committed in chunks (every ``commit_seconds`` of wall time, and at the
end): the new frames are written, then the Langevin chain's checkpoint (which includes its random number
state) into the checkpoint slot not in use, and only then the ``commit`` attribute, so an interruption at
any point leaves the committed frames and their checkpoint intact (checked by killing a generation
with SIGKILL at random moments, repeatedly: every resumed file equalled the uninterrupted one).  The file
is open only while a chunk is written; when another process holds it open (HDF5 file locking), the
commit is postponed and the frames stay in memory, except for the last commit, which waits for the file.

Calling the generator again on an existing file with the same settings resumes it (or extends it, when
asked for more frames or segments than it holds); different settings are refused with a
:class:`~openmm_forecast.errors.DataFileError` naming them.  The chain is restored from the checkpoint,
and the result equals an uninterrupted run frame for frame, bit for bit, on the same platform
(deterministic forces are requested on CPU and CUDA).
"""

import dataclasses
import hashlib
import json
import logging
import os
import time

import h5py
import numpy as np
from openmm import unit

from ._io import atomic_write_path
from ._version import __version__
from ._runtime import openmm as mm
from .errors import CheckpointError, DataFileError
from .integrators import velocity_verlet_integrator
from .systems import removes_com_motion, without_com_velocity
from .units import positive, whole_steps

logger = logging.getLogger(__name__)

FORMAT = "openmm-forecast-trajectory"
FORMAT_VERSION = 1
MODES = ("nvt", "nve")

_RECORD_DATASETS = {
    "nvt": ("positions", "velocities", "times", "potential_energy", "kinetic_energy"),
    "nve": ("positions", "velocities", "potential_energy", "kinetic_energy", "segment_start_times"),
}
"""Datasets that grow by one record (frame or segment) per step of the generation, per mode."""

_LOCK_WAIT_SECONDS = 600.0
"""How long a necessary write waits for another process (a reader with the file open) to let go of it."""

_UNMATCHED_KEYS = ("openmm_forecast_version",)
"""Metadata that may differ between a file and a resumed generation."""

_PLATFORM_PROPERTIES = {
    "CPU": {"DeterministicForces": "true"},
    "CUDA": {"Precision": "mixed", "DeterministicForces": "true"},
    "OpenCL": {"Precision": "mixed"},
}
"""Platform properties for data generation: reproducible forces (a resumed run must equal an uninterrupted
one) and mixed precision on GPUs (energy conservation of the NVE segments)."""


@dataclasses.dataclass
class TrajectoryData:
    """The committed contents of a trajectory data file.

    Attributes
    ----------
    mode : str
        'nvt' or 'nve'.
    positions : numpy.ndarray
        nm; shape (n_frames, N, 3) for nvt, (n_segments, n_frames_per_segment, N, 3) for nve.
    velocities : numpy.ndarray
        nm/ps, same shape as ``positions``, at the same times.
    times : numpy.ndarray
        ps; nvt: (n_frames,) Langevin-chain time of each frame; nve: (n_frames_per_segment,) time of each
        frame since its segment's start.
    potential_energy, kinetic_energy : numpy.ndarray
        kJ/mol; shape (n_frames,) for nvt, (n_segments, n_frames_per_segment) for nve.
    metadata : dict
        Everything the file's ``metadata`` attribute holds (see the module docstring).
    segment_start_times : numpy.ndarray or None
        nve only: (n_segments,) ps, Langevin-chain time of each segment start.
    """

    mode: str
    positions: np.ndarray
    velocities: np.ndarray
    times: np.ndarray
    potential_energy: np.ndarray
    kinetic_energy: np.ndarray
    metadata: dict
    segment_start_times: np.ndarray = None

    @property
    def elements(self):
        """Element symbol of every atom (list of str)."""
        return list(self.metadata["elements"])

    @property
    def masses(self):
        """Particle masses in amu, shape (N,)."""
        return np.asarray(self.metadata["masses_amu"], dtype=float)

    @property
    def n_atoms(self):
        """Number of particles N."""
        return int(self.metadata["n_atoms"])

    @property
    def total_energy(self):
        """Potential plus kinetic energy in kJ/mol, same shape as ``potential_energy``."""
        return self.potential_energy + self.kinetic_energy

    def __len__(self):
        """Number of committed frames (nvt) or segments (nve)."""
        return len(self.positions)


# --------------------------------------------------------------------------------------------------- #
# Public generators
# --------------------------------------------------------------------------------------------------- #


def generate_nvt(
    molecular_system,
    path,
    *,
    n_frames,
    interval,
    seed,
    equilibration=100.0 * unit.picosecond,
    platform=None,
    progress=True,
    resume=True,
    commit_seconds=30.0,
    callback=None,
):
    """Sample a Langevin (NVT) trajectory, storing positions, velocities and energies every ``interval``.

    The chain uses ``molecular_system.integrator(seed)`` (``LangevinMiddleIntegrator`` at the setup's
    temperature, friction and time step).  Frame ``k`` (0-based) is taken at chain time
    ``equilibration + (k + 1) * interval``.

    Parameters
    ----------
    molecular_system : openmm_forecast.systems.MolecularSystem
    path : str or os.PathLike
        HDF5 file to write (see the module docstring for its layout).
    n_frames : int
        Number of frames the file should hold at the end (> 0).
    interval : openmm.unit.Quantity
        Time between stored frames; a multiple of the setup's time step.
    seed : int
        Seed (>= 1) of the thermostat and of the initial velocities.
    equilibration : openmm.unit.Quantity
        Langevin time run before the first frame (>= 0; a multiple of the time step).
    platform : str or openmm.Platform, optional
        Default: the platform recorded in an existing file, else
        :func:`~openmm_forecast.platforms.fastest_platform`.
    progress : bool
        Show a tqdm progress bar.
    resume : bool
        If ``path`` exists: continue it (True) or refuse to touch it (False).
    commit_seconds : float
        Wall time between commits of the frames computed so far (0: after every frame).
    callback : callable, optional
        ``callback(n_done, n_frames)`` after every frame; it may raise to stop the run (committed frames
        stay in the file).

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    UnitError
        ``interval`` or ``equilibration`` without time units.
    ValueError
        Non-positive counts, or an interval that is not a multiple of the time step.
    DataFileError
        ``path`` exists with different settings, or is not a trajectory data file (or exists and
        ``resume`` is False).
    """
    n_frames = _count(n_frames, "n_frames")
    seed = _seed(seed)
    timestep_ps = positive(molecular_system.timestep, unit.picosecond, "timestep")
    interval_ps = positive(interval, unit.picosecond, "interval")
    interval_steps = whole_steps(interval_ps, timestep_ps, "interval", "the time step of the setup")
    equilibration_ps = positive(equilibration, unit.picosecond, "equilibration", allow_zero=True)
    equilibration_steps = whole_steps(
        equilibration_ps, timestep_ps, "equilibration", "the time step of the setup", allow_zero=True
    )
    existing = _existing_metadata(path, resume)
    platform = _resolve_platform(molecular_system, platform, path, existing)
    metadata = _base_metadata(molecular_system, "nvt", seed, equilibration_ps, platform)
    metadata.update(interval_ps=interval_ps, interval_steps=interval_steps)
    n_atoms = molecular_system.n_atoms
    shapes = {
        "positions": (n_atoms, 3),
        "velocities": (n_atoms, 3),
        "times": (),
        "potential_energy": (),
        "kinetic_energy": (),
    }
    store = _Store.open(path, metadata, shapes, static={}, existing=existing)
    if store.n_committed >= n_frames:
        logger.info("%s already holds %d frames (%d asked); nothing to do", path, store.n_committed, n_frames)
        return str(path)

    chain = _LangevinChain(molecular_system, seed, platform, equilibration_steps, store)

    def record():
        chain.integrator.step(interval_steps)
        state = chain.context.getState(getPositions=True, getVelocities=True, getEnergy=True)
        return {
            "positions": _nm(state.getPositions(asNumpy=True)),
            "velocities": _nm_per_ps(state.getVelocities(asNumpy=True)),
            "times": state.getTime().value_in_unit(unit.picosecond),
            "potential_energy": _kj(state.getPotentialEnergy()),
            "kinetic_energy": _kj(state.getKineticEnergy()),
        }

    _run(store, chain, record, n_frames, "NVT frames", progress, commit_seconds, callback)
    return str(path)


def generate_nve_segments(
    molecular_system,
    path,
    *,
    n_segments,
    segment_length,
    frame_interval,
    seed,
    nve_timestep=0.5 * unit.femtosecond,
    spacing=1.0 * unit.picosecond,
    equilibration=100.0 * unit.picosecond,
    platform=None,
    progress=True,
    resume=True,
    commit_seconds=30.0,
    callback=None,
):
    """Integrate constant-energy segments from thermalised states of a Langevin chain.

    Every ``spacing`` of Langevin time (the first at ``equilibration``), the chain's state (x, v) starts a
    segment: in a second Context on the same System it is made consistent (centre-of-mass velocity removed
    when the System has a ``CMMotionRemover``; ``applyConstraints`` and ``applyVelocityConstraints`` with
    constraints) and integrated with velocity Verlet at ``nve_timestep``, storing the start and every
    ``frame_interval`` up to ``segment_length``.  The chain then continues from the state it had, so it
    is the same chain :func:`generate_nvt` runs with the same seed.

    The start velocities are those ``LangevinMiddleIntegrator`` reports (half a step from the positions);
    every later frame of a segment is synchronous, and the segment is the exact NVE flow from its start.

    Parameters
    ----------
    molecular_system : openmm_forecast.systems.MolecularSystem
    path : str or os.PathLike
        HDF5 file to write (see the module docstring for its layout).
    n_segments : int
        Number of segments the file should hold at the end (> 0).
    segment_length : openmm.unit.Quantity
        Time span of each segment; a multiple of ``frame_interval``.
    frame_interval : openmm.unit.Quantity
        Time between stored frames of a segment; a multiple of ``nve_timestep``.  Each segment holds
        ``segment_length / frame_interval + 1`` frames.
    seed : int
        Seed (>= 1) of the thermostat and of the initial velocities.
    nve_timestep : openmm.unit.Quantity
        Velocity Verlet time step of the segments.
    spacing : openmm.unit.Quantity
        Langevin time between segment starts; a multiple of the setup's time step.
    equilibration : openmm.unit.Quantity
        Langevin time before the first segment (>= 0; a multiple of the setup's time step).
    platform, progress, resume, commit_seconds
        As for :func:`generate_nvt`.
    callback : callable, optional
        ``callback(n_done, n_segments)`` after every segment; it may raise to stop the run.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    UnitError, ValueError, DataFileError
        As for :func:`generate_nvt`.
    """
    n_segments = _count(n_segments, "n_segments")
    seed = _seed(seed)
    timestep_ps = positive(molecular_system.timestep, unit.picosecond, "timestep")
    nve_timestep_ps = positive(nve_timestep, unit.picosecond, "nve_timestep")
    segment_ps = positive(segment_length, unit.picosecond, "segment_length")
    frame_interval_ps = positive(frame_interval, unit.picosecond, "frame_interval")
    spacing_ps = positive(spacing, unit.picosecond, "spacing")
    equilibration_ps = positive(equilibration, unit.picosecond, "equilibration", allow_zero=True)
    frame_steps = whole_steps(frame_interval_ps, nve_timestep_ps, "frame_interval", "nve_timestep")
    n_intervals = whole_steps(segment_ps, frame_interval_ps, "segment_length", "frame_interval")
    spacing_steps = whole_steps(spacing_ps, timestep_ps, "spacing", "the time step of the setup")
    equilibration_steps = whole_steps(
        equilibration_ps, timestep_ps, "equilibration", "the time step of the setup", allow_zero=True
    )
    n_frames = n_intervals + 1
    remove_com = removes_com_motion(molecular_system.system)

    existing = _existing_metadata(path, resume)
    platform = _resolve_platform(molecular_system, platform, path, existing)
    metadata = _base_metadata(molecular_system, "nve", seed, equilibration_ps, platform)
    metadata.update(
        nve_timestep_ps=nve_timestep_ps,
        segment_length_ps=segment_ps,
        frame_interval_ps=frame_interval_ps,
        frame_interval_steps=frame_steps,
        n_frames_per_segment=n_frames,
        spacing_ps=spacing_ps,
        spacing_steps=spacing_steps,
        com_velocity_removed=remove_com,
    )
    n_atoms = molecular_system.n_atoms
    shapes = {
        "positions": (n_frames, n_atoms, 3),
        "velocities": (n_frames, n_atoms, 3),
        "potential_energy": (n_frames,),
        "kinetic_energy": (n_frames,),
        "segment_start_times": (),
    }
    frame_times = np.arange(n_frames) * frame_steps * nve_timestep_ps
    store = _Store.open(path, metadata, shapes, static={"times": frame_times}, existing=existing)
    if store.n_committed >= n_segments:
        logger.info(
            "%s already holds %d segments (%d asked); nothing to do", path, store.n_committed, n_segments
        )
        return str(path)

    # Created before the chain: creating a Context can reseed the Reference platform's shared random
    # number generator (see record()).
    nve_integrator = velocity_verlet_integrator(nve_timestep)
    nve_context = mm.Context(molecular_system.system, nve_integrator, platform, _properties(platform))
    chain = _LangevinChain(molecular_system, seed, platform, equilibration_steps, store)
    masses = molecular_system.masses
    tolerance = nve_integrator.getConstraintTolerance()

    def record():
        # The Reference platform draws the thermostat's noise from one random number generator shared by
        # every Context of the process, and stepping the NVE Context disturbs it (the chain then drifts
        # away from generate_nvt's within a few steps).  Restoring the chain's checkpoint (which holds the
        # generator's state) after the offshoot keeps the chain bit for bit the one generate_nvt runs.
        chain_state = chain.context.createCheckpoint()
        start = chain.context.getState(getPositions=True, getVelocities=True)
        velocities = _nm_per_ps(start.getVelocities(asNumpy=True))
        if remove_com:
            velocities = without_com_velocity(velocities, masses)
        nve_context.setPeriodicBoxVectors(*start.getPeriodicBoxVectors())
        nve_context.setPositions(start.getPositions(asNumpy=True))
        nve_context.setVelocities(velocities)
        nve_context.setTime(0.0)
        nve_context.applyConstraints(tolerance)
        nve_context.applyVelocityConstraints(tolerance)
        segment = {name: np.empty(shape) for name, shape in shapes.items()}
        for k in range(n_frames):
            if k:
                nve_integrator.step(frame_steps)
            state = nve_context.getState(getPositions=True, getVelocities=True, getEnergy=True)
            segment["positions"][k] = _nm(state.getPositions(asNumpy=True))
            segment["velocities"][k] = _nm_per_ps(state.getVelocities(asNumpy=True))
            segment["potential_energy"][k] = _kj(state.getPotentialEnergy())
            segment["kinetic_energy"][k] = _kj(state.getKineticEnergy())
        segment["segment_start_times"] = start.getTime().value_in_unit(unit.picosecond)
        chain.context.loadCheckpoint(chain_state)
        # The chain moves on to the next start; the stored checkpoint is always "at the next start".
        chain.integrator.step(spacing_steps)
        return segment

    _run(store, chain, record, n_segments, "NVE segments", progress, commit_seconds, callback)
    return str(path)


# --------------------------------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------------------------------- #


def load_trajectory(path):
    """Read the committed frames (nvt) or segments (nve) of a data file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    TrajectoryData

    Raises
    ------
    DataFileError
        The file is missing, not HDF5, not a trajectory data file, or inconsistent.
    """
    with _open(path, "r") as handle:
        metadata, commit = _header(handle, path)
        n = commit["n_committed"]
        mode = metadata["mode"]
        arrays = {name: handle[name][:n] for name in _RECORD_DATASETS[mode]}
        if mode == "nve":
            arrays["times"] = handle["times"][:]
    return TrajectoryData(mode=mode, metadata=metadata, **arrays)


def data_fingerprint(path, n_records=None):
    """SHA-256 of a data file's metadata and committed contents: identifies training data.

    Two files have the same fingerprint exactly when their metadata (except the openmm-forecast version)
    and their committed frames are identical; uncommitted leftovers and checkpoints do not count.

    Parameters
    ----------
    path : str or os.PathLike
    n_records : int, optional
        Fingerprint of the first ``n_records`` records (NVE segments or NVT frames) only, as the file was
        when it held that many: a file extended by a later generation run still has the fingerprint of
        its shorter self for that prefix.  Default: every committed record.

    Returns
    -------
    str
        Hex digest.
    """
    digest = hashlib.sha256()
    with _open(path, "r") as handle:
        metadata, commit = _header(handle, path)
        n = commit["n_committed"]
        if n_records is not None:
            if not 0 <= n_records <= n:
                raise ValueError(f"{path} holds {n} committed records; no fingerprint of its first {n_records}")
            n = int(n_records)
        digest.update(_canonical_json({k: v for k, v in metadata.items() if k not in _UNMATCHED_KEYS}))
        digest.update(str(n).encode())
        names = sorted(_RECORD_DATASETS[metadata["mode"]] + (("times",) if metadata["mode"] == "nve" else ()))
        for name in names:
            dataset = handle[name]
            length = n if name in _RECORD_DATASETS[metadata["mode"]] else len(dataset)
            digest.update(name.encode())
            block = max(1, (1 << 24) // max(1, dataset.dtype.itemsize * int(np.prod(dataset.shape[1:]))))
            for start in range(0, length, block):
                digest.update(np.ascontiguousarray(dataset[start : min(length, start + block)]).tobytes())
    return digest.hexdigest()


def to_mdtraj(data, topology):
    """An ``mdtraj.Trajectory`` of the positions, for analysis (dihedrals, RMSD, ...).

    Parameters
    ----------
    data : TrajectoryData
    topology : openmm.app.Topology or mdtraj.Topology
        Topology of the atoms (for example ``MolecularSystem.topology``).

    Returns
    -------
    mdtraj.Trajectory
        nvt: one frame per stored frame, ``time`` in ps.  nve: the segments one after the other
        (n_segments * n_frames_per_segment frames), ``time`` the time within each segment.
    """
    import mdtraj

    if not isinstance(topology, mdtraj.Topology):
        topology = mdtraj.Topology.from_openmm(topology)
    if topology.n_atoms != data.n_atoms:
        raise DataFileError(f"topology has {topology.n_atoms} atoms, the data {data.n_atoms}")
    xyz = data.positions.reshape(-1, data.n_atoms, 3)
    times = data.times if data.mode == "nvt" else np.tile(data.times, len(data))
    box = data.metadata.get("box_vectors_nm")
    vectors = None if box is None else np.repeat(np.asarray(box)[None], len(xyz), axis=0)
    trajectory = mdtraj.Trajectory(xyz, topology, time=times)
    if vectors is not None:
        trajectory.unitcell_vectors = vectors
    return trajectory


# --------------------------------------------------------------------------------------------------- #
# Internals
# --------------------------------------------------------------------------------------------------- #


class _Store:
    """A trajectory data file on disk: creation, metadata check, truncation, chunked commits."""

    def __init__(self, path, mode, n_committed, checkpoint_name, checkpoint):
        self.path = str(path)
        self.mode = mode
        self.n_committed = n_committed
        self.checkpoint_name = checkpoint_name
        self.checkpoint = checkpoint

    @classmethod
    def open(cls, path, metadata, shapes, static, existing):
        """Create ``path``, or check an existing one against ``metadata`` and read its checkpoint.

        Uncommitted leftovers of an existing file are dropped by the next :meth:`commit`.
        """
        if existing is None:
            cls._create(path, metadata, shapes, static)
            return cls(path, metadata["mode"], 0, None, None)
        _check_metadata(path, existing, metadata)
        with _open(path, "r") as handle:
            _, commit = _header(handle, path)
            n = commit["n_committed"]
            checkpoint = None
            if commit["checkpoint"] is not None:
                checkpoint = handle[commit["checkpoint"]][:].tobytes()
                if hashlib.sha256(checkpoint).hexdigest() != commit["checkpoint_sha256"]:
                    raise CheckpointError(
                        f"the checkpoint stored in {path} does not match its recorded SHA-256: the file is "
                        "damaged; its committed frames can still be read with load_trajectory"
                    )
        logger.info("resuming %s from %d committed records", path, n)
        return cls(path, metadata["mode"], n, commit["checkpoint"], checkpoint)

    @staticmethod
    def _create(path, metadata, shapes, static):
        """Write an empty file atomically (a temporary file renamed into place)."""
        with atomic_write_path(path) as temporary:
            with h5py.File(temporary, "w") as handle:
                handle.attrs["metadata"] = json.dumps(metadata)
                handle.attrs["commit"] = json.dumps(
                    {"n_committed": 0, "checkpoint": None, "checkpoint_sha256": None}
                )
                for name, shape in shapes.items():
                    handle.create_dataset(
                        name, shape=(0, *shape), maxshape=(None, *shape), dtype="f8", chunks=_chunks(shape)
                    )
                for name, values in static.items():
                    handle.create_dataset(name, data=np.asarray(values, dtype="f8"))
                for slot in ("checkpoint_0", "checkpoint_1"):
                    handle.create_dataset(slot, shape=(0,), maxshape=(None,), dtype="u1", chunks=(1 << 16,))

    def commit(self, records, checkpoint, wait=True):
        """Append ``records`` (list of dicts of arrays), store ``checkpoint``, then advance the commit count.

        Returns False, having written nothing, if another process holds the file open and ``wait`` is
        False; with ``wait`` True it waits up to :data:`_LOCK_WAIT_SECONDS` and then raises DataFileError.
        """
        slot = "checkpoint_1" if self.checkpoint_name == "checkpoint_0" else "checkpoint_0"
        n = self.n_committed + len(records)
        try:
            handle = _open(self.path, "r+", wait_seconds=_LOCK_WAIT_SECONDS if wait else 0.0)
        except _FileLockedError as error:
            if wait:
                raise
            logger.warning("%s; keeping the new records in memory until the next commit", error)
            return False
        with handle:
            for name in _RECORD_DATASETS[self.mode]:
                dataset = handle[name]
                dataset.resize(n, axis=0)  # also drops leftovers of an interrupted write
                if records:
                    dataset[self.n_committed : n] = np.stack([record[name] for record in records])
            payload = np.frombuffer(checkpoint, dtype=np.uint8)
            handle[slot].resize(len(payload), axis=0)
            handle[slot][:] = payload
            handle.flush()
            # The commit attribute is written last: until it is, the previous commit stays valid.
            handle.attrs["commit"] = json.dumps(
                {"n_committed": n, "checkpoint": slot, "checkpoint_sha256": hashlib.sha256(checkpoint).hexdigest()}
            )
        self.n_committed, self.checkpoint_name, self.checkpoint = n, slot, checkpoint
        return True


class _LangevinChain:
    """The Langevin Context of a generation: started (minimise, velocities, equilibrate) or restored."""

    def __init__(self, molecular_system, seed, platform, equilibration_steps, store):
        self.integrator = molecular_system.integrator(seed)
        self.context = mm.Context(molecular_system.system, self.integrator, platform, _properties(platform))
        if store.checkpoint is not None:
            try:
                self.context.loadCheckpoint(store.checkpoint)
            except Exception as error:
                raise CheckpointError(
                    f"cannot restore the generation stored in {store.path} on platform {platform.getName()}: "
                    f"{error}"
                ) from error
            return
        self.context.setPositions(molecular_system.positions)
        mm.LocalEnergyMinimizer.minimize(self.context)
        self.context.setVelocitiesToTemperature(molecular_system.temperature, seed)
        self.integrator.step(equilibration_steps)
        # Commit the equilibrated state at once: an interrupted run never repeats the equilibration.
        store.commit([], self.context.createCheckpoint())


def _run(store, chain, record, n_total, description, progress, commit_seconds, callback):
    """Call ``record()`` until the store holds ``n_total`` records, committing every ``commit_seconds``.

    On an exception raised after a record was completed (from ``callback``, or a KeyboardInterrupt
    between records) the records computed so far are committed before the exception propagates.  A
    commit that finds the file held open by another process is postponed (the records stay in memory),
    except the last one, which waits for the file.
    """
    from tqdm.auto import tqdm

    pending = []
    busy = False  # inside record() or commit(): the chain and the pending records may disagree
    last_commit = time.monotonic()
    bar = tqdm(total=n_total, initial=store.n_committed, desc=description, disable=not progress)
    try:
        for index in range(store.n_committed, n_total):
            busy = True
            pending.append(record())
            final = index == n_total - 1
            if final or time.monotonic() - last_commit >= commit_seconds:
                if store.commit(pending, chain.context.createCheckpoint(), wait=final):
                    pending = []
                last_commit = time.monotonic()
            busy = False
            bar.update(1)
            if callback is not None:
                callback(index + 1, n_total)
    except BaseException:
        # Unless the exception hit inside record() or commit(), the chain is at the state right after the
        # last pending record.
        if pending and not busy:
            store.commit(pending, chain.context.createCheckpoint())
        raise
    finally:
        bar.close()


class _FileLockedError(DataFileError):
    """Another process holds the file open (HDF5 file locking)."""


def _open(path, mode, wait_seconds=0.0):
    """Open an HDF5 file with a DataFileError for missing or unreadable files.

    A file locked by another process is retried every half second for ``wait_seconds``.
    """
    if not os.path.isfile(path):
        raise DataFileError(f"trajectory data file {path} does not exist")
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return h5py.File(path, mode)
        except BlockingIOError as error:
            if time.monotonic() >= deadline:
                raise _FileLockedError(
                    f"{path} is held open by another process (close any h5py.File or viewer that has it "
                    "open; load_trajectory closes it after reading)"
                ) from error
            time.sleep(0.5)
        except OSError as error:
            raise DataFileError(f"cannot open {path} as an HDF5 trajectory data file: {error}") from error


def _header(handle, path):
    """The metadata and commit dicts of an open file, checked for format and consistency."""
    try:
        metadata = json.loads(handle.attrs["metadata"])
        commit = json.loads(handle.attrs["commit"])
    except (KeyError, TypeError, ValueError) as error:
        raise DataFileError(f"{path} is not an openmm-forecast trajectory data file (no metadata)") from error
    if metadata.get("format") != FORMAT or metadata.get("mode") not in MODES:
        raise DataFileError(f"{path} is not an openmm-forecast trajectory data file (format {metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise DataFileError(
            f"{path} has format version {metadata.get('format_version')}; this openmm-forecast reads "
            f"version {FORMAT_VERSION}"
        )
    names = _RECORD_DATASETS[metadata["mode"]] + (("times",) if metadata["mode"] == "nve" else ())
    missing = [name for name in names if name not in handle]
    if missing:
        raise DataFileError(f"{path} lacks the datasets {', '.join(missing)}")
    n = commit.get("n_committed")
    if not isinstance(n, int) or n < 0:
        raise DataFileError(f"{path} has an invalid commit record {commit!r}")
    short = [name for name in _RECORD_DATASETS[metadata["mode"]] if handle[name].shape[0] < n]
    if short:
        raise DataFileError(f"{path} is inconsistent: {n} records committed, datasets {short} hold fewer")
    return metadata, commit


def _existing_metadata(path, resume):
    """Metadata of an existing file at ``path`` (None if there is none); refuse it when not resuming."""
    if not os.path.exists(path):
        return None
    if not resume:
        raise DataFileError(f"{path} exists; pass resume=True to continue it, or choose another file name")
    with _open(path, "r") as handle:
        metadata, _ = _header(handle, path)
    return metadata


def _check_metadata(path, existing, requested):
    """Raise DataFileError naming every setting in which an existing file differs from the request."""
    keys = sorted((set(existing) | set(requested)) - set(_UNMATCHED_KEYS))
    different = [key for key in keys if _canonical_json(existing.get(key)) != _canonical_json(requested.get(key))]
    if different:
        details = "; ".join(
            f"{key}: file {_short(existing.get(key))}, requested {_short(requested.get(key))}" for key in different
        )
        raise DataFileError(
            f"{path} was generated with different settings and cannot be continued ({details}); "
            "continue it with its own settings (a platform left out defaults to the file's), or write to another file"
        )


def frame_step(stride_ps, frame_interval_ps):
    """Number of data frames in a forecast stride (a whole multiple, else DataFileError)."""
    step = int(round(stride_ps / frame_interval_ps))
    if step < 1 or abs(step * frame_interval_ps - stride_ps) > 1e-6 * frame_interval_ps:
        raise DataFileError(
            f"the stride ({stride_ps * 1000:g} fs) must be a whole multiple of the data's frame interval "
            f"({frame_interval_ps * 1000:g} fs)"
        )
    return step


def _base_metadata(molecular_system, mode, seed, equilibration_ps, platform):
    """Metadata shared by both modes (see the module docstring)."""
    box = None
    if molecular_system.system.usesPeriodicBoundaryConditions():
        vectors = molecular_system.system.getDefaultPeriodicBoxVectors()
        box = [[float(c) for c in vector.value_in_unit(unit.nanometer)] for vector in vectors]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": mode,
        "setup": molecular_system.setup,
        "potential": molecular_system.potential,
        "temperature_K": float(molecular_system.temperature.value_in_unit(unit.kelvin)),
        "timestep_ps": float(molecular_system.timestep.value_in_unit(unit.picosecond)),
        "friction_per_ps": float(molecular_system.friction.value_in_unit(unit.picosecond**-1)),
        "constraints": molecular_system.constraints,
        "n_atoms": molecular_system.n_atoms,
        "elements": molecular_system.elements,
        "masses_amu": [float(m) for m in molecular_system.masses],
        "box_vectors_nm": box,
        "system_fingerprint": molecular_system.fingerprint(),
        "seed": seed,
        "equilibration_ps": equilibration_ps,
        "platform": platform.getName(),
        "platform_properties": _properties(platform),
        "openmm_version": mm.__version__,
        "openmm_forecast_version": __version__,
    }


def _resolve_platform(molecular_system, platform, path, existing):
    """The platform object: the argument, else the one an existing file was written on, else the fastest."""
    from .platforms import available_platforms, fastest_platform, get_platform

    if platform is not None:
        return get_platform(platform)
    if existing is not None:
        if existing["platform"] not in available_platforms():
            raise DataFileError(
                f"{path} was generated on the OpenMM platform {existing['platform']}, which is not available "
                f"here; a generation continues only on the platform that started it (OpenMM checkpoints are "
                f"platform-specific)"
            )
        return get_platform(existing["platform"])
    return get_platform(fastest_platform(molecular_system))  # data generation keeps its own properties


def _properties(platform):
    """Platform properties used for data generation (see :data:`_PLATFORM_PROPERTIES`)."""
    return dict(_PLATFORM_PROPERTIES.get(platform.getName(), {}))


def _count(value, name):
    """A positive integer count, refusing bools, floats and non-positive values."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _seed(value):
    """A reproducible seed: an integer >= 1 (OpenMM treats 0 as 'pick one at random')."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"seed must be an integer >= 1 (0 would make OpenMM pick a random one), got {value!r}")
    return int(value)


def _chunks(shape):
    """Chunk shape for a dataset growing along its first axis: about 128 KiB, 1 to 4096 records."""
    record_bytes = 8 * int(np.prod(shape))
    return (min(4096, max(1, (1 << 17) // record_bytes)), *shape)


def _canonical_json(value):
    return json.dumps(value, sort_keys=True).encode()


def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _nm(quantity):
    return np.asarray(quantity.value_in_unit(unit.nanometer), dtype=float)


def _nm_per_ps(quantity):
    return np.asarray(quantity.value_in_unit(unit.nanometer / unit.picosecond), dtype=float)


def _kj(quantity):
    return float(quantity.value_in_unit(unit.kilojoule_per_mole))
