"""ForecastAccelerator: exactness against plain MD, guards in the loop, clock and reporters, checkpoints, errors.

Systems: amber14-vacuum alanine dipeptide (HBonds) on the Reference platform.  Two simulations:
velocity Verlet NVE at 0.5 fs (the ``verlet`` baseline at the same step then reproduces plain
integration exactly), and the setup's LangevinMiddleIntegrator at 2 fs.
"""

import dataclasses
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile

import mdtraj
import numpy as np
import pytest
from openmm import app, unit

import openmm_forecast
from openmm_forecast import (
    BadForecastError,
    CheckpointError,
    ForecastAccelerator,
    ModelMismatchError,
    UnitError,
    UnsupportedSystemError,
    build_system,
)
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.checkpoint import write_checkpoint
from openmm_forecast.forecasters import ConstantForecaster, Forecaster, VerletForecaster
from openmm_forecast.integrators import velocity_verlet_integrator
from openmm_forecast.units import kT_kJ
from forecast_helpers import FailsFarAway, wells_system, wells_topology

VV_STEP = 0.5 * unit.femtosecond
VV_STRIDE_PS = 0.0025  # 5 steps of 0.5 fs
REFERENCE = mm.Platform.getPlatformByName("Reference")


# ---- test doubles ---------------------------------------------------------------------------------


class Transformed(Forecaster):
    """An inner forecaster whose output passes through ``transform(call, positions, velocities)``."""

    def __init__(self, inner, transform):
        self.inner, self.transform, self.metadata, self.calls = inner, transform, inner.metadata, 0

    def _forecast(self, positions, velocities, n_frames):
        x, v = self.inner._forecast(positions, velocities, n_frames)
        self.calls += 1
        return self.transform(self.calls, x, v)


def nan_output(call, x, v):
    return x * np.nan, v


def random_output(call, x, v):
    rng = np.random.default_rng(call)
    return rng.uniform(-1.0, 1.0, size=x.shape), rng.normal(size=v.shape)


def flaky_output(call, x, v):
    """Every third forecast is NaN, the others are exact."""
    return (x * np.nan, v) if call % 3 == 0 else (x, v)


class RecordingReporter:
    """Records step, time, positions and velocities at every report; ``tuple_style`` uses the old protocol."""

    def __init__(self, interval, tuple_style=False):
        self.interval, self.tuple_style = interval, tuple_style
        self.steps, self.times_ps, self.positions, self.velocities = [], [], [], []

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        if self.tuple_style:
            return (steps, True, True, False, False)
        return {"steps": steps, "periodic": None, "include": ["positions", "velocities"]}

    def report(self, simulation, state):
        self.steps.append(simulation.currentStep)
        self.times_ps.append(state.getTime().value_in_unit(unit.picosecond))
        self.positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        self.velocities.append(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def system(vacuum_system):
    return vacuum_system


def vv_simulation(system, seed=1):
    return system.create_simulation(platform="Reference", seed=seed, integrator=velocity_verlet_integrator(VV_STEP))


def langevin_simulation(system, seed=1, equilibrate=0):
    simulation = system.create_simulation(platform="Reference", seed=seed)
    simulation.step(equilibrate)
    return simulation


@pytest.fixture(scope="module")
def vv_verlet(system):
    """The verlet baseline at the velocity Verlet simulation's own step: 4 frames of 2.5 fs."""
    return VerletForecaster(system, stride_ps=VV_STRIDE_PS, max_frames=4, timestep=VV_STEP)


@pytest.fixture(scope="module")
def langevin_verlet(system):
    """The verlet baseline (0.25 fs inside) for the 2 fs Langevin simulation: 8 frames of 10 fs."""
    return VerletForecaster(system, stride_ps=0.01, max_frames=8)


def positions_nm(simulation):
    return simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def velocities_nm_ps(simulation):
    state = simulation.context.getState(getVelocities=True)
    return state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)


# ---- exactness and the energy guard ---------------------------------------------------------------


def test_verlet_forecaster_reproduces_plain_velocity_verlet(system, vv_verlet):
    plain = vv_simulation(system)
    plain.step(400)
    simulation = vv_simulation(system)
    accelerator = ForecastAccelerator(simulation, vv_verlet, molecular_system=system, progress=False)
    accelerator.step(400)
    stats = accelerator.stats
    assert simulation.currentStep == 400
    assert stats.jumps_attempted >= 10 and stats.jumps_accepted == stats.jumps_attempted
    assert stats.jumped_ps > 0.8 * 400 * 0.0005  # most of the 0.2 ps was covered by jumps
    assert stats.jumped_ps + stats.integrated_ps == pytest.approx(0.2)
    # Same dynamics, same step: the accelerated trajectory is the plain one up to round-off.
    assert np.abs(positions_nm(simulation) - positions_nm(plain)).max() < 1e-9
    assert np.abs(velocities_nm_ps(simulation) - velocities_nm_ps(plain)).max() < 1e-6
    assert simulation.context.getTime().value_in_unit(unit.picosecond) == pytest.approx(0.2, abs=1e-12)


class HistoryTwo(Forecaster):
    """Reads two states (history 2) and records them with the step they were given at; forecasts from the last."""

    def __init__(self, inner, simulation):
        self.inner, self.simulation, self.inputs = inner, simulation, []
        self.metadata = dataclasses.replace(inner.metadata, history=2)

    def _forecast(self, positions, velocities, n_frames):
        self.inputs.append((self.simulation.currentStep, positions[0].copy()))
        return self.inner._forecast(positions[:, -1:], velocities[:, -1:], n_frames)


