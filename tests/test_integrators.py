"""Velocity Verlet: synchronous states, energy conservation, agreement with OpenMM's own Verlet."""

import numpy as np
import pytest
from openmm import unit

from openmm_forecast._runtime import openmm as mm
from openmm_forecast.integrators import velocity_verlet_integrator


def _context(molecular_system, integrator, seed=5):
    context = mm.Context(molecular_system.system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(molecular_system.positions)
    mm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    context.applyVelocityConstraints(1e-8)
    return context


def _total_energy(context):
    state = context.getState(getEnergy=True)
    return (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)


def _drift(molecular_system, timestep_fs, n_steps):
    integrator = velocity_verlet_integrator(timestep_fs * unit.femtosecond)
    context = _context(molecular_system, integrator)
    start = _total_energy(context)
    energies = []
    for _ in range(n_steps // 10):
        integrator.step(10)
        energies.append(_total_energy(context))
    return np.max(np.abs(np.array(energies) - start))


def test_nve_conserves_energy_with_constraints(vacuum_system):
    # 1 ps at 0.5 fs: fluctuations of H stay far below kT (2.49 kJ/mol at 300 K) ...
    small = _drift(vacuum_system, 0.5, 2000)
    assert small < 0.5
    # ... and the check is sensitive: a 4x larger step gives clearly larger errors (~16x for a 2nd-order method).
    large = _drift(vacuum_system, 2.0, 500)
    assert large > 4 * small


def test_positions_and_velocities_are_synchronous(vacuum_system):
    """x(t+dt) - x(t-dt) = 2 dt v(t) + O(dt^3): holds for velocity Verlet, fails for leapfrog's half-step v."""
    dt = 0.1 * unit.femtosecond
    integrator = velocity_verlet_integrator(dt)
    context = _context(vacuum_system, integrator)
    frames = []
    for _ in range(3):
        state = context.getState(getPositions=True, getVelocities=True)
        frames.append(
            (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
             state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        )
        integrator.step(1)
    dt_ps = dt.value_in_unit(unit.picosecond)
    central = (frames[2][0] - frames[0][0]) / (2 * dt_ps)
    error = np.abs(central - frames[1][1]).max()
    half_step_offset = np.abs(frames[1][1] - frames[0][1]).max() / 2
    assert error < 0.05 * half_step_offset


def test_matches_openmm_verlet_trajectory(vacuum_system):
    """Both are second-order Verlet schemes: positions agree to O(dt^2) over a short span."""
    context_vv = _context(vacuum_system, velocity_verlet_integrator(0.25 * unit.femtosecond))
    state = context_vv.getState(getPositions=True, getVelocities=True)
    leapfrog = mm.VerletIntegrator(0.25 * unit.femtosecond)
    context_lf = mm.Context(vacuum_system.system, leapfrog, mm.Platform.getPlatformByName("Reference"))
    context_lf.setState(state)
    context_vv.getIntegrator().step(200)
    leapfrog.step(200)
    x_vv = context_vv.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    x_lf = context_lf.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    assert np.abs(x_vv - x_lf).max() < 0.01


def test_rejects_bad_timestep():
    with pytest.raises(TypeError):
        velocity_verlet_integrator(0.5)
    with pytest.raises(ValueError):
        velocity_verlet_integrator(0 * unit.femtosecond)
