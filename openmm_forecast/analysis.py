"""Ramachandran analysis of any peptide: phi/psi of every residue, histograms, Jensen-Shannon divergence, basins,
and torsions of the user's choice.

Conventions
-----------
Angles
    Degrees, IUPAC sign convention (the one of ``mdtraj.compute_dihedrals``), wrapped into
    [-180, 180).  Every residue with both a backbone phi (C(i-1)-N-CA-C) and psi (N-CA-C-N(i+1)) has a
    Ramachandran pair (:func:`backbone_torsion_pairs`, found by mdtraj from the topology); the package's alanine
    dipeptide has one, phi 4-6-8-14 and psi 6-8-14-16 (0-based atoms, :data:`~openmm_forecast.systems.PHI_ATOMS`
    and :data:`~openmm_forecast.systems.PSI_ATOMS`).  Arrays of one residue's phi/psi have shape (n_frames, 2):
    column 0 phi, column 1 psi; of several, (n_frames, n_residues, 2).  Histograms, JS, basins and transitions
    take one residue at a time.
Histograms
    ``DEFAULT_BINS`` x ``DEFAULT_BINS`` = 36 x 36 square bins of 10 degrees over ``DEFAULT_RANGE`` =
    [-180, 180) in both angles, normalised to probabilities (sum 1).  Axis 0 is phi, axis 1 is psi.
Jensen-Shannon divergence
    ``JS(P, Q) = 1/2 KL(P || M) + 1/2 KL(Q || M)`` with ``M = (P + Q) / 2``, natural logarithm, so that
    0 <= JS <= ln 2; 0 for identical histograms, ln 2 for histograms with disjoint support.  Empty bins
    contribute 0 (0 ln 0 = 0), so no pseudo-counts are needed.
Basins (:data:`BASINS`)
    Rectangles in (phi, psi); an interval ``(lo, hi)`` means [lo, hi), and ``lo > hi`` means it wraps
    through +-180, i.e. [lo, 180) U [-180, hi).

    ``beta`` (C5 / C7eq / PII, extended)
        phi in [150, 180) U [-180, 0), psi in [20, 180) U [-180, -150).  The C5 minimum near
        (-155, 160) extends across phi = +-180, so frames at phi ~ 175 are beta, not alpha_L.
    ``alpha_R`` (right-handed helix)
        phi in [-180, 0), psi in [-120, -10).
    ``alpha_L`` (alpha_L / C7ax, phi > 0)
        phi in [20, 130), every psi.

    The buffers between them (phi < 0 with psi in [-10, 20) or [-150, -120); phi in [0, 20) or
    [130, 150)) are barrier regions.  A frame in none of the basins is ``other``: it is counted in the
    ``other`` population (so the populations of the basins and ``other`` sum to 1) and it never starts a
    transition.
Free energies
    ``F_b = -ln p_b`` in kT, with ``p_b`` the fraction of all frames in basin ``b`` (absolute, not shifted
    to the most populated basin: ``F_a - F_b`` is the free-energy difference between two basins, and
    ``F_b(A) - F_b(B)`` compares two runs directly).  Infinite (``None`` in JSON) for an unvisited basin.
Transitions
    Transition-based ("last visited basin", core-set) assignment: each frame is assigned the last basin
    the trajectory was in, so that frames in the ``other`` buffer keep the previous basin.  A transition
    ``a -> b`` is counted when the assignment changes, i.e. when the trajectory enters basin ``b`` having
    last been in basin ``a``.  Recrossings of a basin boundary that do not reach another basin are not
    counted.  Frames before the first basin visit are unassigned.
"""

import dataclasses
import os

import numpy as np

from ._io import load_npy
from .errors import DataFileError, ForecastError, UnsupportedSystemError

DEFAULT_BINS = 36
"""Number of histogram bins per angle (10-degree bins over 360 degrees)."""
DEFAULT_RANGE = (-180.0, 180.0)
"""Histogram range of both angles, degrees: [-180, 180)."""


@dataclasses.dataclass(frozen=True)
class Basin:
    """A rectangular region of the Ramachandran plane.

    Attributes
    ----------
    name : str
        Short key used in reports (``beta``, ``alpha_R``, ``alpha_L``).
    description : str
        The conformations it contains, in words.
    phi : tuple of float
        ``(lo, hi)`` in degrees: [lo, hi), or [lo, 180) U [-180, hi) when ``lo > hi``.
    psi : tuple of float
        Same for psi.
    """

    name: str
    description: str
    phi: tuple
    psi: tuple

    def contains(self, phi_psi):
        """Boolean mask, shape (n_frames,), of the frames inside the basin (angles in degrees)."""
        phi_psi = wrap_degrees(check_phi_psi(phi_psi))
        return _in_interval(phi_psi[:, 0], self.phi) & _in_interval(phi_psi[:, 1], self.psi)

    def as_dict(self):
        """JSON-ready definition."""
        return {"description": self.description, "phi_deg": list(self.phi), "psi_deg": list(self.psi)}


