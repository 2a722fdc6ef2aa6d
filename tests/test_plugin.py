"""The C++ plugin's ForecastIntegrator (plugin/) against the Python ForecastAccelerator, its specification.

The plugin must be built first (the README's test command does it: cmake -S plugin -B plugin/build ...).
"""

import os
import xml.etree.ElementTree

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

import openmm_forecast
from openmm_forecast import ForecastAccelerator, ForecastIntegrator, ForecasterMetadata, TorchForecaster
from openmm_forecast.errors import PluginError
from openmm_forecast.forecasters.torch_forecaster import atomic_numbers_of

STRIDE_PS = 0.002
TIMESTEP = 1.0 * unit.femtosecond


class FreeFlight(torch.nn.Module):
    """x_k = x + k s v, v_k = v (float64); ``poison`` makes every forecast NaN."""

    def __init__(self, elements, poison: bool = False):
        super().__init__()
        self.stride_ps = STRIDE_PS
        self.poison = poison
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers_of(elements), dtype=torch.int64))
        self.register_buffer("one", torch.ones((), dtype=torch.float64))

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, n_frames: int):
        x0, v0 = positions[:, -1], velocities[:, -1]
        spans = self.stride_ps * torch.arange(1, n_frames + 1, dtype=x0.dtype)
        new_x = x0[:, None] + v0[:, None] * spans[None, :, None, None]
        new_v = v0[:, None].expand(-1, n_frames, -1, -1) * self.one
        if self.poison:
            new_x = new_x * float("nan")
        return new_x, new_v


def free_flight(elements, poison=False, max_frames=4):
    metadata = ForecasterMetadata("free_flight", elements, STRIDE_PS, max_frames=max_frames, temperature_K=300.0)
    return TorchForecaster(FreeFlight(elements, poison), metadata)


@pytest.fixture(scope="module")
def forecaster(vacuum_system):
    return free_flight(vacuum_system.elements)


@pytest.fixture(scope="module")
def model_file(forecaster, tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "free_flight.pt"
    openmm_forecast.save_forecaster(forecaster, path)
    return str(path)


def start_state(vacuum_system):
    """Minimised positions and 300 K velocities (the same for every run of this module)."""
    simulation = vacuum_system.create_simulation(platform="Reference", seed=7)
    return simulation.context.getState(getPositions=True, getVelocities=True)


def plugin_simulation(vacuum_system, integrator, platform, state):
    """A Simulation at ``state``; the CPU platform on one thread (its force sums are then deterministic)."""
    properties = {"Threads": "1"} if platform == "CPU" else {}
    simulation = app.Simulation(vacuum_system.topology, vacuum_system.system, integrator,
                                openmm.Platform.getPlatformByName(platform), properties)
    simulation.context.setPositions(state.getPositions())
    simulation.context.setVelocities(state.getVelocities())
    return simulation


def test_plugin_load_failure_is_named(monkeypatch, tmp_path):
    from openmm_forecast import plugin

    monkeypatch.setattr(plugin, "_library", None)
    monkeypatch.setenv(plugin.LIBRARY_ENVIRONMENT_VARIABLE, str(tmp_path / "missing.so"))
    with pytest.raises(PluginError, match="missing.so does not exist"):
        ForecastIntegrator("x.pt", TIMESTEP, 300 * unit.kelvin, 0 / unit.picosecond)
    broken = tmp_path / "broken.so"
    broken.write_text("not a library")
    monkeypatch.setenv(plugin.LIBRARY_ENVIRONMENT_VARIABLE, str(broken))
    with pytest.raises(PluginError, match="broken.so failed to load"):
        ForecastIntegrator("x.pt", TIMESTEP, 300 * unit.kelvin, 0 / unit.picosecond)


CROSS_CHECKS = {
    "jumps": ("Reference", dict(drift_tolerance_kT=50.0, reequilibration_steps=20)),
    "jumps-cpu": ("CPU", dict(drift_tolerance_kT=50.0, reequilibration_steps=20)),
    # re-equilibration resets the drift (declared thermostatted although friction is 0, to stay deterministic)
    "reequilibration": ("Reference", dict(thermostatted=True, reequilibration_steps=20)),
    # NVE: past 5 kT of drift the run continues as plain MD
    "nve-switch-off": ("Reference", dict()),
}


@pytest.mark.parametrize("case", CROSS_CHECKS)
def test_same_jumps_and_states_as_python_driver(vacuum_system, forecaster, model_file, case):
    """Deterministic settings (no friction: no noise; tolerance mode: no random numbers): the plugin's
    accept/reject sequence (dH of every checked jump) and final state equal the Python driver's."""
    platform, options = CROSS_CHECKS[case]
    state = start_state(vacuum_system)
    python = plugin_simulation(
        vacuum_system, openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 0 / unit.picosecond, TIMESTEP), platform, state)
    accelerator = ForecastAccelerator(python, forecaster, **options)
    accelerator.step(1500)
    plugin = plugin_simulation(
        vacuum_system, ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 0 / unit.picosecond, **options),
        platform, state)
    plugin.integrator.step(1500)  # one call, as accelerator.step (Simulation.step calls step(10) repeatedly)
    expected, got = accelerator.stats, plugin.integrator.getStatistics()
    assert expected.jumps_accepted > 5 and expected.jumps_attempted > expected.jumps_accepted  # both outcomes seen
    assert got.jumps_attempted == expected.jumps_attempted
    assert got.jumps_accepted == expected.jumps_accepted
    assert got.accepted_by_frames == expected.accepted_by_frames
    assert got.attempted_by_frames == expected.attempted_by_frames
    assert {k: v for k, v in got.rejections.items() if v} == {k: v for k, v in expected.rejections.items() if v}
    assert got.reequilibrations == expected.reequilibrations
    assert (got.reequilibrations > 0) == (case == "reequilibration")
    assert plugin.integrator.getJumpState()["jumps_switched_off"] == accelerator.cycle.jumps_switched_off == (case == "nve-switch-off")
    np.testing.assert_allclose(got.dh_kJ, expected.dh_kJ, rtol=0, atol=1e-7)
    assert got.jumped_ps == pytest.approx(expected.jumped_ps) and got.integrated_ps == pytest.approx(expected.integrated_ps)
    a = python.context.getState(getPositions=True, getVelocities=True)
    b = plugin.context.getState(getPositions=True, getVelocities=True)
    assert plugin.currentStep == python.currentStep == 1500
    assert b.getTime().value_in_unit(unit.picosecond) == pytest.approx(a.getTime().value_in_unit(unit.picosecond), abs=1e-12)
    np.testing.assert_allclose(b.getPositions(asNumpy=True)._value, a.getPositions(asNumpy=True)._value, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.getVelocities(asNumpy=True)._value, a.getVelocities(asNumpy=True)._value, rtol=0, atol=1e-6)


