"""Tests of the forecasters: baselines against OpenMM, learned architectures' guarantees, model files.

Every learned architecture shipped with openmm_forecast is tested by being registered (the
``ARCHITECTURES`` parametrisation).  What each guarantees by construction (its ``rotation_equivariant``
attribute) is checked, and what it does not guarantee is measured, not asserted.
"""

import copy
import dataclasses
import inspect
import json

import numpy as np
import pytest
import torch
from openmm import unit

from openmm_forecast import ModelFileError, ModelMismatchError, build_system
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.forecasters import (
    BallisticForecaster,
    ConstantForecaster,
    TorchForecaster,
    VerletForecaster,
    available_architectures,
    build_forecaster,
    create_forecaster,
    load_forecaster,
    register_architecture,
    save_forecaster,
)
from openmm_forecast.forecasters import registry
from openmm_forecast.forecasters.symmetry import equivariance_error, random_rotations
from openmm_forecast.integrators import velocity_verlet_integrator

NM_PS = unit.nanometer / unit.picosecond

# The package's own architectures (test helpers of other modules may register more).
ARCHITECTURES = [
    name for name in available_architectures() if registry._builder(name).__module__.startswith("openmm_forecast.")
]
TINY_HYPERPARAMETERS = {
    "mdtrajnet": dict(d_model=16, layers=1, heads=2),
    "asteroid": dict(d_model=16, layers=1, heads=2),
    "multiscale_ode": dict(d_model=16, layers=1, ode_steps_per_stride=1),
}


def _history(architecture):
    return 2 if architecture == "asteroid" else 1


def _tiny(architecture, elements, stride_ps=0.01, max_frames=3, dtype="float64", **changes):
    hyper = {**TINY_HYPERPARAMETERS.get(architecture, {}), **changes}
    if "bonds" not in inspect.signature(registry._builder(architecture)).parameters:
        hyper.pop("bonds", None)
    torch.manual_seed(7)
    metadata = dict(elements=elements, stride_ps=stride_ps, max_frames=max_frames, history=_history(architecture))
    return build_forecaster(architecture, metadata, dtype=dtype, **hyper)


def _state(context):
    state = context.getState(getPositions=True, getVelocities=True)
    return (
        state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
        state.getVelocities(asNumpy=True).value_in_unit(NM_PS),
    )


@pytest.fixture(scope="module")
def states(vacuum_system):
    """Three 300 K states of alanine dipeptide (HBonds), velocities satisfying the constraints: (3, 22, 3) x2."""
    simulation = vacuum_system.create_simulation(platform="Reference", seed=11)
    positions, velocities = [], []
    for _ in range(3):
        simulation.step(25)
        simulation.context.applyVelocityConstraints(1e-10)
        x, v = _state(simulation.context)
        positions.append(x)
        velocities.append(v)
    return np.array(positions), np.array(velocities)


def _inputs(states, history):
    """Walker inputs of shape (3, history, 22, 3): the states, with earlier history frames slightly perturbed."""
    x, v = states
    offsets = 0.002 * np.sin(np.arange(history)[::-1])[None, :, None, None]
    return x[:, None] + offsets, v[:, None] + 10 * offsets


def _harmonic_chain():
    """Five atoms with harmonic bonds and angles (no constraints): a smooth, cheap, exactly known dynamics."""
    elements = ["C", "C", "O", "N", "H"]
    masses = [12.011, 12.011, 15.999, 14.007, 1.008]
    bonds = [(0, 1), (1, 2), (2, 3), (3, 4)]
    system = mm.System()
    for mass in masses:
        system.addParticle(mass)
    stretch, bend = mm.HarmonicBondForce(), mm.HarmonicAngleForce()
    for i, j in bonds:
        stretch.addBond(i, j, 0.15, 2e4)
    for i in range(3):
        bend.addAngle(i, i + 1, i + 2, 2.0, 200.0)
    system.addForce(stretch)
    system.addForce(bend)
    return system, elements, masses, bonds


# ----------------------------------------------------------------------------------------------------------
# Baselines


