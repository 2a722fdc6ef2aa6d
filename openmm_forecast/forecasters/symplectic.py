"""``symplectic``: a learned flow map that is symplectic and time-reversible by construction.

The map is velocity Verlet (kick, drift, kick) with a *learned* potential ``V_theta`` and learned drift
masses, ``substeps`` times per stride:

``p <- p - h/2 dV_theta/dq``;  ``q <- q + h M_theta^-1 p``;  ``p <- p - h/2 dV_theta/dq``  (``h = stride / substeps``)

and frame ``k`` is the stride map applied ``k`` times.  ``M_theta = M exp(a)`` (per-atom log factors
``a``, learned) enters the drift only; velocities are read and returned with the true masses
(``v = p / M``).

Learned potential (E(3)-invariant: interatomic distances of all ``N (N - 1) / 2`` pairs, a fixed-size graph
with no neighbour search)::

    V_theta(q) = sum_pairs [ k_ij / 2 (d_ij - r0_ij)^2 + sum_b w_ij,b exp(-((d_ij - c_b) / s)^2) ]

with per-pair stiffness ``k_ij > 0`` (initialised by distance in the reference structure: stiff for bonds,
softer for 1-3 pairs, negligible beyond), per-pair rest length ``r0_ij`` (initialised from the reference
structure) and per-pair weights ``w`` of a Gaussian radial basis over ``[0, r_max_nm]`` (initialised to 0).
Its gradient is written out analytically (no autograd at inference, so the model runs under
``torch.inference_mode`` and scripts plainly).

Why Metropolis is exact with it (to floating-point rounding, tested)
--------------------------------------------------------------------
* Each kick is a shear ``(q, p) -> (q, p + f(q))`` with ``f = -grad V``, each drift a shear
  ``(q, p) -> (q + g(p), p)``: both have Jacobian determinant 1 whatever the weights, and both are
  symplectic (``f`` is a gradient; ``g`` is linear with a symmetric matrix).
* The step is a palindrome (kick h/2, drift h, kick h/2): with ``F(q, p) = (q, -p)``, ``F S F = S^-1``
  for each step, hence for any number of steps: the map is reversible under momentum flip.
* ``V_theta`` depends on distances only: the map commutes with rotations, reflections and translations,
  and conserves total linear and angular momentum (the drift with per-atom masses too:
  ``sum (p_i / m'_i) x p_i = 0``).
* No iteration, no projection: the properties hold for random weights as for trained ones, in any
  precision up to its rounding.  Constraints would break them (a projection onto the constraint
  manifold is not volume-preserving in the full space): the model is built for, and should drive,
  systems without constraints (``constraints: none``).  The accelerator warns when it does not.

The generalised hybrid Monte Carlo step of :class:`~openmm_forecast.ForecastAccelerator`
(``metropolis=True``) then leaves ``exp(-H / kT)`` of the *true* Hamiltonian exactly invariant; training
only raises the acceptance.
"""

import numpy as np
import torch
from torch import nn

from ._layers import ResidualForecastModule
from .registry import register_architecture
from .torch_forecaster import masses_of

STIFFNESS_SCALE = 1.0e5
"""Unit of the learned pair stiffnesses, kJ/mol/nm^2 (a C-H bond is about 3e5)."""

REST_LENGTH_SCALE_NM = 0.01
"""Unit of the learned shifts of the rest lengths from the reference distances, nm."""

ENERGY_SCALE_KJ = 10.0
"""Unit of the learned radial-basis weights, kJ/mol."""

NO_REFERENCE_DISTANCE_NM = 0.3
"""Initial rest length of every pair without a reference structure (its initial stiffness is then 1)."""


def initial_stiffness(distance_nm):
    """Initial pair stiffness (kJ/mol/nm^2) from a reference distance: ~3e5 for C-H bonds, ~1e5 for C-C,
    ~1.5e4 for 1-3 pairs, 1 beyond 0.3 nm (a heuristic elastic network; training refines it)."""
    distance_nm = np.asarray(distance_nm, dtype=float)
    stiffness = 3.0e5 * np.exp(-np.clip(distance_nm - 0.1, 0.0, None) / 0.05)
    return np.where(distance_nm < 0.3, stiffness, 1.0)


