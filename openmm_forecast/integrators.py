"""Integrators openmm-forecast needs beyond OpenMM's own.

OpenMM's ``VerletIntegrator`` is a leapfrog scheme: the velocities it reports lag the positions by half
a step.  A learned flow map needs synchronous (x(t), v(t)) pairs, so NVE data generation, the ``verlet``
baseline forecaster and energy-conservation checks use the velocity Verlet scheme below, with RATTLE
projections when the System has constraints.
"""

from openmm import unit

from ._runtime import openmm as mm
from .units import positive


def velocity_verlet_integrator(timestep, update_context_state=True):
    """Build a velocity Verlet integrator (with RATTLE when the System has constraints).

    Parameters
    ----------
    timestep : openmm.unit.Quantity
        Integration time step (time units).
    update_context_state : bool
        Let the System's forces act on the state at every step (OpenMM's ``addUpdateContextState``: a
        ``CMMotionRemover`` zeroes the centre-of-mass velocity, an ``AndersenThermostat`` draws velocities).
        False for a proposal that must stay volume-preserving and reversible whatever the System holds.

    Returns
    -------
    openmm.CustomIntegrator
        One step: v += dt/2 f/m; x += dt v; constrain x (and correct v); v += dt/2 f(x)/m; constrain v.
        Positions and velocities reported by ``getState`` refer to the same time.
    """
    dt_ps = positive(timestep, unit.picosecond, "timestep")
    integrator = mm.CustomIntegrator(dt_ps)
    integrator.addPerDofVariable("x1", 0.0)
    if update_context_state:
        integrator.addUpdateContextState()
    integrator.addComputePerDof("v", "v + 0.5*dt*f/m")
    integrator.addComputePerDof("x", "x + dt*v")
    integrator.addComputePerDof("x1", "x")
    integrator.addConstrainPositions()
    integrator.addComputePerDof("v", "v + 0.5*dt*f/m + (x - x1)/dt")
    integrator.addConstrainVelocities()
    return integrator
