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
functional form in vacuum (:data:`FAMILIES`: bond and angle polynomials, torsion Fourier terms on every torsion
quadruple that can absorb conformation-dependent energy such as implicit solvation, charges; Lennard-Jones
kept; the ``rbf`` family adds a bounded Gaussian correction on every atom pair's distance that is zero outside
the sampled distances), written as an ordinary OpenMM System (same particles, masses and constraints as the
target), saved as XML, at vacuum cost (~20 us per 2 fs step for alanine dipeptide on the Reference platform;
~50 us with the ``rbf`` correction).

Loss (dimensionless, per frame)::

    Var(D) / kT^2  +  sum over components of (P (F_target - F_surrogate))^2 * sigma^2 / kT^2

``P`` removes the force components along the constraints (they do nothing in constrained dynamics);
``sigma`` (default 0.01 nm) is the typical displacement over which a force error turns into an energy error,
so both terms are energy variances in kT^2.  The energy is linear in every coefficient but the charges, so
:func:`fit_surrogate` minimises this loss by ridge least squares in closed form (ridge toward the starting
System, strength chosen on held-out frames) and Gauss-Newton rounds for the charges (total charge kept).
:func:`predict_acceptance` runs the exact jump from held-out frames: the acceptance a ghmc or metropolis chain
then sees.  :func:`self_learning_refinement` refits it from a warm-up chain's own target evaluations (then
frozen).  :class:`AmberSurrogateEnergy` is the same amber-form energy as a torch module.

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


FAMILIES = {
    "amber": {"bond_powers": (1, 2), "angle_powers": (1, 2), "periodicities": (1, 2, 3, 4), "pair_powers": (),
              "rbf": 0},
    "anharmonic": {"bond_powers": (1, 2, 3, 4), "angle_powers": (1, 2, 3, 4), "periodicities": (1, 2, 3, 4, 5, 6),
                   "pair_powers": (), "rbf": 0},
    "coupled": {"bond_powers": (1, 2, 3, 4), "angle_powers": (1, 2, 3, 4), "periodicities": (1, 2, 3, 4, 5, 6),
                "pair_powers": (1, 2, 3), "rbf": 0},
    "rbf": {"bond_powers": (1, 2), "angle_powers": (1, 2), "periodicities": (1, 2, 3, 4, 5, 6), "pair_powers": (),
            "rbf": 8},
}
"""Surrogate families: powers of ``r - r0`` per bond and of ``theta - theta0`` per angle (``r0``, ``theta0`` the
starting System's), the torsion periodicities (cosine and sine terms on every torsion quadruple), powers of
``r - r_mean`` for every 1-3 and 1-4 atom pair not bonded or constrained (``r_mean`` its mean over the training
frames: Urey-Bradley-like terms that couple bonds, angles and torsions), and the number of Gaussian radial basis
functions per atom pair (``rbf``: every pair whose distance is not constrained, bonded ones included; see
:meth:`_LinearTerms.rbf_features`).  ``amber`` is written as amber's own forces (harmonic bonds and angles, periodic
torsions); ``anharmonic`` (quartic bonds and angles) as a ``CustomBondForce`` and a ``CustomAngleForce``;
``coupled`` adds the pair terms as a second ``CustomBondForce``; ``rbf`` is ``amber`` with torsions to n = 6 plus
a bounded pair correction in one ``CustomBondForce`` that vanishes outside the distances of the training frames."""

RBF_TAIL = 4.0
"""The Gaussian pair correction is cut off this many basis widths beyond the outermost centre (where a basis
function is ``exp(-16)``, 1e-7, of its peak): outside ``[r_min - RBF_TAIL w, r_max + RBF_TAIL w]`` of the training
frames it is exactly zero and the amber terms alone act."""

RIDGE_GRID = tuple(10.0 ** np.arange(-9, 1))
"""Ridge strengths tried for the bonded and torsion coefficients (relative to the diagonal of the normal
matrix); the held-out loss picks one, with one of :data:`CHARGE_RIDGE_GRID` for the charges, then the torsions'
own (:data:`TORSION_RIDGE_TOLERANCE`)."""

TORSION_RIDGE_TOLERANCE = 0.01
"""The torsions' own ridge is the strongest of :data:`RIDGE_GRID` whose held-out loss is within this fraction of
the least found (the other ridges' search and the torsions' sweep together): Fourier terms on the torsions that
share a bond are nearly collinear over thermal states, and the least-squares optimum can pair huge amplitudes that
cancel there and not a few degrees away (``fit-ani1x`` before this rule: 174 terms whose amplitudes summed to
22,502 kJ/mol; its Verlet dynamics diverged within 16 fs from some states).  The loss is mostly the force term
(89 % in ``fit-ani1x``), so 1 % of it is at most ~9 % of Var(D), ~4.5 % of std(D); the refitted ``fit-ani1x``'s
held-out std(D) fell (2.48 to 2.40 kJ/mol, with other changes, docs/guide/fitting.md).  The torsions' ridge may
differ between the charges' rounds, whose stopping rule (1 %) compares the Systems' true held-out losses."""

CHARGE_RIDGE_GRID = tuple(10.0 ** np.arange(-6, 3, 2))
"""Ridge strengths tried for the charges: a strong one keeps amber's charges where moving them does not pay
on held-out frames (charges that absorb a many-body energy can pull atoms together outside the sampled range)."""