class SymplecticShears(ResidualForecastModule):
    """Velocity Verlet with a learned pair potential and learned drift masses (see the module docstring).

    Parameters
    ----------
    elements : list of str
    stride_ps : float
        Time between frames, ps.
    history : int
        Must be 1 (the map reads one state).
    substeps : int
        Kick-drift-kick steps per stride (step ``stride_ps / substeps``).
    reference_positions : array_like, shape (N, 3), optional
        A sane structure, nm: initial rest lengths and stiffnesses.  Default: the shipped alanine dipeptide
        when ``elements`` are its atoms; otherwise every pair starts at ``NO_REFERENCE_DISTANCE_NM`` with a
        negligible stiffness (the map starts close to free flight).
    n_rbf : int
        Gaussian radial basis functions per pair over [0, ``r_max_nm``].
    r_max_nm : float
        Range of the radial basis, nm.
    masses : array_like, optional
        Atom masses, amu (default: standard masses of ``elements``).
    """

    rotation_equivariant = True
    """Forecasts commute with rotations and reflections by construction."""

    structure_preserving = True
    """Symplectic (volume-preserving) and time-reversible by construction (``extra['structure_preserving']``)."""

    substeps: int
    width: float
    stiffness_scale: float
    rest_length_scale: float
    energy_scale: float

    def __init__(self, elements, stride_ps, history=1, substeps=10, reference_positions=None, n_rbf=16,
                 r_max_nm=1.0, masses=None):
        super().__init__(elements, stride_ps, history, masses)
        if history != 1:
            raise ValueError(f"symplectic reads one state (history=1), got history={history}")
        if int(substeps) < 1:
            raise ValueError(f"substeps must be an integer >= 1, got {substeps}")
        n = len(elements)
        if n < 2:
            raise ValueError("symplectic needs at least 2 atoms (its potential is a function of distances)")
        self.substeps = int(substeps)
        self.stiffness_scale, self.rest_length_scale = STIFFNESS_SCALE, REST_LENGTH_SCALE_NM
        self.energy_scale = ENERGY_SCALE_KJ
        first, second = np.triu_indices(n, k=1)
        incidence = np.zeros((len(first), n))
        incidence[np.arange(len(first)), first] = 1.0
        incidence[np.arange(len(first)), second] = -1.0
        distances = _reference_distances(elements, reference_positions, first, second)
        mass = masses_of(elements) if masses is None else np.asarray(masses, dtype=float)
        dtype = torch.get_default_dtype()
        self.register_buffer("masses", torch.tensor(mass, dtype=dtype))
        self.register_buffer("incidence", torch.tensor(incidence, dtype=dtype))  # (P, N): r_p = incidence @ x
        self.register_buffer("reference_distances", torch.tensor(distances, dtype=dtype))
        self.register_buffer("centres", torch.linspace(0.0, float(r_max_nm), int(n_rbf)))
        self.width = float(r_max_nm) / int(n_rbf)
        self.log_stiffness = nn.Parameter(torch.tensor(np.log(initial_stiffness(distances) / STIFFNESS_SCALE),
                                                       dtype=dtype))
        self.rest_shift = nn.Parameter(torch.zeros(len(first)))
        self.weights = nn.Parameter(torch.zeros(len(first), int(n_rbf)))
        self.log_drift_mass = nn.Parameter(torch.zeros(n))

    def _pair_terms(self, x):
        """(B, N, 3) nm -> pair vectors (B, P, 3), distances (B, P), stiffnesses (P,), rest lengths (P,)."""
        r = torch.matmul(self.incidence, x)
        d = torch.sqrt((r * r).sum(-1))
        k = self.stiffness_scale * torch.exp(self.log_stiffness)
        r0 = self.reference_distances + self.rest_length_scale * self.rest_shift
        return r, d, k, r0

    def potential(self, x):
        """Learned potential energy, kJ/mol: (B, N, 3) nm -> (B,)."""
        r, d, k, r0 = self._pair_terms(x)
        basis = torch.exp(-(((d[..., None] - self.centres) / self.width) ** 2))
        pair = 0.5 * k * (d - r0) ** 2 + self.energy_scale * (self.weights * basis).sum(-1)
        return pair.sum(-1)

    def forces(self, x):
        """Learned forces ``-dV/dx``, kJ/mol/nm (analytic gradient): (B, N, 3) nm -> (B, N, 3)."""
        r, d, k, r0 = self._pair_terms(x)
        offset = (d[..., None] - self.centres) / self.width
        basis = torch.exp(-(offset**2))
        d_basis = -2.0 * offset / self.width * basis
        dv_dd = k * (d - r0) + self.energy_scale * (self.weights * d_basis).sum(-1)  # (B, P)
        pair_force = (dv_dd / d)[..., None] * r  # dV/dr_p
        return -torch.matmul(self.incidence.t(), pair_force)

    def forward(self, positions, velocities, n_frames: int):
        """(B, 1, N, 3) nm and nm/ps -> (B, n_frames, N, 3) positions and velocities at k * stride."""
        x = positions[:, -1]
        m = self.masses[:, None]
        p = velocities[:, -1] * m
        h = self.stride_ps / self.substeps
        inverse_drift_mass = 1.0 / (m * torch.exp(self.log_drift_mass)[:, None])
        f = self.forces(x)
        frames_x, frames_v = [], []
        for _ in range(n_frames):
            for _ in range(self.substeps):
                p = p + (0.5 * h) * f
                x = x + h * inverse_drift_mass * p
                f = self.forces(x)
                p = p + (0.5 * h) * f
            frames_x.append(x)
            frames_v.append(p / m)
        return torch.stack(frames_x, dim=1), torch.stack(frames_v, dim=1)


def _reference_distances(elements, reference_positions, first, second):
    """Pair distances (P,) in nm of the reference structure: given, alanine dipeptide's for its atoms, or else
    ``NO_REFERENCE_DISTANCE_NM`` for every pair (harmonic terms then start negligible)."""
    if reference_positions is None:
        from openmm import unit

        from ..systems import load_alanine_dipeptide

        pdb = load_alanine_dipeptide()
        if [atom.element.symbol for atom in pdb.topology.atoms()] != list(elements):
            return np.full(len(first), NO_REFERENCE_DISTANCE_NM)
        reference_positions = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    reference = np.asarray(reference_positions, dtype=float)
    if reference.shape != (len(elements), 3) or not np.isfinite(reference).all():
        raise ValueError(f"reference_positions must be finite, of shape ({len(elements)}, 3) nm, got {reference.shape}")
    return np.linalg.norm(reference[first] - reference[second], axis=-1)


register_architecture("symplectic", SymplecticShears)
