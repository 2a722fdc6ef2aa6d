"""Sanity and energy guards: what each one catches, and physics of the energy helpers."""

import numpy as np
import pytest
from openmm import app, unit

from openmm_forecast.guards import (
    VDW_RADII_NM,
    DriftGuard,
    SanityGuard,
    degrees_of_freedom,
    find_stereocentres,
    kinetic_energy_kJ,
    kinetic_temperature_K,
    kinetic_temperature_score,
    signed_volumes,
)
from openmm_forecast.integrators import velocity_verlet_integrator
from openmm_forecast.units import kT_kJ


@pytest.fixture(scope="module")
def thermal_frames(vacuum_system):
    """Positions (nm) and velocities (nm/ps) of alanine dipeptide at 300 K, 5 frames 20 fs apart."""
    simulation = vacuum_system.create_simulation(platform="Reference", seed=3)
    frames_x, frames_v = [], []
    for _ in range(5):
        simulation.step(10)
        state = simulation.context.getState(getPositions=True, getVelocities=True)
        frames_x.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        frames_v.append(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
    return np.array(frames_x), np.array(frames_v)


@pytest.fixture(scope="module")
def guard(vacuum_system, thermal_frames):
    return SanityGuard(vacuum_system.topology, thermal_frames[0][0])


def _rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_alanine_dipeptide_has_one_stereocentre_ca(vacuum_system):
    centres = find_stereocentres(vacuum_system.topology)
    names = [atom.name for atom in vacuum_system.topology.atoms()]
    assert centres.shape == (1, 4)
    assert names[centres[0, 0]] == "CA"
    # Its heavy neighbours: backbone N, carbonyl C and CB (the hydrogen HA is left out).
    assert sorted(names[i] for i in centres[0, 1:]) == ["C", "CB", "N"]


def _halomethane(substituents):
    """Topology of a carbon bonded to the given elements (no positions needed)."""
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    carbon = topology.addAtom("C1", app.element.carbon, residue)
    for k, symbol in enumerate(substituents):
        atom = topology.addAtom(f"X{k}", app.element.get_by_symbol(symbol), residue)
        topology.addBond(carbon, atom)
    return topology


def test_stereocentres_need_four_distinct_substituents():
    assert len(find_stereocentres(_halomethane(["H", "F", "Cl", "Br"]))) == 1  # bromochlorofluoromethane
    assert len(find_stereocentres(_halomethane(["H", "H", "Cl", "Br"]))) == 0
    assert len(find_stereocentres(_halomethane(["F", "Cl", "Br"]))) == 0  # three bonds: not sp3


def test_signed_volume_flips_under_reflection_not_rotation(thermal_frames, vacuum_system, rng):
    x = thermal_frames[0][0]
    centres = find_stereocentres(vacuum_system.topology)
    volume = signed_volumes(x, centres)
    rotated = x @ _rotation(rng).T + 1.0
    assert np.allclose(signed_volumes(rotated, centres), volume)
    assert np.allclose(signed_volumes(-x, centres), -volume)
    assert abs(volume[0]) > 1e-4  # nm^3: a tetrahedral centre, far from planar


def test_sane_thermal_frames_pass_also_rotated(guard, thermal_frames, rng):
    x, v = thermal_frames
    assert guard.check(x, v) is None
    rotation = _rotation(rng)
    assert guard.check(x @ rotation.T + 3.0, v @ rotation.T) is None


def test_each_insane_frame_is_caught_with_its_reason(guard, thermal_frames, vacuum_system):
    x, v = thermal_frames
    names = [atom.name for atom in vacuum_system.topology.atoms()]

    bad = v.copy()
    bad[2, 5, 1] = np.nan  # one velocity component of one middle frame
    assert guard.check(x, bad) == "nonfinite"
    bad = x.copy()
    bad[-1, 0, 0] = np.inf
    assert guard.check(bad, v) == "nonfinite"

    # Clash: put the ACE methyl carbon 0.05 nm from the NME methyl carbon (far apart in the chain).
    i, j = names.index("CH3"), len(names) - 4
    assert guard.check(x, v) is None
    bad = x.copy()
    bad[3, i] = bad[3, j] + np.array([0.05, 0.0, 0.0])
    assert guard.check(bad, v) == "clash"

    # Bond: pull the alpha hydrogen out along its C-H bond to twice its length (no clash on the way).
    ca, ha = names.index("CA"), names.index("HA")
    bad = x.copy()
    bad[1, ha] = bad[1, ca] + 2.0 * (bad[1, ha] - bad[1, ca])
    assert guard.check(bad, v) == "bond"

    # Chirality: the mirror image keeps every distance (no clash, no bond change) but inverts CA.
    assert guard.check(-x, -v) == "chirality"


def test_clash_thresholds_are_van_der_waals_fractions_independent_of_the_reference(vacuum_system, thermal_frames):
    x = thermal_frames[0]
    elements = vacuum_system.elements
    guard = SanityGuard(vacuum_system.topology, x[0], clash_fraction=0.5)
    expected = [0.5 * (VDW_RADII_NM[elements[i]] + VDW_RADII_NM[elements[j]]) for i, j in guard.nonbonded_pairs]
    np.testing.assert_allclose(guard.clash_thresholds_nm, expected)
    # Another conformation as reference (the accelerator takes the current state) gives the same
    # thresholds: a hydrogen bond that forms later is not a clash because the reference had none.
    other = SanityGuard(vacuum_system.topology, x[-1] @ _rotation(np.random.default_rng(3)).T, clash_fraction=0.5)
    np.testing.assert_array_equal(other.clash_thresholds_nm, guard.clash_thresholds_nm)
    absolute = SanityGuard(vacuum_system.topology, x[0], clash_distance_nm=0.1).clash_thresholds_nm
    assert np.all(absolute == 0.1) and len(absolute) == len(guard.nonbonded_pairs)
    with pytest.raises(ValueError, match="clash_fraction"):
        SanityGuard(vacuum_system.topology, x, clash_fraction=1.2)
    with pytest.raises(ValueError, match="bond_stretch"):
        SanityGuard(vacuum_system.topology, x, bond_stretch=0.9)


def test_kinetic_energy_matches_openmm(vacuum_system):
    simulation = vacuum_system.create_simulation(
        platform="Reference", seed=5, integrator=velocity_verlet_integrator(1.0 * unit.femtosecond)
    )
    simulation.step(5)
    state = simulation.context.getState(getVelocities=True, getEnergy=True)
    velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    expected = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert kinetic_energy_kJ(velocities, vacuum_system.masses) == pytest.approx(expected, rel=1e-9)


def test_degrees_of_freedom_and_temperature(vacuum_system):
    # 22 atoms * 3, minus 12 X-H bond constraints, minus 3 for the centre-of-mass motion remover.
    dof = degrees_of_freedom(vacuum_system.system)
    assert dof == 66 - 12 - 3
    # Maxwell-Boltzmann velocities for all 66 components, projected (mass-weighted) onto the constraints
    # and with the centre-of-mass velocity removed, have a mean kinetic temperature of exactly T.
    simulation = vacuum_system.create_simulation(platform="Reference", seed=1, minimize=False)
    masses = vacuum_system.masses
    rng = np.random.default_rng(2)
    temperatures = []
    for _ in range(300):
        v = rng.normal(size=(22, 3)) * np.sqrt(kT_kJ(300.0) / masses)[:, None]
        simulation.context.setVelocities(v - np.average(v, axis=0, weights=masses))
        simulation.context.applyVelocityConstraints(1e-10)
        v = simulation.context.getState(getVelocities=True).getVelocities(asNumpy=True)._value
        temperatures.append(kinetic_temperature_K(kinetic_energy_kJ(v, masses), dof))
    standard_error = 300 * np.sqrt(2.0 / dof) / np.sqrt(len(temperatures))
    assert abs(np.mean(temperatures) - 300) < 4 * standard_error  # 4 standard errors: 13.6 K
    assert np.isnan(kinetic_temperature_K(1.0, 0))  # no kinetic degrees of freedom: no temperature


@pytest.mark.parametrize("dof", [12, 51, 500])
def test_kinetic_temperature_score_has_normal_tails(dof):
    """Canonical kinetic temperatures (dof T / T0 chi-squared) score as a standard normal, tails included.

    The accelerator re-equilibrates at abs(score) > 4: a linear score (T - T0) / (T0 sqrt(2 / dof)) has a
    3-sigma upper tail of 0.45 % at dof 51 (normal: 0.135 %) and set off re-equilibrations in equilibrium.
    """
    rng = np.random.default_rng(dof)
    n = 2_000_000
    temperatures = 300.0 * rng.chisquare(dof, size=n) / dof
    score = kinetic_temperature_score(temperatures, 300.0, dof)
    assert abs(np.mean(score)) < 0.01 and abs(np.std(score) - 1.0) < 0.01
    for side, tail in (("upper", np.mean(score > 3.0)), ("lower", np.mean(score < -3.0))):
        expected = 0.0013499  # one-sided 3-sigma tail of a standard normal
        assert abs(tail - expected) < 0.1 * expected + 5 * np.sqrt(expected / n), (side, tail)
    assert kinetic_temperature_score(300.0 * (1 - 2 / (9 * dof)) ** 3, 300.0, dof) == pytest.approx(0.0, abs=1e-12)


def test_drift_guard_fires_past_the_drift_bound_or_a_temperature_off_by_more_sigmas_than_allowed():
    kT, target_K, dof = kT_kJ(300.0), 300.0, 51
    guard = DriftGuard(drift_tolerance_kT=5.0, temperature_sigmas=4.0)
    guard.add(4.0 * kT)
    assert not guard.due(kT, target_K, target_K, dof, thermostatted=True)
    guard.add(1.5 * kT)  # 5.5 kT accumulated
    assert guard.exceeded(kT) and guard.due(kT, target_K, target_K, dof, thermostatted=False)
    guard.reset()
    assert guard.drift_kJ == 0.0 and not guard.due(kT, target_K, target_K, dof, thermostatted=True)
    # The kinetic temperature 4.5 and 3.5 standard normal deviations hot (Wilson-Hilferty, as the score maps it).
    c = 2.0 / (9.0 * dof)
    hot_K, warm_K = (target_K * ((1.0 - c) + z * np.sqrt(c)) ** 3 for z in (4.5, 3.5))
    assert guard.due(kT, hot_K, target_K, dof, thermostatted=True)
    assert not guard.due(kT, warm_K, target_K, dof, thermostatted=True)
    assert not guard.due(kT, hot_K, target_K, dof, thermostatted=False)  # NVE: T is not canonical
    assert not DriftGuard(5.0, None).due(kT, hot_K, target_K, dof, thermostatted=True)


def test_drift_guard_with_a_window_sums_only_the_last_jumps():
    guard = DriftGuard(drift_tolerance_kT=5.0, temperature_sigmas=None, window=2)
    for dh in (3.0, -1.0, 5.0):
        guard.add(dh)
    assert guard.drift_kJ == pytest.approx(4.0) and guard.terms_kJ == [-1.0, 5.0]