class _LinearTerms:
    """The surrogate energy as ``U_fixed(x) + features(x) @ theta``, with the features' gradients.

    Every term but the charges is linear in its coefficients (``theta``); the charges enter the Coulomb energy
    quadratically and are fitted by Gauss-Newton rounds: at charges ``q`` the energy is linear in ``dq``
    (features ``dU/dq_k``), its quadratic remainder is what the next round's linearisation picks up.
    """

    def __init__(self, base_system, family, positions):
        spec = FAMILIES[family]
        self.family = family
        self.amber = AmberSurrogateEnergy(base_system, extra_periodicities=())  # reads and checks the base System
        a = self.amber
        self.n_atoms = a.n_particles
        self.bond_powers = spec["bond_powers"]
        self.angle_powers = spec["angle_powers"]
        quads = list(dict.fromkeys(tuple(t) for t in a.torsion_atoms.tolist()))
        base_n = {int(n) for n in a.torsion_n.tolist()}
        self.periodicities = tuple(sorted(set(spec["periodicities"]) | base_n))
        self.quads = torch.tensor(quads, dtype=torch.long).reshape(-1, 4)
        n_bond, n_angle, n_quad = len(a.bond_atoms), len(a.angle_atoms), len(quads)
        self.blocks = {"bond": (0, n_bond * len(self.bond_powers))}
        offset = self.blocks["bond"][1]
        self.blocks["angle"] = (offset, offset + n_angle * len(self.angle_powers))
        offset = self.blocks["angle"][1]
        self.blocks["torsion"] = (offset, offset + 2 * n_quad * len(self.periodicities))
        offset = self.blocks["torsion"][1]
        self.pair_powers = spec["pair_powers"]
        excluded = {tuple(sorted(b)) for b in a.bond_atoms.tolist()}
        excluded |= {tuple(sorted(base_system.getConstraintParameters(c)[:2]))
                     for c in range(base_system.getNumConstraints())}
        ends = [(t[0], t[2]) for t in a.angle_atoms.tolist()] + [(q[0], q[3]) for q in quads]
        pairs = [p for p in dict.fromkeys(tuple(sorted(e)) for e in ends) if p not in excluded]
        self.pair_atoms = torch.tensor(pairs if self.pair_powers else [], dtype=torch.long).reshape(-1, 2)
        x = torch.as_tensor(np.asarray(positions, dtype=np.float64))
        self.pair_r0 = torch.linalg.vector_norm(x[:, self.pair_atoms[:, 0]] - x[:, self.pair_atoms[:, 1]], dim=-1).mean(0)
        self.blocks["pair"] = (offset, offset + len(self.pair_atoms) * len(self.pair_powers))
        offset = self.blocks["pair"][1]
        self.rbf_count = spec["rbf"]
        constrained = {tuple(sorted(base_system.getConstraintParameters(c)[:2]))
                       for c in range(base_system.getNumConstraints())}
        every = [(i, j) for i in range(self.n_atoms) for j in range(i + 1, self.n_atoms) if (i, j) not in constrained]
        self.rbf_atoms = torch.tensor(every if self.rbf_count else [], dtype=torch.long).reshape(-1, 2)
        r = torch.linalg.vector_norm(x[:, self.rbf_atoms[:, 0]] - x[:, self.rbf_atoms[:, 1]], dim=-1)
        # centres r_lo + k w, k = 0 .. K-1, spanning the training frames' range of each pair's distance
        self.rbf_lo = r.min(0).values if len(r) else torch.zeros(0, dtype=torch.float64)
        span = (r.max(0).values - self.rbf_lo) if len(r) else torch.zeros(0, dtype=torch.float64)
        self.rbf_width = torch.clamp(span / max(self.rbf_count - 1, 1), min=1e-4)
        self.blocks["rbf"] = (offset, offset + len(self.rbf_atoms) * self.rbf_count)
        offset = self.blocks["rbf"][1]
        self.blocks["charge"] = (offset, offset + self.n_atoms)
        self.n_parameters = offset + self.n_atoms
        # The starting System's coefficients (its charges: 0, an offset from the charges of the round).
        theta = np.zeros(self.n_parameters)
        bonds = np.zeros((n_bond, len(self.bond_powers)))
        bonds[:, self.bond_powers.index(2)] = 0.5 * a.bond_k.numpy()
        angles = np.zeros((n_angle, len(self.angle_powers)))
        angles[:, self.angle_powers.index(2)] = 0.5 * a.angle_k.numpy()
        torsions = np.zeros((n_quad, len(self.periodicities), 2))
        index = {q: i for i, q in enumerate(quads)}
        for quad, n, phase, k in zip(a.torsion_atoms.tolist(), a.torsion_n.tolist(), a.torsion_phase.tolist(),
                                     a.torsion_k0.tolist()):
            p = self.periodicities.index(int(n))
            torsions[index[tuple(quad)], p] += (k * np.cos(phase), k * np.sin(phase))
        theta[slice(*self.blocks["bond"])] = bonds.ravel()
        theta[slice(*self.blocks["angle"])] = angles.ravel()
        theta[slice(*self.blocks["torsion"])] = torsions.ravel()
        self.theta0 = theta
        # Coulomb scale of every atom pair: 1, an exception's scale, or 0 (excluded); fixed charge products apart.
        scale = np.zeros((self.n_atoms, self.n_atoms))
        pairs = a.pair_atoms.numpy()
        scale[pairs[:, 0], pairs[:, 1]] = 1.0
        ex = a.exception_atoms.numpy()
        scale[ex[:, 0], ex[:, 1]] = a.exception_scale.numpy()
        self.coulomb_scale = torch.as_tensor(scale + scale.T)

    @staticmethod
    def _powers(values, gradient, powers):
        """Features ``values**n`` (B, T, K) and their gradients (B, T, K, atoms, 3) from ``d values / dx``."""
        features = torch.stack([values ** n for n in powers], -1)
        slopes = torch.stack([n * values ** (n - 1) for n in powers], -1)
        return features, slopes[..., None, None] * gradient[..., None, :, :]

    def rbf_features(self, distance):
        """The pair correction's basis at distances ``distance`` (B, T) nm: values (B, T, K) and d/dr (B, T, K) 1/nm.

        Basis function k of pair t is ``exp(-(u - k)^2)`` with ``u = (r - r_lo) / w``: K Gaussians with centres
        spread evenly over ``[r_lo, r_hi]`` (the pair's range in the training frames, ``w = (r_hi - r_lo) / (K - 1)``),
        set to zero where ``u`` lies more than :data:`RBF_TAIL` outside ``[0, K - 1]``.
        """
        u = (distance - self.rbf_lo) / self.rbf_width
        offset = u[..., None] - torch.arange(self.rbf_count, dtype=torch.float64)
        inside = ((u > -RBF_TAIL) & (u < self.rbf_count - 1 + RBF_TAIL)).to(torch.float64)[..., None]
        values = torch.exp(-offset ** 2) * inside
        return values, -2.0 * offset / self.rbf_width[:, None] * values

    @staticmethod
    def _local(function, positions, atoms):
        """``function`` of each term's own atoms (B, T) and its gradient (B, T, atoms, 3)."""
        local = positions[:, atoms].detach().requires_grad_(True)  # (B, T, atoms, 3)
        values = function(local)
        (gradient,) = torch.autograd.grad(values.sum(), local)
        return values.detach(), gradient

    def evaluate(self, positions, charges):
        """Fixed energy (B,), fixed forces (B, N, 3), features (B, P) and their gradients (B, N, 3, P).

        Parameters
        ----------
        positions : torch.Tensor
            (B, N, 3) nm.
        charges : torch.Tensor
            (N,) e: the charges of the round (the fixed part's Coulomb energy; the features are ``dU/dq``).
        """
        a = self.amber
        n_frames = len(positions)
        features = torch.zeros(n_frames, self.n_parameters, dtype=torch.float64)
        jacobian = torch.zeros(n_frames, self.n_atoms, self.n_parameters, 3, dtype=torch.float64)

        def scatter(block, values, gradient, atoms):
            # values (B, T, K), gradient (B, T, K, atoms, 3): term t's feature k is column start + t K + k
            start, stop = self.blocks[block]
            features[:, start:stop] = values.reshape(n_frames, -1)
            n_terms, n_k = values.shape[1:]
            columns = start + torch.arange(n_terms * n_k).reshape(n_terms, n_k)
            for slot in range(atoms.shape[1]):
                rows = atoms[:, slot][:, None].expand(n_terms, n_k).reshape(-1)
                g = gradient[:, :, :, slot, :].reshape(n_frames, -1, 3)  # (B, T K, 3)
                jacobian.index_put_((torch.arange(n_frames)[:, None], rows[None, :], columns.reshape(-1)[None, :]),
                                    g, accumulate=True)

        r, dr = self._local(lambda x: torch.linalg.vector_norm(x[..., 0, :] - x[..., 1, :], dim=-1), positions,
                            a.bond_atoms)
        scatter("bond", *self._powers(r - a.bond_r0, dr, self.bond_powers), a.bond_atoms)
        t, dt = self._local(lambda x: bond_angles(x, torch.tensor([[0, 1, 2]]))[..., 0], positions, a.angle_atoms)
        scatter("angle", *self._powers(t - a.angle_theta0, dt, self.angle_powers), a.angle_atoms)
        phi, dphi = self._local(lambda x: dihedral_angles(x, torch.tensor([[0, 1, 2, 3]]))[..., 0], positions,
                                self.quads)
        n = torch.tensor(self.periodicities, dtype=torch.float64)
        angle = phi[..., None] * n  # (B, Q, K)
        values = torch.stack([torch.cos(angle), torch.sin(angle)], -1).reshape(n_frames, len(self.quads), -1)
        slopes = torch.stack([-n * torch.sin(angle), n * torch.cos(angle)], -1).reshape(n_frames, len(self.quads), -1)
        scatter("torsion", values, slopes[..., None, None] * dphi[:, :, None], self.quads)
        if len(self.pair_atoms):
            r, dr = self._local(lambda x: torch.linalg.vector_norm(x[..., 0, :] - x[..., 1, :], dim=-1), positions,
                                self.pair_atoms)
            scatter("pair", *self._powers(r - self.pair_r0, dr, self.pair_powers), self.pair_atoms)
        if len(self.rbf_atoms):
            r, dr = self._local(lambda x: torch.linalg.vector_norm(x[..., 0, :] - x[..., 1, :], dim=-1), positions,
                                self.rbf_atoms)
            values, slopes = self.rbf_features(r)
            scatter("rbf", values, slopes[..., None, None] * dr[:, :, None], self.rbf_atoms)

        # Charges: dU/dq_k = C sum_j s_kj q_j / r_kj; its gradient in x_m is C s_km q_m (x_k - x_m) / r_km^3 for m != k.
        difference = positions[:, :, None, :] - positions[:, None, :, :]  # (B, k, j, 3): x_k - x_j
        distance = torch.linalg.vector_norm(difference, dim=-1) + torch.eye(self.n_atoms, dtype=torch.float64)
        start, stop = self.blocks["charge"]
        features[:, start:stop] = ONE_4PI_EPS0 * (self.coulomb_scale / distance) @ charges
        weight = ONE_4PI_EPS0 * self.coulomb_scale * charges / distance ** 3  # (B, k, j)
        off_diagonal = weight[..., None] * difference  # d g_k / d x_m for m != k, (B, k, m, 3)
        gradient = off_diagonal - torch.diag_embed(off_diagonal.sum(2).transpose(1, 2)).permute(0, 2, 3, 1)
        jacobian[:, :, start:stop] = gradient.transpose(1, 2)
        # Fixed part: Lennard-Jones, Coulomb at the round's charges, the fixed charge products of exceptions.
        x = positions.detach().requires_grad_(True)
        q = charges
        qq_pairs = q[a.pair_atoms[:, 0]] * q[a.pair_atoms[:, 1]]
        ex = a.exception_atoms
        qq_ex = a.exception_scale * q[ex[:, 0]] * q[ex[:, 1]] + a.exception_fixed_qq
        energy = a._pairs(x, a.pair_atoms, qq_pairs, a.pair_sigma, a.pair_epsilon) + a._pairs(
            x, ex, qq_ex, a.exception_sigma, a.exception_epsilon)
        (gradient,) = torch.autograd.grad(energy.sum(), x)
        # the charge-centred parametrisation keeps the total charge: dq -> dq - mean(dq)
        jacobian[:, :, start:stop] -= jacobian[:, :, start:stop].mean(2, keepdim=True)
        features[:, start:stop] -= features[:, start:stop].mean(-1, keepdim=True)
        return energy.detach(), -gradient, features, jacobian.transpose(2, 3)


