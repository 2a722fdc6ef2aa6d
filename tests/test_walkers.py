"""Batched walkers: batching changes nothing per walker, rejections stay private, clocks and sampling add up.

System: amber14-vacuum alanine dipeptide (HBonds, LangevinMiddleIntegrator 2 fs) on the Reference platform.
Tests that compare a walker with the same walker run alone use zero friction: the Reference platform draws
every Context's Langevin noise from one process-wide generator (so noise depends on what other Contexts
did), and the CPU platform is not bitwise reproducible (threaded force sums); without friction the
dynamics are deterministic and any difference comes from the walkers' code.
"""

import numpy as np
import pytest
import torch
from openmm import unit

from openmm_forecast import build_system
from openmm_forecast.analysis import phi_psi_from_positions
from openmm_forecast.forecasters import BallisticForecaster, Forecaster, VerletForecaster, create_forecaster
from openmm_forecast.walkers import ForecastWalkers, PlainWalkers

from forecast_helpers import TINY


class PoisonWalker(Forecaster):
    """The inner forecaster, but NaN for the rows whose current positions are those of ``target``'s Context."""

    def __init__(self, inner, target=None):
        self.inner, self.metadata, self.target, self.batch_sizes = inner, inner.metadata, target, []

    def _forecast(self, positions, velocities, n_frames):
        x, v = self.inner._forecast(positions, velocities, n_frames)
        self.batch_sizes.append(len(x))
        if self.target is not None:
            current = self.target.context.getState(getPositions=True).getPositions(asNumpy=True)
            poisoned = np.all(np.isclose(positions[:, -1], current.value_in_unit(unit.nanometer), atol=1e-12), axis=(1, 2))
            x = np.where(poisoned[:, None, None, None], np.nan, x)
        return x, v


@pytest.fixture(scope="module")
def system(vacuum_system):
    return vacuum_system


@pytest.fixture(scope="module")
def frictionless():
    """The same setup without Langevin friction: deterministic dynamics."""
    return build_system("amber14-vacuum", friction=0.0 / unit.picosecond)


@pytest.fixture(scope="module")
def verlet(system):
    """Exact dynamics (0.25 fs velocity Verlet) in frames of 10 fs, up to 4 per jump."""
    return VerletForecaster(system, stride_ps=0.01, max_frames=4)


@pytest.fixture(scope="module")
def tiny_model(system):
    """A small float64 MLP forecaster (frames of one 2 fs step) with random untrained corrections: about a
    fifth of its jumps pass the 1 kT energy guard, the rest are restored."""
    torch.manual_seed(7)
    forecaster = create_forecaster(TINY, elements=system.elements, stride_ps=0.002, max_frames=3, history=1,
                                   setup=system.setup, dtype="float64", hidden=16)
    with torch.no_grad():
        forecaster.module.net[2].weight.normal_(0.0, 2e-3)
    return forecaster


def state_of(simulation):
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    return (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))