def test_constant_and_ballistic(states):
    x, v = states
    elements = ["X"] * 22
    constant = ConstantForecaster(["H"] * 22, 0.01, max_frames=3)
    cx, cv = constant.forecast(x, v)
    assert cx.shape == (3, 3, 22, 3) and np.array_equal(cx[:, 2], x) and np.array_equal(cv[:, 1], v)
    ballistic = BallisticForecaster(["H"] * 22, 0.01 * unit.picosecond, max_frames=3)
    bx, bv = ballistic.forecast(x, v, n_frames=2)
    np.testing.assert_allclose(bx[:, 1], x + 0.02 * v, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(bv[:, 1], v)
    with pytest.raises(ValueError, match="n_frames"):
        ballistic.forecast(x, v, n_frames=4)
    with pytest.raises(ValueError):
        ConstantForecaster(elements, -0.01)


def test_ballistic_is_exact_for_free_particles(rng):
    """Without forces the true integrator is free flight: both baselines must agree to rounding."""
    system = mm.System()
    for mass in (1.0, 12.0, 16.0):
        system.addParticle(mass)
    verlet = VerletForecaster((system, ["H", "C", "O"]), 0.005, max_frames=4)
    ballistic = BallisticForecaster(["H", "C", "O"], 0.005, max_frames=4)
    x, v = rng.normal(size=(2, 3, 3)), rng.normal(size=(2, 3, 3))
    vx, vv = verlet.forecast(x, v)
    bx, bv = ballistic.forecast(x, v)
    np.testing.assert_allclose(bx, vx, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bv, vv, rtol=0, atol=1e-12)


def test_verlet_matches_direct_integration(vacuum_system, states):
    """Frame k equals k * stride / dt steps of velocity Verlet run directly in a Context (the System's
    CMMotionRemover idle in both: a proposal must keep the centre-of-mass momentum it is given)."""
    x, v = states
    forecaster = VerletForecaster(vacuum_system, 0.005, max_frames=3, timestep=0.5 * unit.femtosecond)
    fx, fv = forecaster.forecast(x[:2], v[:2])
    integrator = velocity_verlet_integrator(0.5 * unit.femtosecond, update_context_state=False)
    context = mm.Context(vacuum_system.system, integrator, mm.Platform.getPlatformByName("Reference"))
    for walker in range(2):
        context.setPositions(x[walker])
        context.setVelocities(v[walker])
        for frame in range(3):
            integrator.step(10)
            ref_x, ref_v = _state(context)
            np.testing.assert_allclose(fx[walker, frame], ref_x, rtol=0, atol=1e-10)
            np.testing.assert_allclose(fv[walker, frame], ref_v, rtol=0, atol=1e-8)
    assert forecaster.metadata.setup == "amber14-vacuum" and forecaster.metadata.constraints == "HBonds"


def test_verlet_conserves_energy(vacuum_system, states):
    """Total energy of every frame stays within 0.5 kJ/mol (0.2 kT) of the start over 100 fs."""
    x, v = states
    forecaster = VerletForecaster(vacuum_system, 0.02, max_frames=5)
    fx, fv = forecaster.forecast(x, v)
    context = mm.Context(copy.deepcopy(vacuum_system.system), mm.VerletIntegrator(0.001))
    masses = vacuum_system.masses[:, None]

    def total_energy(positions, velocities):
        context.setPositions(positions)
        potential = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        return potential + 0.5 * float((masses * velocities**2).sum())

    for walker in range(3):
        start = total_energy(x[walker], v[walker])
        drift = [abs(total_energy(fx[walker, k], fv[walker, k]) - start) for k in range(5)]
        assert max(drift) < 0.5, drift
    # The frames moved: this is not a trivially conserved constant state.
    assert np.abs(fx[:, -1] - x).max() > 0.01


def test_verlet_agrees_with_openmm_leapfrog(states):
    """OpenMM's VerletIntegrator is leapfrog: its velocities lag half a step.

    Given v(-dt/2) = v(0) - a(0) dt/2 it produces exactly the velocity-Verlet positions; given v(0)
    itself, the initial velocity error a(0) dt/2 displaces positions by about a(0) dt/2 * t.
    """
    system = build_system("amber14-vacuum", constraints=None).system
    for index in reversed(range(system.getNumForces())):  # the leapfrog Context would apply it; the proposal does not
        if isinstance(system.getForce(index), mm.CMMotionRemover):
            system.removeForce(index)
    x, v = states
    dt = 0.25e-3
    forecaster = VerletForecaster((system, ["C"] * 22), 0.01, max_frames=2)
    fx, _ = forecaster.forecast(x[:1], v[:1])
    leapfrog = mm.VerletIntegrator(dt)
    context = mm.Context(system, leapfrog, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(x[0])
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer
    )
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(22)])[:, None]
    half_step = 0.5 * dt * forces / masses
    for shift, tolerance in ((half_step, 1e-9), (0.0, None)):
        context.setPositions(x[0])
        context.setVelocities(v[0] - shift)
        for frame in range(2):
            leapfrog.step(40)
            lx, _ = _state(context)
            error = np.abs(lx - fx[0, frame]).max()
            if tolerance is not None:
                assert error < tolerance
            else:
                bound = 2 * np.abs(half_step).max() * 0.01 * (frame + 1)
                assert 1e-7 < error < bound