def _projected_design(terms, positions, energies, forces, charges, projectors):
    """One chunk's energy design (features, targets) and projected force design, as float64 numpy arrays.

    Returns
    -------
    energy_x : (B, P)
    energy_y : (B,) kJ/mol, ``U_target - U_fixed``
    force_x : (B 3N, P) kJ/mol/nm per unit coefficient, the projected model forces
    force_y : (B 3N,) kJ/mol/nm, the projected ``F_target - F_fixed``
    """
    fixed_energy, fixed_forces, features, jacobian = terms.evaluate(torch.as_tensor(positions), charges)
    n_frames = len(positions)
    model_forces = -jacobian.numpy().reshape(n_frames, -1, terms.n_parameters)  # (B, 3N, P)
    residual = (forces - fixed_forces.numpy()).reshape(n_frames, -1)
    force_x = np.einsum("bij,bjp->bip", projectors, model_forces).reshape(-1, terms.n_parameters)
    force_y = np.einsum("bij,bj->bi", projectors, residual).reshape(-1)
    return features.numpy(), energies - fixed_energy.numpy(), force_x, force_y




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


class _Moments:
    """Running sums of one frame set's least-squares problem (energy and projected-force rows).

    The per-frame loss at coefficients ``theta`` is ``theta A theta - 2 b theta + c`` (:meth:`quadratic`), with
    ``Var(D)`` taken about the set's own mean (an offset of ``D`` costs nothing in a Metropolis test).
    """

    def __init__(self, n_parameters):
        self.n = 0
        self.force_rows = 0
        self.sum_x = np.zeros(n_parameters)
        self.sum_y = 0.0
        self.energy_xx = np.zeros((n_parameters, n_parameters))
        self.energy_xy = np.zeros(n_parameters)
        self.energy_yy = 0.0
        self.force_xx = np.zeros((n_parameters, n_parameters))
        self.force_xy = np.zeros(n_parameters)
        self.force_yy = 0.0

    def add(self, energy_x, energy_y, force_x, force_y):
        """Add a chunk: ``energy_x`` (B, P), ``energy_y`` (B,), ``force_x`` (B 3N, P), ``force_y`` (B 3N,)."""
        self.n += len(energy_y)
        self.force_rows += len(force_y)
        self.sum_x += energy_x.sum(0)
        self.sum_y += float(energy_y.sum())
        self.energy_xx += energy_x.T @ energy_x
        self.energy_xy += energy_x.T @ energy_y
        self.energy_yy += float(energy_y @ energy_y)
        force = torch.as_tensor(force_x)  # the largest product (B 3N rows): torch's BLAS, as for the solves
        self.force_xx += (force.T @ force).numpy()
        self.force_xy += force_x.T @ force_y
        self.force_yy += float(force_y @ force_y)

    def quadratic(self, kT, sigma_nm):
        """``(A (P, P), b (P,), c)`` of the per-frame loss ``Var(D) / kT^2 + sigma^2 |P dF|^2 / kT^2``."""
        n, mx, my = self.n, self.sum_x / self.n, self.sum_y / self.n
        w = sigma_nm ** 2
        a = (self.energy_xx / n - np.outer(mx, mx) + w * self.force_xx / n) / kT ** 2
        b = (self.energy_xy / n - mx * my + w * self.force_xy / n) / kT ** 2
        c = (self.energy_yy / n - my * my + w * self.force_yy / n) / kT ** 2
        return a, b, c

    def parts(self, theta):
        """``energy_std`` (kJ/mol: std of ``D``) and ``force_rmse`` (kJ/mol/nm, projected, per component)."""
        n, mx, my = self.n, self.sum_x / self.n, self.sum_y / self.n
        variance = (self.energy_yy - 2 * theta @ self.energy_xy + theta @ self.energy_xx @ theta) / n \
            - (my - theta @ mx) ** 2
        squared = self.force_yy - 2 * theta @ self.force_xy + theta @ self.force_xx @ theta
        return {"energy_std": float(np.sqrt(max(variance, 0.0))),
                "force_rmse": float(np.sqrt(max(squared, 0.0) / self.force_rows))}