def test_nan_forecast_is_rejected_and_never_reaches_positions(vacuum_system, tmp_path):
    path = tmp_path / "nan.pt"
    openmm_forecast.save_forecaster(free_flight(vacuum_system.elements, poison=True), path)
    integrator = ForecastIntegrator(str(path), TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond, seed=2)
    simulation = plugin_simulation(vacuum_system, integrator, "Reference", start_state(vacuum_system))
    simulation.step(400)
    stats = integrator.getStatistics()
    assert stats.jumps_attempted > 0 and stats.jumps_accepted == 0
    assert stats.rejections["nonfinite"] == stats.jumps_attempted
    assert stats.integrated_ps == pytest.approx(0.4) and simulation.currentStep == 400
    assert np.isfinite(simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value).all()


def test_wrong_atom_count_is_refused_at_context_creation(vacuum_system, tmp_path):
    path = tmp_path / "three.pt"
    openmm_forecast.save_forecaster(free_flight(["C", "C", "C"]), path)
    integrator = ForecastIntegrator(str(path), TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond)
    with pytest.raises(openmm.OpenMMException, match="built for 3 atoms, but the System has 22 particles"):
        openmm.Context(vacuum_system.system, integrator, openmm.Platform.getPlatformByName("Reference"))


def test_stride_must_be_whole_steps(vacuum_system, model_file):
    integrator = ForecastIntegrator(model_file, 0.3 * unit.femtosecond, 300 * unit.kelvin, 1 / unit.picosecond)
    with pytest.raises(openmm.OpenMMException, match="not a whole number of steps"):
        openmm.Context(vacuum_system.system, integrator, openmm.Platform.getPlatformByName("Reference"))


