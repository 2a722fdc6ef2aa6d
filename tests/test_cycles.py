"""The ghmc cycle (openmm_forecast.cycles): exact sampling of a toy with a wrong surrogate, one target energy
per jump, the refresh's centre of mass, the clock and reporters, failures, selection by name.

The toy: four carbon atoms 1 nm apart, each in its own asymmetric double well along x (barrier 2 kT, tilted)
and a harmonic well in y and z, on the Reference platform.  The surrogate that drives the jumps is a
different potential: a lower, untilted, shifted double well and stiffer y/z wells (velocity Verlet at 5 fs,
jumps of 50 fs).  Exact values come from 1D quadrature of the Boltzmann factor.
"""

import dataclasses

import numpy as np
import pytest
from openmm import app, unit

from openmm_forecast import ForecastAccelerator, ForecastWalkers, GHMCCycle, SurrogateForecaster, build_system
from openmm_forecast import _logging
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.acceptance import RULES, Decision, acceptance_rule
from openmm_forecast.cli.benchmark import parse_arm
from openmm_forecast.cycles import ornstein_uhlenbeck
from openmm_forecast.errors import POTENTIAL_EVALUATION_FAILED, PotentialEvaluationError
from openmm_forecast.forecasters import Forecaster
from openmm_forecast.units import kT_kJ
from forecast_helpers import wells_system, wells_topology

N = 4
KT = kT_kJ(300.0)
TARGET = "h*((dx/b)^2-1)^2 + c*dx/b + 0.5*k*(y^2+z^2)"
TARGET_PARAMETERS = dict(h=5.0, b=0.05, c=1.5, k=2000.0)  # kJ/mol, nm, kJ/mol, kJ/mol/nm^2
SURROGATE = "h*(((dx-s)/b)^2-1)^2 + 0.5*k*(y^2+z^2)"
SURROGATE_PARAMETERS = dict(h=4.0, b=0.05, s=0.008, k=2600.0)
CENTRES = np.array([[i, 0.0, 0.0] for i in range(N)], dtype=float)
REFERENCE = mm.Platform.getPlatformByName("Reference")


def exact_double_well():
    """Boltzmann mean of dx (nm) and probability of dx > 0 in the target's x well (quadrature)."""
    x = np.linspace(-0.2, 0.2, 200001)
    h, b, c = (TARGET_PARAMETERS[name] for name in "hbc")
    weight = np.exp(-(h * ((x / b) ** 2 - 1) ** 2 + c * x / b) / KT)
    weight /= weight.sum()
    return float(weight @ x), float(weight[x > 0].sum())


def batch_mean(values, n_batches=25):
    """Mean and its standard error from batch means (the chain's samples are correlated)."""
    batches = np.array([batch.mean() for batch in np.array_split(np.asarray(values), n_batches)])
    return float(np.mean(values)), float(batches.std(ddof=1) / np.sqrt(n_batches))


class AcceptAll(GHMCCycle):
    """Biased control: every finite jump accepted (no Metropolis test)."""

    def decide(self, dh_kJ, kinetic_kJ, kT_kJ, rng):
        return Decision()


class NoReversal(GHMCCycle):
    """Biased control: a rejection restores the pre-jump state without reversing its velocities."""

    def after_rejection(self, accelerator, before, n_frames, reports):
        unreversed = dataclasses.replace(before, velocities_nm_ps=-before.velocities_nm_ps)
        accelerator.keep_reversed(unreversed, n_frames, reports)


class Recording(Forecaster):
    """An inner forecaster that records the velocities it was given (the refreshed ones) and may move far away."""

    def __init__(self, inner, shift_nm=0.0):
        self.inner, self.metadata, self.shift_nm, self.inputs = inner, inner.metadata, shift_nm, []

    def _forecast(self, positions, velocities, n_frames):
        self.inputs.append(velocities[0, -1].copy())
        x, v = self.inner._forecast(positions, velocities, n_frames)
        return x + self.shift_nm, v


class CountingEnergy:
    """PythonForce computation: zero energy and forces; counts every evaluation of the target (fails when told)."""

    def __init__(self):
        self.calls, self.fail = 0, False

    def __call__(self, state):
        self.calls += 1
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if self.fail:
            raise PotentialEvaluationError(f"{POTENTIAL_EVALUATION_FAILED}: SCF not converged (test double)")
        return 0.0, np.zeros(x.shape)