def test_history_frames_are_the_states_one_stride_apart(system, vv_verlet):
    plain = vv_simulation(system)
    trajectory = RecordingReporter(1)
    plain.reporters.append(trajectory)
    start = positions_nm(plain)
    plain.step(300)
    states = {0: start, **dict(zip(trajectory.steps, trajectory.positions))}
    simulation = vv_simulation(system)
    forecaster = HistoryTwo(vv_verlet, simulation)
    accelerator = ForecastAccelerator(simulation, forecaster, molecular_system=system, progress=False)
    assert accelerator.segment_steps == 5  # one stride: the history needs the state one stride back
    accelerator.step(300)
    assert accelerator.stats.jumps_accepted == accelerator.stats.jumps_attempted == len(forecaster.inputs) >= 10
    for step, (previous, current) in forecaster.inputs:
        assert np.abs(current - states[step]).max() < 1e-9
        assert np.abs(previous - states[step - 5]).max() < 1e-9
    # Cycles of 85 steps (a 5-step segment, four 4-frame jumps): jumps after the first of a cycle read an
    # intermediate forecast frame as their previous state.
    assert any((step - 5) % 85 for step, _ in forecaster.inputs)


def test_intermediate_frames_enter_the_history_projected_onto_the_constraints(system, vv_verlet):
    def off_constraints(call, x, v):
        x, v = x.copy(), v.copy()
        rng = np.random.default_rng(call)
        x[:, :-1] += rng.normal(scale=2e-4, size=x[:, :-1].shape)  # every frame but the last: 1e-3 relative
        v[:, :-1] += rng.normal(scale=0.05, size=v[:, :-1].shape)
        return x, v

    simulation = vv_simulation(system)
    forecaster = HistoryTwo(Transformed(vv_verlet, off_constraints), simulation)
    accelerator = ForecastAccelerator(simulation, forecaster, molecular_system=system, progress=False,
                                      energy_tolerance_kT=1000.0)
    accelerator.step(300)
    pairs = np.array([system.system.getConstraintParameters(i)[:2] for i in range(system.system.getNumConstraints())])
    lengths = np.array([system.system.getConstraintParameters(i)[2].value_in_unit(unit.nanometer)
                        for i in range(system.system.getNumConstraints())])
    previous_frames = [previous for _, (previous, _) in forecaster.inputs]
    assert len(previous_frames) >= 10
    for previous in previous_frames:
        distances = np.linalg.norm(previous[pairs[:, 0]] - previous[pairs[:, 1]], axis=1)
        np.testing.assert_allclose(distances, lengths, rtol=1e-4)
    assert any((step - 5) % 85 for step, _ in forecaster.inputs)  # some previous frames were intermediate ones
    # The Context holds the accepted state, not a projected intermediate frame.
    assert simulation.currentStep == 300


class InterruptingContext:
    """Delegates to a Context; the ``interrupt_at``-th ``applyConstraints`` raises KeyboardInterrupt."""

    def __init__(self, context, interrupt_at):
        self._context, self._interrupt_at, self.calls = context, interrupt_at, 0

    def applyConstraints(self, tolerance):
        self.calls += 1
        if self.calls == self._interrupt_at:
            raise KeyboardInterrupt
        return self._context.applyConstraints(tolerance)

    def __getattr__(self, name):
        return getattr(self._context, name)


def test_a_jump_interrupted_while_projecting_its_frames_is_undone_whole(system, vv_verlet):
    simulation = vv_simulation(system)
    forecaster = HistoryTwo(vv_verlet, simulation)
    accelerator = ForecastAccelerator(simulation, forecaster, molecular_system=system, progress=False)
    real_context = simulation.context
    # Call 1 projects the first jump's candidate, call 2 its first intermediate frame.
    simulation.context = InterruptingContext(real_context, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        accelerator.step(100)
    simulation.context = real_context
    assert forecaster.inputs[0][0] == 5 and accelerator.stats.jumps_accepted == 0  # after the 5-step segment
    plain = vv_simulation(system)
    plain.step(5)
    assert simulation.currentStep == 5
    np.testing.assert_array_equal(positions_nm(simulation), positions_nm(plain))
    np.testing.assert_array_equal(velocities_nm_ps(simulation), velocities_nm_ps(plain))
    accelerator.step(95)  # and the run goes on
    assert simulation.currentStep == 100 and accelerator.stats.jumps_accepted >= 1


def test_leapfrog_velocities_are_synchronised_for_the_forecaster(system, vv_verlet):
    """OpenMM's VerletIntegrator (leapfrog) and velocity Verlet give the same positions: so must the accelerator.

    Leapfrog velocities lag the positions by half a step; the accelerator advances them by half a kick
    before forecasting and puts them back half a kick after.  Without that the trajectories part by ~1e-3 nm.
    """
    plain = system.create_simulation(platform="Reference", seed=1, integrator=mm.VerletIntegrator(VV_STEP))
    plain.step(400)
    simulation = system.create_simulation(platform="Reference", seed=1, integrator=mm.VerletIntegrator(VV_STEP))
    accelerator = ForecastAccelerator(simulation, vv_verlet, molecular_system=system, progress=False)
    accelerator.step(400)
    assert accelerator.stats.jumps_accepted == accelerator.stats.jumps_attempted >= 10
    assert np.abs(positions_nm(simulation) - positions_nm(plain)).max() < 1e-5  # constraint tolerance


def test_verlet_forecaster_with_langevin_accepts_every_jump_and_keeps_temperature(system, langevin_verlet):
    simulation = langevin_simulation(system, seed=2, equilibrate=2500)  # 5 ps at 300 K
    temperature = RecordingReporter(20)
    simulation.reporters.append(temperature)
    accelerator = ForecastAccelerator(simulation, langevin_verlet, molecular_system=system, progress=False)
    accelerator.step(1500)
    stats = accelerator.stats
    assert stats.jumps_attempted >= 20 and stats.jumps_accepted == stats.jumps_attempted
    # The verlet map conserves H: |dH| far below the 1 kT tolerance once velocities are synchronised.
    assert np.abs(stats.dh_kJ).max() < 0.3 * kT_kJ(300.0)
    kinetic = [0.5 * np.sum(system.masses[:, None] * v**2) for v in temperature.velocities]
    mean_temperature = 2 * np.mean(kinetic) / (accelerator.dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
        unit.kilojoule_per_mole / unit.kelvin))
    assert 200 < mean_temperature < 400
    assert stats.reequilibrations == 0


