"""OpenMM reporters of openmm-forecast: a blow-up check that stops a run before its broken state is written.

OpenMM's Reference platform integrates NaN and Inf without complaint, and its reporters write what they
get: a run that blows up (too long a time step, an absurd temperature, a potential with holes) would end
with exit 0, a log of 1e155 K and frames of Inf.  :class:`BlowUpReporter` reads each reported state first
and raises :class:`~openmm_forecast.errors.BlowUpError` when it is not finite or hotter than any physical
run gets, so that the reporters after it never write that state.

:func:`describe_reports` and :func:`generate_reports` serve any OpenMM reporter for steps that a forecast
jump covers, as ``openmm.app.Simulation._simulate`` serves them for integrated steps.
"""

import numpy as np
from openmm import unit

from .errors import BlowUpError
from .guards import degrees_of_freedom, kinetic_temperature_K

MAX_TEMPERATURE_FACTOR = 10.0
"""A kinetic temperature above this many times the target one is a blow-up, not a fluctuation.  The kinetic
temperature of ``n`` degrees of freedom at equilibrium is ``T chi2_n / n``: it exceeds ``10 T`` with probability
1e-6 for ``n = 3``, 6e-20 for ``n = 12`` and 1e-72 for ``n = 48`` (alanine dipeptide with HBonds)."""


class BlowUpReporter:
    """Stop a simulation whose state is no longer finite or far hotter than its thermostat.

    An OpenMM reporter (``describeNextReport``/``report``) that checks the state every ``interval`` steps:
    positions, potential and kinetic energy finite, kinetic temperature at most :data:`MAX_TEMPERATURE_FACTOR`
    times ``temperature``.  Put it first in ``simulation.reporters``, with the interval of the reporters that
    write files: reporters due on the same step are served in list order from one State, so nothing of a state
    that fails the check is written.

    Parameters
    ----------
    system : openmm.System
        For the degrees of freedom (:func:`~openmm_forecast.guards.degrees_of_freedom`).
    temperature : openmm.unit.Quantity
        The thermostat's temperature.
    interval : int
        Steps between checks.
    """

    def __init__(self, system, temperature, interval):
        self.dof = degrees_of_freedom(system)
        self.temperature_K = float(temperature.value_in_unit(unit.kelvin))
        self.interval = int(interval)

    def describeNextReport(self, simulation):
        """OpenMM's reporter protocol: the next check, wanting positions and energies."""
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": ["positions", "energy"]}

    def report(self, simulation, state):
        """OpenMM's reporter protocol: :meth:`check` the state."""
        self.check(state, simulation.currentStep)

    def check(self, state, step):
        """Raise :class:`~openmm_forecast.errors.BlowUpError` when ``state`` (with positions and energies) blew up.

        Parameters
        ----------
        state : openmm.State
        step : int
            The step it belongs to, for the message.
        """
        time_ps = state.getTime().value_in_unit(unit.picosecond)
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        potential_kJ = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kinetic_kJ = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperature_K = kinetic_temperature_K(kinetic_kJ, self.dof)
        limit_K = MAX_TEMPERATURE_FACTOR * self.temperature_K
        problem = None
        if not np.isfinite(positions).all():
            problem = f"{int(np.count_nonzero(~np.isfinite(positions).all(axis=1)))} atoms have non-finite positions"
        elif not (np.isfinite(potential_kJ) and np.isfinite(kinetic_kJ)):
            problem = f"the energy is not finite (potential {potential_kJ:g}, kinetic {kinetic_kJ:g} kJ/mol)"
        elif temperature_K > limit_K:
            problem = (f"the kinetic temperature is {temperature_K:.3g} K, above {MAX_TEMPERATURE_FACTOR:g} times the "
                       f"thermostat's {self.temperature_K:g} K")
        if problem is not None:
            raise BlowUpError(f"the simulation blew up at step {step} ({time_ps:g} ps): {problem}", step)

    def check_simulation(self, simulation):
        """:meth:`check` the simulation's current state (for example before writing a checkpoint)."""
        state = simulation.context.getState(getPositions=True, getEnergy=True)
        self.check(state, simulation.currentStep)


def describe_reports(simulation):
    """Every reporter's next report, as ``(reporter, description)`` in OpenMM 8's dict form.

    Old-style tuples ``(steps, positions, velocities, forces, energy[, wrap])`` are converted as
    ``Simulation._simulate`` converts them.  ``description['steps']`` counts from ``currentStep``.
    """
    reports = []
    for reporter in simulation.reporters:
        report = reporter.describeNextReport(simulation)
        if isinstance(report, tuple):
            names = ("positions", "velocities", "forces", "energy")
            description = {"steps": report[0], "include": [name for name, wanted in zip(names, report[1:5]) if wanted]}
            if len(report) > 5:
                description["periodic"] = report[5]
            report = description
        reports.append((reporter, report))
    return reports


def generate_reports(simulation, due):
    """Call ``report(simulation, state)`` of each reporter in ``due``, as ``Simulation`` does.

    Reporters that want wrapped positions share one State, those that want unwrapped positions another;
    reporters without positions join the larger group.

    Parameters
    ----------
    simulation : openmm.app.Simulation
    due : list of (reporter, description)
        From :func:`describe_reports`, those whose report falls on the current step.
    """
    try:
        uses_pbc = simulation.system.usesPeriodicBoundaryConditions()
    except Exception:  # as in Simulation.__init__: not every force implements it
        uses_pbc = simulation.topology.getUnitCellDimensions() is not None
    wrapped, unwrapped, either = [], [], []
    for reporter, report in due:
        if "positions" not in report["include"]:
            either.append((reporter, report))
        elif uses_pbc if report.get("periodic") is None else report["periodic"]:
            wrapped.append((reporter, report))
        else:
            unwrapped.append((reporter, report))
    if len(wrapped) > len(unwrapped):
        wrapped += either
    else:
        unwrapped += either
    for group, periodic in ((wrapped, True), (unwrapped, False)):
        if not group:
            continue
        include = set().union(*(set(report["include"]) for _, report in group))
        state = simulation.context.getState(
            groups=simulation.context.getIntegrator().getIntegrationForceGroups(),
            enforcePeriodicBox=periodic,
            parameters=True,
            **{name: True for name in include},
        )
        for reporter, _ in group:
            reporter.report(simulation, state)
