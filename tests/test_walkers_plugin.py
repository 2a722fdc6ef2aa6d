"""PluginWalkers: walkers whose Simulations integrate with the C++ ForecastIntegrator (the plugin must be built, as
for tests/test_plugin.py).

amber14-vacuum alanine dipeptide on Reference as the target (cheap energies), the shipped fit-amber14-obc2 surrogate
as the proposal (same atoms, masses and constraints), ghmc with 100 fs jumps: both outcomes occur within a few jumps.
"""

import numpy as np
import pytest
from openmm import unit

from openmm_forecast.stats import AcceleratorStats
from openmm_forecast.walkers import PlainWalkers, PluginWalkers

JUMP = 100 * unit.femtosecond
JUMP_STEPS = 50  # of the setup's 2 fs


@pytest.fixture(scope="module")
def walkers(vacuum_system):
    return PluginWalkers(vacuum_system, "fit-amber14-obc2", seeds=[3, 4], platform="Reference", acceptance="ghmc",
                         jump=JUMP)


def positions_and_velocities(simulations):
    states = [simulation.context.getState(getPositions=True, getVelocities=True) for simulation in simulations]
    return (np.array([s.getPositions(asNumpy=True).value_in_unit(unit.nanometer) for s in states]),
            np.array([s.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond) for s in states]))


def test_plugin_walkers_start_where_plain_walkers_start_and_sample_with_statistics(vacuum_system, walkers):
    plain = PlainWalkers(vacuum_system, seeds=[3, 4], platform="Reference")
    # The same minimised replicas.  Velocities are drawn with the same seeds but differ by up to 0.008 nm/ps: for the
    # ghmc integrator (synchronous velocities) OpenMM's projection onto the constraints comes out tighter (1e-10
    # against 1e-7 along the constrained bonds; with 'metropolis' they are bit-equal), so only positions are compared.
    np.testing.assert_array_equal(positions_and_velocities(walkers.simulations)[0],
                                  positions_and_velocities(plain.simulations)[0])
    assert walkers.rule == "ghmc" and walkers.engine == "plugin" and walkers.n_walkers == 2
    assert float(walkers.settings["jump"]) == 0.1 and walkers.settings["randomSeed"] == "3"
    assert [s.integrator.getSettings()["randomSeed"] for s in walkers.simulations] == ["3", "4"]

    samples = walkers.sample(interval=2 * JUMP, n_samples=3, progress=False)
    assert samples.positions_nm.shape == (3, 2, vacuum_system.n_atoms, 3)
    assert samples.time_ps == pytest.approx([0.2, 0.4, 0.6])
    assert np.all(np.isfinite(samples.temperature_K)) and np.all(samples.temperature_K > 100)
    assert [s.currentStep for s in walkers.simulations] == [6 * JUMP_STEPS] * 2
    stats = walkers.stats()
    assert isinstance(stats, AcceleratorStats)
    # ghmc: every 100 fs is one jump, accepted or kept (reversed momenta); no integration of the target.
    assert stats.jumps_attempted == walkers.forecast_calls == 12
    assert 0 < stats.jumps_accepted < 12, "both outcomes expected in 12 jumps at 100 fs"
    assert stats.jumped_ps + stats.kept_ps == pytest.approx(2 * 0.6) and stats.integrated_ps == 0
    assert stats.rejections.get("metropolis", 0) == 12 - stats.jumps_accepted
    per_walker = [s.integrator.getStatistics().jumps_attempted for s in walkers.simulations]
    assert per_walker == [6, 6]


def test_plugin_walkers_continue_bit_for_bit_from_a_checkpoint(walkers):
    walkers.step(JUMP_STEPS // 2)  # inside a jump: the checkpoint carries the plugin's schedule
    checkpoint = walkers.checkpoint()
    attempted = walkers.stats().jumps_attempted
    walkers.step(3 * JUMP_STEPS)
    first = positions_and_velocities(walkers.simulations)
    assert walkers.stats().jumps_attempted == attempted + 6
    walkers.restore(checkpoint)
    assert walkers.stats().jumps_attempted == attempted  # the statistics come back with the state
    walkers.step(3 * JUMP_STEPS)
    for a, b in zip(first, positions_and_velocities(walkers.simulations)):
        np.testing.assert_array_equal(a, b)


def test_plugin_walkers_refuse_bad_steps_and_an_unknown_option(vacuum_system, walkers):
    with pytest.raises(ValueError, match="n_steps"):
        walkers.step(-1)
    with pytest.raises(TypeError, match="unknown ForecastIntegrator options"):
        PluginWalkers(vacuum_system, "fit-amber14-obc2", 1, platform="Reference", jump=JUMP, stride_ps=0.1)
