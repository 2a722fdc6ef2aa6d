"""The surrogate proposal: velocity Verlet on a cheaper System, exact under the Metropolis rule.

Toys with known answers: carbon atoms in a double well along x (harmonic in y and z) driven by a
surrogate whose potential is a plain harmonic well of another stiffness.
"""

import numpy as np
import pytest
from openmm import app, unit

from openmm_forecast import ForecastAccelerator, SurrogateForecaster, build_system, load_forecaster
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.forecasters import VerletForecaster
from openmm_forecast.forecasters.surrogate import derived_surrogate_system
from openmm_forecast.systems import system_fingerprint
from openmm_forecast.integrators import velocity_verlet_integrator
from openmm_forecast.units import kT_kJ
from forecast_helpers import wells_system

REFERENCE = mm.Platform.getPlatformByName("Reference")
KT = kT_kJ(300.0)
BARRIER_KJ, HALF_WIDTH_NM, K_YZ = 1.0 * KT, 0.05, 1000.0


def _double_wells(n):
    return wells_system("h*((dx/b)^2-1)^2 + 0.5*k*(y^2+z^2)", n, h=BARRIER_KJ, b=HALF_WIDTH_NM, k=K_YZ)


def _exact_double_well_moments():
    """<dx^2> and <dx^4> (nm^2, nm^4) of exp(-U(dx)/kT) by quadrature."""
    dx = np.linspace(-4 * HALF_WIDTH_NM, 4 * HALF_WIDTH_NM, 200001)
    weight = np.exp(-BARRIER_KJ * ((dx / HALF_WIDTH_NM) ** 2 - 1) ** 2 / KT)
    return (dx**2 * weight).sum() / weight.sum(), (dx**4 * weight).sum() / weight.sum()


def _toy_simulation(n, seed):
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(n):
        topology.addAtom("C", app.element.carbon, topology.addResidue("C", chain))
    integrator = mm.LangevinMiddleIntegrator(300, 50.0, 0.002)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(topology, _double_wells(n), integrator, REFERENCE)
    centres = np.array([[i + HALF_WIDTH_NM * (-1) ** i, 0.0, 0.0] for i in range(n)])
    simulation.context.setPositions(centres)
    simulation.context.setVelocitiesToTemperature(300, seed)
    return simulation


def test_surrogate_samples_a_double_well_exactly_in_metropolis_mode():
    """A harmonic surrogate drives a double-well target; Metropolis must recover the target's moments.

    Target per atom: a 1 kT barrier between minima at dx = +-0.05 nm, harmonic in y and z (1000 kJ/mol/nm^2).
    Surrogate: harmonic, 1500 kJ/mol/nm^2 along x and 1300 in y and z.  Exact answers: <dx^2> and <dx^4> by
    quadrature (kurtosis <dx^4>/<dx^2>^2 = 1.56: bimodal; a Gaussian has 3) and <y^2> = kT / k.  Ratios
    measured over seeds 3-6: 0.98-1.05 (x^2), 0.96-1.01 (kurtosis), 0.92-1.07 (y, z).  Accepting every jump
    instead (the tolerance rule with a huge tolerance) samples towards the surrogate: kurtosis ratio 1.77, y and
    z 0.78.  Langevin at 2 fs and friction 50/ps between jumps (20 fs per cycle) is nearly exact here.
    """
    n = 4
    surrogate_system = wells_system("0.5*ks*dx^2 + 0.5*kyz*(y^2+z^2)", n, ks=1500.0, kyz=1300.0)
    surrogate = SurrogateForecaster((_double_wells(n), ["C"] * n), stride_ps=0.05, max_frames=2,
                                    surrogate=surrogate_system, timestep=10 * unit.femtosecond)
    assert surrogate.structure_preserving and surrogate.metadata.extra["surrogate"] == "System"
    exact_x2, exact_x4 = _exact_double_well_moments()
    offsets = np.arange(n)[:, None] * np.array([1.0, 0.0, 0.0])
    results = {}
    for rule in ("metropolis", "tolerance"):
        simulation = _toy_simulation(n, seed=3)
        accelerator = ForecastAccelerator(
            simulation, surrogate, metropolis=rule == "metropolis", energy_tolerance_kT=1e3, seed=3,
            segment_steps=10, jumps_per_cycle=1, temperature_sigmas=None, adapt_span=False, progress=False,
        )
        accelerator.step(50 * 60)  # burn-in: 50 cycles of 10 steps and one 2-frame (50-step) jump
        samples = []
        for _ in range(1500):
            accelerator.step(60)
            state = simulation.context.getState(getPositions=True)
            samples.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) - offsets)
        samples = np.array(samples)
        dx2 = np.mean(samples[..., 0] ** 2)
        results[rule] = (dx2 / exact_x2, np.mean(samples[..., 0] ** 4) / dx2**2 / (exact_x4 / exact_x2**2),
                         np.mean(samples[..., 1:] ** 2) / (KT / K_YZ))
        if rule == "metropolis":
            assert 0.15 < accelerator.stats.as_dict()["acceptance_rate"] < 0.6
    x2, kurtosis, yz = results["metropolis"]
    assert abs(x2 - 1) < 0.12 and abs(kurtosis - 1) < 0.12 and abs(yz - 1) < 0.15, results
    _, biased_kurtosis, biased_yz = results["tolerance"]
    assert biased_kurtosis > 1.4 and biased_yz < 0.85, results