def test_annealing_between_calls_reaches_the_jumps(system, langevin_verlet):
    """setTemperature/setFriction after construction: the thermostat step of the jumps follows the integrator."""
    simulation = langevin_simulation(system, seed=3)
    accelerator = ForecastAccelerator(simulation, langevin_verlet, molecular_system=system, progress=False)
    simulation.integrator.setTemperature(500 * unit.kelvin)
    simulation.integrator.setFriction(20 / unit.picosecond)
    accelerator.step(500)  # 1 ps: many relaxation times (0.05 ps) at 500 K
    assert accelerator.temperature_K == pytest.approx(500.0) and accelerator.kT_kJ == pytest.approx(kT_kJ(500.0))
    assert accelerator.friction_per_ps == pytest.approx(20.0)
    temperature = RecordingReporter(20)
    simulation.reporters.append(temperature)
    accelerator.step(1500)
    stats = accelerator.stats
    assert stats.jumped_ps > 0.8 * (stats.jumped_ps + stats.integrated_ps)  # the jumps' thermostat dominates
    kinetic = [0.5 * np.sum(system.masses[:, None] * v**2) for v in temperature.velocities]
    mean_temperature = 2 * np.mean(kinetic) / (accelerator.dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
        unit.kilojoule_per_mole / unit.kelvin))
    assert 420 < mean_temperature < 580  # about 6 standard errors; jumps thermostatted at 300 K give ~320 K


def test_a_new_step_size_applies_to_the_clock_or_is_refused(system):
    simulation = langevin_simulation(system)
    accelerator = ForecastAccelerator(simulation, "verlet", molecular_system=system, progress=False,
                                      forecaster_options={"stride_ps": 0.01, "max_frames": 4})
    simulation.integrator.setStepSize(1 * unit.femtosecond)
    accelerator.step(1000)
    stats = accelerator.stats
    assert simulation.currentStep == 1000 and accelerator.stride_steps == 10
    assert simulation.context.getTime().value_in_unit(unit.picosecond) == pytest.approx(1.0, abs=1e-9)
    assert stats.jumped_ps + stats.integrated_ps == pytest.approx(1.0) and stats.jumps_accepted > 0
    simulation.integrator.setStepSize(3 * unit.femtosecond)  # 10 fs is not a whole number of 3 fs steps
    with pytest.raises(UnsupportedSystemError, match="stride"):
        accelerator.step(10)
    assert simulation.currentStep == 1000 and accelerator.timestep_ps == pytest.approx(0.001)


def test_a_temperature_option_that_contradicts_the_thermostat_is_refused(system, langevin_verlet):
    with pytest.raises(ValueError, match="differs from the integrator's"):
        ForecastAccelerator(langevin_simulation(system), langevin_verlet, molecular_system=system,
                            temperature=310 * unit.kelvin)
    same = ForecastAccelerator(langevin_simulation(system), langevin_verlet, molecular_system=system,
                               temperature=300 * unit.kelvin, progress=False)
    assert same.temperature_K == pytest.approx(300.0)


def total_energy_kJ(simulation):
    state = simulation.context.getState(getEnergy=True)
    return (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)


def test_nve_drift_is_kept_within_its_bound_and_the_run_goes_on_as_plain_md(system, vv_verlet, caplog):
    """Without a thermostat a re-equilibration cannot remove energy: the drift must not be forgotten."""
    simulation = vv_simulation(system)
    heated = Transformed(vv_verlet, lambda call, x, v: (x, 1.01 * v))  # each jump +0.5 kT: accepted
    accelerator = ForecastAccelerator(simulation, heated, molecular_system=system, progress=False)
    start = total_energy_kJ(simulation)
    with caplog.at_level(logging.WARNING, logger="openmm_forecast.accelerator"):
        accelerator.step(3000)
    assert "no thermostat" in caplog.text
    attempted, reequilibrations = accelerator.stats.jumps_attempted, accelerator.stats.reequilibrations
    accelerator.step(2000)
    assert accelerator.stats.jumps_attempted == attempted  # plain MD from then on,
    assert accelerator.stats.reequilibrations == reequilibrations  # not counted (or logged) as maintenance
    kT = accelerator.kT_kJ
    # Accepted jumps add at most drift_tolerance + one jump's tolerance; velocity Verlet at 0.5 fs adds ~0.
    assert abs(total_energy_kJ(simulation) - start) < (5 + 1) * kT + 0.5


def test_which_integrators_count_as_thermostatted(system, vv_verlet):
    def thermostatted(integrator, **options):
        simulation = system.create_simulation(platform="Reference", integrator=integrator, minimize=False)
        return ForecastAccelerator(simulation, vv_verlet, molecular_system=system, progress=False,
                                   **options).cycle.thermostatted

    assert thermostatted(mm.LangevinMiddleIntegrator(300, 1.0, VV_STEP))
    assert not thermostatted(mm.LangevinMiddleIntegrator(300, 0.0, VV_STEP))  # no friction: NVE
    assert not thermostatted(mm.VerletIntegrator(VV_STEP))
    assert not thermostatted(velocity_verlet_integrator(VV_STEP))

    def custom():  # a vouched-for custom integrator is presumed to thermalise
        integrator = mm.CustomIntegrator(VV_STEP)
        integrator.addUpdateContextState()
        integrator.addComputePerDof("v", "v + dt*f/m")
        integrator.addComputePerDof("x", "x + dt*v")
        return integrator

    assert thermostatted(custom(), allow_custom_integrator=True)
    assert not thermostatted(custom(), allow_custom_integrator=True, thermostatted=False)


