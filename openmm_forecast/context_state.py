"""The state of one walker's Context as a forecaster sees it: synchronous, projected, restorable.

OpenMM's leapfrog-type integrators (Verlet, Langevin) hold velocities half a step behind the positions.
:class:`ContextState` reads and writes a Context in the integrator's convention while handing out
:class:`Snapshot` objects with synchronous velocities ``v + dt/2 F/m`` (projected onto the constraints);
an accepted frame goes back into the Context as ``v - dt/2 F/m``.  Without this, every jump would add about
``dt^2/8 sum(F^2/m)`` of kinetic energy (measured: alanine dipeptide with Langevin at 2 fs and the verlet
baseline reached over 500 K after 3 ps and 1500 K after 9 ps).  Every write is projected onto the constraints
(positions, then velocities), and a Snapshot restores the Context exactly (positions, velocities, box, time,
step count).

Units: nm, nm/ps, ps, kJ/mol, amu.
"""

import dataclasses

import numpy as np
from openmm import unit

from .guards import kinetic_energy_kJ

_NM_PS = unit.nanometer / unit.picosecond


@dataclasses.dataclass
class Snapshot:
    """The state of one walker at one instant, as the Context holds it and as the forecaster sees it.

    Attributes
    ----------
    state : openmm.State
        Exactly what the Context holds (positions, velocities, box, time, step count, energy): the
        restore point of a jump.
    positions_nm : numpy.ndarray, shape (n_atoms, 3)
    velocities_nm_ps : numpy.ndarray, shape (n_atoms, 3)
        Velocities at the same time as the positions (for leapfrog-type integrators, whose Context holds
        velocities half a step earlier, advanced by half a kick and projected onto the constraints).
    hamiltonian_kJ : float
        ``U + 0.5 sum(m v^2)`` with the synchronous velocities, in kJ/mol.
    potential_kJ : float
        ``U`` in kJ/mol.
    forces_kJ_nm : numpy.ndarray or None, shape (n_atoms, 3)
        Forces in kJ/mol/nm (kept for leapfrog-type integrators and for forecasters that read them, None
        otherwise; read with the energy, no extra evaluation): a change of velocities alone reuses them and
        ``U`` instead of evaluating the potential again.
    """

    state: object
    positions_nm: np.ndarray
    velocities_nm_ps: np.ndarray
    hamiltonian_kJ: float
    potential_kJ: float
    forces_kJ_nm: np.ndarray = None