def toy_accelerator(rule, seed=2, extra_force=None, remover=False, integrator=None, forecaster_wrapper=None, **options):
    """The toy target in a Simulation, its surrogate jumps (one frame of 50 fs), and the accelerator."""
    target = wells_system(TARGET, N, **TARGET_PARAMETERS)
    for force in (extra_force, mm.CMMotionRemover() if remover else None):
        if force is not None:
            target.addForce(force)
    forecaster = SurrogateForecaster(
        (wells_system(TARGET, N, **TARGET_PARAMETERS), ["C"] * N), stride_ps=0.05, max_frames=1,
        surrogate=wells_system(SURROGATE, N, **SURROGATE_PARAMETERS), timestep=5 * unit.femtosecond,
    )
    if forecaster_wrapper is not None:
        forecaster = forecaster_wrapper(forecaster)
    integrator = integrator or mm.LangevinMiddleIntegrator(300, 1.0, 0.001)
    simulation = app.Simulation(wells_topology(N), target, integrator, REFERENCE)
    simulation.context.setPositions(CENTRES + [TARGET_PARAMETERS["b"], 0.0, 0.0])
    simulation.context.setVelocitiesToTemperature(300, seed)
    accelerator = ForecastAccelerator(simulation, forecaster, acceptance=rule, seed=seed, temperature_sigmas=None,
                                      progress=False, **options)
    return simulation, accelerator


def state_arrays(simulation):
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    return (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))


# ---- exactness ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule, exact", [
    (GHMCCycle(velocity_memory=0.8), True),
    (AcceptAll(velocity_memory=0.8), False),
    (NoReversal(velocity_memory=0.8), False),
], ids=["ghmc", "accept-all", "no-reversal"])
def test_ghmc_samples_a_tilted_double_well_exactly_with_a_wrong_surrogate(rule, exact):
    """4,000 jumps of 50 fs after 200 of burn-in; statistics over the four particles, errors from 25 batch means.

    The exact chain (acceptance about 0.3) matches <dx> = -0.0237 nm, P(dx > 0) = 0.261, <y^2> = kT/k and
    the kinetic temperature within 4 standard errors (measured with seeds 2, 3, 4: |z| <= 2).  Accepting every
    jump samples roughly the surrogate's untilted well (<dx> about +0.008 nm, P about 0.52: z > 12); keeping
    the velocities of a rejected jump unreversed breaks detailed balance (<dx> about +0.01 to +0.02 nm: z > 12).
    """
    simulation, accelerator = toy_accelerator(rule)
    span = accelerator.stride_steps
    accelerator.step(200 * span)
    displacements, kinetic_kJ = [], []
    for _ in range(4000):
        accelerator.step(span)
        positions, velocities = state_arrays(simulation)
        displacements.append(positions - CENTRES)
        kinetic_kJ.append(0.5 * 12.0 * np.sum(velocities**2))
    displacements = np.array(displacements)
    exact_mean, exact_positive = exact_double_well()
    mean, mean_error = batch_mean(displacements[:, :, 0].mean(axis=1))
    positive, positive_error = batch_mean((displacements[:, :, 0] > 0).mean(axis=1))
    assert mean_error < 0.005 and positive_error < 0.05  # the test has the power to see a bias of 0.02 nm
    z_mean, z_positive = (mean - exact_mean) / mean_error, (positive - exact_positive) / positive_error
    if not exact:
        assert z_mean > 8 and z_positive > 8
        return
    assert abs(z_mean) < 4 and abs(z_positive) < 4
    assert 0.15 < accelerator.stats.as_dict()["acceptance_rate"] < 0.6
    transverse, transverse_error = batch_mean(np.mean(displacements[:, :, 1:] ** 2, axis=(1, 2)) / (KT / 2000.0))
    assert abs(transverse - 1.0) < 4 * transverse_error
    temperature, temperature_error = batch_mean(np.array(kinetic_kJ) / (1.5 * N * KT))  # <K> = 3N/2 kT
    assert temperature_error < 0.03 and abs(temperature - 1.0) < 4 * temperature_error