def test_garbage_forecasts_are_all_rejected_and_the_run_is_plain_md(system):
    # Garbage from NumPy alone: on the Reference platform every Context shares one random stream, so a
    # forecaster that steps its own Context (the verlet baseline) would change the thermostat's noise.
    plain = langevin_simulation(system, seed=4)
    plain.step(300)
    constant = ConstantForecaster(system.elements, 0.01, max_frames=8)
    for transform, reasons in ((nan_output, {"nonfinite"}), (random_output, {"clash", "bond", "chirality", "energy"})):
        simulation = langevin_simulation(system, seed=4)
        reporter = RecordingReporter(10)
        simulation.reporters.append(reporter)
        forecaster = Transformed(constant, transform)
        accelerator = ForecastAccelerator(simulation, forecaster, molecular_system=system, progress=False)
        accelerator.step(300)
        stats = accelerator.stats
        assert forecaster.calls == stats.jumps_attempted >= 5
        assert stats.jumps_accepted == 0
        assert sum(stats.rejections.values()) == stats.jumps_attempted
        assert {reason for reason, count in stats.rejections.items() if count} <= reasons
        assert stats.jumped_ps == 0 and stats.integrated_ps == pytest.approx(0.6)
        # Rejections restore the exact state, and the thermostat's random stream is untouched.
        assert np.array_equal(positions_nm(simulation), positions_nm(plain))
        assert reporter.steps == list(range(10, 301, 10))
        assert all(np.isfinite(x).all() for x in reporter.positions)


@pytest.mark.parametrize(
    "transform, reason",
    [
        (lambda call, x, v: (-x, -v), "chirality"),  # the mirror image: same energy, inverted CA
        (lambda call, x, v: (x, 1.3 * v), "energy"),  # 69 % more kinetic energy
    ],
    ids=["mirror", "heated"],
)
def test_guard_reasons_in_the_loop(system, langevin_verlet, transform, reason):
    simulation = langevin_simulation(system, seed=5)
    accelerator = ForecastAccelerator(
        simulation, Transformed(langevin_verlet, transform), molecular_system=system, progress=False
    )
    accelerator.step(200)
    assert accelerator.stats.jumps_attempted > 0
    assert accelerator.stats.rejections[reason] == accelerator.stats.jumps_attempted


def test_span_adapts_down_after_rejections_and_up_after_acceptances(system, langevin_verlet):
    simulation = langevin_simulation(system, seed=6)
    forecaster = Transformed(langevin_verlet, lambda call, x, v: (x * np.nan, v) if call <= 3 else (x, v))
    accelerator = ForecastAccelerator(simulation, forecaster, molecular_system=system, progress=False, grow_after=2)
    accelerator.step(85)  # 3 cycles: 5 steps, a rejected jump of 8, 4, then 2 frames (40, 20, 10 steps)
    assert accelerator.stats.rejections["nonfinite"] == 3
    assert accelerator.span_frames == 1
    accelerator.step(400)
    assert accelerator.span_frames == 8
    attempted = accelerator.stats.attempted_by_frames
    assert {1, 2, 4, 8} <= set(attempted)


# ---- clock and reporters ------------------------------------------------------------------------------


def run_plain_and_accelerated(system, vv_verlet, add_reporters, chunks=(400,)):
    """Velocity Verlet for ``sum(chunks)`` steps, plain and accelerated by the exact forecaster with every third
    forecast NaN (accepted and rejected jumps mixed, ``step`` called once per chunk).

    ``add_reporters(simulation, name)`` attaches reporters and returns what the test reads afterwards;
    returns ``{'plain': ..., 'accelerated': ...}`` of those.  The Simulations are deleted (closing DCD files).
    """
    runs = {}
    for name in ("plain", "accelerated"):
        simulation = vv_simulation(system)
        runs[name] = add_reporters(simulation, name)
        if name == "plain":
            simulation.step(sum(chunks))
        else:
            accelerator = ForecastAccelerator(
                simulation, Transformed(vv_verlet, flaky_output), molecular_system=system, progress=False
            )
            for n_steps in chunks:
                accelerator.step(n_steps)
            stats = accelerator.stats
            assert stats.jumps_accepted >= 5 and stats.rejections["nonfinite"] >= 3
        assert simulation.currentStep == sum(chunks)
        del simulation
    return runs


def test_reporters_and_clock_exact_after_mixed_jumps(system, vv_verlet, tmp_path):
    """Plain and accelerated velocity Verlet give the same trajectory; reporters must see the same frames."""

    def add_reporters(simulation, name):
        every_10, every_7 = RecordingReporter(10), RecordingReporter(7, tuple_style=True)
        dcd_path = str(tmp_path / f"{name}.dcd")
        simulation.reporters += [every_10, every_7, app.DCDReporter(dcd_path, 20)]
        return every_10, every_7, dcd_path

    runs = run_plain_and_accelerated(system, vv_verlet, add_reporters, chunks=(150, 250))
    plain, accelerated = runs["plain"], runs["accelerated"]
    for k, interval in enumerate((10, 7)):
        expected_steps = list(range(interval, 401, interval))
        assert accelerated[k].steps == expected_steps == plain[k].steps
        assert np.allclose(accelerated[k].times_ps, np.array(expected_steps) * 0.0005, atol=1e-12, rtol=0)
        assert np.abs(np.array(accelerated[k].positions) - np.array(plain[k].positions)).max() < 1e-9

    topology = mdtraj.Topology.from_openmm(system.topology)
    traj = mdtraj.load(accelerated[2], top=topology)
    assert traj.n_frames == 20
    assert np.allclose(traj.xyz, np.array(plain[0].positions)[1::2], atol=1e-5)  # steps 20, 40, ..., 400
    assert np.array_equal(traj.xyz, mdtraj.load(plain[2], top=topology).xyz)
    with open(accelerated[2], "rb") as handle:
        n_frames, first_step, interval = struct.unpack("<3i", handle.read(20)[8:20])
    assert (n_frames, first_step, interval) == (20, 20, 20)


