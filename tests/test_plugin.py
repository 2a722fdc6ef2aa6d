"""The C++ plugin's ForecastIntegrator (plugin/) against the Python ForecastAccelerator, its specification.

The plugin must be built first (the README's test command does it: cmake -S plugin -B plugin/build ...).

Random streams: the plugin draws from NumPy's PCG64 bit generator with polar-method normals, the Python driver
from NumPy's Generator (ziggurat normals).  The cross-checks with random numbers therefore give the Python driver
:class:`PluginStream` (the plugin's stream in Python, started from the state the plugin reports), so that both
drivers see the same numbers and their chains can be compared jump for jump.
"""

import io
import math
import os
import xml.etree.ElementTree

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

import openmm_forecast
from openmm_forecast import ForecastAccelerator, ForecastIntegrator
from openmm_forecast.forecasters import ForecasterMetadata, TorchForecaster, save_forecaster
from openmm_forecast.errors import PluginError
from openmm_forecast.cycles import GHMCCycle
from openmm_forecast.forecasters.surrogate import SurrogateForecaster, surrogates_directory
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
    save_forecaster(forecaster, path)
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


class PluginStream:
    """The plugin's random stream (plugin/openmmapi/include/internal/RandomStream.h) for the Python driver.

    NumPy's PCG64 raw numbers from the plugin's state and increment; uniforms ``(u >> 11) * 2**-53`` (as
    ``Generator.random``); normals by Marsaglia's polar method with ``math.log`` and ``math.sqrt`` (the C library
    the plugin calls too), one at a time, the pair's second kept for the next call.
    """

    def __init__(self, description):
        state, increment = (int(word, 16) for word in description.split())
        self.bits = np.random.PCG64()
        self.bits.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": increment},
                           "has_uint32": 0, "uinteger": 0}
        self.spare = None
        self.normals = 0

    def random(self):
        return float(int(self.bits.random_raw()) >> 11) * (1.0 / 9007199254740992.0)

    def _normal(self):
        self.normals += 1
        if self.spare is not None:
            value, self.spare = self.spare, None
            return value
        while True:
            u, v = 2.0 * self.random() - 1.0, 2.0 * self.random() - 1.0
            s = u * u + v * v
            if 0.0 < s < 1.0:
                break
        factor = math.sqrt(-2.0 * math.log(s) / s)
        self.spare = v * factor
        return u * factor

    def standard_normal(self, shape):
        return np.array([self._normal() for _ in range(int(np.prod(shape)))]).reshape(shape)


@pytest.fixture(scope="module")
def obc2_system():
    return openmm_forecast.build_system("amber14-obc2")


SURROGATE = "fit-amber14-obc2"
STEP_2FS = 2.0 * unit.femtosecond


