"""Guards that decide whether a forecast jump may enter an OpenMM Context.

A forecast is checked in two stages, cheapest and Context-free first:

1. **Sanity** (:class:`SanityGuard`), on the forecast arrays alone, before anything is written to the
   Context (the Reference platform propagates NaN silently, so nothing unchecked may reach it):

   - ``'nonfinite'``: a NaN or Inf in any position or velocity of any frame;
   - ``'clash'``: two atoms that are neither bonded nor share a bonded neighbour (1-2 and 1-3 pairs
     excluded) closer than a fraction (default 0.5) of the sum of their van der Waals radii
     (:data:`VDW_RADII_NM`).  In 25,200 frames of 300 K alanine-dipeptide dynamics the smallest ratio of
     distance to radius sum was 0.60 (the C7eq hydrogen bond, O...H 0.164 nm);
   - ``'bond'``: a bond longer than ``bond_stretch`` times its reference length, or shorter than the
     reference divided by ``bond_stretch``;
   - ``'chirality'``: an inverted stereocentre: the signed volume spanned by three neighbours of an sp3
     carbon with four distinct substituents (for example CA of alanine) changed sign.

   Every frame of a forecast is checked, not only the last: a path that passes through an impossible
   geometry is not trusted.

2. **Energy**, on the candidate state written into the Context and projected onto the constraints:
   ``dH = H_after - H_before`` with ``H = U + K``.  The exact flow conserves H, so ``|dH|`` measures the
   forecast's error in the currency that matters for sampling.  The accelerator's acceptance rule judges it
   (:mod:`openmm_forecast.acceptance`: a tolerance, a Metropolis test, or momentum rescaling).

3. **Drift**, over many jumps (:class:`DriftGuard`): the ``dH`` of accepted jumps adds up, or the kinetic
   temperature strays from the target; the cycle then re-equilibrates with the simulation's own integrator
   (tolerance and dynamics rules).

:data:`REJECTION_REASONS` lists every reason a guard can give.  Units: nm, nm/ps, amu, kJ/mol, K.
"""

import numpy as np
from openmm import unit

from .acceptance import REJECTION_REASONS as ACCEPTANCE_REASONS
from .systems import particle_masses, removes_com_motion
from .units import MOLAR_GAS_CONSTANT_KJ

SANITY_REASONS = ("nonfinite", "clash", "bond", "chirality")
"""Why the sanity guard rejects a jump, in the order they are checked."""

REJECTION_REASONS = SANITY_REASONS + ("evaluation", "forecast_error") + ACCEPTANCE_REASONS
"""Why a jump can be rejected: sanity reasons, ``'evaluation'`` (the potential could not be evaluated at the
candidate, e.g. an SCF that did not converge), ``'forecast_error'`` (the forecaster raised an exception: the
accelerator's reason, not a guard's), then those of the built-in acceptance rules."""

VDW_RADII_NM = {
    "H": 0.120, "C": 0.170, "N": 0.155, "O": 0.152, "F": 0.147, "P": 0.180, "S": 0.180, "Cl": 0.175,
    "Br": 0.185, "I": 0.198,
}
"""Bondi's van der Waals radii (nm) of the elements of organic molecules (J. Phys. Chem. 68, 441 (1964))."""

DEFAULT_VDW_RADIUS_NM = 0.200
"""Radius (nm) of an element missing from :data:`VDW_RADII_NM` (and of particles without an element)."""


# --------------------------------------------------------------------------------------------------
# Energies and temperature
# --------------------------------------------------------------------------------------------------