def test_surrogate_equal_to_the_target_at_a_small_step_accepts_almost_always(vacuum_system):
    """amber14-vacuum as its own (derived, the default) surrogate at 0.5 fs: dH is integration error only, well
    below kT."""
    simulation = vacuum_system.create_simulation(platform="Reference", seed=5)
    accelerator = ForecastAccelerator(
        simulation, "surrogate", molecular_system=vacuum_system, metropolis=True, seed=5, progress=False,
        forecaster_options={"stride_ps": 0.01, "max_frames": 4, "timestep": 0.5 * unit.femtosecond},
    )
    extra = accelerator.forecaster.metadata.extra  # nothing costly to leave out: the target's own System
    assert extra["surrogate"] == "derived: the target" and extra["surrogate_fingerprint"] == vacuum_system.fingerprint()
    accelerator.step(1000)
    stats = accelerator.stats.as_dict()
    assert stats["jumps_attempted"] >= 20 and stats["acceptance_rate"] > 0.95, stats


def test_surrogate_is_velocity_verlet_on_the_surrogate_system(vacuum_system, rng):
    """Frames equal velocity Verlet run directly on the surrogate System (its CMMotionRemover idle);
    VerletForecaster is the special case."""
    obc2 = build_system("amber14-obc2")
    forecaster = load_forecaster("surrogate", obc2, stride_ps=0.004, max_frames=2)
    simulation = obc2.create_simulation(platform="Reference", seed=2)
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    fx, fv = forecaster.forecast(x[None], v[None])
    integrator = velocity_verlet_integrator(2 * unit.femtosecond, update_context_state=False)
    derived, _ = derived_surrogate_system(obc2.system, obc2.topology)  # the default surrogate
    context = mm.Context(derived, integrator, REFERENCE)
    context.setPositions(x)
    context.setVelocities(v)
    integrator.step(4)
    direct = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(fx[0, 1], direct, rtol=0, atol=1e-12)
    meta = forecaster.metadata
    assert meta.setup == "amber14-obc2" and meta.extra["timestep_ps"] == pytest.approx(0.002)
    assert meta.extra["surrogate_fingerprint"] == system_fingerprint(derived)
    verlet = VerletForecaster(obc2, stride_ps=0.004)
    assert isinstance(verlet, SurrogateForecaster) and verlet.structure_preserving and verlet.name == "verlet"


def test_a_surrogate_with_a_motion_remover_keeps_the_centre_of_mass_momentum_of_the_target(vacuum_system, rng):
    """A target without a CMMotionRemover (the ANI-1x setup has none) keeps its centre-of-mass momentum; a remover
    in the surrogate's Context would take it (and ~3/2 kT) out of every jump, a map that is not reversible.  The
    surrogate here has one; the forecast must conserve the total momentum to round-off (float64, 10 steps)."""
    target = mm.XmlSerializer.clone(vacuum_system.system)
    for index in reversed(range(target.getNumForces())):
        if isinstance(target.getForce(index), mm.CMMotionRemover):
            target.removeForce(index)
    surrogate = vacuum_system.system
    assert any(isinstance(force, mm.CMMotionRemover) for force in surrogate.getForces())  # the case under test
    forecaster = SurrogateForecaster((target, vacuum_system.elements), stride_ps=0.02, surrogate=surrogate)
    masses = np.array([surrogate.getParticleMass(i).value_in_unit(unit.dalton) for i in range(target.getNumParticles())])
    x = np.asarray(vacuum_system.positions.value_in_unit(unit.nanometer))[None]
    v = rng.normal(0.0, 0.3, size=x.shape) + np.array([0.5, -0.2, 0.1])  # a drift of the whole molecule, nm/ps
    _, fv = forecaster.forecast(x, v)
    before, after = masses @ v[0], masses @ fv[0, -1]
    np.testing.assert_allclose(after, before, atol=1e-6 * np.abs(before).max())
    assert surrogate.getNumForces() == vacuum_system.system.getNumForces()  # the caller's System is untouched


def test_learned_and_trivial_forecasters_are_not_certified(vacuum_system):
    assert not load_forecaster("ballistic", vacuum_system, stride_ps=0.01).structure_preserving
    assert not load_forecaster("ala2-amber14-vacuum", vacuum_system).structure_preserving


def test_surrogate_refuses_other_atoms_masses_constraints_and_strides(vacuum_system):
    with pytest.raises(ValueError, match="constraints"):
        SurrogateForecaster(vacuum_system, 0.01, surrogate=build_system("amber14-vacuum", constraints=None))
    heavy = build_system("amber14-vacuum").system
    heavy.setParticleMass(1, 4.0 * unit.dalton)
    with pytest.raises(ValueError, match="masses"):
        SurrogateForecaster(vacuum_system, 0.01, surrogate=heavy)
    with pytest.raises(ValueError, match="particles"):
        SurrogateForecaster(vacuum_system, 0.01, surrogate=_double_wells(3))
    with pytest.raises(ValueError, match="whole multiple"):
        SurrogateForecaster(vacuum_system, 0.003)
    with pytest.raises(TypeError, match="surrogate must be"):
        SurrogateForecaster(vacuum_system, 0.01, surrogate=42)
