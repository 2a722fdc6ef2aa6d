"""Building blocks shared by the learned architectures (TorchScript-compatible).

Every learned model derives from :class:`ResidualForecastModule`, which fixes what all of them share:

* atoms: ``atomic_numbers`` (int64 buffer) and mass fractions ``mass_weights`` (buffer, sums to 1);
* centre of mass: inputs are made centre-of-mass free (positions *and* velocities), so forecasts are
  exactly invariant to translations and Galilean boosts; predicted corrections have their mass-weighted
  mean removed, so the centre of mass moves ballistically and total momentum is conserved exactly;
* residuals: every model predicts corrections to the ballistic flight ``x + v t``;
* scales: positions are read in units of ``POSITION_SCALE_NM`` (0.1 nm), velocities in
  ``VELOCITY_SCALE_NM_PS`` (1 nm/ps), corrections are produced in units of an acceleration scale.
"""

import numpy as np
import torch
from torch import nn

from .torch_forecaster import atomic_numbers_of, masses_of

POSITION_SCALE_NM = 0.1
VELOCITY_SCALE_NM_PS = 1.0
ACCELERATION_SCALE_NM_PS2 = 100.0
"""Typical magnitude of an atomic acceleration in a force field at 300 K (|F| ~ 1000 kJ/mol/nm, m ~ 10 amu)."""


def mlp(n_in, n_hidden, n_out, last_gain=1.0):
    """Two-layer perceptron with SiLU; the last layer's initial weights are scaled by ``last_gain``."""
    last = nn.Linear(n_hidden, n_out)
    with torch.no_grad():
        last.weight.mul_(last_gain)
        last.bias.mul_(last_gain)
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), last)


def adjacency_matrix(n_atoms, bonds=None, reference_positions=None, cutoff_nm=0.16):
    """Molecular graph as a symmetric 0/1 matrix (numpy, shape (n_atoms, n_atoms), zero diagonal).

    Parameters
    ----------
    n_atoms : int
    bonds : list of (int, int), optional
        Bonded atom pairs (0-based), for example from :func:`bonds_from_topology`.
    reference_positions : array_like, shape (n_atoms, 3), optional
        Used when ``bonds`` is None: atoms closer than ``cutoff_nm`` are bonded.
    cutoff_nm : float
        Bond cutoff in nm for ``reference_positions`` (0.16 nm catches C-C 0.154, C-N, C-O and X-H bonds).

    Raises
    ------
    ValueError
        If neither ``bonds`` nor ``reference_positions`` is given, or an index is out of range.
    """
    matrix = np.zeros((n_atoms, n_atoms))
    if bonds is not None:
        for i, j in bonds:
            if not (0 <= i < n_atoms and 0 <= j < n_atoms) or i == j:
                raise ValueError(f"bond ({i}, {j}) is not a pair of distinct atoms among {n_atoms}")
            matrix[i, j] = matrix[j, i] = 1.0
    elif reference_positions is not None:
        positions = np.asarray(reference_positions, dtype=float)
        if positions.shape != (n_atoms, 3):
            raise ValueError(f"reference_positions must have shape ({n_atoms}, 3), got {positions.shape}")
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        matrix = ((distances < cutoff_nm) & ~np.eye(n_atoms, dtype=bool)).astype(float)
    else:
        raise ValueError("the molecular graph needs bonds (atom index pairs) or reference_positions (nm)")
    return matrix


def bonds_from_topology(topology):
    """Bonded atom pairs of an ``openmm.app.Topology`` (list of (int, int), 0-based)."""
    return [(bond[0].index, bond[1].index) for bond in topology.bonds()]


class RadialBasis(nn.Module):
    """Gaussian radial basis of interatomic distances, centres spread over [0, ``r_max_nm``]."""

    def __init__(self, n_basis=16, r_max_nm=1.0):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, r_max_nm, n_basis))
        self.width = float(r_max_nm / n_basis)

    def forward(self, distances):
        """(...,) nm -> (..., n_basis)."""
        return torch.exp(-(((distances[..., None] - self.centres) / self.width) ** 2))


