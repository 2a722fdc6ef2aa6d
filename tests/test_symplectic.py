"""The structure-preserving forecaster ``symplectic``: symplectic, reversible, and exact in Metropolis mode.

Every property is checked with random weights: exactness must not depend on training.  Each test has a
control that must fail the same check (a map that is not volume-preserving), so the checks have power.
"""

import warnings

import numpy as np
import pytest
import torch
from openmm import app, unit

from openmm_forecast import ForecastAccelerator, build_system
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.forecasters import (
    create_forecaster,
    is_structure_preserving,
    load_forecaster,
    save_forecaster,
)
from openmm_forecast.acceptance import MetropolisRule
from openmm_forecast.units import kT_kJ

REFERENCE = mm.Platform.getPlatformByName("Reference")
KT = kT_kJ(300.0)


def _randomise(forecaster, seed, scale=0.3):
    """Perturb every weight (random, untrained maps must be exact too); the radial-basis weights 10x less."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in forecaster.module.named_parameters():
            size = scale / 10 if name == "weights" else scale
            parameter.add_(size * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return forecaster


def _chain_positions(n, spacing=0.15):
    """A zigzag chain of ``n`` atoms in the xy plane, nm."""
    return np.array([[spacing * 0.8 * i, 0.09 * (i % 2), 0.0] for i in range(n)])


def _symplectic(elements, reference, stride_ps=0.01, max_frames=1, substeps=5, seed=1, **extra):
    forecaster = create_forecaster(
        "symplectic", elements=elements, stride_ps=stride_ps, max_frames=max_frames, dtype="float64",
        substeps=substeps, reference_positions=reference, constraints="none", **extra,
    )
    return _randomise(forecaster, seed)


def _flow(module, n_frames):
    """The map (x, v) -> (x', v') of a module on flat float64 vectors (for autograd)."""
    n = module.masses.shape[0]

    def flow(state):
        x, v = state[: 3 * n].view(1, 1, n, 3), state[3 * n :].view(1, 1, n, 3)
        new_x, new_v = module(x, v, n_frames)
        return torch.cat([new_x[0, -1].reshape(-1), new_v[0, -1].reshape(-1)])

    return flow


def _contracted(flow, factor, n):
    """A control that is NOT volume-preserving: the map, then positions contracted by ``factor``."""

    def contracted(state):
        out = flow(state)
        return torch.cat([factor * out[: 3 * n], out[3 * n :]])

    return contracted


def test_map_is_volume_preserving_symplectic_and_reversible():
    n = 5
    forecaster = _symplectic(["C", "C", "O", "N", "H"], _chain_positions(n), max_frames=2)
    module = forecaster.module
    rng = np.random.default_rng(3)
    x = torch.tensor(_chain_positions(n) + rng.normal(0, 0.005, (n, 3)))
    v = torch.tensor(rng.normal(0, 0.5, (n, 3)))
    state = torch.cat([x.reshape(-1), v.reshape(-1)])
    flow = _flow(module, 2)
    jacobian = torch.autograd.functional.jacobian(flow, state)
    assert torch.det(jacobian).item() == pytest.approx(1.0, abs=1e-10)
    # Symplectic in (q, p): J^T Omega J = Omega with J the Jacobian in (x, m v).
    masses = module.masses.detach().repeat_interleave(3)
    scale = torch.cat([torch.ones_like(masses), masses])
    j_qp = scale[:, None] * jacobian / scale[None, :]
    omega = torch.zeros(6 * n, 6 * n, dtype=torch.float64)
    omega[: 3 * n, 3 * n :], omega[3 * n :, : 3 * n] = torch.eye(3 * n), -torch.eye(3 * n)
    assert torch.abs(j_qp.T @ omega @ j_qp - omega).max().item() < 1e-9
    # The control fails the same check.
    control = torch.autograd.functional.jacobian(_contracted(flow, 0.99, n), state)
    assert abs(torch.det(control).item() - 1.0) > 0.1
    # Reversible: map, flip velocities, map, flip -> the start, to float64 rounding.
    fx, fv = forecaster.forecast(x.numpy()[None], v.numpy()[None], 2)
    bx, bv = forecaster.forecast(fx[:, 1], -fv[:, 1], 2)
    assert np.abs(bx[0, 1] - x.numpy()).max() < 1e-12 and np.abs(-bv[0, 1] - v.numpy()).max() < 1e-10
    # Frames are powers of the stride map.
    ox, ov = forecaster.forecast(fx[:, 0], fv[:, 0], 1)
    np.testing.assert_allclose(ox[:, 0], fx[:, 1], rtol=0, atol=1e-13)
    np.testing.assert_allclose(ov[:, 0], fv[:, 1], rtol=0, atol=1e-11)


def test_kicks_are_gradients_of_an_invariant_potential_and_momentum_is_conserved():
    n = 6
    forecaster = _symplectic(["C"] * 6, _chain_positions(n))
    module = forecaster.module
    rng = np.random.default_rng(4)
    x = torch.tensor(_chain_positions(n) + rng.normal(0, 0.01, (n, 3)))[None].requires_grad_(True)
    energy = module.potential(x).sum()
    (gradient,) = torch.autograd.grad(energy, x)
    np.testing.assert_allclose(module.forces(x).detach().numpy(), -gradient.numpy(), rtol=1e-10, atol=1e-8)
    # Rotations and translations: the same energy; the map commutes with them.
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    x0, v0 = x.detach().numpy()[0], rng.normal(0, 0.5, (n, 3))
    moved = x0 @ q.T + np.array([0.3, -1.0, 2.0])
    with torch.no_grad():
        assert module.potential(torch.tensor(moved)[None]).item() == pytest.approx(energy.item(), rel=1e-12)
    fx, fv = forecaster.forecast(x0[None], v0[None])
    gx, gv = forecaster.forecast(moved[None], (v0 @ q.T)[None])
    np.testing.assert_allclose(gx[0, 0], fx[0, 0] @ q.T + np.array([0.3, -1.0, 2.0]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gv[0, 0], fv[0, 0] @ q.T, rtol=0, atol=1e-10)
    masses = module.masses.numpy()[:, None]
    np.testing.assert_allclose((masses * fv[0, 0]).sum(0), (masses * v0).sum(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.cross(fx[0, 0], masses * fv[0, 0]).sum(0), np.cross(x0, masses * v0).sum(0),
                               rtol=0, atol=1e-10)


def test_model_file_round_trip_keeps_the_certificate(tmp_path):
    forecaster = _symplectic(["C", "C", "O"], _chain_positions(3), max_frames=2)
    assert is_structure_preserving(forecaster.metadata)
    assert forecaster.metadata.extra["rotation_equivariant"]
    path = tmp_path / "symplectic.pt"
    save_forecaster(forecaster, path)
    loaded = load_forecaster(path)
    assert is_structure_preserving(loaded.metadata)
    x, v = _chain_positions(3)[None], np.random.default_rng(5).normal(0, 0.5, (1, 3, 3))
    for a, b in zip(forecaster.forecast(x, v), loaded.forecast(x, v)):
        np.testing.assert_array_equal(a, b)
    mdtrajnet = create_forecaster("mdtrajnet", elements=["C", "C", "O"], stride_ps=0.01, d_model=8, layers=1,
                                  heads=2)
    assert not is_structure_preserving(mdtrajnet.metadata)
    with pytest.raises(ValueError, match="reference_positions"):
        create_forecaster("symplectic", elements=["C", "C"], stride_ps=0.01, reference_positions=[[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="history"):
        create_forecaster("symplectic", elements=["C", "C"], stride_ps=0.01, history=2,
                          reference_positions=_chain_positions(2))


# ---- Metropolis mode on toys with known distributions ------------------------------------------------
#
# Generalised hybrid Monte Carlo with the map as proposal, decided by the accelerator's own rule
# (acceptance.MetropolisRule): velocities drawn from Maxwell-Boltzmann, one jump, accept with
# min(1, exp(-dH / kT)).  Many independent replicas in one batched forecast call: fast, and the
# standard error comes from independent replica averages.


RULE = MetropolisRule()


def _contracting(forecaster, factor):
    """A control that is not volume-preserving (nor reversible): the map, then positions contracted about the
    centroid by ``factor``."""

    def propose(x, v):
        new_x, new_v = forecaster.forecast(x, v)
        new_x, new_v = new_x[:, -1], new_v[:, -1]
        centre = new_x.mean(axis=1, keepdims=True)
        return centre + factor * (new_x - centre), new_v

    return propose


def _proposal(forecaster):
    def propose(x, v):
        new_x, new_v = forecaster.forecast(x, v)
        return new_x[:, -1], new_v[:, -1]

    return propose


def _hmc_bond_lengths(propose, energy_kJ, x, masses, pairs, iterations, seed):
    """Run HMC on replicas ``x`` (R, N, 3) nm; bond lengths (R, iterations, len(pairs)) and the acceptance."""
    rng = np.random.default_rng(seed)
    first, second = np.array(pairs).T
    sigma = np.sqrt(KT / masses)[None, :, None]
    lengths, accepted = [], 0
    for _ in range(iterations):
        v = sigma * rng.normal(size=x.shape)
        new_x, new_v = propose(x, v)
        dh = (energy_kJ(new_x) + 0.5 * (masses[None, :, None] * new_v**2).sum((1, 2))
              - energy_kJ(x) - 0.5 * (masses[None, :, None] * v**2).sum((1, 2)))
        accept = np.array([RULE.decide(d, 0.0, KT, rng).reason is None for d in dh])
        x = np.where(accept[:, None, None], new_x, x)
        accepted += accept.sum()
        lengths.append(np.linalg.norm(x[:, first] - x[:, second], axis=-1))
    return np.stack(lengths, axis=1), accepted / (len(x) * iterations)


def _bond_lengths_of(x, pairs):
    first, second = np.array(pairs).T
    return np.linalg.norm(x[:, first] - x[:, second], axis=-1)


def _bond_grid(energy_kJ, r_min, r_max):
    """Grid of bond lengths and the normalised weights of p(r) ~ r^2 exp(-U(r) / kT) (a bond length in 3D)."""
    r = np.linspace(r_min, r_max, 200001)
    weight = r**2 * np.exp(-(energy_kJ(r) - energy_kJ(r).min()) / KT)
    return r, weight / weight.sum()


def _exact_chains(energy_kJ, r_min, r_max, replicas, n_bonds, rng):
    """Chains (replicas, n_bonds + 1, 3) nm with independent bond lengths from p(r) and random directions: the
    exact distribution of a bonds-only chain (the chain starts in equilibrium, so no burn-in is needed)."""
    r, weight = _bond_grid(energy_kJ, r_min, r_max)
    lengths = rng.choice(r, size=(replicas, n_bonds), p=weight)
    directions = rng.normal(size=(replicas, n_bonds, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    steps = lengths[..., None] * directions
    return np.concatenate([np.zeros((replicas, 1, 3)), np.cumsum(steps, axis=1)], axis=1)


def _exact_moment(energy_kJ, statistic, r_min, r_max):
    """<statistic(r)> under p(r) ~ r^2 exp(-U(r) / kT), by quadrature."""
    r, weight = _bond_grid(energy_kJ, r_min, r_max)
    return float((statistic(r) * weight).sum())


def _z_score(samples, exact):
    """(mean - exact) / standard error of ``samples`` (R, T, ...), the error from independent replica means."""
    per_replica = samples.reshape(len(samples), -1).mean(axis=1)
    return (per_replica.mean() - exact) / (per_replica.std(ddof=1) / np.sqrt(len(per_replica)))


def _set_pair_stiffness(forecaster, pairs, stiffness, seed=0):
    """Set the learned stiffness of some pairs to ``stiffness`` (kJ/mol/nm^2) times a random factor in ~[0.8, 1.2]."""
    module = forecaster.module
    index = {pair: p for p, pair in enumerate(zip(*np.triu_indices(module.masses.shape[0], k=1)))}
    noise = 0.1 * np.random.default_rng(seed).normal(size=len(pairs))
    with torch.no_grad():
        for pair, epsilon in zip(pairs, noise):
            module.log_stiffness[index[pair]] = float(np.log(stiffness / module.stiffness_scale) + epsilon)


def test_metropolis_mode_with_the_map_samples_a_harmonic_chain_exactly():
    """Bond lengths of a bonds-only chain are independent, p(r) ~ r^2 exp(-k (r - r0)^2 / 2kT): check <(r - r0)^2>.

    The map has random weights (its bond stiffnesses near the true ones, so that some jumps are accepted);
    the same map followed by a 5 % contraction is not volume-preserving and must fail the same statistic.
    """
    n, k, r0, replicas = 6, 1.0e4, 0.15, 300
    positions = np.array([[0.12 * i, 0.09 * (i % 2), 0.0] for i in range(n)])
    pairs = [(i, i + 1) for i in range(n - 1)]
    forecaster = _symplectic(["C"] * n, positions, stride_ps=0.02, max_frames=1, substeps=4, seed=7)
    _set_pair_stiffness(forecaster, pairs, 1.3 * k)
    others = [(i, j) for i in range(n) for j in range(i + 2, n)]
    _set_pair_stiffness(forecaster, others, 10.0, seed=1)  # the chain has no angle terms
    masses = forecaster.module.masses.numpy()

    def energy(x):
        return (0.5 * k * (_bond_lengths_of(x, pairs) - r0) ** 2).sum(-1)

    def bond(r):
        return 0.5 * k * (r - r0) ** 2

    exact = _exact_moment(bond, lambda r: (r - r0) ** 2, 0.01, 0.35)
    start = _exact_chains(bond, 0.01, 0.35, replicas, n - 1, np.random.default_rng(10))
    scores, acceptance = {}, {}
    for name, propose in (("map", _proposal(forecaster)), ("control", _contracting(forecaster, 0.95))):
        lengths, acceptance[name] = _hmc_bond_lengths(propose, energy, start, masses, pairs, 30, seed=11)
        scores[name] = _z_score((lengths - r0) ** 2, exact)
    assert 0.1 < acceptance["map"] < 0.95, acceptance
    assert abs(scores["map"]) < 4.0, scores
    assert abs(scores["control"]) > 8.0, (scores, acceptance)


def test_metropolis_mode_with_the_map_samples_a_double_well_exactly():
    """Diatomics with a double-well bond U = A ((r - r0)^2 - b^2)^2 (barrier 2 kT): check the fraction in the
    outer well.  The map has random weights and knows nothing of the barrier."""
    r0, b, replicas = 0.3, 0.03, 1000
    a = 2.0 * KT / b**4
    positions = np.array([[0.0, 0.0, 0.0], [r0 + b, 0.0, 0.0]])
    forecaster = _symplectic(["C", "C"], positions, stride_ps=0.02, max_frames=1, substeps=4, seed=8)
    _set_pair_stiffness(forecaster, [(0, 1)], 16 * KT / b**2)  # the curvature at either minimum
    masses = forecaster.module.masses.numpy()

    def well(r):
        return a * ((r - r0) ** 2 - b**2) ** 2

    def energy(x):
        return well(_bond_lengths_of(x, [(0, 1)]))[:, 0]

    exact = _exact_moment(well, lambda r: (r > r0).astype(float), 0.2, 0.4)
    start = _exact_chains(well, 0.2, 0.4, replicas, 1, np.random.default_rng(13))
    scores, acceptance = {}, {}
    for name, propose in (("map", _proposal(forecaster)), ("control", _contracting(forecaster, 0.95))):
        lengths, acceptance[name] = _hmc_bond_lengths(propose, energy, start, masses, [(0, 1)], 30, seed=12)
        scores[name] = _z_score((lengths > r0).astype(float), exact)
    assert 0.1 < acceptance["map"] < 0.95, acceptance
    assert abs(scores["map"]) < 4.0, scores
    assert abs(scores["control"]) > 8.0, (scores, acceptance)


def test_accelerator_warns_when_a_certified_map_meets_constraints():
    """Projection onto constraints is not volume-preserving: the certificate does not hold, and a warning says so."""
    molecular_system = build_system("amber14-vacuum")  # HBonds
    pdb_positions = molecular_system.positions.value_in_unit(unit.nanometer)
    forecaster = create_forecaster("symplectic", elements=molecular_system.elements, stride_ps=0.002,
                                   dtype="float64", substeps=2, constraints="none")
    simulation = app.Simulation(molecular_system.topology, molecular_system.system,
                                mm.LangevinMiddleIntegrator(300, 1.0, 0.002), REFERENCE)
    simulation.context.setPositions(pdb_positions)
    with pytest.warns(UserWarning, match="constraints"):
        ForecastAccelerator(simulation, forecaster, metropolis=True, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ForecastAccelerator(simulation, forecaster, metropolis=False, progress=False)