def test_ornstein_uhlenbeck_keeps_maxwell_boltzmann_and_full_refresh_forgets(rng):
    masses = np.array([1.0, 12.0, 16.0])
    speed = np.sqrt(KT / masses)[:, None]
    velocities = speed * rng.standard_normal((3, 3))
    samples = []
    for _ in range(20000):
        velocities = ornstein_uhlenbeck(velocities, 0.6, speed, rng)
        samples.append(velocities)
    kinetic = 0.5 * masses[:, None] * np.square(samples)  # per atom and component: kT/2 on average
    assert np.allclose(kinetic.mean(axis=0) / (0.5 * KT), 1.0, atol=0.08)
    fresh = ornstein_uhlenbeck(velocities, 0.0, speed, np.random.default_rng(1))
    again = ornstein_uhlenbeck(-velocities, 0.0, speed, np.random.default_rng(1))
    assert np.array_equal(fresh, again)  # a = 0 keeps nothing of the old velocities


# ---- cost: one target energy per jump ----------------------------------------------------------------------


@pytest.mark.parametrize("integrator, options", [
    (lambda: mm.LangevinMiddleIntegrator(300, 1.0, 0.001), {}),
    (lambda: mm.VerletIntegrator(0.001), {"temperature": 300 * unit.kelvin}),
], ids=["langevin-middle", "verlet"])
def test_exactly_one_target_evaluation_per_jump_and_none_per_step_call(integrator, options, caplog, monkeypatch):
    """Counted inside the potential (a PythonForce), so hidden evaluations count too.  A VerletIntegrator's
    kinetic energy needs forces, so its energy reads cost forces (a warning says so; still one call)."""
    monkeypatch.setattr(_logging, "_warned", set())  # warnings once per process: see this one
    counter = CountingEnergy()
    with caplog.at_level("WARNING", logger="openmm_forecast.accelerator"):
        simulation, accelerator = toy_accelerator(GHMCCycle(), extra_force=mm.PythonForce(counter),
                                                  integrator=integrator(), **options)
    assert ("kinetic energy of a VerletIntegrator" in caplog.text) == ("temperature" in options)
    evaluations_at_start = counter.calls  # building the Simulation and the accelerator
    accelerator.step(3 * accelerator.stride_steps)  # one evaluation of the start state, then three jumps
    assert counter.calls - evaluations_at_start == 1 + 3
    for _ in range(5):  # later calls reuse the current state's energy: only the jumps evaluate
        accelerator.step(2 * accelerator.stride_steps)
    stats = accelerator.stats
    assert stats.jumps_attempted == 13 and counter.calls - evaluations_at_start == 1 + 13
    assert 0 < stats.jumps_accepted < 13 and stats.wall_s["integration"] == 0.0 and stats.integrated_ps == 0.0
    # A Context changed between calls is read again.
    positions, _ = state_arrays(simulation)
    simulation.context.setPositions(positions + 0.001)
    accelerator.step(accelerator.stride_steps)
    assert counter.calls - evaluations_at_start == 1 + 13 + 1 + 1


# ---- the refresh and the centre of mass ------------------------------------------------------------------


@pytest.mark.parametrize("remover", [True, False], ids=["cm-remover", "no-remover"])
def test_refreshed_velocities_carry_no_centre_of_mass_momentum_with_a_remover(remover):
    """The velocities the surrogate starts from, after each refresh: total momentum zero with a CMMotionRemover."""
    recorder = []

    def wrap(forecaster):
        recorder.append(Recording(forecaster))
        return recorder[0]

    simulation, accelerator = toy_accelerator(GHMCCycle(velocity_memory=0.5), remover=remover, forecaster_wrapper=wrap)
    accelerator.step(20 * accelerator.stride_steps)
    momenta = np.array([12.0 * velocities.sum(axis=0) for velocities in recorder[0].inputs[1:]])  # amu nm/ps
    thermal = np.sqrt(N * 12.0 * KT)  # standard deviation of a total momentum component from fresh noise
    if remover:  # (the toy's external wells do not conserve momentum: only the refresh is checked)
        assert np.abs(momenta).max() < 1e-9 * thermal
    else:  # the test sees a remover-free refresh: fresh noise has a total momentum of thermal size
        assert np.abs(momenta).max() > 0.3 * thermal


def test_velocity_decay_from_the_friction_or_the_option():
    span_ps = 0.5
    assert GHMCCycle().velocity_decay(2.0, span_ps) == pytest.approx(np.exp(-1.0))
    assert GHMCCycle().velocity_decay(0.0, span_ps) == 0.0  # no friction: a full refresh (HMC)
    assert GHMCCycle(velocity_memory=0.3).velocity_decay(2.0, span_ps) == 0.3
    for bad in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="velocity_memory"):
            GHMCCycle(velocity_memory=bad)