BASINS = (
    Basin("beta", "C5/C7eq/PII (extended, phi < 0; wraps through phi = +-180)", (150.0, 0.0), (20.0, -150.0)),
    Basin("alpha_R", "right-handed helix (phi < 0, psi ~ -40)", (-180.0, 0.0), (-120.0, -10.0)),
    Basin("alpha_L", "alpha_L/C7ax (phi > 0)", (20.0, 130.0), (-180.0, 180.0)),
)
"""Default basins; see the module docstring for the boundaries and the buffers between them."""

OTHER = "other"
"""Name of the frames that are in no basin."""


def wrap_degrees(angles):
    """Map angles in degrees into [-180, 180)."""
    return (np.asarray(angles, dtype=float) + 180.0) % 360.0 - 180.0


def _in_interval(angles, interval):
    """Mask of wrapped ``angles`` in [lo, hi) or, when lo > hi, in [lo, 180) U [-180, hi)."""
    lo, hi = interval
    if lo <= hi:
        return (angles >= lo) & (angles < hi)
    return (angles >= lo) | (angles < hi)


MIN_PHI_PSI_FRAMES = 2
"""Fewest frames a phi/psi file or reference may hold: one frame is a structure, not a distribution."""


def check_phi_psi(phi_psi, name="phi_psi", min_frames=1):
    """The one validation of phi/psi input: a float array of shape (n_frames, 2) in degrees.

    Refuses a wrong shape, fewer than ``min_frames`` frames, NaN or Inf, and angles that look like radians
    (every value within +-pi: alanine dipeptide never has phi and psi all within +-3.2 degrees).

    Raises
    ------
    DataFileError
    """
    array = np.asarray(phi_psi, dtype=float)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] == 0:
        raise DataFileError(
            f"{name} must be phi/psi angles in degrees of shape (n_frames, 2), got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise DataFileError(f"{name} contains NaN or infinite angles")
    if len(array) < min_frames:
        raise DataFileError(
            f"{name} holds {len(array)} frame(s) of phi/psi; at least {min_frames} are needed for a distribution"
        )
    if np.abs(array).max() <= np.pi:
        raise DataFileError(
            f"{name}: every one of its {len(array)} phi/psi frames is within +-pi, so they look like radians; "
            "phi/psi are in degrees (np.degrees converts them)"
        )
    return array


# ---------------------------------------------------------------------------------------------------------
# phi/psi from coordinates and files


def compute_phi(traj):
    """Backbone phi of every residue that has one, like ``mdtraj.compute_phi`` but in degrees.

    Parameters
    ----------
    traj : mdtraj.Trajectory

    Returns
    -------
    indices : numpy.ndarray, shape (n_phi, 4), int
        Atom indices (0-based) of each phi, C(i-1)-N-CA-C, in residue order.
    angles : numpy.ndarray, shape (n_frames, n_phi)
        Degrees in [-180, 180), IUPAC sign.
    """
    import mdtraj

    indices, angles = mdtraj.compute_phi(traj)
    return np.asarray(indices, dtype=int), wrap_degrees(np.degrees(angles.astype(float)))


def compute_psi(traj):
    """Backbone psi of every residue that has one (N-CA-C-N(i+1)), like ``mdtraj.compute_psi`` but in degrees.

    Returns
    -------
    indices : numpy.ndarray, shape (n_psi, 4), int
    angles : numpy.ndarray, shape (n_frames, n_psi)
        Degrees in [-180, 180).
    """
    import mdtraj

    indices, angles = mdtraj.compute_psi(traj)
    return np.asarray(indices, dtype=int), wrap_degrees(np.degrees(angles.astype(float)))


@dataclasses.dataclass(frozen=True)
class TorsionPair:
    """The phi and psi of one residue: the two angles of its Ramachandran panel.

    Attributes
    ----------
    label : str
        The residue, name and sequence number (``ALA2``).
    phi, psi : tuple of int
        Atom indices (0-based) of the two torsions.
    """

    label: str
    phi: tuple
    psi: tuple

    def as_dict(self):
        """JSON-ready."""
        return {"phi_atoms": list(self.phi), "psi_atoms": list(self.psi)}


TORSION_STATES = (("g+", (0.0, 120.0)), ("t", (120.0, -120.0)), ("g-", (-120.0, 0.0)))
"""States of a user's torsion: the three staggered wells of an sp3-sp3 bond (gauche+ near 60 degrees, trans near
180, gauche- near -60), each a 120-degree interval ``[lo, hi)`` (``lo > hi`` wraps through +-180).  They cover the
circle, so their populations sum to 1."""


@dataclasses.dataclass(frozen=True)
class Torsion:
    """A torsion the user names as an observable, four atoms (0-based indices).

    Its observables are the indicators of its :data:`TORSION_STATES`.

    Attributes
    ----------
    name : str
    atoms : tuple of int
    """

    name: str
    atoms: tuple

    @classmethod
    def parse(cls, spec):
        """``NAME=I,J,K,L`` or ``I,J,K,L`` (named ``I-J-K-L``) -> Torsion.

        Raises
        ------
        ValueError
            Not four distinct non-negative integers.
        """
        name, _, atoms = spec.rpartition("=")
        try:
            indices = tuple(int(a) for a in atoms.split(","))
        except ValueError:
            indices = ()
        if len(indices) != 4 or min(indices) < 0 or len(set(indices)) != 4:
            raise ValueError(f"torsion {spec!r}: expected [NAME=]I,J,K,L, four distinct 0-based atom indices")
        return cls(name or "-".join(str(a) for a in indices), indices)

    def as_dict(self):
        """JSON-ready."""
        return {"atoms": list(self.atoms), "states_deg": {name: list(interval) for name, interval in TORSION_STATES}}


def torsion_state_labels(angles):
    """Index into :data:`TORSION_STATES` of every frame of a torsion (degrees, shape (n_frames,))."""
    angles = wrap_degrees(angles)
    labels = np.full(angles.shape, -1, dtype=int)
    for index, (_, interval) in enumerate(TORSION_STATES):
        labels[_in_interval(angles, interval)] = index
    return labels


def torsion_state_populations(angles, weights=None):
    """Population of every state of a torsion (:data:`TORSION_STATES`): ``{state: {"population": p}}``, summing to 1.

    Parameters
    ----------
    angles : array_like, shape (n_frames,)
        Degrees.
    weights : array_like, shape (n_frames,), optional
    """
    labels = torsion_state_labels(np.asarray(angles, dtype=float).reshape(-1))
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    return {name: {"population": float(weights[labels == index].sum() / weights.sum())}
            for index, (name, _) in enumerate(TORSION_STATES)}


def backbone_torsion_pairs(topology):
    """Every residue with both a backbone phi and a psi, in chain order.

    A capped dipeptide (ACE-ALA-NME) has one (its alanine); a peptide of n residues without caps has n - 2
    (each terminal residue has only one of the two angles and so no Ramachandran panel; :func:`compute_phi`
    and :func:`compute_psi` still give them).

    Parameters
    ----------
    topology : str, os.PathLike, mdtraj.Topology or openmm.app.Topology

    Returns
    -------
    list of TorsionPair
    """
    from mdtraj.geometry.dihedral import indices_phi, indices_psi

    top = _mdtraj_topology(topology)
    psi_by_residue = {top.atom(int(quad[1])).residue.index: quad for quad in indices_psi(top)}
    pairs = []
    for phi in indices_phi(top):
        residue = top.atom(int(phi[2])).residue
        if residue.index in psi_by_residue:
            pairs.append(TorsionPair(f"{residue.name}{residue.resSeq}", tuple(int(a) for a in phi),
                                     tuple(int(a) for a in psi_by_residue[residue.index])))
    return pairs


def torsion_angles(frames, quadruples):
    """Torsion angles of atom quadruples in every frame (``mdtraj.compute_dihedrals``, in degrees).

    Parameters
    ----------
    frames : mdtraj.Trajectory or numpy.ndarray
        A trajectory (its unit cell, if any, gives minimum-image bond vectors) or positions of shape
        (n_frames, n_atoms, 3) in nm of whole molecules.
    quadruples : array_like of int, shape (n_torsions, 4)
        0-based atom indices.

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_torsions)
        Degrees in [-180, 180), IUPAC sign.
    """
    import mdtraj

    if not isinstance(frames, mdtraj.Trajectory):
        frames = mdtraj.Trajectory(np.asarray(frames, dtype=np.float32), None)
    quads = np.asarray(quadruples, dtype=int).reshape(-1, 4)
    if quads.size and (quads.min() < 0 or quads.max() >= frames.n_atoms):
        raise ValueError(f"torsion atom indices must lie in [0, {frames.n_atoms}), got {quads.tolist()}")
    return wrap_degrees(np.degrees(mdtraj.compute_dihedrals(frames, quads).astype(float)))


def ramachandran_angles(frames, pairs):
    """phi/psi of every residue of ``pairs`` in every frame.

    Parameters
    ----------
    frames : mdtraj.Trajectory or numpy.ndarray
        As for :func:`torsion_angles`.
    pairs : list of TorsionPair

    Returns
    -------
    numpy.ndarray, shape (n_frames, n_pairs, 2)
        Degrees; ``[..., 0]`` phi, ``[..., 1]`` psi.
    """
    quads = [atoms for pair in pairs for atoms in (pair.phi, pair.psi)]
    angles = torsion_angles(frames, quads)
    return angles.reshape(len(angles), len(pairs), 2)


def compute_phi_psi(traj):
    """phi and psi of every residue that has both, in every frame of an mdtraj trajectory.

    Parameters
    ----------
    traj : mdtraj.Trajectory

    Returns
    -------
    numpy.ndarray
        Degrees in [-180, 180): shape (n_frames, 2) (column 0 phi, column 1 psi) for a molecule with one such
        residue (a dipeptide such as the package's alanine dipeptide, atoms 4-6-8-14 and 6-8-14-16); shape
        (n_frames, n_residues, 2) for more, in the order of :func:`backbone_torsion_pairs`.

    Raises
    ------
    UnsupportedSystemError
        If no residue has both a phi and a psi (no peptide backbone).
    """
    pairs = backbone_torsion_pairs(traj.topology)
    if not pairs:
        raise UnsupportedSystemError(
            "this topology has no residue with both a backbone phi and psi (no peptide backbone recognised by "
            "mdtraj); analyse your own torsions with torsion_angles(positions, [[i, j, k, l], ...])")
    angles = ramachandran_angles(traj, pairs)
    return angles[:, 0] if len(pairs) == 1 else angles


def _mdtraj_topology(topology):
    """An mdtraj Topology from a path, an mdtraj Topology or an OpenMM Topology."""
    import mdtraj
    from openmm import app

    if isinstance(topology, mdtraj.Topology):
        return topology
    if isinstance(topology, app.Topology):
        return mdtraj.Topology.from_openmm(topology)
    path = os.fspath(topology)
    if not os.path.isfile(path):
        raise DataFileError(f"topology file {path} does not exist")
    return mdtraj.load_topology(path)


def _trajectory(positions_nm, topology=None):
    """An mdtraj Trajectory of positions (nm, (n_frames, n_atoms, 3)) on a topology (default: the package's
    alanine dipeptide)."""
    import mdtraj

    from .shipped import resource_path
    from .systems import ALANINE_DIPEPTIDE_PDB

    positions_nm = np.asarray(positions_nm, dtype=float)
    if positions_nm.ndim != 3 or positions_nm.shape[2] != 3 or positions_nm.shape[0] == 0:
        raise ValueError(f"positions must have shape (n_frames, n_atoms, 3) in nm, got {positions_nm.shape}")
    top = _mdtraj_topology(resource_path(ALANINE_DIPEPTIDE_PDB) if topology is None else topology)
    if top.n_atoms != positions_nm.shape[1]:
        hint = " (pass the topology of these positions)" if topology is None else ""
        raise ValueError(
            f"positions have {positions_nm.shape[1]} atoms but the topology has {top.n_atoms}{hint}"
        )
    return mdtraj.Trajectory(positions_nm, top)


def phi_psi_from_positions(positions_nm, topology=None):
    """phi and psi of every residue that has both, from positions.

    Parameters
    ----------
    positions_nm : numpy.ndarray
        Shape (n_frames, n_atoms, 3), nm.
    topology : str, os.PathLike, mdtraj.Topology or openmm.app.Topology, optional
        Topology of the positions.  Default: the package's alanine dipeptide (22 atoms, the atom order
        of every setup in :mod:`openmm_forecast.systems`), which needs ``n_atoms == 22``.

    Returns
    -------
    numpy.ndarray
        Degrees: shape (n_frames, 2) for one residue, (n_frames, n_residues, 2) for more (as
        :func:`compute_phi_psi`).
    """
    return compute_phi_psi(_trajectory(positions_nm, topology))


_TRAJECTORY_EXTENSIONS = (".dcd", ".xtc", ".trr", ".nc", ".netcdf")


@dataclasses.dataclass
class RunAngles:
    """The angles of one run: phi/psi of every residue that has both, and the user's torsions.

    Attributes
    ----------
    labels : list of str
        One per residue (``ALA2``); ``phi/psi`` for a file of bare angles of one residue, ``pair 1``, ... for
        bare angles of several.
    phi_psi : numpy.ndarray, shape (n_frames, n_residues, 2)
        Degrees in [-180, 180); ``[..., 0]`` phi, ``[..., 1]`` psi.
    torsions : dict
        ``{name: angles}``, each of shape (n_frames,), degrees (:class:`Torsion`).
    """

    labels: list
    phi_psi: np.ndarray
    torsions: dict = dataclasses.field(default_factory=dict)

    def squeezed(self):
        """phi/psi as :func:`compute_phi_psi` returns them: (n_frames, 2) for one residue, else (n_frames,
        n_residues, 2)."""
        return self.phi_psi[:, 0] if len(self.labels) == 1 else self.phi_psi


def load_angles(path, topology=None, torsions=()):
    """Load the angles of a run from a file, dispatching on its extension.

    ``.npy``
        phi/psi in degrees: of shape (n_frames, 2) (the format of the shared reference runs), or a benchmark's
        ``<arm>_phipsi.npy`` (walkers pooled): (n_walkers, n_samples, 2) for one residue, (n_walkers, n_samples,
        n_residues, 2) for several; or positions in nm of shape (n_frames, n_atoms, 3) (``topology`` as in
        :func:`phi_psi_from_positions`).
    ``.pdb``
        A (multi-model) PDB file; ``topology`` is ignored.
    ``.h5``, ``.hdf5``
        An mdtraj HDF5 trajectory (its own topology is used when PyTables is installed, else
        ``topology`` as for ``.npy`` positions), or a data file of :mod:`openmm_forecast.data` (its
        positions; nve segments one after the other; ``topology`` as for ``.npy`` positions).
    ``.dcd``, ``.xtc``, ``.trr``, ``.nc``, ``.netcdf``
        Coordinates only: ``topology`` (a PDB path, mdtraj or OpenMM Topology) is required.

    Parameters
    ----------
    path : str or os.PathLike
    topology : str, os.PathLike, mdtraj.Topology or openmm.app.Topology, optional
        The atoms of coordinate files without a topology; for files of angles, names their residues.
    torsions : sequence of Torsion
        Torsions to measure besides phi/psi (coordinate files only).

    Returns
    -------
    RunAngles

    Raises
    ------
    DataFileError
        If the file does not exist, has an unknown extension, is not what its extension says, or holds
        arrays of the wrong shape, fewer than :data:`MIN_PHI_PSI_FRAMES` frames, or angles in radians; or
        torsions are asked of a file of angles.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataFileError(f"{path} does not exist")
    frames = _read_frames(path, topology)
    try:
        if isinstance(frames, np.ndarray):
            if torsions:
                raise DataFileError(f"{path} holds phi/psi angles, not coordinates: it has no other torsions to "
                                    f"measure ({', '.join(t.name for t in torsions)})")
            angles = frames.reshape(-1, 1 if frames.ndim < 4 else frames.shape[2], 2)
            named = [] if topology is None else [pair.label for pair in backbone_torsion_pairs(topology)]
            labels = named if len(named) == angles.shape[1] else (
                ["phi/psi"] if frames.ndim < 4 else [f"pair {i + 1}" for i in range(angles.shape[1])])
        else:
            pairs = backbone_torsion_pairs(frames.topology)
            if not pairs and not torsions:
                raise DataFileError(f"{path}: no residue with both a backbone phi and psi, and no torsion given")
            angles = ramachandran_angles(frames, pairs)
            labels = [pair.label for pair in pairs]
            measured = torsion_angles(frames, [t.atoms for t in torsions]) if torsions else None
            torsions = {t.name: measured[:, i] for i, t in enumerate(torsions)}
    except ValueError as error:
        if isinstance(error, ForecastError):
            raise
        raise DataFileError(f"cannot read angles from {path}: {error}") from error
    for index, label in enumerate(labels):
        check_phi_psi(angles[:, index], name=f"{path} ({label})", min_frames=MIN_PHI_PSI_FRAMES)
    return RunAngles(labels, wrap_degrees(angles), dict(torsions) if not isinstance(torsions, dict) else torsions)


def load_phi_psi(path, topology=None):
    """phi/psi in degrees from a file (see :func:`load_angles`): shape (n_frames, 2) for one residue (a dipeptide,
    or a file of its angles), (n_frames, n_residues, 2) for more.

    Raises
    ------
    DataFileError
        As :func:`load_angles`.
    """
    return load_angles(path, topology).squeezed()


def _read_frames(path, topology):
    """An existing file's angles (numpy array, not yet validated) or coordinates (mdtraj Trajectory), by its
    extension (see :func:`load_angles`)."""
    import mdtraj

    extension = os.path.splitext(path)[1].lower()
    try:
        if extension == ".npy":
            array = load_npy(path, "phi/psi in degrees (n_frames, 2) or positions in nm (n_frames, n_atoms, 3)")
            if array.shape[-1:] == (2,) and array.ndim in (2, 3, 4):
                return np.asarray(array, dtype=float)
            if array.ndim == 3 and array.shape[2] == 3:
                return _trajectory(array, topology)
            raise DataFileError(
                f"{path} holds an array of shape {array.shape}; expected phi/psi in degrees of shape (n_frames, 2), "
                "(n_walkers, n_samples, 2) or (n_walkers, n_samples, n_residues, 2), or positions in nm of shape "
                "(n_frames, n_atoms, 3)"
            )
        if extension == ".pdb":
            return mdtraj.load(path)
        if extension in (".h5", ".hdf5"):
            return _load_hdf5_frames(path, topology)
        if extension in _TRAJECTORY_EXTENSIONS:
            if topology is None:
                raise DataFileError(f"{path} holds coordinates only; pass a topology (for example a PDB file)")
            return mdtraj.load(path, top=_mdtraj_topology(topology))
    except (ValueError, OSError) as error:
        if isinstance(error, ForecastError):
            raise
        raise DataFileError(f"cannot read phi/psi from {path}: {error}") from error
    raise DataFileError(
        f"{path}: unknown extension {extension!r}; expected .npy (phi/psi or positions), .pdb, .h5/.hdf5, "
        f"or {', '.join(_TRAJECTORY_EXTENSIONS)} with a topology"
    )


def _load_hdf5_frames(path, topology):
    """Coordinates of an mdtraj HDF5 file or an :mod:`openmm_forecast.data` file, as an mdtraj Trajectory.

    An mdtraj HDF5 file (``coordinates`` and ``topology`` nodes) is read with mdtraj when PyTables is
    installed; without it, its ``coordinates`` (nm) are read with h5py and ``topology`` (default: the
    package's alanine dipeptide) gives the atoms.
    """
    import h5py

    with h5py.File(path, "r") as handle:
        is_mdtraj = "topology" in handle and "coordinates" in handle
        if is_mdtraj:
            units = handle["coordinates"].attrs.get("units", b"nanometers")
            units = units.decode() if isinstance(units, bytes) else str(units)
            if units != "nanometers":
                raise DataFileError(f"{path}: coordinates in {units!r}, expected 'nanometers'")
            positions_nm = handle["coordinates"][:]
    if not is_mdtraj:
        from .data import load_trajectory

        data = load_trajectory(path)
        return _trajectory(data.positions.reshape(-1, data.n_atoms, 3), topology)
    try:
        import mdtraj
        import tables  # noqa: F401  (mdtraj's HDF5 reader needs PyTables)
    except ImportError:
        return _trajectory(positions_nm, topology)
    return mdtraj.load(path)


# ---------------------------------------------------------------------------------------------------------
# Histograms and Jensen-Shannon divergence


def ramachandran_histogram(phi_psi, bins=DEFAULT_BINS, range=DEFAULT_RANGE, weights=None):
    """Normalised 2D histogram of phi/psi.

    Parameters
    ----------
    phi_psi : array_like
        Shape (n_frames, 2), degrees; wrapped into [-180, 180) first.
    bins : int
        Bins per angle (default 36: 10 degrees).
    range : tuple of float
        ``(lo, hi)`` in degrees for both angles (default [-180, 180)).  Frames outside it are dropped.
    weights : array_like, optional
        Shape (n_frames,): a weight per frame (reweighted samples, such as a metadynamics reference's).

    Returns
    -------
    numpy.ndarray
        Shape (bins, bins), probabilities summing to 1; axis 0 phi, axis 1 psi.

    Raises
    ------
    ValueError
        If no frame falls inside ``range``.
    """
    phi_psi = wrap_degrees(check_phi_psi(phi_psi))
    lo, hi = range
    counts, _, _ = np.histogram2d(phi_psi[:, 0], phi_psi[:, 1], bins=bins, range=[[lo, hi], [lo, hi]],
                                  weights=weights)
    total = counts.sum()
    if total == 0:
        raise ValueError(f"no frame has both angles inside the histogram range [{lo}, {hi})")
    return counts / total


def js_divergence(p, q):
    """Jensen-Shannon divergence between two histograms, natural log (0 <= JS <= ln 2).

    Parameters
    ----------
    p, q : array_like
        Histograms of the same shape (counts or probabilities; each is normalised to sum 1).

    Returns
    -------
    float
        ``1/2 sum p ln(p/m) + 1/2 sum q ln(q/m)`` with ``m = (p + q) / 2``; empty bins contribute 0.
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if p.shape != q.shape:
        raise ValueError(f"histograms have different shapes {p.shape} and {q.shape}")
    for name, h in (("p", p), ("q", q)):
        if not np.all(np.isfinite(h)) or np.any(h < 0) or h.sum() <= 0:
            raise ValueError(f"histogram {name} must be finite, non-negative and not all zero")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl_to_m(h):
        nonzero = h > 0
        return np.sum(h[nonzero] * np.log(h[nonzero] / m[nonzero]))

    return float(max(0.5 * kl_to_m(p) + 0.5 * kl_to_m(q), 0.0))


def js_divergence_phi_psi(phi_psi_a, phi_psi_b, bins=DEFAULT_BINS, range=DEFAULT_RANGE):
    """Jensen-Shannon divergence between the Ramachandran histograms of two phi/psi arrays (degrees)."""
    return js_divergence(ramachandran_histogram(phi_psi_a, bins, range), ramachandran_histogram(phi_psi_b, bins, range))


def js_convergence(phi_psi, reference, n_points=20, min_frames=100, bins=DEFAULT_BINS, range=DEFAULT_RANGE):
    """JS divergence of growing prefixes of a trajectory against a reference.

    Parameters
    ----------
    phi_psi : array_like
        Shape (n_frames, 2), degrees, in time order.
    reference : array_like
        Shape (n_reference_frames, 2), degrees.
    n_points : int
        Number of prefix lengths, geometrically spaced from ``min(min_frames, n_frames)`` to
        ``n_frames`` (duplicates after rounding removed, so there may be fewer).
    min_frames : int
        Shortest prefix.

    Returns
    -------
    frame_counts : numpy.ndarray
        Shape (n,), int, increasing, the last equal to n_frames.
    js : numpy.ndarray
        Shape (n,), JS divergence of ``phi_psi[:frame_count]`` against ``reference``.
    """
    phi_psi = check_phi_psi(phi_psi)
    reference_histogram = ramachandran_histogram(reference, bins, range)
    n_frames = len(phi_psi)
    first = max(1, min(int(min_frames), n_frames))
    frame_counts = np.unique(np.round(np.geomspace(first, n_frames, max(int(n_points), 1))).astype(int))
    frame_counts[-1] = n_frames
    js = np.array(
        [js_divergence(ramachandran_histogram(phi_psi[:count], bins, range), reference_histogram)
         for count in frame_counts]
    )
    return frame_counts, js


def window_js(phi_psi, reference, window_frames, bins=DEFAULT_BINS, range=DEFAULT_RANGE):
    """JS divergence of each non-overlapping window of a trajectory against a reference.

    The statistic behind "how long must plain MD run to reach a JS of x": the mean over windows of
    ``window_frames`` frames (at one frame per ps, ``window_frames=1000`` is 1 ns).  Pass each
    independent run separately (a window must not straddle two runs) and pool the results.

    Parameters
    ----------
    phi_psi : array_like
        Shape (n_frames, 2), degrees, in time order.
    reference : array_like
        Shape (n_reference_frames, 2), degrees.
    window_frames : int
        Window length in frames; the ``n_frames % window_frames`` trailing frames are not used.

    Returns
    -------
    numpy.ndarray
        Shape (n_frames // window_frames,), the JS divergence of each window.
    """
    phi_psi = check_phi_psi(phi_psi)
    window_frames = int(window_frames)
    if window_frames < 1 or window_frames > len(phi_psi):
        raise ValueError(f"window_frames must be between 1 and n_frames={len(phi_psi)}, got {window_frames}")
    reference_histogram = ramachandran_histogram(reference, bins, range)
    n_windows = len(phi_psi) // window_frames
    windows = phi_psi[: n_windows * window_frames].reshape(n_windows, window_frames, 2)
    return np.array([js_divergence(ramachandran_histogram(w, bins, range), reference_histogram) for w in windows])


# ---------------------------------------------------------------------------------------------------------
# Basins and transitions


def assign_basins(phi_psi, basins=BASINS):
    """Index of the basin of every frame, -1 for frames in no basin (``other``).

    Parameters
    ----------
    phi_psi : array_like
        Shape (n_frames, 2), degrees.
    basins : sequence of Basin
        Non-overlapping basins (default :data:`BASINS`).

    Returns
    -------
    numpy.ndarray
        Shape (n_frames,), int: index into ``basins`` or -1.
    """
    phi_psi = check_phi_psi(phi_psi)
    labels = np.full(len(phi_psi), -1, dtype=int)
    for index, basin in enumerate(basins):
        inside = basin.contains(phi_psi)
        if np.any(inside & (labels >= 0)):
            raise ValueError(f"basin {basin.name} overlaps an earlier basin")
        labels[inside] = index
    return labels


def basin_populations(phi_psi, basins=BASINS, weights=None):
    """Population and free energy of every basin.

    Parameters
    ----------
    phi_psi : array_like, shape (n_frames, 2)
        Degrees.
    basins : sequence of Basin
    weights : array_like, shape (n_frames,), optional
        Weights of reweighted frames (default: all equal).

    Returns
    -------
    dict
        ``{name: {"population": p, "free_energy_kT": -ln p or None if p == 0}}`` for every basin, and
        ``{"other": {"population": p}}`` for the frames in no basin; populations sum to 1.
    """
    labels = assign_basins(phi_psi, basins)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if weights.shape != labels.shape or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(f"weights must be {len(labels)} non-negative numbers, not all zero")
    weights = weights / weights.sum()
    result = {}
    for index, basin in enumerate(basins):
        population = float(np.sum(weights[labels == index]))
        result[basin.name] = {
            "population": population,
            "free_energy_kT": float(-np.log(population)) if population > 0 else None,
        }
    result[OTHER] = {"population": float(np.sum(weights[labels == -1]))}
    return result


def last_visited_basin(labels):
    """Transition-based assignment: every frame gets the last basin visited (-1 before the first visit).

    Parameters
    ----------
    labels : array_like
        Shape (n_frames,), int, basin index or -1 (as from :func:`assign_basins`).

    Returns
    -------
    numpy.ndarray
        Shape (n_frames,), int.
    """
    labels = np.asarray(labels, dtype=int)
    frame_of_last_visit = np.maximum.accumulate(np.where(labels >= 0, np.arange(len(labels)), -1))
    return np.where(frame_of_last_visit >= 0, labels[np.maximum(frame_of_last_visit, 0)], -1)


def count_transitions(phi_psi, basins=BASINS):
    """Committed transitions between basins (last-visited-basin assignment, see the module docstring).

    Returns
    -------
    dict
        ``{"total": n, "counts": {from_name: {to_name: n}}}`` over all ordered pairs of distinct basins.
    """
    committed = last_visited_basin(assign_basins(phi_psi, basins))
    committed = committed[committed >= 0]
    matrix = np.zeros((len(basins), len(basins)), dtype=int)
    changes = committed[1:] != committed[:-1]
    np.add.at(matrix, (committed[:-1][changes], committed[1:][changes]), 1)
    counts = {
        a.name: {b.name: int(matrix[i, j]) for j, b in enumerate(basins) if j != i} for i, a in enumerate(basins)
    }
    return {"total": int(matrix.sum()), "counts": counts}


def analysis_definitions(bins=DEFAULT_BINS, range=DEFAULT_RANGE, basins=BASINS):
    """The conventions of an analysis, JSON-ready, to write next to its numbers."""
    return {
        "angles": "degrees, IUPAC sign (mdtraj); per residue phi = C(i-1)-N-CA-C, psi = N-CA-C-N(i+1) (alanine "
                  "dipeptide: atoms 4-6-8-14 and 6-8-14-16)",
        "bins": int(bins),
        "range_deg": [float(range[0]), float(range[1])],
        "js_divergence": "Jensen-Shannon divergence of bins x bins histograms, natural log, 0 <= JS <= ln 2",
        "basins": {basin.name: basin.as_dict() for basin in basins},
        "basin_intervals": "[lo, hi) in degrees; lo > hi wraps: [lo, 180) U [-180, hi); frames in no basin: other",
        "free_energy_kT": "-ln(population), absolute (not shifted); null for an unvisited basin",
        "transitions": "last-visited-basin assignment: a transition is entering a basin other than the last one",
    }