def test_mdtraj_hdf5_reporter_gets_the_plain_runs_frames(system, vv_verlet, tmp_path):
    """mdtraj's HDF5Reporter (coordinates, time, energies, velocities) through accepted and rejected jumps."""
    pytest.importorskip("tables", reason="mdtraj's HDF5Reporter needs PyTables (the [test] extra installs it)")
    from mdtraj.reporters import HDF5Reporter

    def add_reporters(simulation, name):
        path = str(tmp_path / f"{name}.h5")
        reporter = HDF5Reporter(path, 20, velocities=True)
        simulation.reporters.append(reporter)
        return path, reporter

    runs = run_plain_and_accelerated(system, vv_verlet, add_reporters)
    files = {}
    for name, (path, reporter) in runs.items():
        reporter.close()
        files[name] = path

    with mdtraj.formats.HDF5TrajectoryFile(files["plain"]) as handle:
        plain = handle.read()
    with mdtraj.formats.HDF5TrajectoryFile(files["accelerated"]) as handle:
        accelerated = handle.read()
    assert len(accelerated.coordinates) == 20
    np.testing.assert_allclose(accelerated.time, np.arange(20, 401, 20) * 0.0005, atol=1e-9)
    np.testing.assert_allclose(accelerated.coordinates, plain.coordinates, atol=1e-5)
    np.testing.assert_allclose(accelerated.velocities, plain.velocities, atol=1e-4)
    for field in ("potentialEnergy", "kineticEnergy", "temperature"):
        values = getattr(accelerated, field)
        assert np.isfinite(values).all(), field
        np.testing.assert_allclose(values, getattr(plain, field), atol=1e-3, err_msg=field)


def test_run_for_and_step_arguments(system, langevin_verlet):
    simulation = langevin_simulation(system)
    accelerator = ForecastAccelerator(simulation, langevin_verlet, molecular_system=system, progress=False)
    accelerator.run_for(0.1 * unit.picosecond)
    assert simulation.currentStep == 50
    accelerator.step(0)
    assert simulation.currentStep == 50
    with pytest.raises(ValueError, match="whole number of time steps"):
        accelerator.run_for(0.0033 * unit.picosecond)
    with pytest.raises(UnitError):
        accelerator.run_for(0.1)
    with pytest.raises(ValueError, match="n_steps"):
        accelerator.step(-5)


# ---- maintenance and the Metropolis mode ---------------------------------------------------------------


def test_accumulated_drift_triggers_reequilibration(system, langevin_verlet):
    simulation = langevin_simulation(system, seed=7, equilibrate=500)
    # 1.5 % faster velocities: about +0.4 kT per jump, accepted, but it accumulates.
    heated = Transformed(langevin_verlet, lambda call, x, v: (x, 1.015 * v))
    accelerator = ForecastAccelerator(
        simulation, heated, molecular_system=system, progress=False, reequilibration_steps=100, drift_tolerance_kT=3.0
    )
    accelerator.step(1500)
    stats = accelerator.stats
    assert stats.jumps_accepted > 10
    assert np.mean(stats.dh_kJ) > 0
    assert stats.reequilibrations >= 2
    assert accelerator.drift_kJ <= 3.0 * accelerator.kT_kJ + max(stats.dh_kJ)


def test_jumps_are_thermostatted_so_a_cold_start_reaches_the_target_temperature(system, langevin_verlet):
    """With ~90 % of the time covered by (energy-conserving) jumps, the Langevin thermostat must still act
    on all simulated time: each accepted jump is followed by the exact Ornstein-Uhlenbeck step for its span."""

    def late_temperature(thermostat_jumps):
        simulation = langevin_simulation(system, seed=4, equilibrate=1000)
        simulation.context.setVelocitiesToTemperature(100 * unit.kelvin, 5)
        accelerator = ForecastAccelerator(
            simulation, langevin_verlet, molecular_system=system, progress=False, seed=3,
            thermostat_jumps=thermostat_jumps, temperature_sigmas=None, reequilibration_steps=0,
        )
        temperatures = []
        for _ in range(100):  # 10 ps
            accelerator.step(50)
            temperatures.append(accelerator.kinetic_temperature_K())
        assert accelerator.stats.jumped_ps > 0.8 * 10.0
        return np.mean(temperatures[50:])

    thermostatted, unthermostatted = late_temperature(True), late_temperature(False)
    # 50 samples of T (sd ~ 300 K * sqrt(2/51) = 59 K, correlated over ~0.5 ps): +-45 K is ~3 standard errors.
    assert 255.0 < thermostatted < 345.0
    # Friction on the integrated ~10 % only relaxes the kinetic energy ~10x more slowly: still cold.
    assert thermostatted - unthermostatted > 25.0


def test_cold_start_is_reequilibrated_before_any_jump(system, langevin_verlet):
    simulation = langevin_simulation(system)
    simulation.context.setVelocities(np.zeros((system.n_atoms, 3)))
    accelerator = ForecastAccelerator(
        simulation, langevin_verlet, molecular_system=system, progress=False, reequilibration_steps=20
    )
    accelerator.step(20)
    assert accelerator.stats.reequilibrations == 1 and accelerator.stats.jumps_attempted == 0
    assert accelerator.stats.integrated_ps == pytest.approx(0.04)


def test_metropolis_rejection_keeps_the_configuration_and_reverses_velocities(system, vv_verlet):
    plain = vv_simulation(system)
    plain.step(5)
    simulation = vv_simulation(system)
    x0, v0 = positions_nm(simulation), velocities_nm_ps(simulation)
    hopeless = Transformed(vv_verlet, lambda call, x, v: (x, 3.0 * v))
    accelerator = ForecastAccelerator(
        simulation, hopeless, molecular_system=system, progress=False, metropolis=True, seed=1,
        initial_frames=1, segment_steps=5, jumps_per_cycle=1,
    )
    accelerator.step(10)  # 5 steps, then a rejected 1-frame (5-step) jump
    assert accelerator.stats.rejections["metropolis"] == 1 and accelerator.span_frames == 1  # span fixed
    assert simulation.currentStep == 10 and accelerator.stats.kept_ps == pytest.approx(0.0025)
    assert np.array_equal(positions_nm(simulation), positions_nm(plain))
    assert np.array_equal(velocities_nm_ps(simulation), -velocities_nm_ps(plain))
    # NVE velocity Verlet is time-reversible: the next 5 steps run back to the start.
    accelerator.step(5)
    assert np.abs(positions_nm(simulation) - x0).max() < 1e-6
    # The centre-of-mass motion remover took out the initial centre-of-mass velocity (not reversible).
    v1, masses = velocities_nm_ps(simulation), system.masses[:, None]
    assert np.abs(v1 + v0 - np.sum(masses * (v1 + v0), axis=0) / masses.sum()).max() < 1e-4