def test_verlet_refuses_bad_stride(vacuum_system):
    with pytest.raises(ValueError, match="whole multiple"):
        VerletForecaster(vacuum_system, 0.0101)
    with pytest.raises(ValueError, match="particles"):
        VerletForecaster((vacuum_system.system, ["C"] * 3), 0.01)


# ----------------------------------------------------------------------------------------------------------
# Registry and loading by name


def test_load_baselines_by_name(vacuum_system):
    assert {"constant", "ballistic", "verlet"} <= set(available_architectures(include_baselines=True))
    ballistic = load_forecaster("ballistic", vacuum_system, stride_ps=0.01, max_frames=2)
    assert isinstance(ballistic, BallisticForecaster) and ballistic.metadata.setup == "amber14-vacuum"
    verlet = load_forecaster("verlet", vacuum_system, stride_ps=0.01)
    assert isinstance(verlet, VerletForecaster)
    with pytest.raises(ValueError, match="molecular_system"):
        load_forecaster("verlet", stride_ps=0.01)
    with pytest.raises(ValueError, match="stride_ps"):
        load_forecaster("constant", vacuum_system)
    assert isinstance(create_forecaster("constant", elements=["C"], stride_ps=0.01), ConstantForecaster)


def test_unknown_or_missing_model_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="neither"):
        load_forecaster("no-such-model")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_forecaster(str(tmp_path / "absent.pt"))