class ContextState:
    """Read, write and restore one Simulation's Context as :class:`Snapshot` objects.

    Parameters
    ----------
    simulation : openmm.app.Simulation
    masses_amu : numpy.ndarray, shape (n_atoms,)
    leapfrog : bool
        Whether the Context holds velocities half a step behind the positions (OpenMM's Verlet and Langevin
        integrators driven by a rule that integrates); else the Context holds synchronous velocities.
    keeps_forces : bool
        Read the forces with every energy (leapfrog integrators and forecasters that read forces).

    Attributes
    ----------
    current : Snapshot or None
        The Context now (as last read or written here).
    """

    def __init__(self, simulation, masses_amu, leapfrog, keeps_forces):
        self.simulation = simulation
        self.masses_amu = masses_amu
        self.leapfrog = leapfrog
        self.keeps_forces = keeps_forces
        self.has_constraints = simulation.system.getNumConstraints() > 0
        self.current = None
        self._parameters = {}  # the Context's global parameters when current's energy was read
        self.configure()

    def configure(self):
        """Read the integrator's step size, constraint tolerance and force groups (again after a change)."""
        integrator = self.simulation.integrator
        timestep_ps = integrator.getStepSize().value_in_unit(unit.picosecond)
        self._groups = integrator.getIntegrationForceGroups()
        self._constraint_tolerance = integrator.getConstraintTolerance()
        masses = self.masses_amu
        inverse_mass = np.divide(1.0, masses, out=np.zeros_like(masses), where=masses > 0)
        self._half_kick = (0.5 * timestep_ps * inverse_mass)[:, None]  # ps/amu: dt/2 F/m in nm/ps

    @property
    def context(self):
        return self.simulation.context

    def capture(self, reuse_current=False):
        """Read the Context into :attr:`current` and return it.

        For a leapfrog-type integrator the synchronous velocities ``v + dt/2 F/m`` are projected onto the
        constraints in the Context, whose velocities are then put back as they were.

        Parameters
        ----------
        reuse_current : bool
            When the Context still holds :attr:`current` (:meth:`holds_current`), return it without evaluating
            the potential again (a rule that never integrates then pays no extra target energy per call).
        """
        context = self.context
        if reuse_current and self.holds_current():
            return self.current
        self._parameters = dict(context.getParameters())
        state = context.getState(
            getPositions=True, getVelocities=True, getEnergy=True, getForces=self.keeps_forces, groups=self._groups
        )
        velocities = state.getVelocities(asNumpy=True).value_in_unit(_NM_PS)
        potential_kJ, forces = self._potential_and_forces(state)
        if self.leapfrog:
            velocities = velocities + self._half_kick * forces
            if self.has_constraints:
                try:
                    context.setVelocities(velocities)
                    context.applyVelocityConstraints(self._constraint_tolerance)
                    velocities = context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(_NM_PS)
                finally:  # even when interrupted: the Context keeps its own state
                    context.setState(state)
        self.current = self._snapshot(state, velocities, potential_kJ, forces)
        return self.current

    def holds_current(self):
        """Whether the Context holds exactly :attr:`current`: positions, velocities, box, time, step count, and the
        global parameters of its last evaluation.  A potential changed in place between calls (a Force's
        ``updateParametersInContext``) is not seen: create a new accelerator after such a change."""
        if self.current is None:
            return False
        context, held = self.context, self.current.state
        state = context.getState(getPositions=True, getVelocities=True)
        nm = unit.nanometer
        return (
            state.getStepCount() == held.getStepCount() and state.getTime() == held.getTime()
            and dict(context.getParameters()) == self._parameters
            and np.array_equal(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(nm),
                               held.getPeriodicBoxVectors(asNumpy=True).value_in_unit(nm))
            and np.array_equal(state.getPositions(asNumpy=True).value_in_unit(nm), self.current.positions_nm)
            and np.array_equal(state.getVelocities(asNumpy=True).value_in_unit(_NM_PS), self.current.velocities_nm_ps)
        )

    def write_candidate(self, positions_nm, velocities_nm_ps, before, span_steps, timestep_ps):
        """Write a sane frame into the Context ``span_steps`` steps after ``before``, projected; return its Snapshot.

        Parameters
        ----------
        positions_nm, velocities_nm_ps : numpy.ndarray, shape (n_atoms, 3)
            The frame (synchronous velocities).
        before : Snapshot
            The pre-jump state (its time and step count start the clock).
        span_steps : int
        timestep_ps : float
        """
        context = self.context
        context.setPositions(positions_nm)
        if self.has_constraints:
            context.applyConstraints(self._constraint_tolerance)
        self.advance_clock(before, span_steps, timestep_ps)
        return self.set_velocities(velocities_nm_ps)

    def advance_clock(self, before, span_steps, timestep_ps):
        """Set the Context's time and step count to ``span_steps`` steps of ``timestep_ps`` after ``before``."""
        start_ps = before.state.getTime().value_in_unit(unit.picosecond)
        self.context.setTime(start_ps + span_steps * timestep_ps)
        self.context.setStepCount(before.state.getStepCount() + span_steps)

    def set_velocities(self, velocities_nm_ps, same_positions_as=None):
        """Write synchronous velocities (nm/ps) into the Context in the integrator's convention; return the Snapshot.

        The velocities are projected onto the constraints; for a leapfrog-type integrator the Context then
        receives them half a kick earlier, ``v - dt/2 F/m`` (projected again).  The potential is evaluated
        once (energy and forces together), or not at all when ``same_positions_as`` is a Snapshot at the
        Context's current positions, whose energy and forces are reused: with a costly potential (an ML
        TorchForce) each evaluation costs as much as an MD step.
        """
        context = self.context
        context.setVelocities(velocities_nm_ps)
        if self.has_constraints:
            context.applyVelocityConstraints(self._constraint_tolerance)
        evaluate = same_positions_as is None
        state = context.getState(
            getPositions=True, getVelocities=True, getEnergy=evaluate, getForces=evaluate and self.keeps_forces,
            groups=self._groups,
        )
        synchronous = state.getVelocities(asNumpy=True).value_in_unit(_NM_PS)
        if evaluate:
            potential_kJ, forces = self._potential_and_forces(state)
        else:
            potential_kJ, forces = same_positions_as.potential_kJ, same_positions_as.forces_kJ_nm
        if self.leapfrog:
            context.setVelocities(synchronous - self._half_kick * forces)
            if self.has_constraints:
                context.applyVelocityConstraints(self._constraint_tolerance)
            state = context.getState(getPositions=True, getVelocities=True, groups=self._groups)
        return self._snapshot(state, synchronous, potential_kJ, forces)

    def project_frames(self, positions_nm, velocities_nm_ps, after):
        """Forecast frames projected onto the constraints like the candidate, for the history.

        Each frame passes through the Context (``applyConstraints``, ``applyVelocityConstraints``; no force
        evaluation), which is then restored to the candidate ``after``, also when interrupted.

        Parameters
        ----------
        positions_nm, velocities_nm_ps : numpy.ndarray, shape (n_frames, n_atoms, 3)
            nm and nm/ps (synchronous).
        after : Snapshot
            The candidate the Context holds.

        Returns
        -------
        list of (positions, velocities)
        """
        if not self.has_constraints or len(positions_nm) == 0:
            return list(zip(positions_nm, velocities_nm_ps))
        context = self.context
        frames = []
        try:
            for x, v in zip(positions_nm, velocities_nm_ps):
                context.setPositions(x)
                context.applyConstraints(self._constraint_tolerance)
                context.setVelocities(v)
                context.applyVelocityConstraints(self._constraint_tolerance)
                state = context.getState(getPositions=True, getVelocities=True)
                frames.append((
                    state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                    state.getVelocities(asNumpy=True).value_in_unit(_NM_PS),
                ))
        finally:  # even when interrupted: no forecast frame stays in the Context
            context.setState(after.state)
        return frames

    def restore(self, snapshot):
        """Put ``snapshot`` back into the Context exactly; it becomes :attr:`current`."""
        self.context.setState(snapshot.state)
        self.current = snapshot

    def _potential_and_forces(self, state):
        """``U`` (kJ/mol) and, when kept (see :class:`Snapshot`), the forces (kJ/mol/nm) of a State that has them."""
        potential_kJ = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = None
        if self.keeps_forces:
            forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return potential_kJ, forces

    def _snapshot(self, state, synchronous_velocities, potential_kJ, forces):
        kinetic = float(kinetic_energy_kJ(synchronous_velocities, self.masses_amu))
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        return Snapshot(state, positions, synchronous_velocities, potential_kJ + kinetic, potential_kJ, forces)