def _harmonic_wells(n_particles, k_kJ_nm2):
    """Carbon atoms 1 nm apart, each in its own isotropic harmonic well (no bonds, no CM motion remover)."""
    return wells_system("0.5*k*(dx^2+y^2+z^2)", n_particles, k=k_kJ_nm2)


def test_metropolis_mode_samples_boltzmann_with_a_wrong_but_reversible_forecaster():
    """Hybrid Monte Carlo is exact for any volume-preserving reversible map: here Verlet on a twice stiffer well.

    <(x - x0)^2> per Cartesian component must be kT/k.  Accepting every jump instead (tolerance mode with
    a huge tolerance) samples the forecaster's stiffer well: about 0.56 kT/k.  Langevin at 2 fs between
    jumps (friction 50/ps, 20 fs per cycle): its O(dt) asymmetry under velocity reversal stays small.
    """
    n, k = 8, 1000.0
    topology = wells_topology(n)
    centres = np.array([[i, 0.0, 0.0] for i in range(n)])
    wrong = VerletForecaster((_harmonic_wells(n, 2 * k), ["C"] * n), stride_ps=0.05, max_frames=4,
                             timestep=10 * unit.femtosecond)
    ratios = {}
    for metropolis in (True, False):
        integrator = mm.LangevinMiddleIntegrator(300, 50.0, 0.002)
        integrator.setRandomNumberSeed(2)
        simulation = app.Simulation(topology, _harmonic_wells(n, k), integrator, REFERENCE)
        simulation.context.setPositions(centres)
        simulation.context.setVelocitiesToTemperature(300, 2)
        accelerator = ForecastAccelerator(
            simulation, wrong, metropolis=metropolis, energy_tolerance_kT=1e3, seed=2, segment_steps=10,
            jumps_per_cycle=1, temperature_sigmas=None, adapt_span=False, progress=False,
        )
        accelerator.step(50 * 110)  # burn-in: 50 cycles of 10 steps and one 4-frame (100-step) jump
        samples = []
        for _ in range(2000):
            accelerator.step(110)
            samples.append(positions_nm(simulation) - centres)
        ratios[metropolis] = np.mean(np.square(samples)) / (kT_kJ(300.0) / k)
        if metropolis:
            assert 0.2 < accelerator.stats.as_dict()["acceptance_rate"] < 0.8
    assert abs(ratios[True] - 1.0) < 0.12  # 2000 strongly correlated samples: standard error about 0.045
    assert ratios[False] < 0.7


# ---- checkpoints -------------------------------------------------------------------------------------


def test_checkpoint_round_trip_continues_identically(system, langevin_verlet, tmp_path):
    # Metropolis with slightly heated forecasts: acceptance depends on the random stream.
    heated = Transformed(langevin_verlet, lambda call, x, v: (x, 1.02 * v))
    simulation = langevin_simulation(system, seed=8)
    accelerator = ForecastAccelerator(
        simulation, heated, molecular_system=system, progress=False, metropolis=True, seed=3
    )
    accelerator.step(100)
    path = tmp_path / "run.chk"
    accelerator.save_checkpoint(path)
    accelerator.step(300)
    first = positions_nm(simulation), accelerator.stats.as_dict()
    accelerator.load_checkpoint(path)
    assert simulation.currentStep == 100
    accelerator.step(300)
    second = positions_nm(simulation), accelerator.stats.as_dict()
    assert np.array_equal(first[0], second[0])
    assert first[1]["rejections"]["metropolis"] > 0 and first[1]["jumps_accepted"] > 0
    for key in ("jumps_attempted", "jumps_accepted", "rejections", "jumped_ps", "integrated_ps", "dh_kJ"):
        assert first[1][key] == second[1][key]


def test_checkpoint_refuses_other_system_forecaster_and_corrupt_files(system, langevin_verlet, tmp_path):
    simulation = langevin_simulation(system)
    accelerator = ForecastAccelerator(simulation, langevin_verlet, molecular_system=system, progress=False)
    path = tmp_path / "run.chk"
    accelerator.save_checkpoint(path)

    unconstrained = build_system("amber14-vacuum", constraints=None)
    other_system = ForecastAccelerator(
        langevin_simulation(unconstrained), "verlet", molecular_system=unconstrained,
        forecaster_options={"stride_ps": 0.01, "max_frames": 8}, progress=False,
    )
    with pytest.raises(CheckpointError, match="different System"):
        other_system.load_checkpoint(path)
    other_forecaster = ForecastAccelerator(
        langevin_simulation(system), VerletForecaster(system, stride_ps=0.02, max_frames=4), molecular_system=system,
        progress=False,
    )
    with pytest.raises(CheckpointError, match="different forecaster"):
        other_forecaster.load_checkpoint(path)

    corrupt = tmp_path / "corrupt.chk"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        accelerator.load_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="does not exist"):
        accelerator.load_checkpoint(tmp_path / "missing.chk")

    # A save that fails half-way leaves the previous checkpoint intact and no temporary file behind.
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_checkpoint(path, b"context", {"unserialisable": object()})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["corrupt.chk", "run.chk"]