def without_com_remover(molecular_system):
    """A copy of the System without its CMMotionRemover.  With one, both drivers remove the centre-of-mass velocity
    of the refreshed momenta, NumPy as ``masses @ v / masses.sum()`` (BLAS, pairwise sums) and the plugin in order:
    equal to round-off only, which a chaotic chain of jumps amplifies.  Without it the arithmetic is the same."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(molecular_system.system))
    for index in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(index), openmm.CMMotionRemover):
            system.removeForce(index)
    return system


def simulation_on(molecular_system, system, integrator, platform, state):
    properties = {"Threads": "1"} if platform == "CPU" else {}
    simulation = app.Simulation(molecular_system.topology, system, integrator,
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


def test_library_is_found_in_the_package_first(monkeypatch):
    """The CMake build copies the library into openmm_forecast/lib (package data): it is the one found."""
    from openmm_forecast import plugin

    monkeypatch.delenv(plugin.LIBRARY_ENVIRONMENT_VARIABLE, raising=False)
    package_copy = os.path.join(os.path.dirname(plugin.__file__), "lib", plugin.LIBRARY_NAME)
    assert plugin.library_candidates()[0] == package_copy and os.path.isfile(package_copy)
    assert plugin.plugin_library_path() == package_copy


@pytest.mark.slow
def test_non_editable_install_loads_the_library(tmp_path):
    """``pip install .`` after the plugin's build installs the library with the package; the installed package
    (first on sys.path) loads it and runs a ghmc jump.  Slow: pip copies the package (and may fetch setuptools)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), root],
                   check=True)
    program = (
        "import openmm_forecast, openmm_forecast.plugin as p\n"
        "from openmm import app, unit\n"
        "assert p.plugin_library_path().startswith(%r), p.plugin_library_path()\n"
        "t = openmm_forecast.build_system('amber14-obc2')\n"
        "i = p.ForecastIntegrator('fit-amber14-obc2', 2 * unit.femtosecond, 300 * unit.kelvin, 1 / unit.picosecond,"
        " acceptance='ghmc', jump=100 * unit.femtosecond)\n"
        "s = app.Simulation(t.topology, t.system, i)\n"
        "s.context.setPositions(t.positions)\n"
        "s.step(100)\n"
        "assert i.getStatistics().jumps_attempted == 2\n" % str(target)
    )
    environment = dict(os.environ, PYTHONPATH=str(target))
    environment.pop("OPENMM_FORECAST_PLUGIN", None)
    subprocess.run([sys.executable, "-c", program], check=True, cwd=tmp_path, env=environment)


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
    accept/reject sequence (dH of every checked jump) equals the Python driver's.

    The Python driver shortens the jumps of its last cycle to end with its ``step`` call; the plugin carries a jump
    over to the next call instead.  So the plugin runs on for one longest cycle more and the sequences are compared
    up to the Python driver's last cycle (the last ``LAST_CYCLE`` checked jumps are left out)."""
    platform, options = CROSS_CHECKS[case]
    state = start_state(vacuum_system)
    python = plugin_simulation(
        vacuum_system, openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 0 / unit.picosecond, TIMESTEP), platform, state)
    accelerator = ForecastAccelerator(python, forecaster, **options)
    accelerator.step(1500)
    plugin = plugin_simulation(
        vacuum_system, ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 0 / unit.picosecond, **options),
        platform, state)
    plugin.integrator.step(1500)
    assert plugin.currentStep == python.currentStep == 1500
    plugin.integrator.step(100)  # past any jump carried over
    expected, got = accelerator.stats, plugin.integrator.getStatistics()
    assert expected.jumps_accepted > 5 and expected.jumps_attempted > expected.jumps_accepted  # both outcomes seen
    last_cycle = 4  # jumps_per_cycle
    compared = len(expected.dh_kJ) - last_cycle
    assert compared > 20 and len(got.dh_kJ) >= compared
    np.testing.assert_allclose(got.dh_kJ[:compared], expected.dh_kJ[:compared], rtol=0, atol=1e-7)
    assert got.reequilibrations >= expected.reequilibrations
    assert (got.reequilibrations > 0) == (case == "reequilibration")
    assert plugin.integrator.getJumpState()["jumps_switched_off"] == (case == "nve-switch-off")


def test_nan_forecast_is_rejected_and_never_reaches_positions(vacuum_system, tmp_path):
    path = tmp_path / "nan.pt"
    save_forecaster(free_flight(vacuum_system.elements, poison=True), path)
    integrator = ForecastIntegrator(str(path), TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond, seed=2)
    simulation = plugin_simulation(vacuum_system, integrator, "Reference", start_state(vacuum_system))
    simulation.step(400)
    stats = integrator.getStatistics()
    assert stats.jumps_attempted > 0 and stats.jumps_accepted == 0
    assert stats.rejections["nonfinite"] == stats.jumps_attempted
    # a jump in progress at the end is pending, the rest was integrated
    assert stats.integrated_ps + integrator.getJumpState()["pending_ps"] == pytest.approx(0.4)
    assert simulation.currentStep == 400
    assert np.isfinite(simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value).all()