# ---- batched inference ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["ballistic", "verlet", "tiny"])
def test_batched_forecast_equals_one_walker_at_a_time(system, verlet, tiny_model, which, rng):
    forecaster = {"ballistic": BallisticForecaster(system.elements, 0.01, max_frames=3), "verlet": verlet,
                  "tiny": tiny_model}[which]
    x0 = np.array(system.positions.value_in_unit(unit.nanometer))
    x = x0 + rng.normal(0.0, 0.002, size=(4, 1) + x0.shape)
    v = rng.normal(0.0, 0.5, size=x.shape)
    batched_x, batched_v = forecaster.forecast(x, v, 3)
    assert batched_x.shape == (4, 3, system.n_atoms, 3)
    for i in range(4):
        one_x, one_v = forecaster.forecast(x[i : i + 1], v[i : i + 1], 3)
        np.testing.assert_allclose(batched_x[i], one_x[0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(batched_v[i], one_v[0], rtol=0, atol=1e-8)
        # The walkers take the first n frames of a longer forecast: they must be the n-frame forecast.
        short_x, short_v = forecaster.forecast(x[i : i + 1], v[i : i + 1], 2)
        np.testing.assert_allclose(batched_x[i, :2], short_x[0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(batched_v[i, :2], short_v[0], rtol=0, atol=1e-8)
    # The walkers' premise: different inputs give different forecasts (the test can fail).
    assert np.abs(batched_x[0] - batched_x[1]).max() > 1e-4


# the tiny network is not structure-preserving: metropolis with it checks the batching, not the physics (opt-in)
@pytest.mark.parametrize("options", [{}, {"metropolis": True, "allow_inexact_metropolis": True},
                                     {"acceptance": "dynamics"}],
                         ids=["tolerance", "metropolis", "dynamics"])
def test_walkers_in_a_batch_follow_their_solo_trajectories(frictionless, tiny_model, options):
    system = frictionless
    together = ForecastWalkers(system, tiny_model, seeds=[3, 4], platform="Reference", **options)
    together.step(300)
    assert together.forecast_calls > 0
    stats = [w.stats for w in together.walkers]
    # The random model must produce both outcomes, else this test would not exercise restores.
    assert sum(s.jumps_accepted for s in stats) > 0
    assert sum(s.jumps_attempted - s.jumps_accepted for s in stats) > 0
    for index, seed in enumerate([3, 4]):
        alone = ForecastWalkers(system, tiny_model, seeds=[seed], platform="Reference", **options)
        alone.step(300)
        x_batch, v_batch = state_of(together.simulations[index])
        x_alone, v_alone = state_of(alone.simulations[0])
        np.testing.assert_allclose(x_batch, x_alone, rtol=0, atol=1e-7)
        np.testing.assert_allclose(v_batch, v_alone, rtol=0, atol=1e-5)
        solo = alone.walkers[0].stats
        assert (solo.jumps_attempted, solo.jumps_accepted) == (stats[index].jumps_attempted, stats[index].jumps_accepted)
        assert solo.rejections == stats[index].rejections


def test_one_walkers_rejection_does_not_touch_another(frictionless, verlet):
    system = frictionless
    poisoned = PoisonWalker(verlet)
    walkers = ForecastWalkers(system, poisoned, seeds=[1, 2], platform="Reference")
    poisoned.target = walkers.simulations[0]
    walkers.step(250)
    first, second = walkers.walkers
    assert max(poisoned.batch_sizes) == 2
    # Walker 0 got only NaN: every jump rejected before reaching its Context, and its state is finite.
    assert first.stats.jumps_attempted > 0 and first.stats.jumps_accepted == 0
    assert first.stats.rejections["nonfinite"] == first.stats.jumps_attempted
    x_first, v_first = state_of(walkers.simulations[0])
    assert np.isfinite(x_first).all() and np.isfinite(v_first).all()
    # Restores are exact and use no random numbers: walker 0 is plain Langevin MD with its seed.
    plain = PlainWalkers(system, seeds=[1], platform="Reference")
    plain.step(250)
    x_plain, v_plain = state_of(plain.simulations[0])
    np.testing.assert_allclose(x_first, x_plain, rtol=0, atol=1e-9)
    np.testing.assert_allclose(v_first, v_plain, rtol=0, atol=1e-7)
    # Walker 1 jumped (exact dynamics: all accepted) exactly as it does alone.
    assert second.stats.jumps_accepted == second.stats.jumps_attempted > 0
    alone = ForecastWalkers(system, verlet, seeds=[2], platform="Reference")
    alone.step(250)
    x_second, v_second = state_of(walkers.simulations[1])
    x_alone, v_alone = state_of(alone.simulations[0])
    np.testing.assert_allclose(x_second, x_alone, rtol=0, atol=1e-9)
    np.testing.assert_allclose(v_second, v_alone, rtol=0, atol=1e-7)
    assert alone.walkers[0].stats.jumped_ps == pytest.approx(second.stats.jumped_ps)
    assert np.abs(x_second - x_first).max() > 0.01  # different seeds, different molecules


# ---- clocks, statistics and sampling --------------------------------------------------------------


def test_clock_statistics_and_sampling(system, verlet):
    walkers = ForecastWalkers(system, verlet, n_walkers=3, seed=5, platform="Reference")
    samples = walkers.sample(0.1 * unit.picosecond, n_samples=4)
    # Every walker advanced exactly 4 x 0.1 ps; jumps plus integration cover all of it.
    for simulation in walkers.simulations:
        assert simulation.currentStep == 200
        assert simulation.context.getTime().value_in_unit(unit.picosecond) == pytest.approx(0.4, abs=1e-9)
    total = walkers.stats()
    assert total.jumped_ps + total.integrated_ps == pytest.approx(3 * 0.4)
    assert total.jumped_ps > 0.5 * 3 * 0.4
    assert total.jumps_accepted == sum(w.stats.jumps_accepted for w in walkers.walkers)
    assert total.wall_s["forecast"] >= walkers.forecast_wall_s > 0
    # One batched call serves all three walkers in a round: far fewer calls than jumps.
    assert walkers.forecast_calls < total.jumps_attempted
    assert samples.positions_nm.shape == (4, 3, system.n_atoms, 3)
    np.testing.assert_allclose(samples.time_ps, [0.1, 0.2, 0.3, 0.4])
    assert np.all(np.diff(samples.wall_s) > 0)
    assert samples.simulated_ps == pytest.approx(1.2)
    # The last sample is the walkers' current state, and phi/psi are per walker in time order.
    np.testing.assert_allclose(samples.positions_nm[-1], walkers.positions_nm(), atol=1e-6)
    phi_psi = samples.phi_psi(system.topology)
    assert phi_psi.shape == (3, 4, 2)
    np.testing.assert_allclose(phi_psi[2], phi_psi_from_positions(samples.positions_nm[:, 2]), atol=1e-3)


def test_plain_walkers_sample_until_the_wall_budget(system):
    walkers = PlainWalkers(system, 2, platform="Reference")
    samples = walkers.sample(0.02 * unit.picosecond, wall_seconds=0.3)
    # It stops at the first sample that completes the budget (on a slow machine that may be the first one).
    assert samples.wall_s[-1] >= 0.3 and (len(samples.wall_s) == 1 or samples.wall_s[-2] < 0.3)
    assert walkers.simulations[0].currentStep == 10 * len(samples.time_ps)
    # Different seeds: different trajectories.
    assert np.abs(samples.positions_nm[-1, 0] - samples.positions_nm[-1, 1]).max() > 0.005


def test_invalid_arguments(system, verlet):
    with pytest.raises(ValueError, match="differ"):
        PlainWalkers(system, seeds=[2, 2], platform="Reference")
    with pytest.raises(ValueError, match="n_walkers"):
        PlainWalkers(system, 0, platform="Reference")
    with pytest.raises(ValueError, match="per walker"):
        ForecastWalkers(system, verlet, 2, platform="Reference", seed=1, progress=True)
    walkers = PlainWalkers(system, 1, platform="Reference")
    with pytest.raises(ValueError, match="whole number"):
        walkers.sample(0.003 * unit.picosecond, n_samples=1)
    with pytest.raises(ValueError, match="n_samples"):
        walkers.sample(1 * unit.picosecond)


def test_merged_statistics_keep_every_field():
    """ForecastWalkers.stats() merges per-walker statistics: every time and count must survive (kept_ps included)."""
    from openmm_forecast.accelerator import AcceleratorStats

    a, b = AcceleratorStats(), AcceleratorStats()
    a.record_attempt(2), a.record_accept(2, 0.02), b.record_attempt(2), b.record_reject("energy")
    a.kept_ps, b.kept_ps, a.integrated_ps, b.integrated_ps = 0.01, 0.03, 0.1, 0.2
    a.record_dh(0.5), b.record_dh(-1.0)
    total = AcceleratorStats.merge([a, b])
    assert total.jumps_attempted == 2 and total.jumps_accepted == 1 and total.rejections["energy"] == 1
    assert total.attempted_by_frames == {2: 2} and total.accepted_by_frames == {2: 1}
    assert total.kept_ps == pytest.approx(0.04) and total.integrated_ps == pytest.approx(0.3)
    assert total.jumped_ps == pytest.approx(0.02) and sorted(total.dh_kJ) == [-1.0, 0.5]


def test_phi_psi_of_samples_of_a_peptide_of_several_residues():
    """ACE-(ALA)3-NME: three residues with both angles, so (n_walkers, n_samples, 3, 2), walker by walker in time
    order, equal to the angles of the frames themselves (the dipeptide's (n_walkers, n_samples, 2) is above)."""
    import os

    from openmm import app

    from openmm_forecast.walkers import WalkerSamples

    pdb = app.PDBFile(os.path.join(os.path.dirname(__file__), "data", "ace-ala3-nme.pdb"))
    frame = np.asarray(pdb.positions.value_in_unit(unit.nanometer))
    rng = np.random.default_rng(4)
    positions = frame + rng.normal(0.0, 0.01, size=(5, 2) + frame.shape)  # (n_samples, n_walkers, n_atoms, 3)
    samples = WalkerSamples(positions, 0.1 * np.arange(1, 6), np.arange(1.0, 6.0), 0.1, np.full((5, 2), 300.0))
    angles = samples.phi_psi(pdb.topology)
    assert angles.shape == (2, 5, 3, 2)
    np.testing.assert_allclose(angles[1], phi_psi_from_positions(positions[:, 1], pdb.topology), atol=1e-3)
    assert np.ptp(angles[:, :, :, 0]) > 1.0  # the perturbed frames differ: a reshape that mixed them would show