def fit_surrogate(target, positions, energies, forces, base_system, *, family="amber", iterations=10,
                  sigma_nm=0.01, validation_fraction=0.2, max_excess_kT=100.0, chunk_frames=64,
                  predict_jumps=(), predict_frames=200, seed=0, platform="Reference", progress=False,
                  torsion_ridge_tolerance=TORSION_RIDGE_TOLERANCE):
    """Fit a surrogate System to a target's energies and forces (see the module docstring).

    The surrogate's energy is linear in its coefficients except for the charges, so each round is a
    weighted ridge least-squares solve (closed form, no learning rate): the ridge strengths are those of
    :data:`RIDGE_GRID` and :data:`CHARGE_RIDGE_GRID` with the least held-out loss, but for the torsions' own
    (:data:`TORSION_RIDGE_TOLERANCE`: the strongest within a tolerance of it); the charges are linearised
    about the last round's (Gauss-Newton), and rounds stop when the held-out loss of the System they give
    falls by less than 1 % (that System's loss is known exactly one evaluation later, so a fit of ``k`` rounds
    evaluates the frames ``k + 1`` times).

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
        ``build_system('amber14-vacuum', constraints=target.constraints).system``): its topology of terms,
        Lennard-Jones parameters and reference lengths and angles; the ridge pulls toward its parameters.
    family : str
        A key of :data:`FAMILIES`.
    iterations : int
        Most Gauss-Newton rounds (solves).
    sigma_nm : float
        Displacement scale of the force term, nm.
    validation_fraction : float
        The last fraction of the frames (in their order) is held out: it picks the ridge strength, stops the
        rounds, and is what the report's ``after.validation`` and ``predicted_acceptance`` describe.
    max_excess_kT : float
        Frames whose target energy is further than this many kT from the median are left out (with a
        warning), and frames whose energy under the starting System is ten times further (an absurd
        geometry): at 300 K, 100 kT is about 20 standard deviations of a 22-atom molecule's thermal energy, so
        only frames of a trajectory that fell into a hole of the potential or blew up (seen with an ML
        potential) go.  Non-finite frames are left out too.
    chunk_frames : int
        Frames evaluated at once (memory: about ``chunk_frames * 3N * P * 8`` bytes).
    predict_jumps : sequence of openmm.unit.Quantity
        Jump lengths (time units, whole multiples of the 2 fs surrogate step) at which to predict the acceptance
        by :func:`predict_acceptance` from held-out frames (one target energy per frame and length).
    predict_frames : int
        Most held-out frames used per jump length.
    seed : int
        Seed of the prediction's velocities.
    platform : str or PlatformConfiguration
        Platform of the target's Context in the prediction (a configuration's properties, such as ``Threads``,
        go to the Context).
    progress : bool
        Show a progress bar (rounds and chunks).
    torsion_ridge_tolerance : float
        The torsions' own ridge is the strongest whose held-out loss exceeds the least found by at most this
        fraction (>= 0; see :data:`TORSION_RIDGE_TOLERANCE`).

    Returns
    -------
    system : openmm.System
        The fitted surrogate.
    report : dict
        Settings; before/after ``energy_std`` (kJ/mol), ``force_rmse`` (kJ/mol/nm, projected) and
        ``long_jump_acceptance`` on the training and validation frames; ``history`` (per round: ridge
        strengths, ``torsion_ridge_losses`` (held-out loss per torsion ridge tried), ``least_validation_loss`` (the
        least loss found), losses); ``predicted_acceptance`` (per jump length in fs, see :func:`predict_acceptance`);
        ``fit_seconds``.

    Raises
    ------
    ValueError
        Shapes that do not match the target, non-finite labels, or too few frames to split.
    """
    import time

    from tqdm.auto import tqdm

    from .forecasters.surrogate import check_same_particles_and_constraints
    from .systems import particle_masses, removes_com_motion

    started = time.process_time()
    if not torsion_ridge_tolerance >= 0:
        raise ValueError(f"torsion_ridge_tolerance must be >= 0, got {torsion_ridge_tolerance}")
    if family not in FAMILIES:
        raise ValueError(f"unknown surrogate family {family!r}; choose one of {', '.join(FAMILIES)}")
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
    kT = float((unit.MOLAR_GAS_CONSTANT_R * target.temperature).value_in_unit(unit.kilojoule_per_mole))
    with torch.no_grad():
        base_energies = AmberSurrogateEnergy(base_system, extra_periodicities=())(torch.as_tensor(positions)).numpy()
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
    if len(positions) - n_validation < 10 or n_validation < 2:
        raise ValueError(f"{len(positions)} usable frames are too few to fit and validate a surrogate (need >= 12, "
                         "and a validation_fraction that holds out at least 2)")
    constraints = [tuple(base_system.getConstraintParameters(c)[:2]) for c in range(base_system.getNumConstraints())]
    masses = particle_masses(target.system)
    split = len(positions) - n_validation
    sets = {"train": slice(0, split), "validation": slice(split, None)}
    terms = _LinearTerms(base_system, family, positions[:split])  # pair ranges: training frames only

    def moments(charges, bar):
        result = {}
        for name, part in sets.items():
            m = _Moments(terms.n_parameters)
            for start in range(part.start or 0, part.stop or len(positions), chunk_frames):
                chunk = slice(start, min(start + chunk_frames, part.stop or len(positions)))
                m.add(*_projected_design(terms, positions[chunk], energies[chunk], forces[chunk], charges,
                                         constraint_projectors(positions[chunk], constraints, masses)))
                bar.update(chunk.stop - chunk.start)
            result[name] = m
        return result

    def summary(m, theta, energies_d):
        parts = m.parts(theta)
        parts["long_jump_acceptance"] = long_jump_acceptance(energies_d, kT)
        return parts

    charges = terms.amber.charge0.clone()
    charge_block = slice(*terms.blocks["charge"])
    is_charge = np.zeros(terms.n_parameters, dtype=bool)
    is_charge[charge_block] = True
    is_rbf = np.zeros(terms.n_parameters, dtype=bool)
    is_rbf[slice(*terms.blocks["rbf"])] = True
    is_torsion = np.zeros(terms.n_parameters, dtype=bool)
    is_torsion[slice(*terms.blocks["torsion"])] = True
    prior = terms.theta0.copy()
    history, before, best, previous = [], None, None, None
    bar = tqdm(total=(iterations + 1) * len(positions), desc="fit surrogate", unit="frame", disable=not progress)
    for round_index in range(iterations + 1):
        m = moments(charges, bar)
        av, bv, cv = m["validation"].quadratic(kT, sigma_nm)
        if before is None:
            before = {name: m[name].parts(terms.theta0) for name in sets}
        if previous is not None:
            # the last round's System, now exactly linear at its own charges: its true held-out loss
            held = previous.copy()
            held[charge_block] = 0.0
            true_loss = float(held @ av @ held - 2 * bv @ held + cv)
            history[-1]["validation_loss_of_system"] = true_loss
            if best is not None and true_loss > (1.0 - 0.01) * best[0]:
                if true_loss < best[0]:
                    best = (true_loss, held, charges.clone())
                break  # the charges' rounds no longer help on held-out frames (by less than 1 %)
            best = (true_loss, held, charges.clone())
        if round_index == iterations:
            break
        a, b, c = m["train"].quadratic(kT, sigma_nm)
        prior[charge_block] = (terms.amber.charge0 - charges).numpy()  # the ridge pulls toward the base charges
        scale = np.maximum(np.diag(a), 1e-12 * np.diag(a).max())
        def solve(ridge, charge_ridge, rbf_ridge, torsion_ridge=None):
            strength = np.where(is_charge, charge_ridge, np.where(is_rbf, rbf_ridge, ridge))
            if torsion_ridge is not None:
                strength = np.where(is_torsion, torsion_ridge, strength)
            penalty = scale * strength
            try:
                # torch's solver: numpy's multithreaded BLAS was 5x slower on a loaded 2-core machine
                theta = torch.linalg.solve(torch.as_tensor(a + np.diag(penalty)),
                                           torch.as_tensor(b + penalty * prior)).numpy()
            except RuntimeError:  # singular
                return None
            return (float(theta @ av @ theta - 2 * bv @ theta + cv),
                    (ridge, charge_ridge, rbf_ridge, ridge if torsion_ridge is None else torsion_ridge), theta)

        # coordinate search: one ridge for all, then the charges' own, then the pair correction's own (least
        # held-out loss), then the torsions' own (the strongest within torsion_ridge_tolerance of that loss)
        candidates = [c for c in (solve(r, r, r) for r in RIDGE_GRID) if c is not None]
        ridge = min(candidates, key=lambda item: item[0])[1][0]
        candidates += [c for c in (solve(ridge, q, ridge) for q in CHARGE_RIDGE_GRID) if c is not None]
        _, (ridge, charge_ridge, _, _), _ = min(candidates, key=lambda item: item[0])
        if is_rbf.any():
            candidates += [c for c in (solve(ridge, charge_ridge, r) for r in RIDGE_GRID) if c is not None]
        ridge, charge_ridge, rbf_ridge, _ = min(candidates, key=lambda item: item[0])[1]
        # the torsions' sweep: its ridge == the common one is the search's best again, so its least is the least found
        sweep = [c for c in (solve(ridge, charge_ridge, rbf_ridge, t) for t in RIDGE_GRID if t >= ridge)
                 if c is not None]
        least = min(c[0] for c in sweep)
        loss, (ridge, charge_ridge, rbf_ridge, torsion_ridge), theta = max(
            (c for c in sweep if c[0] <= least + torsion_ridge_tolerance * abs(least)), key=lambda item: item[1][3])
        history.append({"round": round_index, "ridge": ridge, "charge_ridge": charge_ridge,
                        **({"rbf_ridge": rbf_ridge} if is_rbf.any() else {}), "torsion_ridge": torsion_ridge,
                        "torsion_ridge_losses": {f"{c[1][3]:.0e}": c[0] for c in sweep},
                        "least_validation_loss": least, "validation_loss": loss,
                        "train_loss": float(theta @ a @ theta - 2 * b @ theta + c),
                        **{f"validation_{k}": v for k, v in m["validation"].parts(theta).items()}})
        bar.set_postfix(dU_std=f"{history[-1]['validation_energy_std']:.2f}")
        previous = theta
        dq = theta[charge_block]
        charges = charges + torch.as_tensor(dq - dq.mean())
    bar.close()
    _, theta, fitted_charges = best
    fitted_charges = fitted_charges.numpy()
    system = _write_system(terms, theta, fitted_charges, base_system)
    if not removes_com_motion(target.system):
        # A CMMotionRemover the target lacks would take the centre-of-mass kinetic energy out of every jump (the
        # chain's velocities keep theirs): measured from ANI-1x frames, 3 kJ/mol of spurious dH per jump.
        for index in reversed(range(system.getNumForces())):
            if isinstance(system.getForce(index), mm.CMMotionRemover):
                system.removeForce(index)
    # Report: the written System's own numbers (the least-squares model's leave out the charges' second order).
    from .potential_training import label_configurations

    surrogate_energies, surrogate_forces = label_configurations(system, positions)
    after = {}
    for name, part in sets.items():
        difference = energies[part] - surrogate_energies[part]
        residual = (forces[part] - surrogate_forces[part]).reshape(len(difference), -1)
        projected = np.einsum("bij,bj->bi", constraint_projectors(positions[part], constraints, masses), residual)
        after[name] = {"energy_std": float(np.std(difference)), "force_rmse": float(np.sqrt(np.mean(projected ** 2))),
                       "long_jump_acceptance": long_jump_acceptance(difference, kT)}
        before[name]["long_jump_acceptance"] = long_jump_acceptance(energies[part] - base_energies[~hot][part], kT)
    report = {
        "family": family, "n_frames": int(len(positions)), "n_left_out": int((~finite).sum() + hot.sum()),
        "n_train": int(split), "n_validation": int(n_validation), "iterations": int(iterations),
        "rounds": len(history), "sigma_nm": sigma_nm, "n_parameters": int(terms.n_parameters),
        "kT_kJ_per_mol": kT, "before": before, "after": after, "history": history,
        "fit_seconds": time.process_time() - started,
    }
    if len(predict_jumps):
        held_out = np.arange(split, len(positions))
        chosen = np.random.default_rng(seed).choice(held_out, min(predict_frames, len(held_out)), replace=False)
        report["predicted_acceptance"] = {}
        for jump in predict_jumps:
            prediction = predict_acceptance(target, system, positions[chosen], energies[chosen], jump, seed=seed,
                                            platform=platform)
            report["predicted_acceptance"][f"{prediction['jump_fs']:g}"] = prediction
    return system, report