def test_wrong_atom_count_is_refused_at_context_creation(vacuum_system, tmp_path):
    path = tmp_path / "three.pt"
    save_forecaster(free_flight(["C", "C", "C"]), path)
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
                   acceptance="ghmc", allow_inexact_metropolis=True, velocity_memory=0.25, jump=50 * unit.femtosecond,
                   surrogate_step=2.5 * unit.femtosecond, surrogate_platform="CPU", seed=17, bond_stretch=1.25,
                   thermostat_jumps=False, thermostatted=True, constraint_tolerance=1e-6)
    integrator = ForecastIntegrator(model_file, 0.5 * unit.femtosecond, 310 * unit.kelvin, 2.5 / unit.picosecond, **options)
    text = openmm.XmlSerializer.serialize(integrator)
    copy = openmm.XmlSerializer.deserialize(text)
    assert openmm.XmlSerializer.serialize(copy) == text
    expected = {"segmentSteps": 7, "jumpsPerCycle": 3, "maxFrames": 2, "initialFrames": 1, "adaptSpan": 0,
                "growAfter": 6, "energyTolerance": 0.5, "driftTolerance": 8, "temperatureSigmas": -1,
                "reequilibrationSteps": 50, "acceptance": "ghmc", "allowInexactMetropolis": 1, "velocityMemory": 0.25,
                "jump": 0.05, "surrogateStepSize": 0.0025, "surrogatePlatform": "CPU", "randomSeed": 17,
                "bondStretch": 1.25, "thermostatJumps": 0, "thermostatted": 1, "constraintTolerance": 1e-6,
                "stepSize": 0.0005, "temperature": 310, "friction": 2.5, "forecasterFile": model_file,
                "integrationForceGroups": -1, "version": 2}
    attributes = xml.etree.ElementTree.fromstring(text).attrib
    strings = ("forecasterFile", "acceptance", "surrogatePlatform")
    got = {key: attributes[key] if key in strings else float(attributes[key]) for key in expected}
    assert got == expected
    assert set(attributes) == set(expected) | {"type"}  # every parameter is in the comparison
    assert copy.getStepSize() == integrator.getStepSize()


NOT_NUMBERS = {"forecasterFile", "surrogatePlatform", "type"}  # free text (checked when the Context is created)
OUT_OF_RANGE = {  # attribute: a value of the right type out of its range, or of the wrong type
    "maxFrames": "lots", "jumpsPerCycle": "2.5", "randomSeed": "99999999999999999999999", "temperature": "abc",
    "friction": "-1", "stepSize": "0", "segmentSteps": "-3", "initialFrames": "1e3", "adaptSpan": "2",
    "growAfter": "0", "energyTolerance": "inf", "driftTolerance": "-5", "temperatureSigmas": "nan",
    "reequilibrationSteps": "-1", "acceptance": "sometimes", "allowInexactMetropolis": "yes", "velocityMemory": "2",
    "jump": "-0.5", "surrogateStepSize": "x", "bondStretch": "0.5", "thermostatJumps": "2", "thermostatted": "5",
    "constraintTolerance": "0", "integrationForceGroups": "all", "version": "1",
}


@pytest.mark.parametrize("attribute", sorted(OUT_OF_RANGE))
def test_tampered_xml_attribute_is_refused_by_name(model_file, attribute):
    text = openmm.XmlSerializer.serialize(
        ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond))
    root = xml.etree.ElementTree.fromstring(text)
    assert set(root.attrib) - NOT_NUMBERS == set(OUT_OF_RANGE)  # every checked attribute has a case
    root.set(attribute, OUT_OF_RANGE[attribute])
    with pytest.raises(Exception, match=attribute if attribute != "version" else "version 1"):
        openmm.XmlSerializer.deserialize(xml.etree.ElementTree.tostring(root, encoding="unicode"))


def test_unknown_xml_attribute_is_refused(model_file):
    text = openmm.XmlSerializer.serialize(ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond))
    with pytest.raises(Exception, match="unknown attribute jumpPerCycle"):
        openmm.XmlSerializer.deserialize(text.replace("jumpsPerCycle=", 'jumpPerCycle="3" jumpsPerCycle='))


def test_unknown_and_unsupported_options_are_refused(model_file):
    with pytest.raises(TypeError, match="unknown ForecastIntegrator options"):
        ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond, jump_per_cycle=2)
    with pytest.raises(ValueError, match="check_chirality"):
        ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond, check_chirality=False)
    with pytest.raises(ValueError, match="grow_after"):
        ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond, grow_after=0)
    with pytest.raises(ValueError, match="contradicts"):
        ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond, metropolis=True,
                           acceptance="ghmc")


