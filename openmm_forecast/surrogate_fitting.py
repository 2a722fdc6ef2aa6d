"""Learned surrogates: an amber-form System fitted to the target's own energies and forces.

The surrogate proposal (:class:`~openmm_forecast.forecasters.surrogate.SurrogateForecaster`) integrates a cheap
System with velocity Verlet and is exact in Metropolis mode whatever that System is; what the System decides
is the acceptance.  Along a surrogate trajectory the surrogate's own ``H_s`` is kept (to its integration
error), so the target's energy change over a jump is

``dH = D(x') - D(x) + [H_s(x', v') - H_s(x, v)]``,  with ``D = U_target - U_surrogate``.

A surrogate is good when ``D`` is nearly constant over the states a walker visits: small variance of ``D``
over the target's thermal states (what matters for long jumps, whose ends are decorrelated in the fast
coordinates) and small differences of forces (what matters for short jumps: ``D(x') - D(x) ~ -dF . dx``).
This module learns exactly that from samples of the target, while keeping the surrogate's cost: the amber
functional form (harmonic bonds and angles, periodic torsions, Coulomb and Lennard-Jones in vacuum), whose
parameters are fitted, plus extra periodic torsion terms (periodicities 1-3 on every torsion quadruple) that
can absorb conformation-dependent energy such as implicit solvation.  The result is an ordinary OpenMM
System (same particles, masses and constraints as the target), saved as XML, at vacuum cost (~9 us per
2 fs step for alanine dipeptide on the Reference platform).

Loss (dimensionless, per frame)::

    Var(D) / kT^2  +  sum over components of (P (F_target - F_surrogate))^2 * sigma^2 / kT^2
                   +  prior_weight * (squared parameter changes, in the scaled units below)

``P`` removes the force components along the constraints (they do nothing in constrained dynamics);
``sigma`` (default 0.01 nm) is the typical displacement over which a force error turns into an energy error,
so both terms are energy variances in kT^2.  Parameter scales: bond lengths 0.01 nm, angles 0.1 rad,
force constants as log factors, torsion amplitudes 1 kJ/mol, charges 0.1 e (total charge kept).

Units: nm, rad, kJ/mol, elementary charge; energies kJ/mol, forces kJ/mol/nm.
"""

import copy
import logging

import numpy as np
import torch
from openmm import unit
from torch import nn

from ._runtime import openmm as mm

logger = logging.getLogger(__name__)

ONE_4PI_EPS0 = 138.935456
"""Coulomb constant in kJ/mol nm / e^2 (OpenMM's value)."""

EXTRA_PERIODICITIES = (1, 2, 3)
"""Periodicities of the extra torsion terms added on every torsion quadruple."""

FITTED_FORCES = (mm.HarmonicBondForce, mm.HarmonicAngleForce, mm.PeriodicTorsionForce, mm.NonbondedForce)


def _value(quantity):
    """A number in OpenMM's MD units (nm, rad, kJ/mol, e) from a Quantity or a plain number."""
    if unit.is_quantity(quantity):
        return float(quantity.value_in_unit_system(unit.md_unit_system))
    return float(quantity)


def dihedral_angles(positions, quads):
    """Dihedral angles (rad, (-pi, pi]) of atom quadruples, OpenMM's sign convention.

    Parameters
    ----------
    positions : torch.Tensor
        Shape (..., N, 3), nm.
    quads : torch.Tensor
        Shape (Q, 4), long.

    Returns
    -------
    torch.Tensor
        Shape (..., Q).
    """
    a, b, c, d = (positions[..., quads[:, k], :] for k in range(4))
    b0, b1, b2 = b - a, c - b, d - c
    n1 = torch.linalg.cross(b0, b1)
    n2 = torch.linalg.cross(b1, b2)
    b1_unit = b1 / torch.linalg.vector_norm(b1, dim=-1, keepdim=True)
    x = (n1 * n2).sum(-1)
    y = (torch.linalg.cross(n1, n2) * b1_unit).sum(-1)
    return torch.atan2(y, x)