def _write_system(terms, theta, charges, base_system):
    """The fitted surrogate as an OpenMM System: ``base_system``'s particles, constraints and Lennard-Jones,
    the fitted bonded terms and torsions, the fitted charges (exceptions scaled with them).

    Raises
    ------
    ValueError
        A fitted harmonic force constant that is not positive (``amber`` family), which no System can hold.
    """
    a = terms.amber
    fitted = copy.deepcopy(base_system)
    for index in reversed(range(fitted.getNumForces())):
        if isinstance(fitted.getForce(index), (mm.HarmonicBondForce, mm.HarmonicAngleForce, mm.PeriodicTorsionForce)):
            fitted.removeForce(index)
    for kind, atoms, reference, powers in (("bond", a.bond_atoms, a.bond_r0, terms.bond_powers),
                                           ("angle", a.angle_atoms, a.angle_theta0, terms.angle_powers),
                                           ("pair", terms.pair_atoms, terms.pair_r0, terms.pair_powers)):
        if not len(atoms) or not powers:
            continue
        coefficients = theta[slice(*terms.blocks[kind])].reshape(len(atoms), len(powers))
        atoms, reference = atoms.tolist(), reference.numpy()
        if tuple(powers) == (1, 2) and kind != "pair":
            c1, c2 = coefficients[:, 0], coefficients[:, 1]
            if (c2 <= 0).any():
                raise ValueError(f"the fit gave {int((c2 <= 0).sum())} {kind}(s) a force constant <= 0: fit with more "
                                 "frames, or from frames that sample those terms")
            force = mm.HarmonicBondForce() if kind == "bond" else mm.HarmonicAngleForce()
            add = force.addBond if kind == "bond" else force.addAngle
            for quad, r0, linear, quadratic in zip(atoms, reference, c1, c2):
                add(*quad, float(r0 - linear / (2 * quadratic)), float(2 * quadratic))
        else:
            distance = kind != "angle"
            expression = " + ".join(f"c{n}*d^{n}" for n in powers) + f"; d = {'r' if distance else 'theta'} - x0"
            force = mm.CustomBondForce(expression) if distance else mm.CustomAngleForce(expression)
            for name in ["x0"] + [f"c{n}" for n in powers]:
                force.addPerBondParameter(name) if distance else force.addPerAngleParameter(name)
            add = force.addBond if distance else force.addAngle
            for quad, x0, row in zip(atoms, reference, coefficients):
                add(*quad, [float(x0), *map(float, row)])
            if kind != "pair" and max(powers) % 2 == 0 and (coefficients[:, -1] <= 0).any():
                logger.warning("%d %ss have a leading coefficient <= 0: unbounded below far from the fitted range",
                               int((coefficients[:, -1] <= 0).sum()), kind)
        fitted.addForce(force)
    if len(terms.rbf_atoms):
        fitted.addForce(_rbf_force(terms, theta[slice(*terms.blocks["rbf"])].reshape(len(terms.rbf_atoms), -1)))
    torsions = mm.PeriodicTorsionForce()
    pairs = theta[slice(*terms.blocks["torsion"])].reshape(len(terms.quads), len(terms.periodicities), 2)
    for quad, row in zip(terms.quads.tolist(), pairs):
        for n, (cosine, sine) in zip(terms.periodicities, row):
            amplitude = float(np.hypot(cosine, sine))
            if amplitude > 1e-9:  # a cos(n phi) + b sin(n phi) = k (1 + cos(n phi - phase)) - k
                torsions.addTorsion(*quad, n, float(np.arctan2(sine, cosine)), amplitude)
    fitted.addForce(torsions)
    nonbonded = next(f for f in fitted.getForces() if isinstance(f, mm.NonbondedForce))
    for index in range(nonbonded.getNumParticles()):
        _, sigma, epsilon = nonbonded.getParticleParameters(index)
        nonbonded.setParticleParameters(index, float(charges[index]), sigma, epsilon)
    scale, fixed = a.exception_scale.numpy(), a.exception_fixed_qq.numpy()
    for index in range(nonbonded.getNumExceptions()):
        i, j, _, sigma, epsilon = nonbonded.getExceptionParameters(index)
        nonbonded.setExceptionParameters(index, i, j, float(scale[index] * charges[i] * charges[j] + fixed[index]),
                                         sigma, epsilon)
    return fitted