def test_defaults_are_accelerator_options():
    """One source: the plugin's defaults are generated from AcceleratorOptions (plugin/cmake/generate_defaults.py)."""
    from openmm_forecast.options import AcceleratorOptions
    from openmm_forecast.plugin import default_attributes

    defaults, python = default_attributes(), AcceleratorOptions()
    assert float(defaults["jumpsPerCycle"]) == python.jumps_per_cycle
    assert float(defaults["energyTolerance"]) == python.energy_tolerance_kT
    assert float(defaults["driftTolerance"]) == python.drift_tolerance_kT
    assert float(defaults["temperatureSigmas"]) == python.temperature_sigmas
    assert float(defaults["reequilibrationSteps"]) == python.reequilibration_steps
    assert float(defaults["bondStretch"]) == python.bond_stretch
    assert float(defaults["growAfter"]) == python.grow_after
    assert bool(int(defaults["thermostatJumps"])) == python.thermostat_jumps
    assert bool(int(defaults["allowInexactMetropolis"])) == python.allow_inexact_metropolis


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


def test_inexact_metropolis_needs_the_opt_in_and_warns(vacuum_system, model_file, capfd):
    """The free-flight forecaster is not certified structure-preserving: metropolis and ghmc refuse it; with
    allow_inexact_metropolis it runs, with a warning."""
    reference = openmm.Platform.getPlatformByName("Reference")
    for rule in ("metropolis", "ghmc"):
        integrator = ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 5 / unit.picosecond, acceptance=rule)
        with pytest.raises(openmm.OpenMMException, match="not certified so.*allow_inexact_metropolis"):
            openmm.Context(vacuum_system.system, integrator, reference)
    integrator = ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 5 / unit.picosecond, metropolis=True,
                                    allow_inexact_metropolis=True)
    openmm.Context(vacuum_system.system, integrator, reference)
    assert "WARNING" in capfd.readouterr().err


def test_metropolis_mode_keeps_span_and_covers_time(vacuum_system, model_file):
    integrator = ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 5 / unit.picosecond, metropolis=True,
                                    allow_inexact_metropolis=True, seed=4, segment_steps=2, max_frames=1)
    simulation = plugin_simulation(vacuum_system, integrator, "Reference", start_state(vacuum_system))
    reporter_file = os.devnull
    simulation.reporters.append(app.StateDataReporter(reporter_file, 50, step=True))
    simulation.step(600)
    stats = integrator.getStatistics()
    assert simulation.currentStep == 600
    assert stats.jumps_accepted > 0 and stats.rejections["metropolis"] > 0 and stats.rejections["energy"] == 0
    assert stats.reequilibrations == 0 and integrator.getJumpState()["span_frames"] == 1
    pending = integrator.getJumpState()["pending_ps"]
    assert stats.jumped_ps + stats.integrated_ps + stats.kept_ps + pending == pytest.approx(0.6)
    assert stats.kept_ps > 0 and (stats.kept_ps / STRIDE_PS) == pytest.approx(round(stats.kept_ps / STRIDE_PS))


def test_checkpoint_of_another_forecaster_is_refused(vacuum_system, model_file, tmp_path):
    state = start_state(vacuum_system)
    first = plugin_simulation(
        vacuum_system, ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond), "Reference", state)
    first.step(20)
    checkpoint = first.context.createCheckpoint()
    other_file = tmp_path / "other.pt"
    save_forecaster(free_flight(vacuum_system.elements, max_frames=2), other_file)
    other = plugin_simulation(
        vacuum_system, ForecastIntegrator(str(other_file), TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond), "Reference", state)
    with pytest.raises(openmm.OpenMMException, match="written with another proposal"):
        other.context.loadCheckpoint(checkpoint)


@pytest.mark.parametrize("changed", ["temperature", "friction"])
def test_checkpoint_of_another_temperature_or_friction_is_refused(vacuum_system, model_file, changed):
    state = start_state(vacuum_system)
    first = plugin_simulation(
        vacuum_system, ForecastIntegrator(model_file, TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond), "Reference", state)
    first.step(20)
    checkpoint = first.context.createCheckpoint()
    temperature, friction = (350 if changed == "temperature" else 300) * unit.kelvin, 1 / unit.picosecond
    if changed == "friction":
        friction = 2 / unit.picosecond
    other = plugin_simulation(
        vacuum_system, ForecastIntegrator(model_file, TIMESTEP, temperature, friction), "Reference", state)
    with pytest.raises(openmm.OpenMMException, match="checkpoint was written .* at 300 K, friction 1 /ps"):
        other.context.loadCheckpoint(checkpoint)


