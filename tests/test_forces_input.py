"""Start forces as forecaster input: the interface, the shipped model unchanged, and no extra potential evaluation.

Potential evaluations are counted with an ``openmm.PythonForce`` (zero energy and forces) added to the
System: OpenMM calls it once per energy/force evaluation of the Context, whether energy, forces or both are
asked for.
"""

import dataclasses
import os

import numpy as np
import pytest
import torch
from openmm import unit

from openmm_forecast import ForecastAccelerator, ModelMismatchError, build_system, load_forecaster
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.evaluation import EnergyEvaluator
from openmm_forecast.forecasters import Forecaster, VerletForecaster, create_forecaster, uses_forces
from openmm_forecast.integrators import velocity_verlet_integrator
from openmm_forecast.walkers import ForecastWalkers

REFERENCE_FILE = os.path.join(os.path.dirname(__file__), "data", "ala2_amber14_vacuum_shipped_forecast.npz")


class ForceRecorder(Forecaster):
    """The inner forecaster, flagged as reading forces (or not); records the forces it is given."""

    def __init__(self, inner, reads_forces=True):
        self.inner, self.received = inner, []
        self.metadata = dataclasses.replace(inner.metadata, extra={**inner.metadata.extra, "uses_forces": reads_forces})

    def _forecast(self, positions, velocities, n_frames, forces=None):
        self.received.append((positions[:, -1].copy(), None if forces is None else forces.copy()))
        return self.inner._forecast(positions, velocities, n_frames)


CALLS = []
"""One entry per evaluation of the counting force (module level: the System is serialised, with its function)."""


def count_evaluation(state):
    CALLS.append(1)
    return 0.0, np.zeros((state.getPositions(asNumpy=True).shape[0], 3))


def counting_system():
    """amber14-vacuum with a PythonForce that counts the potential evaluations (in ``CALLS``)."""
    molecular_system = build_system("amber14-vacuum")
    molecular_system.system.addForce(mm.PythonForce(count_evaluation))
    return molecular_system, CALLS


def assert_forces_of_positions(received, system):
    """Every forces array received is the System's force at the positions it came with."""
    energy = EnergyEvaluator(system)
    assert received and all(f is not None for _, f in received)
    for x, f in received:
        np.testing.assert_allclose(f, energy.forces(x), rtol=1e-6, atol=1e-6)


def test_forces_reach_the_forecaster_without_an_extra_evaluation():
    # velocity Verlet: an integrator whose Snapshots kept no forces before forecasters read them
    counts = {}
    for reads_forces in (False, True):
        molecular_system, calls = counting_system()
        inner = VerletForecaster(build_system("amber14-vacuum"), stride_ps=0.0025, max_frames=4,
                                 timestep=0.5 * unit.femtosecond)  # its own System: not counted
        forecaster = ForceRecorder(inner, reads_forces)
        simulation = molecular_system.create_simulation(
            platform="Reference", seed=1, integrator=velocity_verlet_integrator(0.5 * unit.femtosecond)
        )
        accelerator = ForecastAccelerator(simulation, forecaster, molecular_system=molecular_system, progress=False)
        before = len(calls)
        accelerator.step(200)
        assert accelerator.stats.jumps_attempted >= 5
        counts[reads_forces] = (len(calls) - before, len(forecaster.received))
        if reads_forces:
            assert_forces_of_positions(forecaster.received, build_system("amber14-vacuum").system)
        else:
            assert all(f is None for _, f in forecaster.received)
    assert counts[True] == counts[False] and counts[True][0] > 0


def test_walkers_pass_their_forces_without_an_extra_evaluation():
    counts = {}
    for reads_forces in (False, True):
        molecular_system, calls = counting_system()
        inner = VerletForecaster(build_system("amber14-vacuum"), stride_ps=0.01, max_frames=2)
        forecaster = ForceRecorder(inner, reads_forces)
        walkers = ForecastWalkers(molecular_system, forecaster, seeds=[3, 4], platform="Reference")
        before = len(calls)
        walkers.step(100)
        counts[reads_forces] = len(calls) - before
        if reads_forces:
            flat = [(x[i], f[i]) for x, f in forecaster.received for i in range(len(x))]
            assert_forces_of_positions(flat, build_system("amber14-vacuum").system)
    assert counts[True] == counts[False] > 0


def test_forecast_refuses_missing_or_malformed_forces(vacuum_system):
    forecaster = create_forecaster("mdtrajnet", elements=vacuum_system.elements, stride_ps=0.01, max_frames=2,
                                   d_model=8, layers=1, heads=2, uses_forces=True)
    assert uses_forces(forecaster.metadata) and forecaster.uses_forces
    x = np.zeros((2, 22, 3)) + np.arange(22)[:, None] * 0.1
    v = np.zeros((2, 22, 3))
    with pytest.raises(ValueError, match="forces"):
        forecaster.forecast(x, v)
    with pytest.raises(ModelMismatchError, match="forces of shape"):
        forecaster.forecast(x, v, forces=np.zeros((2, 21, 3)))
    with pytest.raises(ValueError, match="NaN"):
        forecaster.forecast(x, v, forces=np.full((2, 22, 3), np.nan))
    a = forecaster.forecast(x, v, forces=np.ones((2, 22, 3)))
    b = forecaster.forecast(x, v, forces=np.ones((2, 1, 22, 3)))  # like the positions: the last entry is read
    np.testing.assert_array_equal(a[0], b[0])


