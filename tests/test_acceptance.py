"""Acceptance rules: their decisions, and what they do inside the accelerator.

The dynamics rule must keep H to round-off over a jump whose forecast changed it, and refuse a jump whose
energy error exceeds the candidate's kinetic energy; the Metropolis rule's exactness on toys is tested in
test_accelerator.py and test_surrogate.py.
"""

import numpy as np
import pytest
from openmm import unit

from openmm_forecast import ForecastAccelerator
from openmm_forecast.acceptance import (
    AcceptanceRule,
    Decision,
    DynamicsRule,
    MetropolisRule,
    ToleranceRule,
    acceptance_rule,
)
from openmm_forecast.forecasters import Forecaster, VerletForecaster
from openmm_forecast.integrators import velocity_verlet_integrator
from openmm_forecast.units import kT_kJ

KT = kT_kJ(300.0)


class Transformed(Forecaster):
    """The verlet forecast passed through ``transform(positions, velocities)``."""

    def __init__(self, inner, transform):
        self.inner, self.transform, self.metadata = inner, transform, inner.metadata

    def _forecast(self, positions, velocities, n_frames):
        return self.transform(*self.inner._forecast(positions, velocities, n_frames))


@pytest.fixture(scope="module")
def verlet(vacuum_system):
    return VerletForecaster(vacuum_system, stride_ps=0.0025, max_frames=4, timestep=0.5 * unit.femtosecond)


def _nve_accelerator(system, forecaster, **options):
    """Velocity Verlet NVE at 0.5 fs (synchronous velocities, no thermostat): H is the Context's U + K."""
    simulation = system.create_simulation(platform="Reference", seed=4, integrator=velocity_verlet_integrator(
        0.5 * unit.femtosecond))
    simulation.step(20)
    return ForecastAccelerator(simulation, forecaster, molecular_system=system, progress=False, seed=4,
                               segment_steps=5, jumps_per_cycle=1, initial_frames=4, **options)


def _context_hamiltonian(accelerator):
    state = accelerator.simulation.context.getState(getEnergy=True)
    return (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)


def test_tolerance_rule():
    rule = ToleranceRule(1.0)
    assert rule.decide(0.9 * KT, 50.0, KT, None).accepted and rule.decide(-0.9 * KT, 50.0, KT, None).accepted
    assert rule.decide(1.1 * KT, 50.0, KT, None) == Decision("energy")
    assert rule.decide(-1.1 * KT, 50.0, KT, None) == Decision("energy")
    assert rule.decide(float("nan"), 50.0, KT, None) == Decision("energy")
    assert rule.decide(float("-inf"), 50.0, KT, None) == Decision("energy")
    with pytest.raises(ValueError, match="tolerance_kT"):
        ToleranceRule(0.0)