def bond_angles(positions, triples):
    """Angles (rad) at the middle atom of atom triples; ``positions`` (..., N, 3), ``triples`` (T, 3)."""
    u = positions[..., triples[:, 0], :] - positions[..., triples[:, 1], :]
    w = positions[..., triples[:, 2], :] - positions[..., triples[:, 1], :]
    cosine = (u * w).sum(-1) / (torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(w, dim=-1))
    return torch.acos(cosine.clamp(-1 + 1e-12, 1 - 1e-12))


class AmberSurrogateEnergy(nn.Module):
    """The amber-form energy of a vacuum System in torch, with its parameters learnable.

    Built from a System holding one each of ``HarmonicBondForce``, ``HarmonicAngleForce``,
    ``PeriodicTorsionForce`` and ``NonbondedForce`` (``NoCutoff``), and nothing else but a
    ``CMMotionRemover``: amber14 in vacuum.  At initialisation the energy equals OpenMM's for that System
    (to round-off).  Bonds between constrained atoms are absent from the force (OpenMM leaves them out) and
    so from the fit.

    Parameters
    ----------
    system : openmm.System
        The starting point (typically ``build_system('amber14-vacuum', constraints=...)``).
    extra_periodicities : sequence of int
        Periodicities of the extra torsion terms (amplitudes start at 0); empty for none.

    Raises
    ------
    ValueError
        A force other than the four above (and ``CMMotionRemover``), a second force of one kind, or a
        NonbondedForce with a cutoff.
    """

    def __init__(self, system, extra_periodicities=EXTRA_PERIODICITIES):
        super().__init__()
        forces = {}
        for force in system.getForces():
            if isinstance(force, mm.CMMotionRemover):
                continue
            kind = next((k for k in FITTED_FORCES if isinstance(force, k)), None)
            if kind is None or kind in forces:
                raise ValueError(
                    f"cannot fit a surrogate from a System with {type(force).__name__}"
                    + (" twice" if kind in forces else "")
                    + ": the starting System must be amber-form in vacuum (harmonic bonds and angles, periodic "
                    "torsions, one NonbondedForce), e.g. build_system('amber14-vacuum')"
                )
            forces[kind] = force
        missing = [k.__name__ for k in FITTED_FORCES if k not in forces]
        if missing:
            raise ValueError(f"the starting System lacks {', '.join(missing)}: a surrogate is fitted from amber14-vacuum")
        nonbonded = forces[mm.NonbondedForce]
        if nonbonded.getNonbondedMethod() != mm.NonbondedForce.NoCutoff:
            raise ValueError("the starting System's NonbondedForce must use NoCutoff (a molecule in vacuum)")
        self.n_particles = system.getNumParticles()
        float64 = torch.float64

        bond_force = forces[mm.HarmonicBondForce]
        bonds = [bond_force.getBondParameters(i) for i in range(bond_force.getNumBonds())]
        self.register_buffer("bond_atoms", torch.tensor([[b[0], b[1]] for b in bonds], dtype=torch.long).reshape(-1, 2))
        self.register_buffer("bond_r0", torch.tensor([_value(b[2]) for b in bonds], dtype=float64))
        self.register_buffer("bond_k", torch.tensor([_value(b[3]) for b in bonds], dtype=float64))

        angle_force = forces[mm.HarmonicAngleForce]
        angles = [angle_force.getAngleParameters(i) for i in range(angle_force.getNumAngles())]
        self.register_buffer("angle_atoms", torch.tensor([a[:3] for a in angles], dtype=torch.long).reshape(-1, 3))
        self.register_buffer("angle_theta0", torch.tensor([_value(a[3]) for a in angles], dtype=float64))
        self.register_buffer("angle_k", torch.tensor([_value(a[4]) for a in angles], dtype=float64))

        torsion_force = forces[mm.PeriodicTorsionForce]
        torsions = [torsion_force.getTorsionParameters(i) for i in range(torsion_force.getNumTorsions())]
        self.register_buffer("torsion_atoms", torch.tensor([t[:4] for t in torsions], dtype=torch.long).reshape(-1, 4))
        self.register_buffer("torsion_n", torch.tensor([t[4] for t in torsions], dtype=float64))
        self.register_buffer("torsion_phase", torch.tensor([_value(t[5]) for t in torsions], dtype=float64))
        self.register_buffer("torsion_k0", torch.tensor([_value(t[6]) for t in torsions], dtype=float64))
        quads = list(dict.fromkeys(tuple(t[:4]) for t in torsions))
        self.extra_periodicities = tuple(int(n) for n in extra_periodicities)
        self.register_buffer("extra_atoms", torch.tensor(quads, dtype=torch.long).reshape(-1, 4))
        self.register_buffer("extra_n", torch.tensor(self.extra_periodicities, dtype=float64))

        charges, sigmas, epsilons = [], [], []
        for i in range(nonbonded.getNumParticles()):
            q, s, e = nonbonded.getParticleParameters(i)
            charges.append(_value(q))
            sigmas.append(_value(s))
            epsilons.append(_value(e))
        exceptions = [nonbonded.getExceptionParameters(i) for i in range(nonbonded.getNumExceptions())]
        excluded = {(min(e[0], e[1]), max(e[0], e[1])) for e in exceptions}
        pairs = [(i, j) for i in range(self.n_particles) for j in range(i + 1, self.n_particles) if (i, j) not in excluded]
        q0 = np.array(charges)
        self.register_buffer("charge0", torch.tensor(q0, dtype=float64))
        sig, eps = np.array(sigmas), np.array(epsilons)
        pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        self.register_buffer("pair_atoms", torch.as_tensor(pairs))
        self.register_buffer("pair_sigma", torch.as_tensor(0.5 * (sig[pairs[:, 0]] + sig[pairs[:, 1]])))
        self.register_buffer("pair_epsilon", torch.as_tensor(np.sqrt(eps[pairs[:, 0]] * eps[pairs[:, 1]])))
        ex_atoms = np.array([e[:2] for e in exceptions], dtype=np.int64).reshape(-1, 2)
        ex_qq = np.array([_value(e[2]) for e in exceptions])
        ex_q0 = q0[ex_atoms[:, 0]] * q0[ex_atoms[:, 1]] if len(ex_atoms) else np.zeros(0)
        scalable = np.abs(ex_q0) > 1e-12
        # An exception's charge product follows the fitted charges with its original scale (amber's 1/1.2 for
        # 1-4 pairs, 0 for exclusions); one whose original charges multiply to zero keeps its product.
        self.register_buffer("exception_atoms", torch.as_tensor(ex_atoms))
        self.register_buffer("exception_scale", torch.as_tensor(np.where(scalable, ex_qq / np.where(scalable, ex_q0, 1.0), 0.0)))
        self.register_buffer("exception_fixed_qq", torch.as_tensor(np.where(scalable, 0.0, ex_qq)))
        self.register_buffer("exception_sigma", torch.tensor([_value(e[3]) for e in exceptions], dtype=float64))
        self.register_buffer("exception_epsilon", torch.tensor([_value(e[4]) for e in exceptions], dtype=float64))

        # Learnable offsets in scaled units (see the module docstring); zero = the starting System.
        self.d_bond_r0 = nn.Parameter(torch.zeros(len(bonds), dtype=float64))
        self.d_bond_logk = nn.Parameter(torch.zeros(len(bonds), dtype=float64))
        self.d_angle_theta0 = nn.Parameter(torch.zeros(len(angles), dtype=float64))
        self.d_angle_logk = nn.Parameter(torch.zeros(len(angles), dtype=float64))
        self.d_torsion_k = nn.Parameter(torch.zeros(len(torsions), dtype=float64))
        self.extra_cos = nn.Parameter(torch.zeros(len(quads), len(self.extra_periodicities), dtype=float64))
        self.extra_sin = nn.Parameter(torch.zeros(len(quads), len(self.extra_periodicities), dtype=float64))
        self.d_charge = nn.Parameter(torch.zeros(self.n_particles, dtype=float64))

    # Scales of the learnable offsets (nm, rad, log factor, kJ/mol, e).
    BOND_SCALE, ANGLE_SCALE, TORSION_SCALE, CHARGE_SCALE = 0.01, 0.1, 1.0, 0.1

    def parameters_now(self):
        """The current physical parameters as a dict of tensors (nm, rad, kJ/mol/nm^2, kJ/mol/rad^2, kJ/mol, e)."""
        d_charge = self.d_charge - self.d_charge.mean()  # keeps the total charge
        return {
            "bond_r0": self.bond_r0 + self.BOND_SCALE * self.d_bond_r0,
            "bond_k": self.bond_k * torch.exp(self.d_bond_logk),
            "angle_theta0": self.angle_theta0 + self.ANGLE_SCALE * self.d_angle_theta0,
            "angle_k": self.angle_k * torch.exp(self.d_angle_logk),
            "torsion_k": self.torsion_k0 + self.TORSION_SCALE * self.d_torsion_k,
            "extra_cos": self.TORSION_SCALE * self.extra_cos,
            "extra_sin": self.TORSION_SCALE * self.extra_sin,
            "charge": self.charge0 + self.CHARGE_SCALE * d_charge,
        }

    def prior(self):
        """Sum of squared learnable offsets (scaled units): the regulariser toward the starting System."""
        return sum((p ** 2).sum() for p in self.parameters())

    def forward(self, positions):
        """Potential energy (kJ/mol), shape (...), of positions (..., N, 3) in nm."""
        p = self.parameters_now()
        i, j = self.bond_atoms[:, 0], self.bond_atoms[:, 1]
        r = torch.linalg.vector_norm(positions[..., i, :] - positions[..., j, :], dim=-1)
        energy = (0.5 * p["bond_k"] * (r - p["bond_r0"]) ** 2).sum(-1)
        theta = bond_angles(positions, self.angle_atoms)
        energy = energy + (0.5 * p["angle_k"] * (theta - p["angle_theta0"]) ** 2).sum(-1)
        phi = dihedral_angles(positions, self.torsion_atoms)
        energy = energy + (p["torsion_k"] * (1.0 + torch.cos(self.torsion_n * phi - self.torsion_phase))).sum(-1)
        if len(self.extra_periodicities):
            phi = dihedral_angles(positions, self.extra_atoms).unsqueeze(-1) * self.extra_n
            energy = energy + (p["extra_cos"] * torch.cos(phi) + p["extra_sin"] * torch.sin(phi)).sum((-1, -2))
        q = p["charge"]
        energy = energy + self._pairs(positions, self.pair_atoms, q[self.pair_atoms[:, 0]] * q[self.pair_atoms[:, 1]],
                                      self.pair_sigma, self.pair_epsilon)
        ex = self.exception_atoms
        qq = self.exception_scale * q[ex[:, 0]] * q[ex[:, 1]] + self.exception_fixed_qq
        return energy + self._pairs(positions, ex, qq, self.exception_sigma, self.exception_epsilon)

    @staticmethod
    def _pairs(positions, atoms, qq, sigma, epsilon):
        r = torch.linalg.vector_norm(positions[..., atoms[:, 0], :] - positions[..., atoms[:, 1], :], dim=-1)
        s6 = (sigma / r) ** 6
        return (ONE_4PI_EPS0 * qq / r + 4.0 * epsilon * (s6 * s6 - s6)).sum(-1)

    def energies_and_forces(self, positions, create_graph=False):
        """Energies (B,) kJ/mol and forces (B, N, 3) kJ/mol/nm of positions (B, N, 3) nm."""
        positions = positions.detach().requires_grad_(True)
        energy = self(positions)
        (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
        return energy, -gradient

    def to_system(self, system):
        """A copy of ``system`` (the one this energy was built from) with the fitted parameters written in.

        Negative torsion amplitudes are written as positive ones with the phase shifted by pi; the extra
        terms ``a cos(n phi) + b sin(n phi)`` as ``k (1 + cos(n phi - phase))`` with ``k = sqrt(a^2 + b^2)``
        and ``phase = atan2(b, a)`` (the constant ``k`` is irrelevant to dynamics and to the Metropolis test)
        in the same PeriodicTorsionForce.
        """
        fitted = copy.deepcopy(system)
        with torch.no_grad():
            p = {key: value.cpu().numpy() for key, value in self.parameters_now().items()}
        for force in fitted.getForces():
            if isinstance(force, mm.HarmonicBondForce):
                for index in range(force.getNumBonds()):
                    i, j, _, _ = force.getBondParameters(index)
                    force.setBondParameters(index, i, j, float(p["bond_r0"][index]), float(p["bond_k"][index]))
            elif isinstance(force, mm.HarmonicAngleForce):
                for index in range(force.getNumAngles()):
                    i, j, k, _, _ = force.getAngleParameters(index)
                    force.setAngleParameters(index, i, j, k, float(p["angle_theta0"][index]), float(p["angle_k"][index]))
            elif isinstance(force, mm.PeriodicTorsionForce):
                for index in range(force.getNumTorsions()):
                    i, j, k, l, n, phase, _ = force.getTorsionParameters(index)
                    amplitude, phase = float(p["torsion_k"][index]), _value(phase)
                    if amplitude < 0:
                        amplitude, phase = -amplitude, phase + np.pi
                    force.setTorsionParameters(index, i, j, k, l, n, _wrap(phase), amplitude)
                for quad, a_row, b_row in zip(self.extra_atoms.tolist(), p["extra_cos"], p["extra_sin"]):
                    for n, a, b in zip(self.extra_periodicities, a_row, b_row):
                        amplitude = float(np.hypot(a, b))
                        if amplitude > 1e-9:
                            force.addTorsion(*quad, n, float(np.arctan2(b, a)), amplitude)
            elif isinstance(force, mm.NonbondedForce):
                for index in range(force.getNumParticles()):
                    _, sigma, epsilon = force.getParticleParameters(index)
                    force.setParticleParameters(index, float(p["charge"][index]), sigma, epsilon)
                scale = self.exception_scale.cpu().numpy()
                fixed = self.exception_fixed_qq.cpu().numpy()
                for index in range(force.getNumExceptions()):
                    i, j, _, sigma, epsilon = force.getExceptionParameters(index)
                    qq = scale[index] * p["charge"][i] * p["charge"][j] + fixed[index]
                    force.setExceptionParameters(index, i, j, float(qq), sigma, epsilon)
        return fitted


def _wrap(angle):
    return float((angle + np.pi) % (2.0 * np.pi) - np.pi)


def constraint_projectors(positions, constraints, masses):
    """Per-frame projectors that remove force components the constraints cancel.

    For constraint gradients ``G`` (C, 3N) at a frame, ``P = I - G^T (G M^-1 G^T)^-1 G M^-1`` maps a force
    to the part that moves the constrained system (``M^-1 P F`` is the constrained acceleration).

    Parameters
    ----------
    positions : numpy.ndarray
        Shape (B, N, 3), nm.
    constraints : sequence of (int, int)
        Constrained atom pairs.
    masses : numpy.ndarray
        Shape (N,), amu.

    Returns
    -------
    numpy.ndarray
        Shape (B, 3N, 3N); the identity for every frame without constraints.
    """
    n_frames, n_atoms = positions.shape[:2]
    eye = np.broadcast_to(np.eye(3 * n_atoms), (n_frames, 3 * n_atoms, 3 * n_atoms)).copy()
    if not len(constraints):
        return eye
    inverse_mass = np.repeat(1.0 / np.asarray(masses, dtype=float), 3)
    gradients = np.zeros((n_frames, len(constraints), n_atoms, 3))
    for c, (i, j) in enumerate(constraints):
        direction = positions[:, i] - positions[:, j]
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        gradients[:, c, i] = direction
        gradients[:, c, j] = -direction
    g = gradients.reshape(n_frames, len(constraints), 3 * n_atoms)
    g_minv = g * inverse_mass
    gram = g_minv @ np.swapaxes(g, 1, 2)
    return eye - np.swapaxes(g, 1, 2) @ np.linalg.solve(gram, g_minv)


def surrogate_loss(energy_model, positions, target_energies, target_forces, projectors, kT, sigma_nm,
                   prior_weight, create_graph=True):
    """The fitting loss (see the module docstring) and its parts.

    Parameters
    ----------
    energy_model : AmberSurrogateEnergy
    positions : torch.Tensor
        (B, N, 3) nm.
    target_energies : torch.Tensor
        (B,) kJ/mol.
    target_forces : torch.Tensor
        (B, N, 3) kJ/mol/nm.
    projectors : torch.Tensor
        (B, 3N, 3N), from :func:`constraint_projectors`.
    kT : float
        kJ/mol.
    sigma_nm : float
        Displacement scale of the force term, nm.
    prior_weight : float

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    parts : dict
        ``energy_std`` (kJ/mol: std of D over the batch), ``force_rmse`` (kJ/mol/nm, projected, per
        component), as floats.
    """
    energy, forces = energy_model.energies_and_forces(positions, create_graph=create_graph)
    difference = target_energies - energy
    energy_term = difference.var(unbiased=False) / kT ** 2
    force_error = torch.einsum("bij,bj->bi", projectors, (target_forces - forces).reshape(len(positions), -1))
    force_term = (force_error ** 2).sum(-1).mean() * sigma_nm ** 2 / kT ** 2
    loss = energy_term + force_term + prior_weight * energy_model.prior()
    parts = {
        "energy_std": float(difference.detach().std(unbiased=False)),
        "force_rmse": float(torch.sqrt((force_error.detach() ** 2).mean())),
    }
    return loss, parts


def long_jump_acceptance(differences_kJ, kT, n_pairs=20000, seed=0):
    """Metropolis acceptance of a jump long enough to forget its start, from ``D = U_target - U_surrogate``.

    Such a jump, by a surrogate that integrates its own Hamiltonian exactly, is an independence proposal: its
    start ``x`` is distributed as the target's Boltzmann distribution, its end ``x'`` as the surrogate's, and
    ``dH = D(x') - D(x)``.  Given ``D`` at states of the target, the surrogate's distribution is the target's
    reweighted by ``exp(+D / kT)``; this is ``<min(1, exp(-dH / kT))>`` over pairs drawn that way (it ignores
    the surrogate's integration error and the memory of shorter jumps).  For Gaussian ``D`` of standard
    deviation ``s`` it is ``erfc(s / (2 kT))``.

    Parameters
    ----------
    differences_kJ : numpy.ndarray
        Shape (n,), kJ/mol, at states of the target's distribution.
    kT : float
        kJ/mol.
    n_pairs : int
    seed : int
    """
    rng = np.random.default_rng(seed)
    d = np.asarray(differences_kJ, dtype=float)
    weights = np.exp((d - d.max()) / kT)
    i = rng.integers(0, len(d), n_pairs)
    j = rng.choice(len(d), n_pairs, p=weights / weights.sum())
    return float(np.mean(np.exp(np.minimum(0.0, -(d[j] - d[i]) / kT))))


def fit_surrogate(target, positions, energies, forces, base_system, *, iterations=1500, learning_rate=0.02,
                  sigma_nm=0.01, prior_weight=1e-3, validation_fraction=0.2, extra_periodicities=EXTRA_PERIODICITIES,
                  max_excess_kT=100.0, progress=False):
    """Fit an amber-form surrogate System to a target's energies and forces (see the module docstring).

    Parameters
    ----------
    target : MolecularSystem
        The target (its temperature sets kT; its constraints define the projection of the forces).
    positions : numpy.ndarray
        (n, N, 3) nm: thermal states of the target (e.g. :func:`sample_target`).
    energies : numpy.ndarray
        (n,) kJ/mol, the target's potential energies there.
    forces : numpy.ndarray
        (n, N, 3) kJ/mol/nm, the target's forces there.
    base_system : openmm.System
        The amber-form starting point, with the target's particles, masses and constraints (e.g.
        ``build_system('amber14-vacuum', constraints=target.constraints).system``).
    iterations : int
        Full-batch Adam steps.
    learning_rate : float
        Adam's, in the scaled parameter units; cosine decay to 2 % of it.
    sigma_nm : float
        Displacement scale of the force term, nm.
    prior_weight : float
        Weight of the squared parameter offsets.
    validation_fraction : float
        The last fraction of the frames (in their order) is held out and reported.
    extra_periodicities : sequence of int
        Periodicities of the added torsion terms.
    max_excess_kT : float
        Frames whose target energy is further than this many kT from the median are left out (with a
        warning), and frames whose energy under the starting System is ten times further (an absurd
        geometry): at 300 K, 100 kT is about 20 standard deviations of a 22-atom molecule's thermal energy, so
        only frames of a trajectory that fell into a hole of the potential or blew up (seen with an ML
        potential) go.  Non-finite frames are left out too.
    progress : bool
        Show a progress bar.

    Returns
    -------
    system : openmm.System
        The fitted surrogate.
    report : dict
        Settings, and before/after ``energy_std`` (kJ/mol), ``force_rmse`` (kJ/mol/nm, projected) and
        ``long_jump_acceptance`` on the training and validation frames; the loss history.

    Raises
    ------
    ValueError
        Shapes that do not match the target, non-finite labels, or too few frames to split.
    """
    from tqdm.auto import tqdm

    from .forecasters.surrogate import check_same_particles_and_constraints
    from .systems import particle_masses

    positions, energies, forces = (np.asarray(a, dtype=np.float64) for a in (positions, energies, forces))
    n_atoms = target.n_atoms
    if positions.ndim != 3 or positions.shape[1:] != (n_atoms, 3) or forces.shape != positions.shape \
            or energies.shape != positions.shape[:1]:
        raise ValueError(f"positions and forces must have shape (n, {n_atoms}, 3) and energies (n,); got "
                         f"{positions.shape}, {forces.shape}, {energies.shape}")
    finite = np.isfinite(energies) & np.isfinite(forces).all(axis=(1, 2)) & np.isfinite(positions).all(axis=(1, 2))
    if not finite.all():
        logger.warning("%d of %d frames have non-finite labels (a failed evaluation) and are left out",
                       int((~finite).sum()), len(finite))
        positions, energies, forces = positions[finite], energies[finite], forces[finite]
    check_same_particles_and_constraints(base_system, target.system)
    model = AmberSurrogateEnergy(base_system, extra_periodicities)
    kT = float((unit.MOLAR_GAS_CONSTANT_R * target.temperature).value_in_unit(unit.kilojoule_per_mole))
    with torch.no_grad():
        base_energies = model(torch.as_tensor(positions)).numpy()
    # The starting System's energy flags geometries the target finds fine but a force field finds absurd (atoms
    # on top of each other: seen in a hole of an ML potential); it differs from the target's by design, so its
    # bar is ten times looser.
    hot = ~np.isfinite(base_energies) | (np.abs(energies - np.median(energies)) > max_excess_kT * kT)
    hot |= np.abs(base_energies - np.median(base_energies[np.isfinite(base_energies)])) > 10 * max_excess_kT * kT
    if hot.any():
        logger.warning("%d of %d frames lie more than %g kT from the median energy of the target or of the starting "
                       "System (a chain that fell into a hole of the potential or blew up?) and are left out",
                       int(hot.sum()), len(hot), max_excess_kT)
        positions, energies, forces = positions[~hot], energies[~hot], forces[~hot]
    n_validation = int(round(validation_fraction * len(positions)))
    if len(positions) - n_validation < 10 or (validation_fraction > 0 and n_validation < 2):
        raise ValueError(f"{len(positions)} usable frames are too few to fit and validate a surrogate (need >= 12)")
    constraints = [tuple(base_system.getConstraintParameters(c)[:2]) for c in range(base_system.getNumConstraints())]
    projectors = constraint_projectors(positions, constraints, particle_masses(target.system))
    split = len(positions) - n_validation
    tensors = [torch.as_tensor(a) for a in (positions, energies, forces, projectors)]
    train = [t[:split] for t in tensors]
    validation = [t[split:] for t in tensors]

    settings = dict(sigma_nm=sigma_nm, kT=kT, prior_weight=prior_weight)

    def evaluate(data):
        loss, parts = surrogate_loss(model, *data, create_graph=False, **settings)
        with torch.no_grad():
            energy = model(data[0])
        parts["long_jump_acceptance"] = long_jump_acceptance((data[1] - energy).numpy(), kT)
        parts["loss"] = float(loss.detach())
        return parts

    before = {"train": evaluate(train), "validation": evaluate(validation) if n_validation else None}
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations, eta_min=0.02 * learning_rate)
    history = []
    bar = tqdm(range(iterations), desc="fit surrogate", disable=not progress)
    for step in bar:
        optimizer.zero_grad()
        loss, parts = surrogate_loss(model, *train, **settings)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 25 == 0 or step == iterations - 1:
            history.append({"iteration": step, "loss": float(loss.detach()), **parts})
            bar.set_postfix(dU_std=f"{parts['energy_std']:.2f}", F_rmse=f"{parts['force_rmse']:.0f}")
    after = {"train": evaluate(train), "validation": evaluate(validation) if n_validation else None}
    report = {
        "n_frames": int(len(positions)), "n_left_out": int((~finite).sum() + hot.sum()), "n_train": int(split), "n_validation": int(n_validation),
        "iterations": int(iterations), "learning_rate": learning_rate, "sigma_nm": sigma_nm,
        "prior_weight": prior_weight, "extra_periodicities": list(model.extra_periodicities), "kT_kJ_per_mol": kT,
        "before": before, "after": after, "history": history,
    }
    return model.to_system(base_system), report