def test_untrained_force_model_is_the_damped_verlet_step(vacuum_system, rng):
    """Zero-initialised read-out: the forecast is x + v t + g a t^2/2, v + g a t with g = exp(-(t / 10 fs)^2)."""
    torch.manual_seed(1)
    forecaster = create_forecaster("mdtrajnet", elements=vacuum_system.elements, stride_ps=0.01, max_frames=3,
                                   d_model=8, layers=1, heads=2, uses_forces=True, dtype="float64")
    x = rng.normal(size=(2, 22, 3)) * 0.3
    v = rng.normal(size=(2, 22, 3))
    f = rng.normal(size=(2, 22, 3)) * 500
    px, pv = forecaster.forecast(x, v, forces=f)
    masses = np.array([a.element.mass.value_in_unit(unit.dalton) for a in vacuum_system.topology.atoms()])
    a = f / masses[:, None]
    a -= (masses[:, None] * a).sum(-2, keepdims=True) / masses.sum()
    for k, t in enumerate((0.01, 0.02, 0.03)):
        g = np.exp(-((t / 0.01) ** 2))
        np.testing.assert_allclose(px[:, k], x + v * t + 0.5 * g * a * t * t, atol=1e-12)
        np.testing.assert_allclose(pv[:, k], v + g * a * t, atol=1e-10)


def test_force_model_is_rotation_equivariant(vacuum_system, rng):
    from openmm_forecast.forecasters.symmetry import equivariance_error

    torch.manual_seed(3)
    forecaster = create_forecaster("mdtrajnet", elements=vacuum_system.elements, stride_ps=0.01, max_frames=2,
                                   d_model=8, layers=1, heads=2, uses_forces=True, dtype="float64")
    with torch.no_grad():  # a non-zero learned correction
        forecaster.module.vector_out.weight.normal_(0.0, 0.1)
    x = rng.normal(size=(2, 1, 22, 3)) * 0.3
    v = rng.normal(size=(2, 1, 22, 3))
    f = rng.normal(size=(2, 22, 3)) * 500
    errors = equivariance_error(forecaster, x, v, forces=f)
    assert errors["relative_positions"] < 1e-10 and errors["relative_velocities"] < 1e-10


def test_shipped_model_file_still_loads_and_forecasts_as_before():
    """The shipped model (written before forecasters took forces: no forces argument) gives the forecasts
    recorded with the code of that time."""
    reference = np.load(REFERENCE_FILE)
    forecaster = load_forecaster("ala2-amber14-vacuum")
    assert not forecaster.uses_forces
    x, v = forecaster.forecast(reference["positions"], reference["velocities"])
    # float32 network output: another CPU's vector units (or another thread count) sum in another order. Measured
    # against this AMD EPYC recording: 6e-8 on an Intel Xeon; under ATEN_CPU_CAPABILITY=default (no AVX) up to 2.8e-6
    # nm/ps in velocities, below 1e-6 nm in positions.  1e-5 nm and 1e-4 nm/ps absolute (1e-4 relative) are 10-35x
    # that and 300x below the model's own error (RMSD 0.0036 nm after 10 fs): a changed weight or layer still fails.
    np.testing.assert_allclose(x, reference["forecast_positions"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v, reference["forecast_velocities"], rtol=1e-4, atol=1e-4)
    # forces given to a model that does not read them change nothing
    x2, _ = forecaster.forecast(reference["positions"], reference["velocities"], forces=np.ones_like(x[:, 0]))
    np.testing.assert_array_equal(x2, x)


def test_augmentation_carries_the_forces_along(rng):
    """Time reversal keeps the forces (they depend on positions only); rotations turn them with the state."""
    from openmm_forecast.training import augment

    x = torch.as_tensor(rng.normal(size=(64, 4, 5, 3)))
    v = torch.as_tensor(rng.normal(size=(64, 4, 5, 3)))
    f = 3.0 * x  # a force field of the positions alone: F(x) = 3 x, frame by frame
    rx, rv, rf = augment(x, v, 1, torch.Generator().manual_seed(1), rotations=False, time_reversal=True, forces=f)
    assert torch.equal(rf, 3.0 * rx) and not torch.equal(rx, x)  # some windows were reversed
    rx, rv, rf = augment(x, v, 1, torch.Generator().manual_seed(1), rotations=True, time_reversal=False, forces=f)
    # the rotation of each window, read off its velocities, is the one its forces got
    rotation_of_v = torch.linalg.lstsq(v.reshape(64, -1, 3), rv.reshape(64, -1, 3)).solution
    torch.testing.assert_close(rf, torch.einsum("btnj,bji->btni", f, rotation_of_v))