def kinetic_energy_kJ(velocities_nm_ps, masses_amu):
    """Kinetic energy ``0.5 * sum(m v^2)`` in kJ/mol.

    Parameters
    ----------
    velocities_nm_ps : numpy.ndarray, shape (..., n_atoms, 3)
        Velocities in nm/ps (after projection onto the constraints, when there are any).
    masses_amu : numpy.ndarray, shape (n_atoms,)
        Masses in amu (massless particles contribute nothing).

    Returns
    -------
    float or numpy.ndarray, shape (...)
        Kinetic energy in kJ/mol (amu nm^2 / ps^2 is kJ/mol).
    """
    velocities = np.asarray(velocities_nm_ps, dtype=np.float64)
    return 0.5 * np.einsum("...i,...ij->...", np.asarray(masses_amu, dtype=np.float64), velocities**2)


def degrees_of_freedom(system):
    """Kinetic degrees of freedom of an OpenMM System (as ``StateDataReporter`` counts them).

    Three per particle with mass, minus one per constraint involving a particle with mass, minus three
    when a ``CMMotionRemover`` removes the centre-of-mass motion.
    """
    masses = particle_masses(system)
    dof = 3 * int(np.count_nonzero(masses > 0))
    for i in range(system.getNumConstraints()):
        p1, p2, _ = system.getConstraintParameters(i)
        if masses[p1] > 0 or masses[p2] > 0:
            dof -= 1
    if removes_com_motion(system):
        dof -= 3
    return dof


def kinetic_temperature_K(kinetic_kJ, dof):
    """Instantaneous kinetic temperature ``2 K / (dof R)`` in K for a kinetic energy in kJ/mol (NaN when
    ``dof`` is 0: a System without kinetic degrees of freedom has no kinetic temperature)."""
    if dof <= 0:
        return float("nan")
    return 2.0 * kinetic_kJ / (dof * MOLAR_GAS_CONSTANT_KJ)


def kinetic_temperature_score(temperature_K, target_K, dof):
    """How many standard deviations a kinetic temperature lies from the canonical one, tails included.

    At equilibrium ``dof * T / T0`` is chi-squared with ``dof`` degrees of freedom: skewed to high
    temperatures for a small molecule, so ``(T - T0) / (T0 sqrt(2 / dof))`` puts a 4-sigma band at a
    false-alarm rate of about 5e-4 per check (dof = 51, alanine dipeptide with HBonds) instead of the
    normal 6e-5.  The Wilson-Hilferty transform ``z = ((T / T0)^(1/3) - (1 - c)) / sqrt(c)``,
    ``c = 2 / (9 dof)``, is standard normal to within a few per cent in the tails for dof >= 10, so
    ``abs(z) > s`` fires as rarely as an ``s``-sigma event of a normal variable.

    Parameters
    ----------
    temperature_K, target_K : float
        The instantaneous kinetic temperature and the thermostat's, in K (``target_K`` > 0).
    dof : int
        Kinetic degrees of freedom (:func:`degrees_of_freedom`), > 0.

    Returns
    -------
    float
        ``z``; negative when colder than the target.
    """
    c = 2.0 / (9.0 * dof)
    return (np.cbrt(temperature_K / target_K) - (1.0 - c)) / np.sqrt(c)