class ResidualForecastModule(nn.Module):
    """Common base of the learned architectures (atoms, masses, centre-of-mass handling).

    Parameters
    ----------
    elements : list of str
        Element symbol of every atom.
    stride_ps : float
        Time between forecast frames, in ps.
    history : int
        Number of input states the model reads.
    masses : array_like, optional
        Atom masses in amu (default: standard atomic masses of ``elements``; pass the System's masses
        when they differ, for example with hydrogen mass repartitioning).
    """

    stride_ps: float
    history: int
    position_scale: float
    velocity_scale: float
    acceleration_scale: float

    def __init__(self, elements, stride_ps, history, masses=None):
        super().__init__()
        self.stride_ps = float(stride_ps)
        self.history = int(history)
        self.position_scale = POSITION_SCALE_NM
        self.velocity_scale = VELOCITY_SCALE_NM_PS
        self.acceleration_scale = ACCELERATION_SCALE_NM_PS2
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers_of(elements), dtype=torch.long))
        masses = masses_of(elements) if masses is None else np.asarray(masses, dtype=float)
        if masses.shape != (len(elements),) or not (masses > 0).all():
            raise ValueError(f"masses must be {len(elements)} positive numbers (amu), got {masses}")
        self.register_buffer("mass_weights", torch.tensor(masses / masses.sum(), dtype=torch.get_default_dtype()))

    def centre_of_mass(self, values):
        """Mass-weighted mean over atoms: (..., N, 3) -> (..., 1, 3)."""
        return (self.mass_weights[:, None] * values).sum(dim=-2, keepdim=True)

    def remove_centre_of_mass(self, values):
        """Subtract the mass-weighted mean over atoms from (..., N, 3)."""
        return values - self.centre_of_mass(values)


class EquivariantInteraction(nn.Module):
    """One PaiNN-style message and update step on scalar and vector atom features (O(3)-equivariant).

    Scalars ``s`` (M, N, d) are invariant; vectors ``vec`` (M, N, 3, d) rotate with the molecule.
    Messages from atom j to i: ``ds_i = mean_j a_ij``, ``dvec_i = mean_j (b_ij vec_j + c_ij r_ij/|r_ij|)``
    with ``(a, b, c)`` invariant filters from s_j and the pair features; the update mixes vector channels
    linearly and gates them with invariants (their norms and scalar products).

    Parameters
    ----------
    d_model : int
        Number of scalar and of vector channels.
    """

    def __init__(self, d_model):
        super().__init__()
        self.atom_filter = mlp(d_model, d_model, 3 * d_model)
        self.pair_filter = nn.Linear(d_model, 3 * d_model)
        self.mix_u = nn.Linear(d_model, d_model, bias=False)
        self.mix_v = nn.Linear(d_model, d_model, bias=False)
        self.update = mlp(2 * d_model, d_model, 3 * d_model)

    def forward(self, s, vec, pairs, unit_r):
        """s (M, N, d), vec (M, N, 3, d), pairs (M, N, N, d), unit_r (M, N, N, 3) -> updated (s, vec)."""
        d = s.shape[-1]
        n = s.shape[1]
        filters = self.atom_filter(s)[:, None] * self.pair_filter(pairs) / n  # (M, i, j, 3d)
        a, b, c = filters.split(d, dim=-1)
        s = s + a.sum(2)
        vec = vec + torch.einsum("mijd,mjcd->micd", b, vec) + torch.einsum("mijd,mijc->micd", c, unit_r)
        u, v = self.mix_u(vec), self.mix_v(vec)
        norm = torch.sqrt((v * v).sum(-2) + 1e-8)
        a_vv, a_sv, a_ss = self.update(torch.cat([s, norm], dim=-1)).split(d, dim=-1)
        vec = vec + a_vv[:, :, None] * u
        s = s + a_sv * (u * v).sum(-2) + a_ss
        return s, vec