def test_refused_checkpoint_leaves_the_running_simulation_as_it_was(system, langevin_verlet, tmp_path):
    simulation = langevin_simulation(system, seed=4)
    accelerator = ForecastAccelerator(simulation, langevin_verlet, molecular_system=system, progress=False)
    accelerator.step(50)
    path = tmp_path / "run.chk"
    accelerator.save_checkpoint(path)
    # The same file with a step record that disagrees with its Context: refused only after OpenMM loaded it.
    inconsistent = tmp_path / "inconsistent.chk"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(inconsistent, "w") as target:
        for member in source.namelist():
            data = source.read(member)
            if member.endswith(".json"):
                record = json.loads(data)
                record["step"] += 7
                data = json.dumps(record)
            target.writestr(member, data)
    accelerator.step(30)
    before = positions_nm(simulation), simulation.currentStep, accelerator.stats.as_dict()
    with pytest.raises(CheckpointError, match="inconsistent: step 57 recorded, 50 in its Context"):
        accelerator.load_checkpoint(inconsistent)
    assert simulation.currentStep == before[1] == 80
    np.testing.assert_array_equal(positions_nm(simulation), before[0])
    assert accelerator.stats.as_dict() == before[2]
    accelerator.step(20)  # and it goes on
    assert simulation.currentStep == 100


_KILLABLE_RUN = """
import sys, time
from openmm_forecast.accelerator import ForecastAccelerator

marker, argv = sys.argv[1], sys.argv[2:]
saves = []
save = ForecastAccelerator.save_checkpoint

def save_or_stall(self, path):
    saves.append(path)
    if len(saves) == 2:  # past the first checkpoint, with frames written after it: wait to be killed
        open(marker, "w").close()
        time.sleep(300)
    save(self, path)

ForecastAccelerator.save_checkpoint = save_or_stall
from openmm_forecast.cli import main
sys.exit(main(argv))
"""


def test_run_killed_after_a_checkpoint_resumes_without_losing_or_repeating_frames(tmp_path):
    from openmm_forecast.cli import main

    def arguments(out):
        return ["run", "--model", "verlet", "--time", "2", "--report-interval", "0.1", "--checkpoint-interval", "0.5",
                "--platform", "Reference", "--seed", "3", "--no-progress", "--out", str(out)]

    killed, marker = tmp_path / "killed", tmp_path / "stalled"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_RUN, str(marker), *arguments(killed)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the killable run did not reach its second checkpoint"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    topology = mdtraj.Topology.from_openmm(build_system("amber14-vacuum").topology)
    assert mdtraj.load(str(killed / "trajectory.dcd"), top=topology).n_frames == 10  # up to step 500
    assert main([*arguments(killed), "--resume"]) == 0  # from the checkpoint at step 250

    uninterrupted = tmp_path / "uninterrupted"
    assert main(arguments(uninterrupted)) == 0
    resumed = mdtraj.load(str(killed / "trajectory.dcd"), top=topology)
    reference = mdtraj.load(str(uninterrupted / "trajectory.dcd"), top=topology)
    assert resumed.n_frames == reference.n_frames == 20
    assert np.array_equal(resumed.xyz, reference.xyz)
    resumed_log = np.genfromtxt(killed / "log.csv", delimiter=",")
    assert list(resumed_log[:, 0]) == list(range(50, 1001, 50))
    assert np.array_equal(resumed_log[:, 2], np.genfromtxt(uninterrupted / "log.csv", delimiter=",")[:, 2])


# ---- errors ------------------------------------------------------------------------------------------


def test_forecaster_system_mismatch(system):
    simulation = langevin_simulation(system)
    elements = system.elements
    with pytest.raises(ModelMismatchError, match="21 atoms"):
        ForecastAccelerator(simulation, ConstantForecaster(elements[:21], 0.01))
    swapped = [elements[1], elements[0], *elements[2:]]
    with pytest.raises(ModelMismatchError, match="first difference at atom 0"):
        ForecastAccelerator(simulation, ConstantForecaster(swapped, 0.01))
    with pytest.raises(ModelMismatchError, match="amber14-obc2"):
        other_setup = ConstantForecaster(elements, 0.01, setup="amber14-obc2")
        ForecastAccelerator(simulation, other_setup, molecular_system=system)


def test_solvated_system_is_refused(system):
    solvated = build_system("amber14-tip3p")
    simulation = solvated.create_simulation(platform="Reference", minimize=False)
    with pytest.raises(UnsupportedSystemError, match="solvated systems are not supported"):
        ForecastAccelerator(simulation, ConstantForecaster(system.elements, 0.01))


@pytest.mark.parametrize(
    "make_integrator, message",
    [
        (lambda: mm.BrownianIntegrator(300, 1, 0.002), "BrownianIntegrator is not supported"),
        (lambda: mm.VariableLangevinIntegrator(300, 1, 1e-4), "VariableLangevinIntegrator is not supported"),
        (lambda: mm.MTSLangevinIntegrator(300, 1, 0.002, [(0, 1)]), "MTSLangevinIntegrator is not supported"),
        (lambda: mm.CustomIntegrator(0.002), "CustomIntegrator the accelerator does not know"),
        (lambda: mm.LangevinMiddleIntegrator(300, 1, 0.003), "not a whole number"),
    ],
    ids=["brownian", "variable", "mts", "custom", "step-does-not-divide-stride"],
)
def test_unsupported_integrators(system, make_integrator, message):
    simulation = app.Simulation(system.topology, system.system, make_integrator(), REFERENCE)
    simulation.context.setPositions(system.positions)
    with pytest.raises(UnsupportedSystemError, match=message):
        ForecastAccelerator(simulation, ConstantForecaster(system.elements, 0.01, temperature_K=300.0))