def test_corrupt_and_metadata_less_files_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a TorchScript archive")
    with pytest.raises(ModelFileError, match="corrupt"):
        load_forecaster(str(corrupt))
    bare = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(bare))
    with pytest.raises(ModelFileError, match="without openmm-forecast metadata"):
        load_forecaster(str(bare))
    bad_metadata = tmp_path / "bad-metadata.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(bad_metadata), _extra_files={"metadata.json": "{"})
    with pytest.raises(ModelFileError, match="metadata"):
        load_forecaster(str(bad_metadata))


def test_register_architecture():
    """A user's architecture plugs in by registration; names are not silently replaced."""
    name = "test_registered_ballistic"

    class Ballistic(torch.nn.Module):
        def __init__(self, elements, stride_ps, history):
            super().__init__()
            self.stride_ps = float(stride_ps)
            self.register_buffer("atomic_numbers", torch.tensor([6] * len(elements)))

        def forward(self, positions, velocities, n_frames: int):
            spans = self.stride_ps * torch.arange(1, n_frames + 1, dtype=positions.dtype)
            x = positions[:, -1:] + velocities[:, -1:] * spans[None, :, None, None]
            return x, velocities[:, -1:].expand_as(x)

    register_architecture(name, Ballistic)
    try:
        assert name in available_architectures()
        forecaster = create_forecaster(name, elements=["C", "C"], stride_ps=0.01, max_frames=2)
        x, v = np.ones((1, 2, 3)), np.full((1, 2, 3), 2.0)
        fx, _ = forecaster.forecast(x, v)
        np.testing.assert_allclose(fx[0, 1], 1.04)
        with pytest.raises(ValueError, match="already registered"):
            register_architecture(name, lambda *args: None)
        with pytest.raises(ValueError, match="baseline"):
            register_architecture("verlet", Ballistic)
    finally:
        registry._BUILDERS.pop(name)


# ----------------------------------------------------------------------------------------------------------
# Learned architectures


def test_all_three_architectures_are_registered():
    assert {"mdtrajnet", "asteroid", "multiscale_ode"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_shapes_and_metadata(architecture, vacuum_system, states):
    forecaster = _tiny(architecture, vacuum_system.elements, dtype="float32")
    x, v = _inputs(states, forecaster.metadata.history)
    for n_frames in (1, 3):
        fx, fv = forecaster.forecast(x, v, n_frames)
        assert fx.shape == fv.shape == (3, n_frames, 22, 3)
        assert fx.dtype == np.float64 and np.isfinite(fx).all() and np.isfinite(fv).all()
    meta = forecaster.metadata
    assert meta.architecture == architecture and meta.extra["dtype"] == "float32"
    assert isinstance(meta.extra["rotation_equivariant"], bool)
    with pytest.raises(ModelMismatchError, match="shape"):
        forecaster.forecast(x[:, :, :21], v[:, :, :21])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_translation_and_boost_invariance(architecture, vacuum_system, states):
    """Shifting all positions shifts every forecast; a uniform velocity boost u adds u t and u."""
    forecaster = _tiny(architecture, vacuum_system.elements)
    x, v = _inputs(states, forecaster.metadata.history)
    fx, fv = forecaster.forecast(x, v)
    shift = np.array([1.3, -0.7, 2.1])
    sx, sv = forecaster.forecast(x + shift, v)
    np.testing.assert_allclose(sx, fx + shift, rtol=0, atol=1e-9)
    np.testing.assert_allclose(sv, fv, rtol=0, atol=1e-8)
    boost = np.array([0.4, 0.2, -0.5])
    spans = forecaster.metadata.stride_ps * np.arange(1, 4)[None, :, None, None]
    # A history frame h steps back sits at -h stride: boosting the trajectory moves it by -h stride u.
    back = forecaster.metadata.stride_ps * np.arange(x.shape[1])[::-1][None, :, None, None]
    bx, bv = forecaster.forecast(x - back * boost, v + boost)
    np.testing.assert_allclose(bx, fx + spans * boost, rtol=0, atol=1e-9)
    np.testing.assert_allclose(bv, fv + boost, rtol=0, atol=1e-8)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_centre_of_mass_and_momentum_are_conserved(architecture, vacuum_system, states):
    forecaster = _tiny(architecture, vacuum_system.elements, masses=vacuum_system.masses)
    x, v = _inputs(states, forecaster.metadata.history)
    fx, fv = forecaster.forecast(x, v)
    m = vacuum_system.masses[None, None, :, None]
    spans = forecaster.metadata.stride_ps * np.arange(1, 4)[None, :, None, None]
    com_start = (m * x[:, -1:]).sum(2) / m.sum()
    com_velocity = (m * v[:, -1:]).sum(2) / m.sum()
    com = (m * fx).sum(2) / m.sum()
    np.testing.assert_allclose(com, com_start + com_velocity * spans[..., 0], rtol=0, atol=1e-12)
    momentum = (m * fv).sum(2)
    np.testing.assert_allclose(momentum, np.broadcast_to((m * v[:, -1:]).sum(2), momentum.shape), atol=1e-9)
    # ... and the forecast is not the ballistic one (the corrections are non-zero).
    assert np.abs(fv - v[:, -1:]).max() > 1e-3


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_rotation_equivariance(architecture, vacuum_system, states):
    """Architectures that claim equivariance are equivariant to 1e-10 (float64); others are measured."""
    forecaster = _tiny(architecture, vacuum_system.elements)
    x, v = _inputs(states, forecaster.metadata.history)
    error = equivariance_error(forecaster, x, v, n_rotations=3)
    if forecaster.metadata.extra["rotation_equivariant"]:
        assert error["relative_positions"] < 1e-10 and error["relative_velocities"] < 1e-10, error
    else:
        # Not equivariant by construction (train with random rotations); the measure must see it.
        assert error["relative_positions"] > 1e-6, error
    # Reflections: the equivariant architectures use no cross products, so they are O(3)-equivariant.
    if forecaster.metadata.extra["rotation_equivariant"]:
        mirror = np.diag([1.0, 1.0, -1.0])
        fx, fv = forecaster.forecast(x, v)
        mx, mv = forecaster.forecast(x @ mirror, v @ mirror)
        np.testing.assert_allclose(mx, fx @ mirror, rtol=0, atol=1e-10)


def test_random_rotations_are_proper_and_uniform():
    rotations = random_rotations(2000, torch.Generator().manual_seed(0), torch.float64)
    identity = torch.eye(3, dtype=torch.float64).expand(2000, 3, 3)
    assert torch.allclose(rotations @ rotations.transpose(1, 2), identity, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(2000, dtype=torch.float64), atol=1e-12)
    # Haar measure: a rotated unit vector is uniform on the sphere (mean 0, second moment I/3).
    z = rotations[:, :, 2]
    assert z.mean(0).abs().max() < 0.06
    assert (z.T @ z / 2000 - torch.eye(3, dtype=torch.float64) / 3).abs().max() < 0.04


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_export_load_round_trip(architecture, vacuum_system, states, tmp_path):
    forecaster = _tiny(architecture, vacuum_system.elements, dtype="float32")
    forecaster.metadata.setup = "amber14-vacuum"
    x, v = _inputs(states, forecaster.metadata.history)
    fx, fv = forecaster.forecast(x, v)
    path = tmp_path / f"{architecture}.pt"
    save_forecaster(forecaster, path)
    loaded = load_forecaster(str(path), molecular_system=vacuum_system)
    assert isinstance(loaded, TorchForecaster) and isinstance(loaded.module, torch.jit.ScriptModule)
    assert loaded.metadata.to_json() == forecaster.metadata.to_json()
    lx, lv = loaded.forecast(x, v)
    np.testing.assert_array_equal(lx, fx)
    np.testing.assert_array_equal(lv, fv)
    with pytest.raises(ModelMismatchError, match="setup"):
        loaded.check_compatible(vacuum_system.elements, setup="amber14-obc2")


def test_shipped_model_is_loaded_by_name(vacuum_system, states, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "models_directory", lambda: str(tmp_path))
    forecaster = _tiny("mdtrajnet", vacuum_system.elements)
    save_forecaster(forecaster, tmp_path / "ala2-test.pt")
    assert registry.shipped_models() == ["ala2-test"]
    loaded = load_forecaster("ala2-test", molecular_system=vacuum_system)
    x, v = _inputs(states, 1)
    np.testing.assert_array_equal(loaded.forecast(x, v)[0], forecaster.forecast(x, v)[0])



def test_every_shipped_model_is_a_forecaster_for_alanine_dipeptide(vacuum_system):
    # Shipped potentials live apart from forecasters: a name listed here must load as a forecaster.
    names = registry.shipped_models()
    assert {"ala2-amber14-vacuum", "ala2-amber14-obc2"} <= set(names)
    for name in names:
        card = registry.shipped_model_card(name)
        system = vacuum_system if card is None else build_system(card["setup"])
        forecaster = load_forecaster(name, molecular_system=system)
        assert forecaster.metadata.elements == vacuum_system.elements, name


def test_a_shipped_surrogate_card_is_velocity_verlet_on_its_learned_system():
    from openmm_forecast.plugin import resolve_proposal

    obc2 = build_system("amber14-obc2")
    forecaster = load_forecaster("ala2-amber14-obc2", molecular_system=obc2)
    meta = forecaster.metadata
    assert forecaster.structure_preserving and meta.extra["surrogate"] == "fit-amber14-obc2"
    assert meta.stride_ps == pytest.approx(0.01) and meta.max_frames == 50 and meta.setup == "amber14-obc2"
    same = load_forecaster("fit-amber14-obc2", obc2, stride_ps=0.01, max_frames=3, timestep=2 * unit.femtosecond)
    state = obc2.create_simulation(platform="Reference", seed=1).context.getState(getPositions=True, getVelocities=True)
    x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[None]
    v = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)[None]
    for a, b in zip(forecaster.forecast(x, v, 3), same.forecast(x, v, 3)):
        np.testing.assert_array_equal(a, b)
    shorter = load_forecaster("ala2-amber14-obc2", obc2, stride_ps=0.02, max_frames=2)
    assert shorter.metadata.stride_ps == pytest.approx(0.02) and shorter.metadata.max_frames == 2
    with pytest.raises(ModelMismatchError, match="'amber14-obc2' setup, not 'amber14-vacuum'"):
        load_forecaster("ala2-amber14-obc2", molecular_system=build_system("amber14-vacuum"))
    with pytest.raises(ValueError, match="needs molecular_system"):
        load_forecaster("ala2-amber14-obc2")
    with pytest.raises(TypeError, match="not options of"):
        load_forecaster("ala2-amber14-obc2", obc2, surrogate="amber14-vacuum")
    path, implied = resolve_proposal("ala2-amber14-obc2")  # the C++ plugin runs the card's surrogate too
    assert path.endswith("fit-amber14-obc2.xml") and implied["jump"] == meta.stride_ps * meta.max_frames * unit.picosecond

@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_mismatched_system_is_refused(architecture, vacuum_system, tmp_path):
    swapped = list(vacuum_system.elements)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    wrong_elements = _tiny(architecture, swapped, bonds=[(0, 1), (1, 2)])
    save_forecaster(wrong_elements, tmp_path / "swapped.pt")
    with pytest.raises(ModelMismatchError, match="first difference at atom 0"):
        load_forecaster(str(tmp_path / "swapped.pt"), molecular_system=vacuum_system)
    wrong_count = _tiny(architecture, ["C", "H", "H", "O"], bonds=[(0, 1), (0, 2), (0, 3)])
    save_forecaster(wrong_count, tmp_path / "small.pt")
    with pytest.raises(ModelMismatchError, match="4 atoms"):
        load_forecaster(str(tmp_path / "small.pt"), molecular_system=vacuum_system)


def test_float32_model_agrees_with_its_float64_copy(vacuum_system, states):
    forecaster = _tiny("mdtrajnet", vacuum_system.elements, dtype="float32")
    double = TorchForecaster(copy.deepcopy(forecaster.module).double(), forecaster.metadata)
    x, v = _inputs(states, 1)
    fx, fv = forecaster.forecast(x, v)
    dx, dv = double.forecast(x, v)
    assert np.abs(fx - dx).max() < 1e-5 and np.abs(fv - dv).max() < 1e-3
    with pytest.raises(ValueError, match="stride"):
        TorchForecaster(forecaster.module, dataclasses.replace(forecaster.metadata, stride_ps=0.02))


def test_multiscale_ode_irregular_spans(vacuum_system, states):
    """Irregular spans lie on the same trajectory; with zero learned acceleration, exact free flight."""
    forecaster = _tiny("multiscale_ode", vacuum_system.elements, ode_steps_per_stride=2)
    module = forecaster.module
    x, v = _inputs(states, 1)
    tx, tv = torch.as_tensor(x), torch.as_tensor(v)
    with torch.no_grad():
        regular = module(tx, tv, 2)
        irregular = module.forecast_spans(tx, tv, [0.0035, 0.01, 0.02])
        # Different RK4 step grids (0.0035 + 2 x 0.00325 ps vs 2 x 0.005 ps): equal to the RK4 error.
        torch.testing.assert_close(irregular[0][:, 1:], regular[0], rtol=0, atol=1e-8)
        torch.testing.assert_close(irregular[1][:, 1:], regular[1], rtol=0, atol=1e-6)
        module.force_out.weight.zero_()
        free = module.forecast_spans(tx, tv, [0.0035, 0.013])
    spans = np.array([0.0035, 0.013])[None, :, None, None]
    np.testing.assert_allclose(free[0].numpy(), x + v * spans, rtol=0, atol=1e-12)
    np.testing.assert_allclose(free[1].numpy(), np.broadcast_to(v, free[1].shape), rtol=0, atol=1e-12)
    assert module.graph_frequencies[0].abs() < 1e-10  # one connected molecule: one zero-frequency mode
    assert (module.graph_frequencies[1:] > 1e-6).all()


def test_graph_needs_bonds_or_positions():
    with pytest.raises(ValueError, match="bonds"):
        build_forecaster("asteroid", dict(elements=["C", "O"], stride_ps=0.01))
    from_positions = build_forecaster(
        "multiscale_ode", dict(elements=["C", "O", "H"], stride_ps=0.01),
        reference_positions=[[0, 0, 0], [0.12, 0, 0], [-0.1, 0.05, 0]],
    )
    assert from_positions.module.graph_frequencies.shape == (3,)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_tiny_model_overfits_tiny_dataset(architecture):
    """On four states of a harmonic chain, the loss (relative to free flight) falls 100-fold in 300 steps
    (symplectic: 4-fold)."""
    torch.set_num_threads(1)
    system, elements, masses, bonds = _harmonic_chain()
    # The ODE pays per RK4 step: one frame, two steps per stride (one step per 10 fs is near RK4's
    # stability limit for the chain's stiffest mode, and a few updates can push the learned field past it).
    ode = architecture == "multiscale_ode"
    history, frames, stride = _history(architecture), 1 if ode else 2, 0.01
    rng = np.random.default_rng(0)
    reference = np.array([[0.15 * i, 0.05 * (i % 2), 0.0] for i in range(5)])
    x = reference[None] + 0.01 * rng.normal(size=(4, 5, 3))
    v = rng.normal(size=(4, 5, 3)) * np.sqrt(2.49 / np.array(masses))[None, :, None]
    truth = VerletForecaster((system, elements), stride, history - 1 + frames, timestep=0.5 * unit.femtosecond)
    tx, tv = truth.forecast(x, v)
    all_x = torch.as_tensor(np.concatenate([x[:, None], tx], 1))
    all_v = torch.as_tensor(np.concatenate([v[:, None], tv], 1))
    inputs_x, inputs_v = all_x[:, :history], all_v[:, :history]
    target_x, target_v = all_x[:, history:], all_v[:, history:]
    changes = dict(ode_steps_per_stride=2) if ode else {}
    if architecture == "symplectic":  # its pair potential starts from a reference structure's distances
        changes["reference_positions"] = reference
    forecaster = _tiny(
        architecture, elements, stride_ps=stride, max_frames=frames, masses=masses, bonds=bonds, **changes
    )
    model = forecaster.module.train()
    spans = stride * torch.arange(1, frames + 1, dtype=torch.float64)[None, :, None, None]
    scale_x = ((inputs_x[:, -1:] + inputs_v[:, -1:] * spans - target_x) ** 2).mean()
    scale_v = ((inputs_v[:, -1:] - target_v) ** 2).mean()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        predicted_x, predicted_v = model(inputs_x, inputs_v, frames)
        loss = ((predicted_x - target_x) ** 2).mean() / scale_x + ((predicted_v - target_v) ** 2).mean() / scale_v
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.0  # starts near free flight (loss 2 = free flight's error in x and in v)
    # symplectic: Verlet on a pair potential cannot represent the chain's angle terms exactly, and its 1-3
    # stiffnesses start negligible here: it falls about 6-fold in 300 steps.
    factor = 4 if architecture == "symplectic" else 100
    assert min(losses[-20:]) < losses[0] / factor, (losses[0], min(losses[-20:]))


def test_verlet_baseline_drives_an_ml_potential_system(tmp_path, vacuum_system):
    """A System with an openmm-torch TorchForce cannot be deep-copied (XML round trip crashes in openmm-torch 1.5):
    the verlet baseline must integrate it as it is, and conserve its energy."""
    reference = torch.tensor(np.asarray(vacuum_system.positions.value_in_unit(unit.nanometer)))

    class Tethered(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("reference", reference)

        def forward(self, positions):
            return 5000.0 * torch.sum((positions - self.reference) ** 2)

    path = tmp_path / "tethered.pt"
    torch.jit.script(Tethered()).save(
        str(path), _extra_files={"metadata.json": json.dumps({"elements": vacuum_system.elements})}
    )
    ml_system = build_system("ml", potential_file=str(path), constraints=None)
    forecaster = VerletForecaster(ml_system, stride_ps=0.005, max_frames=2, timestep=0.25 * unit.femtosecond)
    rng = np.random.default_rng(3)
    x0 = reference.numpy() + 0.002 * rng.standard_normal(reference.shape)
    v0 = 0.5 * rng.standard_normal(reference.shape)
    x, v = forecaster.forecast(x0[None], v0[None], 2)
    masses = ml_system.masses[:, None]

    def hamiltonian(x, v):
        return 5000.0 * np.sum((x - reference.numpy()) ** 2) + 0.5 * np.sum(masses * v**2)

    assert np.abs(x[0, -1] - x0).max() > 1e-4  # it moved
    assert abs(hamiltonian(x[0, -1], v[0, -1]) - hamiltonian(x0, v0)) < 1e-3 * hamiltonian(x0, v0)


def test_checkpoint_fingerprint_tells_retrained_weights_apart():
    """Two models with identical metadata but different weights are different forecasters for a checkpoint."""
    from openmm_forecast.checkpoint import forecaster_fingerprint

    first = _tiny("mdtrajnet", ["C", "O", "H"])
    same = _tiny("mdtrajnet", ["C", "O", "H"])
    retrained = _tiny("mdtrajnet", ["C", "O", "H"])
    with torch.no_grad():
        next(retrained.module.parameters()).add_(1e-3)
    assert first.metadata.to_json() == retrained.metadata.to_json()
    assert forecaster_fingerprint(first) == forecaster_fingerprint(same)
    assert forecaster_fingerprint(first) != forecaster_fingerprint(retrained)