class DriftGuard:
    """When a run must re-equilibrate: the energy error of accepted jumps adds up, or the temperature strays.

    The third guard, over many jumps: each accepted jump's ``dH`` is added to a drift (every jump since the
    last :meth:`reset`, or only the last ``window`` ones); :meth:`due` says when the drift passes
    ``drift_tolerance_kT`` or the kinetic temperature lies more than ``temperature_sigmas`` standard deviations
    from the target (:func:`kinetic_temperature_score`).

    Parameters
    ----------
    drift_tolerance_kT : float
        Largest accumulated ``|dH|``, in kT.
    temperature_sigmas : float or None
        Largest ``|z|`` of the kinetic temperature (None: not checked).
    window : int, optional
        Number of most recent accepted jumps in the drift (None: all since the last reset).

    Attributes
    ----------
    drift_kJ : float
        The accumulated ``dH``, kJ/mol.
    terms_kJ : list of float
        With a ``window``: the ``dH`` in it, kJ/mol.
    """

    def __init__(self, drift_tolerance_kT, temperature_sigmas, window=None):
        self.drift_tolerance_kT = drift_tolerance_kT
        self.temperature_sigmas = temperature_sigmas
        self.window = window
        self.drift_kJ = 0.0
        self.terms_kJ = []

    def add(self, dh_kJ):
        """Count an accepted jump's ``dH`` (kJ/mol) in the drift."""
        if self.window is None:
            self.drift_kJ += dh_kJ
            return
        self.terms_kJ.append(float(dh_kJ))
        del self.terms_kJ[: -self.window]
        self.drift_kJ = float(sum(self.terms_kJ))

    def exceeded(self, kT_kJ):
        """Whether ``|drift|`` is above ``drift_tolerance_kT`` times ``kT_kJ`` (kJ/mol)."""
        return abs(self.drift_kJ) > self.drift_tolerance_kT * kT_kJ

    def due(self, kT_kJ, temperature_K, target_K, dof, thermostatted):
        """Whether a re-equilibration is due.

        Parameters
        ----------
        kT_kJ : float
            Thermal energy, kJ/mol.
        temperature_K, target_K : float
            Kinetic temperature of the current state and the thermostat's, K.
        dof : int
            Kinetic degrees of freedom.
        thermostatted : bool
            Without a thermostat the kinetic temperature is not canonical (and integration cannot restore it):
            only the drift counts.
        """
        if self.exceeded(kT_kJ):
            return True
        if self.temperature_sigmas is None or dof <= 0 or not thermostatted:
            return False
        return abs(kinetic_temperature_score(temperature_K, target_K, dof)) > self.temperature_sigmas

    def reset(self):
        """Forget the drift (after a thermostatted re-equilibration removed it)."""
        self.drift_kJ = 0.0
        self.terms_kJ.clear()


# --------------------------------------------------------------------------------------------------
# Topology analysis
# --------------------------------------------------------------------------------------------------


def bonded_neighbours(topology):
    """Neighbour lists of every atom from the Topology's bonds (list of sorted lists of int)."""
    neighbours = [set() for _ in range(topology.getNumAtoms())]
    for bond in topology.bonds():
        i, j = bond[0].index, bond[1].index
        neighbours[i].add(j)
        neighbours[j].add(i)
    return [sorted(n) for n in neighbours]


def _graph_invariants(atomic_numbers, neighbours):
    """Morgan-style atom classes: refined from elements by neighbour classes until stable.

    Symmetry-equivalent atoms always share a class; atoms in different classes are never equivalent.
    """
    classes = list(atomic_numbers)
    n_classes = len(set(classes))
    while True:
        keys = [(classes[i], tuple(sorted(classes[j] for j in neighbours[i]))) for i in range(len(classes))]
        ranking = {key: rank for rank, key in enumerate(sorted(set(keys)))}
        refined = [ranking[key] for key in keys]
        if len(ranking) == n_classes:
            return refined
        classes, n_classes = refined, len(ranking)


def find_stereocentres(topology):
    """Stereocentres of a Topology: sp3 carbons (four bonds) whose four substituents all differ.

    Substituents are told apart by graph invariants (element, refined by neighbours, recursively), so a
    methyl carbon (three equivalent H) or a CH2 is never a stereocentre and CA of an amino acid is.

    Returns
    -------
    numpy.ndarray of int, shape (n_stereocentres, 4)
        Per stereocentre: the centre, then three of its neighbours (heaviest first, then by index),
        whose signed volume about the centre defines its handedness.
    """
    atoms = list(topology.atoms())
    neighbours = bonded_neighbours(topology)
    numbers = [atom.element.atomic_number if atom.element is not None else 0 for atom in atoms]
    classes = _graph_invariants(numbers, neighbours)
    rows = []
    for atom in atoms:
        bonded = neighbours[atom.index]
        if numbers[atom.index] != 6 or len(bonded) != 4 or len({classes[j] for j in bonded}) != 4:
            continue
        heaviest = sorted(bonded, key=lambda j: (-atoms[j].element.mass.value_in_unit(unit.dalton), j))[:3]
        rows.append([atom.index, *heaviest])
    return np.array(rows, dtype=int).reshape(-1, 4)


