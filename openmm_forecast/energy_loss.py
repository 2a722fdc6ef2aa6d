"""Energy-aware training loss: forecast errors weighted by what they cost in energy.

A forecast ``(x', v')`` of the true state ``(x, v)`` changes the total energy by
``dH = H(x', v') - H(x, v)`` (the data are NVE, so ``H(x, v)`` is the start state's ``H`` to within the
integrator's own error).  The energy guard sees exactly this ``dH``; position RMSD does not: a
0.0025 nm error along a heavy-atom bond (k ~ 2.5e5 kJ/mol/nm^2) costs ~2 kJ/mol, the same error along a
soft torsion almost nothing.  The loss uses an estimate of ``dH`` that is cheap and differentiable:

``dH ~ [U_b(x') - U_b(x)] - (F(x) - F_b(x)) . (x' - x) + K(v') - K(v)``

with ``U_b`` the System's harmonic bond and angle terms, evaluated exactly (in torch, constrained bonds
left out), ``F(x)`` the full forces at the target (kJ/mol/nm, computed once per data frame with OpenMM),
``F_b = -grad U_b``, so every other term (torsions, non-bonded, implicit solvent) enters at first order
through its forces, and ``K`` the exact kinetic energy.  Two loss terms use it (dimensionless):

* ``energy``: ``<dH^2> / kT^2`` over samples and frames;
* ``energy_bias``: ``mean over frames of (<dH>_batch)^2 / kT^2``: against the systematic loss of energy of
  an MSE-trained model (it shrinks velocities and vibrational amplitudes toward the conditional mean).

Units: nm, nm/ps, amu, kJ/mol.
"""

import numpy as np
import torch
from openmm import unit
from torch import nn

from ._runtime import openmm as mm


class BondedEnergy(nn.Module):
    """Harmonic bond and angle energy of a System's ``HarmonicBondForce`` / ``HarmonicAngleForce``, in torch.

    Bonds between constrained atom pairs are left out (their length is restored by the projection onto
    the constraints, and their force constant is not what the dynamics feel).

    Parameters
    ----------
    system : openmm.System
    dtype : torch.dtype
    """

    def __init__(self, system, dtype=torch.float32):
        super().__init__()
        constrained = set()
        for index in range(system.getNumConstraints()):
            i, j, _ = system.getConstraintParameters(index)
            constrained.add((min(i, j), max(i, j)))
        bonds, angles = [], []
        for force in system.getForces():
            if isinstance(force, mm.HarmonicBondForce):
                for index in range(force.getNumBonds()):
                    i, j, length, k = force.getBondParameters(index)
                    if (min(i, j), max(i, j)) not in constrained:
                        bonds.append((i, j, _plain(length), _plain(k)))
            elif isinstance(force, mm.HarmonicAngleForce):
                for index in range(force.getNumAngles()):
                    i, j, k, theta, stiffness = force.getAngleParameters(index)
                    angles.append((i, j, k, _plain(theta), _plain(stiffness)))
        bonds = np.array(bonds, dtype=float).reshape(-1, 4)
        angles = np.array(angles, dtype=float).reshape(-1, 5)
        self.register_buffer("bond_atoms", torch.as_tensor(bonds[:, :2], dtype=torch.long))
        self.register_buffer("bond_parameters", torch.as_tensor(bonds[:, 2:], dtype=dtype))
        self.register_buffer("angle_atoms", torch.as_tensor(angles[:, :3], dtype=torch.long))
        self.register_buffer("angle_parameters", torch.as_tensor(angles[:, 3:], dtype=dtype))

    @property
    def n_terms(self):
        """Number of bonds and angles."""
        return len(self.bond_atoms) + len(self.angle_atoms)

    def forward(self, positions):
        """(..., N, 3) nm -> (...) kJ/mol."""
        i, j = self.bond_atoms[:, 0], self.bond_atoms[:, 1]
        length = torch.linalg.vector_norm(positions[..., i, :] - positions[..., j, :], dim=-1)
        r0, k = self.bond_parameters[:, 0], self.bond_parameters[:, 1]
        energy = (0.5 * k * (length - r0) ** 2).sum(-1)
        a, b, c = self.angle_atoms[:, 0], self.angle_atoms[:, 1], self.angle_atoms[:, 2]
        u = positions[..., a, :] - positions[..., b, :]
        w = positions[..., c, :] - positions[..., b, :]
        cosine = (u * w).sum(-1) / (torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(w, dim=-1))
        theta = torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7))
        theta0, k_theta = self.angle_parameters[:, 0], self.angle_parameters[:, 1]
        return energy + (0.5 * k_theta * (theta - theta0) ** 2).sum(-1)


def _plain(value):
    """A number from an OpenMM Quantity in its MD units (nm, rad, kJ/mol), or a plain number."""
    if unit.is_quantity(value):
        return float(value.value_in_unit_system(unit.md_unit_system))
    return float(value)


def energy_change_estimate(pred_x, pred_v, true_x, true_v, true_forces, masses, bonded):
    """Estimate of ``H(x', v') - H(x, v)`` (see the module docstring), differentiable in the forecast.

    Parameters
    ----------
    pred_x, pred_v, true_x, true_v : torch.Tensor, shape (B, K, N, 3)
        nm and nm/ps.
    true_forces : torch.Tensor, shape (B, K, N, 3)
        Forces at the true states, kJ/mol/nm.
    masses : torch.Tensor, shape (N,)
        amu.
    bonded : BondedEnergy

    Returns
    -------
    torch.Tensor, shape (B, K)
        kJ/mol.
    """
    target = true_x.detach().requires_grad_(True)
    with torch.enable_grad():
        u_true = bonded(target)
        (grad,) = torch.autograd.grad(u_true.sum(), target)
    other_forces = true_forces + grad  # F - F_b with F_b = -grad U_b
    potential = bonded(pred_x) - u_true.detach() - (other_forces * (pred_x - true_x)).sum(dim=(-2, -1))
    m = masses[:, None]
    kinetic = 0.5 * ((m * pred_v**2).sum(dim=(-2, -1)) - (m * true_v**2).sum(dim=(-2, -1)))
    return potential + kinetic


def energy_loss_terms(dh, kT):
    """The ``energy`` and ``energy_bias`` terms (dimensionless) of estimates ``dh`` (B, K) in kJ/mol."""
    return (dh**2).mean() / kT**2, (dh.mean(dim=0) ** 2).mean() / kT**2