def _rbf_force(terms, coefficients):
    """The fitted pair correction as a ``CustomBondForce`` (per-bond ``r_lo``, ``w`` and the K coefficients,
    kJ/mol); pairs whose coefficients are all zero are left out."""
    count = terms.rbf_count
    basis = " + ".join(f"c{k}*exp(-(u - {k})^2)" for k in range(count))
    force = mm.CustomBondForce(f"step(u + {RBF_TAIL:g}) * step({count - 1 + RBF_TAIL:g} - u) * ({basis}); "
                               "u = (r - r_lo) / w")
    for name in ["r_lo", "w"] + [f"c{k}" for k in range(count)]:
        force.addPerBondParameter(name)
    for (i, j), lo, width, row in zip(terms.rbf_atoms.tolist(), terms.rbf_lo.tolist(), terms.rbf_width.tolist(),
                                      coefficients):
        if np.any(row != 0.0):
            force.addBond(i, j, [lo, width, *map(float, row)])
    force.setName("PairCorrection")
    return force


def predict_acceptance(target, surrogate_system, positions, energies, jump, timestep=2.0 * unit.femtosecond,
                       seed=0, platform="Reference"):
    """The acceptance of the exact ghmc / metropolis jump, run from given thermal states of the target.

    At stationarity the chain's state ``(x, v)`` is Boltzmann-distributed under the target (a momentum refresh,
    full or partial, keeps it so), and its acceptance is the average of ``min(1, exp(-dH / kT))`` over that
    distribution.  This draws it: from each frame (a thermal state of the target: held-out frames of its own
    MD), Maxwell-Boltzmann velocities (constrained; centre-of-mass velocity removed when the target has a
    ``CMMotionRemover``), the surrogate's velocity Verlet jump (:class:`~.forecasters.surrogate.SurrogateForecaster`,
    what the accelerator runs), and one target energy at its end.

    Parameters
    ----------
    target : MolecularSystem
    surrogate_system : openmm.System
    positions : numpy.ndarray
        (n, N, 3) nm, thermal states of the target.
    energies : numpy.ndarray
        (n,) kJ/mol, the target's potential energies there.
    jump : openmm.unit.Quantity
        Jump length (time units; a whole multiple of ``timestep``).
    timestep : openmm.unit.Quantity
        The surrogate's time step (time units).
    seed : int
    platform : str or PlatformConfiguration
        Platform of the target's Context (a configuration's properties go to it).

    Returns
    -------
    dict
        ``acceptance`` (mean of ``min(1, exp(-dH / kT))``), ``stderr`` (its standard error, frames taken as
        independent), ``n_frames``, ``dH_std_kJ`` and ``dH_mean_kJ`` (kJ/mol, finite jumps), ``surrogate_dH_std_kJ``
        (the surrogate's own integration error in its ``H``), ``jump_fs``.  A jump that fails (non-finite)
        counts as rejected.
    """
    from .units import positive

    jump_fs = positive(jump, unit.femtosecond, "jump")
    positions = np.asarray(positions, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    jumper = _Jumper(target, surrogate_system, jump_fs, timestep, platform)
    rng = np.random.default_rng(seed)
    dh, dh_surrogate = [], []
    for x, u in zip(positions, energies):
        _, u1, _, kinetic_change, own = jumper.jump(x, rng)
        dh.append(u1 - u + kinetic_change)
        dh_surrogate.append(own)
    dh = np.array(dh)
    ok = np.isfinite(dh)
    accept = np.where(ok, np.exp(np.minimum(0.0, -np.where(ok, dh, 0.0) / jumper.kT)), 0.0)
    return {"jump_fs": float(jump_fs), "acceptance": float(accept.mean()),
            "stderr": float(accept.std(ddof=1) / np.sqrt(len(accept))) if len(accept) > 1 else float("nan"),
            "n_frames": int(len(accept)), "dH_mean_kJ": float(np.mean(dh[ok])) if ok.any() else float("nan"),
            "dH_std_kJ": float(np.std(dh[ok])) if ok.any() else float("nan"),
            "surrogate_dH_std_kJ": float(np.nanstd(dh_surrogate)) if ok.any() else float("nan")}


class _Jumper:
    """One exact ghmc / metropolis jump as the accelerator runs it: Maxwell-Boltzmann velocities (constrained;
    centre-of-mass velocity removed when the target has a ``CMMotionRemover``), the surrogate's velocity Verlet
    jump (:class:`~.forecasters.surrogate.SurrogateForecaster`), the target's energy and forces at its end."""

    def __init__(self, target, surrogate_system, jump_fs, timestep, platform):
        from .forecasters.surrogate import SurrogateForecaster
        from .platforms import get_platform, platform_properties
        from .systems import particle_masses, removes_com_motion
        from .units import positive

        positive(timestep, unit.femtosecond, "timestep")
        self.kT = float((unit.MOLAR_GAS_CONSTANT_R * target.temperature).value_in_unit(unit.kilojoule_per_mole))
        self.masses = particle_masses(target.system)
        self.forecaster = SurrogateForecaster(target, jump_fs / 1000.0, surrogate=surrogate_system, timestep=timestep)
        self.context = mm.Context(target.system, mm.VerletIntegrator(0.001), get_platform(platform),
                                  platform_properties(platform))
        self.surrogate = mm.Context(surrogate_system, mm.VerletIntegrator(0.001),
                                    mm.Platform.getPlatformByName("Reference"))
        self.speed = np.sqrt(self.kT / np.where(self.masses > 0, self.masses, np.inf))[:, None]
        self.com = removes_com_motion(target.system)

    def _potential(self, context, x, forces=False):
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=forces)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not forces:
            return energy
        return energy, state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)

    def jump(self, x, rng, forces=False):
        """From positions ``x`` (N, 3) nm: the end ``x'`` (N, 3) nm, the target's energy (kJ/mol) and, with
        ``forces``, forces (N, 3) kJ/mol/nm there (else None), the kinetic energy change (kJ/mol) and the
        surrogate's own ``H`` change (kJ/mol, its integration error); a failed jump (non-finite) gives NaN."""
        from .systems import without_com_velocity

        v = self.speed * rng.standard_normal(x.shape)
        if self.com:
            v = without_com_velocity(v, self.masses)
        self.context.setPositions(x)
        self.context.setVelocities(v)
        self.context.applyVelocityConstraints(1e-8)
        v = self.context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(
            unit.nanometer / unit.picosecond)
        kinetic = 0.5 * float((self.masses[:, None] * v * v).sum())
        try:
            x1, v1 = (a[0, 0] for a in self.forecaster.forecast(x[None], v[None]))
            kinetic_change = 0.5 * float((self.masses[:, None] * v1 * v1).sum()) - kinetic
            u1, f1 = self._potential(self.context, x1, forces=True) if forces else (
                self._potential(self.context, x1), None)
            own = self._potential(self.surrogate, x1) - self._potential(self.surrogate, x) + kinetic_change
        except mm.OpenMMException:
            return x, np.nan, np.full(x.shape, np.nan), np.nan, np.nan
        return x1, u1, f1, kinetic_change, own