# ---- the surrogate proposal ---------------------------------------------------------------------------------------

def test_unreadable_model_error_has_no_libtorch_stack(vacuum_system, tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a zip archive" * 10)
    integrator = ForecastIntegrator(str(path), TIMESTEP, 300 * unit.kelvin, 1 / unit.picosecond)
    with pytest.raises(openmm.OpenMMException) as error:
        openmm.Context(vacuum_system.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    message = str(error.value)
    assert "not a readable TorchScript forecaster" in message
    assert "frame #" not in message and "Exception raised from" not in message and len(message) < 1000


def unsupported(vacuum_system, kind):
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(vacuum_system.system))
    if kind == "barostat":
        for force in system.getForces():
            if isinstance(force, openmm.NonbondedForce):
                force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
                force.setCutoffDistance(1.0)
        system.setDefaultPeriodicBoxVectors(openmm.Vec3(3, 0, 0), openmm.Vec3(0, 3, 0), openmm.Vec3(0, 0, 3))
        system.addForce(openmm.MonteCarloBarostat(1 * unit.bar, 300 * unit.kelvin))
    elif kind == "virtual site":
        index = system.addParticle(0.0)
        system.setVirtualSite(index, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
        for force in system.getForces():
            if isinstance(force, openmm.NonbondedForce):
                force.addParticle(0.0, 0.1, 0.0)
    else:
        system.addForce(openmm.DrudeForce())
    return system


@pytest.mark.parametrize("kind,message", [("barostat", "barostat"), ("virtual site", "virtual sites"),
                                          ("drude", "Drude particles")])
def test_unsupported_systems_are_refused_at_context_creation(vacuum_system, forecaster, kind, message):
    """As the Python driver: the same System with a MonteCarloBarostat, a virtual site or a DrudeForce."""
    system = unsupported(vacuum_system, kind)
    python = app.Simulation(vacuum_system.topology, system, openmm.LangevinMiddleIntegrator(300, 1, 0.001),
                            openmm.Platform.getPlatformByName("Reference"))
    with pytest.raises(openmm_forecast.errors.UnsupportedSystemError, match=message):
        ForecastAccelerator(python, forecaster)
    integrator = ForecastIntegrator(SURROGATE, STEP_2FS, 300 * unit.kelvin, 1 / unit.picosecond, acceptance="ghmc",
                                    jump=100 * unit.femtosecond)
    with pytest.raises(openmm.OpenMMException, match=message):
        openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))