# ---- clock, reporters, failures ------------------------------------------------------------------------------


class StepReporter:
    """Records the step and time of every report (positions requested)."""

    def __init__(self, interval):
        self.interval, self.steps, self.times_ps, self.positions = interval, [], [], []

    def describeNextReport(self, simulation):
        return {"steps": self.interval - simulation.currentStep % self.interval, "periodic": None,
                "include": ["positions"]}

    def report(self, simulation, state):
        self.steps.append(simulation.currentStep)
        self.times_ps.append(state.getTime().value_in_unit(unit.picosecond))
        self.positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def test_every_jump_advances_the_clock_and_reports_fall_on_their_steps():
    simulation, accelerator = toy_accelerator(GHMCCycle())  # jumps of 50 steps of 1 fs
    reporter = StepReporter(120)  # not a multiple of the jump: 50, 50, then 20 steps kept
    simulation.reporters.append(reporter)
    accelerator.step(360)
    stats = accelerator.stats
    assert simulation.currentStep == 360 and simulation.context.getState().getTime().value_in_unit(
        unit.picosecond) == pytest.approx(0.36)
    assert reporter.steps == [120, 240, 360]
    assert reporter.times_ps == pytest.approx([0.12, 0.24, 0.36])
    assert stats.jumps_attempted == 6 and 0 < stats.jumps_accepted < 6
    assert stats.jumped_ps + stats.kept_ps == pytest.approx(0.36) and stats.integrated_ps == 0.0
    assert np.array_equal(reporter.positions[-1], state_arrays(simulation)[0])


def test_a_target_that_fails_at_every_candidate_rejects_every_jump_and_never_crashes():
    counter = CountingEnergy()
    simulation, accelerator = toy_accelerator(GHMCCycle(velocity_memory=1.0), extra_force=mm.PythonForce(counter))
    start_positions, start_velocities = state_arrays(simulation)
    accelerator.step(0)  # reads the start state's energy
    counter.fail = True
    accelerator.step(3 * accelerator.stride_steps)
    stats = accelerator.stats
    assert stats.jumps_attempted == 3 and stats.jumps_accepted == 0 and stats.rejections["evaluation"] == 3
    assert simulation.currentStep == 3 * accelerator.stride_steps
    positions, velocities = state_arrays(simulation)
    assert np.array_equal(positions, start_positions)
    assert np.allclose(velocities, -start_velocities, rtol=0, atol=1e-12)  # a = 1: three reversals


def test_nan_proposals_are_rejected_and_the_chain_goes_on():
    def wrap(forecaster):
        return Recording(forecaster, shift_nm=np.nan)

    simulation, accelerator = toy_accelerator(GHMCCycle(), forecaster_wrapper=wrap)
    start_positions, _ = state_arrays(simulation)
    accelerator.step(4 * accelerator.stride_steps)
    assert accelerator.stats.jumps_accepted == 0 and simulation.currentStep == 4 * accelerator.stride_steps
    assert np.array_equal(state_arrays(simulation)[0], start_positions)


# ---- selection ------------------------------------------------------------------------------------------------


def test_ghmc_is_an_acceptance_rule_by_name_for_accelerators_and_benchmark_arms():
    assert RULES["ghmc"] is GHMCCycle and isinstance(acceptance_rule("ghmc"), GHMCCycle)
    assert parse_arm("surrogate:ghmc@498", "tolerance") == ("surrogate-ghmc-498fs", "surrogate", "ghmc", 498.0, "python")
    with pytest.raises(ValueError, match="segment_steps"):
        toy_accelerator("ghmc", segment_steps=1)


def test_forecast_walkers_run_the_ghmc_cycle_without_integrating():
    system = build_system("amber14-vacuum")
    walkers = ForecastWalkers(system, "surrogate", 2, platform="Reference", acceptance="ghmc", max_frames=1,
                              forecaster_options={"stride_ps": 0.02, "max_frames": 1})
    walkers.step(25)  # two jumps of 10 steps each, then 5 steps kept
    stats = walkers.stats()
    assert [w.simulation.currentStep for w in walkers.walkers] == [25, 25]
    assert stats.jumps_attempted == 4 and stats.integrated_ps == 0.0 and stats.jumps_accepted >= 1
    assert stats.kept_ps + stats.jumped_ps == pytest.approx(2 * 0.050)  # 25 steps of 2 fs per walker