def test_metropolis_acceptance_probability_and_one_draw_per_decision():
    rule, rng, n = MetropolisRule(), np.random.default_rng(7), 20000
    accepted = sum(rule.decide(KT, 50.0, KT, rng).accepted for _ in range(n))
    p = np.exp(-1.0)
    assert abs(accepted / n - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert all(rule.decide(-0.1 * KT, 50.0, KT, rng).accepted for _ in range(100))
    assert rule.decide(50 * KT, 50.0, KT, rng) == Decision("metropolis")
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    rule.decide(-5.0, 50.0, KT, a)
    b.random()
    assert a.random() == b.random()


def test_dynamics_rule_scale_keeps_h_and_refuses_negative_kinetic_energy():
    rule = DynamicsRule()
    for dh, kinetic in ((10.0, 60.0), (-25.0, 60.0), (60.0, 60.0)):
        decision = rule.decide(dh, kinetic, KT, None)
        assert decision.accepted
        assert decision.velocity_scale**2 * kinetic == pytest.approx(kinetic - dh, abs=1e-12)
    assert rule.decide(60.1, 60.0, KT, None) == Decision("rescale")
    assert rule.decide(1.0, 0.0, KT, None) == Decision("rescale")
    assert rule.decide(float("nan"), 60.0, KT, None) == Decision("energy")
    with pytest.raises(ValueError, match="drift_window"):
        DynamicsRule(drift_window=0)


def test_dynamics_rule_keeps_h_within_round_off_over_a_jump(vacuum_system, verlet):
    """A forecast 5 % too fast changes H by several kJ/mol; rescaled, the Context's H equals the start's."""
    heated = Transformed(verlet, lambda x, v: (x, 1.05 * v))
    # (a drift bound out of the way: without a thermostat, systematic errors would switch jumps off)
    accelerator = _nve_accelerator(vacuum_system, heated, acceptance="dynamics", drift_tolerance_kT=1e3)
    for _ in range(5):
        start = _context_hamiltonian(accelerator)
        accelerator.step(5 + 4 * 5)  # a 5-step segment, then one 4-frame jump
        assert accelerator.stats.rejections["rescale"] == 0
        # the 5-step segment changes H by velocity Verlet's own fluctuation only (~0.02 kJ/mol); the jump by none
        assert abs(_context_hamiltonian(accelerator) - start) < 0.1
    stats = accelerator.stats
    assert stats.jumps_accepted == 5 and min(abs(np.array(stats.dh_kJ))) > 1.0  # the forecasts were off
    # Straight over the jump, from the accelerator's own snapshot before it: equal to round-off.
    cycle = accelerator.cycle
    accelerator.read_integrator()
    cycle.start()
    cycle.recent_states = [(cycle.current.positions_nm, cycle.current.velocities_nm_ps)]
    before = cycle.current.hamiltonian_kJ
    assert cycle.jump(4, [])
    assert abs(accelerator.stats.dh_kJ[-1]) > 1.0
    assert abs(cycle.current.hamiltonian_kJ - before) < 1e-6
    assert abs(_context_hamiltonian(accelerator) - before) < 1e-4  # OpenMM's own sums (float64, constraints 1e-5)


def test_dynamics_rule_refuses_when_kinetic_energy_would_be_negative(vacuum_system, verlet):
    """Distorted positions raise U by far more than the kinetic energy: no rescaling can keep H."""
    noise = np.random.default_rng(3)
    distorted = Transformed(verlet, lambda x, v: (x + noise.normal(scale=0.006, size=x.shape), v))
    accelerator = _nve_accelerator(vacuum_system, distorted, acceptance="dynamics")
    accelerator.step(25)
    stats = accelerator.stats
    assert stats.jumps_attempted == 1 and stats.rejections["rescale"] == 1, stats.as_dict()
    assert stats.dh_kJ[0] > 100.0  # more than the ~65 kJ/mol of kinetic energy
    assert stats.integrated_ps == pytest.approx(25 * 0.0005)  # the span was integrated instead


def test_dynamics_rule_drift_window(vacuum_system, verlet):
    accelerator = _nve_accelerator(vacuum_system, verlet, acceptance=DynamicsRule(drift_window=2))
    for dh in (3.0, -1.0, 5.0):
        accelerator.cycle.drift_guard.add(dh)
    assert accelerator.drift_kJ == pytest.approx(4.0)  # the last two
    tolerance = _nve_accelerator(vacuum_system, verlet)
    for dh in (3.0, -1.0, 5.0):
        tolerance.cycle.drift_guard.add(dh)
    assert tolerance.drift_kJ == pytest.approx(7.0)  # every accepted jump since the last re-equilibration


def test_rules_by_name_alias_and_a_rule_of_ones_own(vacuum_system, verlet):
    assert isinstance(acceptance_rule("dynamics"), DynamicsRule)
    assert acceptance_rule("tolerance", 2.0).tolerance_kT == 2.0
    with pytest.raises(ValueError, match="unknown acceptance rule"):
        acceptance_rule("greedy")
    with pytest.raises(TypeError, match="AcceptanceRule"):
        acceptance_rule(3)
    assert isinstance(_nve_accelerator(vacuum_system, verlet, metropolis=True).rule, MetropolisRule)
    with pytest.raises(ValueError, match="contradicts"):
        _nve_accelerator(vacuum_system, verlet, metropolis=True, acceptance="dynamics")

    class NoLongJumps(AcceptanceRule):
        """A new rule is a new class: refuse jumps longer than two frames' worth of |dH|... here, everything."""

        name, reasons = "never", ("never",)

        def decide(self, dh_kJ, kinetic_kJ, kT_kJ, rng):
            return Decision("never")

    accelerator = _nve_accelerator(vacuum_system, verlet, acceptance=NoLongJumps())
    accelerator.step(50)
    assert accelerator.stats.rejections["never"] == accelerator.stats.jumps_attempted > 0
    assert accelerator.stats.jumps_accepted == 0 and accelerator.simulation.currentStep == 70