def test_custom_integrator_accepted_when_vouched_for(system):
    integrator = mm.CustomIntegrator(0.002)
    integrator.addComputePerDof("v", "v+dt*f/m")
    integrator.addComputePerDof("x", "x+dt*v")
    simulation = app.Simulation(system.topology, system.system, integrator, REFERENCE)
    simulation.context.setPositions(system.positions)
    forecaster = ConstantForecaster(system.elements, 0.01)
    accelerator = ForecastAccelerator(
        simulation, forecaster, allow_custom_integrator=True, temperature=300 * unit.kelvin
    )
    assert accelerator.stride_steps == 5
    with pytest.raises(ValueError, match="needs a temperature"):
        ForecastAccelerator(simulation, forecaster, allow_custom_integrator=True)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"initial_frames": 0}, "initial_frames"),
        ({"max_frames": -1}, "max_frames"),
        ({"max_frames": 9}, "exceeds the forecaster's max_frames"),
        ({"initial_frames": 5, "max_frames": 4}, "exceeds max_frames"),
        ({"energy_tolerance_kT": -1.0}, "energy_tolerance_kT"),
        ({"drift_tolerance_kT": 0}, "drift_tolerance_kT"),
        ({"segment_steps": 0}, "segment_steps"),
        ({"jumps_per_cycle": 1.5}, "jumps_per_cycle"),
        ({"temperature_sigmas": -2}, "temperature_sigmas"),
        ({"temperature_sigmas": float("inf")}, "temperature_sigmas"),
        ({"temperature_sigmas": "4"}, "temperature_sigmas"),
    ],
)
def test_invalid_options(system, langevin_verlet, options, message):
    with pytest.raises(ValueError, match=message):
        ForecastAccelerator(langevin_simulation(system), langevin_verlet, **options)


def test_unknown_option_and_bad_forecaster_type(system, langevin_verlet):
    simulation = langevin_simulation(system)
    with pytest.raises(TypeError, match="energy_tolerance"):
        ForecastAccelerator(simulation, langevin_verlet, energy_tolerance=1.0)
    with pytest.raises(TypeError, match="Forecaster or a name"):
        ForecastAccelerator(simulation, 42)


def test_forecast_of_wrong_shape_raises_and_leaves_the_context_untouched(system, langevin_verlet):
    simulation = langevin_simulation(system)
    wrong = Transformed(langevin_verlet, lambda call, x, v: (x[:, :, :-1], v[:, :, :-1]))
    accelerator = ForecastAccelerator(simulation, wrong, progress=False, segment_steps=5)
    with pytest.raises(BadForecastError, match="shape"):
        accelerator.step(100)
    assert simulation.currentStep == 5
    assert np.isfinite(positions_nm(simulation)).all()


def test_public_api():
    assert openmm_forecast.ForecastAccelerator is ForecastAccelerator
    assert "AcceleratorStats" in openmm_forecast.__all__


def test_a_discarded_accelerator_frees_its_simulation_at_once(system, langevin_verlet):
    """No reference cycle (the accelerator and its jump cycle) keeps a dropped accelerator alive until the garbage
    collector runs: a new accelerator on the same Simulation is accepted at once."""
    import gc

    simulation = langevin_simulation(system)
    gc.disable()
    try:
        ForecastAccelerator(simulation, langevin_verlet, progress=False)
        ForecastAccelerator(simulation, langevin_verlet, progress=False)
    finally:
        gc.enable()


@pytest.mark.parametrize("metropolis", [False, True], ids=["tolerance", "metropolis"])
def test_a_potential_that_fails_at_the_candidate_rejects_the_jump(metropolis):
    """An exception of the potential at a forecast (an SCF failure) is a rejection, never a crash."""
    system = build_system("amber14-vacuum")
    system.system.addForce(mm.PythonForce(FailsFarAway()))
    plain = langevin_simulation(system, seed=8)
    plain.step(60)

    def far_away(call, x, v):  # sane and, for amber, of the same energy: accepted but for the failure
        return x + 10.0, v

    simulation = langevin_simulation(system, seed=8)
    forecaster = Transformed(ConstantForecaster(system.elements, 0.004, max_frames=4), far_away)
    accelerator = ForecastAccelerator(simulation, forecaster, molecular_system=system, progress=False,
                                      metropolis=metropolis, seed=1, allow_inexact_metropolis=metropolis)
    accelerator.step(60)
    stats = accelerator.stats
    assert stats.jumps_attempted >= 2 and stats.jumps_accepted == 0
    assert stats.rejections["evaluation"] == stats.jumps_attempted
    if not metropolis:  # every span was integrated: the run is plain MD
        assert np.array_equal(positions_nm(simulation), positions_nm(plain))


@pytest.mark.parametrize("acceptance", ["metropolis", "ghmc"])
def test_an_exact_rule_with_a_map_not_certified_structure_preserving_is_refused_unless_allowed(system, acceptance):
    """Issue 21, silent cooling: the shipped network under Metropolis 'accepted' 80-88 % while the molecule cooled
    to 46-130 K.  A non-certified forecaster with metropolis or ghmc is refused, naming the way out; with
    allow_inexact_metropolis it runs, with a warning.  The certified surrogate needs no permission (the control)."""
    from openmm_forecast import SurrogateForecaster

    constant = ConstantForecaster(system.elements, 0.004, max_frames=4)
    with pytest.raises(ValueError, match="allow_inexact_metropolis"):
        ForecastAccelerator(langevin_simulation(system, seed=8), constant, molecular_system=system, progress=False,
                            acceptance=acceptance)
    with pytest.warns(UserWarning, match="check the temperature"):
        ForecastAccelerator(langevin_simulation(system, seed=8), constant, molecular_system=system, progress=False,
                            acceptance=acceptance, allow_inexact_metropolis=True)
    surrogate = SurrogateForecaster(system, stride_ps=0.004, max_frames=1)
    ForecastAccelerator(langevin_simulation(system, seed=8), surrogate, molecular_system=system, progress=False,
                        acceptance=acceptance)


def test_the_cli_refuses_a_learned_network_with_metropolis_by_name(tmp_path, capsys):
    from openmm_forecast.cli import main

    arguments = ["run", "--model", "ala2-amber14-vacuum", "--acceptance", "metropolis", "--time", "0.1",
                 "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(arguments) == 1
    assert "--allow-inexact-metropolis" in capsys.readouterr().err