def self_learning_refinement(target, base_system, train, validation, jump, *, surrogate_system=None, family="rbf",
                             rounds=2, jumps_per_round=400, n_chains=8, learn_from="proposals", seed=0,
                             platform="Reference", progress=False, **fit_options):
    """Self-learning warm-up (SLHMC, arXiv 1909.02255): the chain's own target evaluations refine the surrogate.

    A ghmc chain pays one target evaluation (energy; forces come with it for openmm-torch) per jump.  During a
    warm-up, ``n_chains`` chains (full momentum refresh, started at training frames) run ``jumps_per_round``
    jumps in all with the current surrogate; the states they evaluated join the training frames and
    :func:`fit_surrogate` refits from scratch (ridge on ``validation``); after ``rounds`` rounds the surrogate is
    returned, to be used FROZEN: the warm-up's own states are not samples of the target (the proposal changed
    between them), a chain that then runs the frozen surrogate is exact.

    Parameters
    ----------
    target : MolecularSystem
    base_system : openmm.System
        As for :func:`fit_surrogate`.
    train, validation : tuple of numpy.ndarray
        ``(positions (n, N, 3) nm, energies (n,) kJ/mol, forces (n, N, 3) kJ/mol/nm)``: the target's thermal
        states to fit on, and held-out ones (the ridge, the report's numbers and predictions).
    jump : openmm.unit.Quantity
        The chains' jump length (time units).
    surrogate_system : openmm.System or None
        The surrogate of round 0 (already fitted to ``train``); None fits it first.
    family : str
        A key of :data:`FAMILIES`.
    rounds : int
        Refits.
    jumps_per_round : int
        Jumps (target evaluations) of the chains per round, all chains together.
    n_chains : int
    learn_from : {"proposals", "accepted"}
        Every evaluated jump end (where the surrogate goes: what its acceptance depends on), or only the accepted
        ones (states of the target's distribution).
    seed : int
    platform : str or PlatformConfiguration
        Platform of the target's Context.
    progress : bool
    **fit_options
        Passed to :func:`fit_surrogate` (e.g. ``predict_jumps``, ``predict_frames``).

    Returns
    -------
    system : openmm.System
        The last round's surrogate.
    report : dict
        The last fit's report with ``self_learning``: per round ``round``, ``target_evaluations`` (warm-up
        jumps so far), ``acceptance`` and ``stderr`` of that round's jumps (with the round's surrogate),
        ``n_train``, ``validation`` (held-out ``energy_std`` kJ/mol, ``force_rmse`` kJ/mol/nm) and
        ``predicted_acceptance`` of the surrogate the round ended with; the last entry (``frozen``) is the
        acceptance of ``jumps_per_round`` further jumps with the final surrogate.
    """
    from .units import positive

    if learn_from not in ("proposals", "accepted"):
        raise ValueError(f"learn_from must be 'proposals' or 'accepted', not {learn_from!r}")
    jump_fs = positive(jump, unit.femtosecond, "jump")
    train = tuple(np.asarray(a, dtype=np.float64) for a in train)
    validation = tuple(np.asarray(a, dtype=np.float64) for a in validation)

    def fit(data):
        pooled = tuple(np.concatenate([a, b]) for a, b in zip(data, validation))
        return fit_surrogate(target, *pooled, base_system, family=family,
                             validation_fraction=len(validation[0]) / len(pooled[0]),
                             seed=seed, platform=platform, progress=progress,
                             **{"predict_jumps": (jump,), **fit_options})

    report = None
    if surrogate_system is None:
        surrogate_system, report = fit(train)
    rng = np.random.default_rng(seed)
    chains = [(train[0][i], train[1][i]) for i in rng.choice(len(train[0]), n_chains, replace=False)]
    data, history, evaluations = train, [], 0
    for round_index in range(rounds + 1):
        jumper = _Jumper(target, surrogate_system, jump_fs, 2.0 * unit.femtosecond, platform)
        accepted, collected = [], []
        for jump_index in range(jumps_per_round):
            chain = jump_index % n_chains
            x, u = chains[chain]
            x1, u1, f1, kinetic_change, _ = jumper.jump(x, rng, forces=True)
            evaluations += 1
            dh = u1 - u + kinetic_change
            accept = bool(np.isfinite(dh) and rng.random() < np.exp(min(0.0, -dh / jumper.kT)))
            accepted.append(accept)
            if accept:
                chains[chain] = (x1, u1)
            if np.isfinite(u1) and (accept or learn_from == "proposals"):
                collected.append((x1, u1, f1))
        rate = float(np.mean(accepted))
        entry = {"round": round_index, "target_evaluations": evaluations, "acceptance": rate,
                 "stderr": float(np.std(accepted, ddof=1) / np.sqrt(len(accepted))), "n_train": int(len(data[0]))}
        if report is not None:
            entry["validation"] = {k: report["after"]["validation"][k] for k in ("energy_std", "force_rmse")}
            entry["predicted_acceptance"] = {k: v["acceptance"] for k, v in report.get("predicted_acceptance", {}).items()}
        if round_index == rounds:
            entry["frozen"] = True
            history.append(entry)
            break
        history.append(entry)
        logger.info("self-learning round %d: acceptance %.3f over %d jumps, %d states collected", round_index, rate,
                    jumps_per_round, len(collected))
        if collected:
            data = tuple(np.concatenate([a, np.array(b)]) for a, b in zip(data, zip(*collected)))
        surrogate_system, report = fit(data)
    report["self_learning"] = {"jump_fs": float(jump_fs), "learn_from": learn_from, "n_chains": n_chains,
                               "jumps_per_round": jumps_per_round, "rounds": history}
    return surrogate_system, report