def signed_volumes(positions_nm, stereocentres):
    """Signed volumes ``(a - c) . ((b - c) x (d - c))`` in nm^3 around each stereocentre.

    Parameters
    ----------
    positions_nm : numpy.ndarray, shape (..., n_atoms, 3)
    stereocentres : numpy.ndarray of int, shape (n_stereocentres, 4)
        Rows ``(c, a, b, d)`` as returned by :func:`find_stereocentres`.

    Returns
    -------
    numpy.ndarray, shape (..., n_stereocentres)
    """
    x = np.asarray(positions_nm)
    centre = x[..., stereocentres[:, 0], :]
    a, b, d = (x[..., stereocentres[:, k], :] - centre for k in (1, 2, 3))
    return np.einsum("...i,...i->...", a, np.cross(b, d))


def nonbonded_pairs(neighbours):
    """Atom pairs ``(i, j)``, ``i < j``, that are neither bonded (1-2) nor share a bonded neighbour (1-3).

    Parameters
    ----------
    neighbours : list of list of int
        From :func:`bonded_neighbours`.

    Returns
    -------
    numpy.ndarray of int, shape (n_pairs, 2)
        All ``n_atoms (n_atoms - 1) / 2`` pairs less the excluded ones: meant for single molecules of up
        to a few hundred atoms, the systems forecasters describe.
    """
    n = len(neighbours)
    excluded = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in neighbours[i]:
            excluded[i, j] = True
            excluded[i, neighbours[j]] = True
    i, j = np.triu_indices(n, k=1)
    keep = ~excluded[i, j]
    return np.stack([i[keep], j[keep]], axis=1)


def pair_distances_nm(positions_nm, pairs):
    """Distance between the atoms of each pair, per frame.

    Parameters
    ----------
    positions_nm : numpy.ndarray, shape (..., n_atoms, 3)
    pairs : numpy.ndarray of int, shape (n_pairs, 2)

    Returns
    -------
    numpy.ndarray, shape (..., n_pairs)
        nm.
    """
    x = np.asarray(positions_nm)
    return np.linalg.norm(x[..., pairs[:, 0], :] - x[..., pairs[:, 1], :], axis=-1)