def test_xml_round_trip_keeps_every_parameter(model_file):
    options = dict(segment_steps=7, jumps_per_cycle=3, max_frames=2, initial_frames=1, adapt_span=False, grow_after=6,
                   energy_tolerance_kT=0.5, drift_tolerance_kT=8.0, temperature_sigmas=None, reequilibration_steps=50,
                   metropolis=True, seed=17, bond_stretch=1.25, thermostat_jumps=False, thermostatted=True,
                   constraint_tolerance=1e-6)
    integrator = ForecastIntegrator(model_file, 0.5 * unit.femtosecond, 310 * unit.kelvin, 2.5 / unit.picosecond, **options)
    text = openmm.XmlSerializer.serialize(integrator)
    copy = openmm.XmlSerializer.deserialize(text)
    assert openmm.XmlSerializer.serialize(copy) == text
    expected = {"segmentSteps": 7, "jumpsPerCycle": 3, "maxFrames": 2, "initialFrames": 1, "adaptSpan": 0,
                "growAfter": 6, "energyTolerance": 0.5, "driftTolerance": 8, "temperatureSigmas": -1,
                "reequilibrationSteps": 50, "metropolis": 1, "randomSeed": 17, "bondStretch": 1.25,
                "thermostatJumps": 0, "thermostatted": 1, "constraintTolerance": 1e-6, "stepSize": 0.0005,
                "temperature": 310, "friction": 2.5, "forecasterFile": model_file}
    attributes = xml.etree.ElementTree.fromstring(text).attrib
    got = {key: attributes[key] if key == "forecasterFile" else float(attributes[key]) for key in expected}
    assert got == expected
    assert copy.getStepSize() == integrator.getStepSize()


def test_unknown_and_unsupported_options_are_refused(model_file):
    with pytest.raises(TypeError, match="unknown ForecastIntegrator options"):
        ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond, jump_per_cycle=2)
    with pytest.raises(ValueError, match="check_chirality"):
        ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond, check_chirality=False)
    with pytest.raises(ValueError, match="grow_after"):
        ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond, grow_after=0)


def test_checkpoint_continues_identically(vacuum_system, model_file, tmp_path):
    """With friction (Langevin noise and the jumps' O-step): a Simulation checkpoint loaded into a fresh
    Simulation continues bit for bit."""
    def make():
        integrator = ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 5 / unit.picosecond, seed=9)
        return plugin_simulation(vacuum_system, integrator, "Reference", start_state(vacuum_system))

    first = make()
    first.step(300)
    first.saveCheckpoint(str(tmp_path / "run.chk"))
    first.step(300)
    second = make()
    second.loadCheckpoint(str(tmp_path / "run.chk"))
    assert second.currentStep == 300
    second.step(300)
    a, b = (s.context.getState(getPositions=True, getVelocities=True) for s in (first, second))
    np.testing.assert_array_equal(a.getPositions(asNumpy=True)._value, b.getPositions(asNumpy=True)._value)
    np.testing.assert_array_equal(a.getVelocities(asNumpy=True)._value, b.getVelocities(asNumpy=True)._value)
    x, y = first.integrator.getStatistics(), second.integrator.getStatistics()
    assert x.jumps_attempted == y.jumps_attempted > 0 and x.dh_kJ == y.dh_kJ


def test_metropolis_mode_keeps_span_and_covers_time(vacuum_system, model_file):
    integrator = ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 5 / unit.picosecond, metropolis=True,
                                    seed=4, segment_steps=2, max_frames=1)
    simulation = plugin_simulation(vacuum_system, integrator, "Reference", start_state(vacuum_system))
    reporter_file = os.devnull
    simulation.reporters.append(app.StateDataReporter(reporter_file, 50, step=True))
    simulation.step(600)
    stats = integrator.getStatistics()
    assert simulation.currentStep == 600
    assert stats.jumps_accepted > 0 and stats.rejections["metropolis"] > 0 and stats.rejections["energy"] == 0
    assert stats.reequilibrations == 0 and integrator.getJumpState()["span_frames"] == 1
    assert stats.jumped_ps + stats.integrated_ps + stats.kept_ps == pytest.approx(0.6)
    assert stats.kept_ps > 0 and (stats.kept_ps / STRIDE_PS) == pytest.approx(round(stats.kept_ps / STRIDE_PS))


def test_checkpoint_of_another_forecaster_is_refused(vacuum_system, model_file, tmp_path):
    state = start_state(vacuum_system)
    first = plugin_simulation(
        vacuum_system, ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond), "Reference", state)
    first.step(20)
    checkpoint = first.context.createCheckpoint()
    other_file = tmp_path / "other.pt"
    openmm_forecast.save_forecaster(free_flight(vacuum_system.elements, max_frames=2), other_file)
    other = plugin_simulation(
        vacuum_system, ForecastIntegrator(str(other_file), TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond), "Reference", state)
    with pytest.raises(openmm.OpenMMException, match="written with another forecaster"):
        other.context.loadCheckpoint(checkpoint)