def sample_target(target, n_frames, n_chains=2, frame_interval_ps=0.05, equilibration_ps=5.0, seed=1,
                  platform="Reference", progress=False):
    """Thermal states of the target with its energies and forces: Langevin MD of the target itself.

    ``n_chains`` independent chains (seeds ``seed``, ``seed + 1``, ...), each the setup's own simulation
    (:meth:`~openmm_forecast.systems.MolecularSystem.create_simulation`: minimised as the setup needs, e.g.
    capped steepest descent for ``gfn2-xtb``, velocities at its temperature; its Langevin integrator,
    friction and time step), equilibrated ``equilibration_ps`` and sampled every ``frame_interval_ps``; the
    frames are ordered chain by chain (so the last chain's end is what :func:`fit_surrogate` holds out).
    A chain whose potential cannot be evaluated any more (a :class:`~openmm_forecast.errors.PotentialEvaluationError`)
    or whose positions are no longer finite ends there, with a warning; its frames so far are kept.

    Returns
    -------
    positions : numpy.ndarray
        (n, N, 3) nm, ``n <= n_frames``.
    energies : numpy.ndarray
        (n,) kJ/mol.
    forces : numpy.ndarray
        (n, N, 3) kJ/mol/nm.
    """
    from tqdm.auto import tqdm

    from .errors import PotentialEvaluationError, is_blow_up, is_potential_evaluation_failure

    if n_frames < n_chains or n_chains < 1:
        raise ValueError(f"need at least one frame per chain (n_frames={n_frames}, n_chains={n_chains})")
    per_chain = np.diff(np.linspace(0, n_frames, n_chains + 1).round().astype(int))
    dt_ps = float(target.timestep.value_in_unit(unit.picosecond))
    interval = max(1, int(round(frame_interval_ps / dt_ps)))
    positions, energies, forces = [], [], []
    bar = tqdm(total=int(n_frames), desc="sample target", disable=not progress)
    for chain, count in enumerate(per_chain):
        simulation = target.create_simulation(platform=platform, seed=seed + chain)
        try:
            simulation.step(int(round(equilibration_ps / dt_ps)))
            for _ in range(int(count)):
                simulation.step(interval)
                state = simulation.context.getState(getPositions=True, getEnergy=True, getForces=True)
                x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                if not np.isfinite(x).all():
                    raise PotentialEvaluationError("positions are no longer finite")
                positions.append(x)
                energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
                forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
                bar.update()
        except (PotentialEvaluationError, mm.OpenMMException) as error:
            if not (is_potential_evaluation_failure(error) or is_blow_up(error)):
                raise
            logger.warning("chain %d (seed %d) ended after %d frames: %s", chain, seed + chain,
                           len(positions) - int(per_chain[:chain].sum()), error)
    bar.close()
    if not positions:
        raise PotentialEvaluationError("no target frame could be sampled")
    return np.array(positions), np.array(energies), np.array(forces)