class SanityGuard:
    """Geometric sanity checks of forecast frames for one molecule.

    Parameters
    ----------
    topology : openmm.app.Topology
        Bonds define the bonded pairs, bond lengths and stereocentres.
    reference_positions_nm : numpy.ndarray, shape (n_atoms, 3)
        A sane structure (for example the simulation's state when the accelerator is created): reference
        bond lengths and the handedness of each stereocentre.
    clash_fraction : float
        A clash is a non-bonded distance below ``clash_fraction`` times the sum of the two atoms' van der
        Waals radii (:data:`VDW_RADII_NM`).
    clash_distance_nm : float, optional
        One absolute clash threshold in nm for every pair, used instead of ``clash_fraction`` when given.
    bond_stretch : float
        Allowed factor (> 1) on a bond's reference length, in either direction.
    check_chirality : bool
        Check the handedness of stereocentres.

    Attributes
    ----------
    reference_positions_nm : numpy.ndarray, shape (n_atoms, 3)
    bonds : numpy.ndarray of int, shape (n_bonds, 2)
    nonbonded_pairs : numpy.ndarray of int, shape (n_pairs, 2)
        Pairs checked for clashes (see :func:`nonbonded_pairs`).
    reference_bond_lengths_nm : numpy.ndarray, shape (n_bonds,)
    clash_thresholds_nm : numpy.ndarray, shape (n_pairs,)
        Clash distance of each pair of ``nonbonded_pairs``.
    stereocentres : numpy.ndarray of int, shape (n_stereocentres, 4)
    reference_handedness : numpy.ndarray of float, shape (n_stereocentres,)
        Sign (+1 or -1) of each stereocentre's signed volume in the reference structure.

    Notes
    -----
    Distances are computed without periodic images: the accelerator hands whole molecules (unwrapped
    Context positions) to the forecaster, so intramolecular distances need none.
    """

    def __init__(
        self,
        topology,
        reference_positions_nm,
        clash_fraction=0.5,
        clash_distance_nm=None,
        bond_stretch=1.5,
        check_chirality=True,
    ):
        if not 0 < clash_fraction < 1:
            raise ValueError(f"clash_fraction must be in (0, 1), got {clash_fraction}")
        if clash_distance_nm is not None and not clash_distance_nm > 0:
            raise ValueError(f"clash_distance must be > 0, got {clash_distance_nm} nm")
        if not bond_stretch > 1:
            raise ValueError(f"bond_stretch must be > 1, got {bond_stretch}")
        reference = np.asarray(reference_positions_nm, dtype=np.float64)
        if not np.isfinite(reference).all():
            raise ValueError("the reference structure of the sanity guard contains NaN or Inf")
        neighbours = bonded_neighbours(topology)
        self.bonds = np.array([(i, j) for i, partners in enumerate(neighbours) for j in partners if i < j], dtype=int)
        self.bonds = self.bonds.reshape(-1, 2)
        self.reference_bond_lengths_nm = self._bond_lengths(reference)
        self.bond_stretch = float(bond_stretch)
        self.reference_positions_nm = reference
        self.nonbonded_pairs = nonbonded_pairs(neighbours)
        if clash_distance_nm is not None:
            self.clash_thresholds_nm = np.full(len(self.nonbonded_pairs), float(clash_distance_nm))
        else:
            radii = np.array([
                VDW_RADII_NM.get(atom.element.symbol, DEFAULT_VDW_RADIUS_NM) if atom.element is not None
                else DEFAULT_VDW_RADIUS_NM
                for atom in topology.atoms()
            ])
            self.clash_thresholds_nm = clash_fraction * radii[self.nonbonded_pairs].sum(axis=1)
        self.stereocentres = find_stereocentres(topology) if check_chirality else np.zeros((0, 4), dtype=int)
        self.reference_handedness = np.sign(signed_volumes(reference, self.stereocentres))

    def _bond_lengths(self, positions_nm):
        return np.linalg.norm(positions_nm[..., self.bonds[:, 0], :] - positions_nm[..., self.bonds[:, 1], :], axis=-1)

    def check(self, positions_nm, velocities_nm_ps):
        """First reason to reject a forecast, or None when every frame is sane.

        Parameters
        ----------
        positions_nm : numpy.ndarray, shape (n_frames, n_atoms, 3)
        velocities_nm_ps : numpy.ndarray, shape (n_frames, n_atoms, 3)

        Returns
        -------
        str or None
            ``'nonfinite'``, ``'clash'``, ``'bond'``, ``'chirality'`` (checked in this order) or None.
        """
        x = np.asarray(positions_nm, dtype=np.float64)
        if not (np.isfinite(x).all() and np.isfinite(velocities_nm_ps).all()):
            return "nonfinite"
        if (pair_distances_nm(x, self.nonbonded_pairs) < self.clash_thresholds_nm).any():
            return "clash"
        ratio = self._bond_lengths(x) / self.reference_bond_lengths_nm
        if (ratio > self.bond_stretch).any() or (ratio < 1.0 / self.bond_stretch).any():
            return "bond"
        if (np.sign(signed_volumes(x, self.stereocentres)) != self.reference_handedness).any():
            return "chirality"
        return None