def test_surrogate_of_other_atoms_is_refused(vacuum_system, tmp_path):
    other = openmm.System()
    for _ in range(3):
        other.addParticle(12.0)
    path = tmp_path / "three.xml"
    path.write_text(openmm.XmlSerializer.serialize(other))
    for proposal in (str(path), other):
        integrator = ForecastIntegrator(proposal, STEP_2FS, 300 * unit.kelvin, 1 / unit.picosecond, acceptance="ghmc",
                                        jump=100 * unit.femtosecond)
        with pytest.raises(openmm.OpenMMException, match="has 3 particles, the target System 22"):
            openmm.Context(vacuum_system.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    integrator = ForecastIntegrator(SURROGATE, STEP_2FS, 300 * unit.kelvin, 1 / unit.picosecond, acceptance="ghmc",
                                    jump=101 * unit.femtosecond)
    with pytest.raises(openmm.OpenMMException, match="not a whole number"):
        openmm.Context(vacuum_system.system, integrator, openmm.Platform.getPlatformByName("Reference"))


@pytest.mark.parametrize("rule,platform", [("ghmc", "Reference"), ("ghmc", "CPU"), ("metropolis", "Reference")])
def test_surrogate_chain_equals_python_driver(obc2_system, vacuum_system, rule, platform):
    """The surrogate proposal and the exact rules against the Python driver, jump for jump.

    Both drivers run 400 fs jumps of velocity Verlet on a surrogate System (Reference) for the OBC2 target (on
    ``platform``), from the same state; the surrogate is the amber14-vacuum System given as an object, a cruder one
    than the shipped fit (with which all 40 jumps were accepted: the rejection path would go untested), and draw from the same random stream (PluginStream).
    ghmc: momentum refresh with velocity memory 0.8, given explicitly (from the friction it would be NumPy's exp
    in Python, libm's in C++, which differ in the last bit for ~5 % of arguments); metropolis: no friction, so
    the Langevin segments are deterministic and the stream serves the Metropolis uniforms only.  The plugin runs
    under ``Simulation.step`` (10 steps per call: every jump is carried over several calls) with a reporter;
    the Python driver in one ``step`` call; the length is whole cycles, so neither shortens a jump.

    Compared: the accept/reject sequence and the final state exactly (the same arithmetic on the same machine);
    dH to 1e-8 kJ/mol (the kinetic energy is summed in another order: round-off of ~1e-13 kJ/mol).
    """
    system = without_com_remover(obc2_system)
    friction = (1.0 if rule == "ghmc" else 0.0) / unit.picosecond
    jump = 400 * unit.femtosecond
    state = obc2_system.create_simulation(platform="Reference", seed=3).context.getState(getPositions=True,
                                                                                        getVelocities=True)
    options = dict(velocity_memory=0.8) if rule == "ghmc" else {}
    integrator = ForecastIntegrator(vacuum_system.system, STEP_2FS, 300 * unit.kelvin, friction, acceptance=rule,
                                    jump=jump, seed=5, **options)
    plugin = simulation_on(obc2_system, system, integrator, platform, state)
    report = io.StringIO()
    plugin.reporters.append(app.StateDataReporter(report, 50, step=True, potentialEnergy=True))
    stream = PluginStream(integrator.getJumpState()["random_stream"])

    python = simulation_on(obc2_system, system, openmm.LangevinMiddleIntegrator(300 * unit.kelvin, friction, STEP_2FS),
                           platform, state)
    proposal = SurrogateForecaster((system, obc2_system.elements), stride_ps=jump, max_frames=1,
                                   surrogate=vacuum_system.system, timestep=STEP_2FS, platform="Reference")
    acceptance = GHMCCycle(velocity_memory=0.8) if rule == "ghmc" else "metropolis"
    accelerator = ForecastAccelerator(python, proposal, acceptance=acceptance, temperature=300 * unit.kelvin)
    accelerator.cycle.rng = stream
    steps = 8000  # ghmc: 40 jumps; metropolis: 8 cycles of a segment and 4 jumps
    accelerator.step(steps)
    plugin.step(steps)

    expected, got = accelerator.stats, integrator.getStatistics()
    assert got.jumps_attempted == expected.jumps_attempted == (40 if rule == "ghmc" else 32)
    assert 0 < expected.jumps_accepted < expected.jumps_attempted  # both outcomes seen
    assert got.jumps_accepted == expected.jumps_accepted
    assert {k: v for k, v in got.rejections.items() if v} == {"metropolis": expected.rejections["metropolis"]}
    np.testing.assert_allclose(got.dh_kJ, expected.dh_kJ, rtol=0, atol=1e-8)
    assert stream.normals == (40 * 66 if rule == "ghmc" else 0)  # 22 atoms x 3 per refresh
    a = python.context.getState(getPositions=True, getVelocities=True)
    b = plugin.context.getState(getPositions=True, getVelocities=True)
    assert plugin.currentStep == python.currentStep == steps and b.getTime() == a.getTime()
    np.testing.assert_array_equal(b.getPositions(asNumpy=True)._value, a.getPositions(asNumpy=True)._value)
    np.testing.assert_array_equal(b.getVelocities(asNumpy=True)._value, a.getVelocities(asNumpy=True)._value)
    assert len(report.getvalue().splitlines()) == 1 + steps // 50


def test_simulation_step_with_long_jumps_and_reporters(obc2_system):
    """What issue 20 asks to show: the shipped OBC2 surrogate, 500 fs jumps under plain ``Simulation.step`` with a
    StateDataReporter: acceptance >= 0.8 (metropolis and ghmc), and at every report the reporter's step and time,
    ``simulation.currentStep`` and ``context.getTime()`` agree.  Reports every 60 steps: most fall inside a jump,
    where the Context holds the state the jump starts from."""
    state = obc2_system.create_simulation(platform="Reference", seed=11).context.getState(getPositions=True,
                                                                                         getVelocities=True)
    for rule, steps in (("metropolis", 20_000), ("ghmc", 50_000)):
        integrator = ForecastIntegrator(SURROGATE, STEP_2FS, 300 * unit.kelvin, 1 / unit.picosecond, acceptance=rule,
                                        jump=500 * unit.femtosecond, seed=1)
        simulation = simulation_on(obc2_system, obc2_system.system, integrator, "Reference", state)
        seen = []

        class Agreement:
            def describeNextReport(self, simulation):
                return {"steps": 60 - simulation.currentStep % 60, "periodic": None, "include": []}

            def report(self, simulation, state):
                seen.append((simulation.currentStep, state.getStepCount(),
                             simulation.context.getTime().value_in_unit(unit.picosecond),
                             state.getTime().value_in_unit(unit.picosecond)))

        report = io.StringIO()
        simulation.reporters += [app.StateDataReporter(report, 60, step=True, time=True, potentialEnergy=True,
                                                       temperature=True), Agreement()]
        simulation.step(steps)
        stats = integrator.getStatistics()
        acceptance = stats.jumps_accepted / stats.jumps_attempted
        assert acceptance >= 0.8, (rule, acceptance)
        # ghmc: jump after jump; metropolis: cycles of a 500 fs Langevin segment (one stride) and 4 jumps
        assert stats.jumps_attempted == (steps // 250 if rule == "ghmc" else 4 * (steps // 1250))
        rows = [line.split(",") for line in report.getvalue().splitlines()[1:]]
        assert len(rows) == len(seen) == steps // 60
        for (current, state_step, context_ps, state_ps), row in zip(seen, rows):
            assert current == state_step == int(row[0])
            assert context_ps == state_ps == pytest.approx(current * 0.002, abs=1e-9)
            assert float(row[1]) == pytest.approx(state_ps, abs=1e-9)
        # The kinetic temperature of 22 atoms fluctuates by ~60 K (sd of one report); over >= 300 reports of >= 60
        # independent jumps the mean's standard error is < 10 K: 300 K within 30 K (the integrator's kinetic energy
        # is the Context's, synchronous for ghmc, leapfrog for metropolis)
        assert np.mean([float(row[3]) for row in rows]) == pytest.approx(300, abs=30), rule


def test_surrogate_checkpoint_in_the_middle_of_a_jump_continues_identically(obc2_system, tmp_path):
    """A checkpoint taken while a jump is carried over (130 steps into 100-step jumps) restores the schedule and the
    held state: the loaded Simulation continues bit for bit."""
    state = obc2_system.create_simulation(platform="Reference", seed=3).context.getState(getPositions=True,
                                                                                        getVelocities=True)

    def make():
        integrator = ForecastIntegrator(SURROGATE, STEP_2FS, 300 * unit.kelvin, 1 / unit.picosecond, acceptance="ghmc",
                                        jump=200 * unit.femtosecond, seed=8)
        return simulation_on(obc2_system, obc2_system.system, integrator, "Reference", state)

    first = make()
    first.step(130)
    assert first.integrator.getJumpState()["pending_ps"] == pytest.approx(0.06)
    first.saveCheckpoint(str(tmp_path / "run.chk"))
    first.step(970)
    second = make()
    second.loadCheckpoint(str(tmp_path / "run.chk"))
    second.step(970)
    a, b = (s.context.getState(getPositions=True, getVelocities=True) for s in (first, second))
    np.testing.assert_array_equal(a.getPositions(asNumpy=True)._value, b.getPositions(asNumpy=True)._value)
    np.testing.assert_array_equal(a.getVelocities(asNumpy=True)._value, b.getVelocities(asNumpy=True)._value)
    x, y = first.integrator.getStatistics(), second.integrator.getStatistics()
    assert x.jumps_attempted == y.jumps_attempted == 11 and x.dh_kJ == y.dh_kJ


def test_shipped_card_and_system_object_resolve_to_surrogates(obc2_system):
    from openmm_forecast.plugin import resolve_proposal

    path, implied = resolve_proposal("ala2-amber14-obc2")
    assert path == os.path.join(surrogates_directory(), SURROGATE + ".xml")
    assert implied["jump"].value_in_unit(unit.picosecond) == pytest.approx(0.5)
    assert resolve_proposal(SURROGATE) == (path, {})
    written, _ = resolve_proposal(obc2_system.system)
    assert written.endswith(".xml") and openmm.XmlSerializer.deserialize(open(written).read()).getNumParticles() == 22