def sample_target(target, n_frames, n_chains=2, frame_interval_ps=0.05, equilibration_ps=5.0, seed=1,
                  platform="Reference", progress=False, backend=None):
    """Thermal states of the target with its energies and forces: Langevin MD of the target itself.

    ``n_chains`` independent chains (seeds ``seed``, ``seed + 1``, ...), each the setup's own simulation
    (:meth:`~openmm_forecast.systems.MolecularSystem.create_simulation`: minimised as the setup needs, e.g.
    capped steepest descent for ``gfn2-xtb``, velocities at its temperature; its Langevin integrator,
    friction and time step), equilibrated ``equilibration_ps`` and sampled every ``frame_interval_ps``; the
    frames are ordered chain by chain (so the last chain's end is what :func:`fit_surrogate` holds out).
    A chain whose potential cannot be evaluated any more (a :class:`~openmm_forecast.errors.PotentialEvaluationError`)
    or whose positions are no longer finite ends there, with a warning; its frames so far are kept.

    ``backend``: a :class:`~openmm_forecast.distributed.RayBackend` runs the chains as Ray tasks spread over its
    workers (``platform`` through :meth:`~openmm_forecast.distributed.RayBackend.default_platform`), the same
    frames as in-process for a deterministic platform; None runs them here, one after the other.

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

    from .errors import PotentialEvaluationError

    if n_frames < n_chains or n_chains < 1:
        raise ValueError(f"need at least one frame per chain (n_frames={n_frames}, n_chains={n_chains})")
    per_chain = np.diff(np.linspace(0, n_frames, n_chains + 1).round().astype(int))
    dt_ps = float(target.timestep.value_in_unit(unit.picosecond))
    interval = max(1, int(round(frame_interval_ps / dt_ps)))
    equilibration = int(round(equilibration_ps / dt_ps))
    calls = [(int(count), interval, equilibration, seed + chain) for chain, count in enumerate(per_chain)]
    if backend is None:
        bar = tqdm(total=int(n_frames), desc="sample target", disable=not progress)
        chains = [sample_chain(target, *call, platform=platform, advance=bar.update) for call in calls]
        bar.close()
    else:
        chains = backend.map_target(sample_chain, target, [call + (backend.default_platform(platform),)
                                                           for call in calls])
    chains = [chain for chain in chains if len(chain[0])]
    if not chains:
        raise PotentialEvaluationError("no target frame could be sampled")
    return tuple(np.concatenate(parts) for parts in zip(*chains))


def sample_chain(target, n_frames, interval_steps, equilibration_steps, seed, platform="Reference", advance=None):
    """One chain of :func:`sample_target`: positions (n, N, 3) nm, energies (n,) kJ/mol and forces (n, N, 3)
    kJ/mol/nm of ``n <= n_frames`` frames ``interval_steps`` apart after ``equilibration_steps``; ``advance()``
    is called after each frame (a progress bar's update)."""
    from .errors import PotentialEvaluationError, is_blow_up, is_potential_evaluation_failure

    n_atoms = target.system.getNumParticles()
    positions, energies, forces = [], [], []
    simulation = target.create_simulation(platform=platform, seed=seed)
    try:
        simulation.step(equilibration_steps)
        for _ in range(n_frames):
            simulation.step(interval_steps)
            state = simulation.context.getState(getPositions=True, getEnergy=True, getForces=True)
            x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            if not np.isfinite(x).all():
                raise PotentialEvaluationError("positions are no longer finite")
            positions.append(x)
            energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
            forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
            if advance is not None:
                advance()
    except (PotentialEvaluationError, mm.OpenMMException) as error:
        if not (is_potential_evaluation_failure(error) or is_blow_up(error)):
            raise
        logger.warning("the chain of seed %d ended after %d frames: %s", seed, len(positions), error)
    return (np.array(positions).reshape(-1, n_atoms, 3), np.array(energies, dtype=float),
            np.array(forces).reshape(-1, n_atoms, 3))
