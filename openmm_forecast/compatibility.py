"""What the forecast accelerator can drive: checks of the System, integrator, atoms and training conditions.

Each check refuses what the accelerator cannot reason about with an error that says what to change
(:class:`~openmm_forecast.errors.UnsupportedSystemError`, :class:`~openmm_forecast.errors.ModelMismatchError`,
``ValueError``), or warns once where a run stays guarded (another temperature, an inexact Metropolis test).
Units: K, ps.
"""

import logging
import warnings

from openmm import unit

from ._logging import warn_once
from ._runtime import openmm as mm
from .acceptance import MetropolisRule
from .errors import ModelMismatchError, UnsupportedSystemError
from .forecasters.base import is_structure_preserving
from .integrators import velocity_verlet_integrator
from .systems import constraints_name
from .units import positive

logger = logging.getLogger("openmm_forecast.accelerator")  # the driver's messages, under the name users filter on

SUPPORTED_INTEGRATORS = (mm.LangevinMiddleIntegrator, mm.LangevinIntegrator, mm.VerletIntegrator)
"""Integrator classes driven as they are (exact types; subclasses such as Drude integrators are refused)."""

SOLVENT_RESIDUES = {"HOH", "WAT", "SOL", "TIP3", "TIP4", "TIP5", "SPC", "NA", "CL", "K", "MG", "CA", "Na+", "Cl-", "K+"}
"""Residue names of water and ions: atoms in such residues beyond the forecaster's atoms mean a solvated system."""

TEMPERATURE_MISMATCH = 0.05
"""Relative difference of the forecaster's training temperature and the simulation's above which a warning says so."""


def is_velocity_verlet(integrator):
    """Whether ``integrator`` is a CustomIntegrator running openmm-forecast's velocity Verlet program."""
    def program(custom):
        return [custom.getComputationStep(i) for i in range(custom.getNumComputations())]

    return (type(integrator) is mm.CustomIntegrator
            and program(integrator) == program(velocity_verlet_integrator(integrator.getStepSize())))


def check_integrator(integrator, allow_custom):
    """Refuse integrators whose state or time step the accelerator cannot reason about.

    Parameters
    ----------
    integrator : openmm.Integrator
    allow_custom : bool
        Accept any ``CustomIntegrator`` (the user vouches for it).

    Raises
    ------
    UnsupportedSystemError
    """
    kind = type(integrator)
    if kind in SUPPORTED_INTEGRATORS:
        return
    if kind is mm.CustomIntegrator:
        if allow_custom or is_velocity_verlet(integrator):
            return
        raise UnsupportedSystemError(
            "the simulation uses a CustomIntegrator the accelerator does not know; supported: "
            "LangevinMiddleIntegrator, LangevinIntegrator, VerletIntegrator and "
            "openmm_forecast.velocity_verlet_integrator (pass allow_custom_integrator=True if your "
            "integrator advances positions and velocities by getStepSize() per step and keeps no other state)"
        )
    raise UnsupportedSystemError(
        f"{kind.__name__} is not supported: the accelerator needs a fixed step size and a state made of "
        "positions and velocities only (no multiple time steps, no variable steps, no thermostat chains "
        "or auxiliary particles, no compound integrators); supported: LangevinMiddleIntegrator, "
        "LangevinIntegrator, VerletIntegrator and openmm_forecast.velocity_verlet_integrator"
    )


def check_supported_system(system):
    """Refuse what the accelerator cannot drive: barostats, virtual sites, Drude particles.

    A barostat changes the box between jumps that do not see it (a forecast carries no box), so even the
    exact ``verlet`` proposal is rejected (3 of 28 jumps accepted with a MonteCarloBarostat, 18 of 18
    without); virtual sites and Drude particles are not positions a forecaster predicts.

    Raises
    ------
    UnsupportedSystemError
    """
    for force in system.getForces():
        name = type(force).__name__
        if "Barostat" in name:
            raise UnsupportedSystemError(
                f"the System has a {name}: constant-pressure simulations are not supported (a forecast carries no "
                "box, so volume moves and jumps would not mix correctly); remove the barostat (equilibrate the "
                "density with plain MD first, then accelerate at constant volume)"
            )
        if name == "DrudeForce":
            raise UnsupportedSystemError("the System has Drude particles (DrudeForce): polarisable systems are "
                                         "not supported")
    virtual = [i for i in range(system.getNumParticles()) if system.isVirtualSite(i)]
    if virtual:
        raise UnsupportedSystemError(
            f"the System has {len(virtual)} virtual sites (first: particle {virtual[0]}): not supported (a "
            "forecaster predicts atoms only); use a water model without them (TIP3P) or an implicit solvent"
        )


def forecaster_key(forecaster):
    """What identifies a forecaster in once-per-process warnings: its architecture and training data."""
    return (forecaster.metadata.architecture, forecaster.metadata.data_fingerprint)


def check_atoms(simulation, forecaster, molecular_system=None):
    """Refuse a forecaster made for other atoms than the simulation's, or a solvated simulation.

    Parameters
    ----------
    simulation : openmm.app.Simulation
    forecaster : Forecaster
    molecular_system : MolecularSystem, optional
        Its setup name is checked against the forecaster's.

    Raises
    ------
    UnsupportedSystemError
        Particles that are not Topology atoms, or solvent beyond the forecaster's atoms.
    ModelMismatchError
        Other elements, count or order (from ``forecaster.check_compatible``).
    """
    topology, system, meta = simulation.topology, simulation.system, forecaster.metadata
    if topology.getNumAtoms() != system.getNumParticles():
        raise UnsupportedSystemError(
            f"the System has {system.getNumParticles()} particles but the Topology {topology.getNumAtoms()} "
            "atoms (virtual sites or extra particles are not supported)"
        )
    atoms = list(topology.atoms())
    elements = [atom.element.symbol if atom.element is not None else "?" for atom in atoms]
    extra = {atom.residue.name for atom in atoms[meta.n_atoms :]}
    if extra and extra <= SOLVENT_RESIDUES and elements[: meta.n_atoms] == meta.elements:
        raise UnsupportedSystemError(
            f"the simulation has {len(elements)} atoms but the forecaster describes only the first "
            f"{meta.n_atoms} (further residues: {', '.join(sorted(extra))}); solvated systems are not "
            "supported: use an implicit-solvent or vacuum setup"
        )
    forecaster.check_compatible(elements, setup=getattr(molecular_system, "setup", None))


def check_training_conditions(simulation, forecaster, molecular_system=None):
    """Compare the forecaster's training conditions with the simulation's.

    Constraints that differ are refused: the forecaster's frames lie on another constraint manifold, so
    the projection changes every jump (issue 12: 0 of 47 jumps accepted for such mismatches).  A different
    temperature is only warned about, once: the jumps stay guarded, a model may well serve nearby
    temperatures, and annealing (``setTemperature``) must keep working.  The time step is not a training
    condition (the forecaster maps physical time; the stride must be a whole number of steps, checked when
    the accelerator reads the integrator).  Baselines built on this simulation's own system record its
    conditions and never trigger either.

    Raises
    ------
    ModelMismatchError
        Other constraints.
    """
    meta, integrator = forecaster.metadata, simulation.integrator
    simulated = getattr(molecular_system, "constraints", None)
    if simulated is None and simulation.system.getNumConstraints() == 0:
        simulated = "none"
    try:
        trained = None if meta.constraints is None else constraints_name(meta.constraints)
    except (ValueError, KeyError):  # not a named constraint set (e.g. "12 constraints"): nothing to compare
        trained = None
    if trained is not None and simulated is not None and trained != constraints_name(simulated):
        raise ModelMismatchError(
            f"forecaster {meta.architecture!r} was trained with constraints {trained!r}, but the simulation "
            f"has constraints {constraints_name(simulated)!r}: its frames would not fit this system's "
            "constraints; simulate with the forecaster's constraints or train one for these"
        )
    if meta.temperature_K is None or not hasattr(integrator, "getTemperature"):
        return
    simulated_K = integrator.getTemperature().value_in_unit(unit.kelvin)
    trained_K = float(meta.temperature_K)
    if abs(simulated_K - trained_K) > TEMPERATURE_MISMATCH * trained_K:
        warn_once(
            logger, ("temperature", forecaster_key(forecaster), trained_K, simulated_K),
            "forecaster %r was trained at %g K but the simulation runs at %g K: expect fewer accepted jumps "
            "(every jump is still checked)", meta.architecture, trained_K, simulated_K,
        )


def check_exact_rule(rule, forecaster, system, allow_inexact):
    """Refuse (or, with ``allow_inexact``, warn about) a Metropolis-type rule with an uncertified proposal.

    The ``metropolis`` and ``ghmc`` rules are exact only with a volume-preserving, time-reversible proposal
    (``forecaster.structure_preserving``).  A map certified without constraints (the symplectic architecture)
    on a System with constraints is warned about: the projection onto them is not volume-preserving.

    Raises
    ------
    ValueError
        An uncertified proposal without ``allow_inexact``.
    """
    meta = forecaster.metadata
    if not isinstance(rule, MetropolisRule):  # metropolis and ghmc
        return
    if not forecaster.structure_preserving:
        what = (f"the {rule.name!r} rule is exact only with a volume-preserving, time-reversible proposal "
                f"(surrogate, verlet, symplectic); the {meta.architecture!r} forecaster is not certified so, and "
                "with it the test certifies nothing: the shipped network 'accepted' 80-88 % of its jumps while the "
                "molecule cooled to 46-130 K")
        if not allow_inexact:
            raise ValueError(f"{what}. Use acceptance='tolerance' or 'dynamics', or pass "
                             "allow_inexact_metropolis=True (CLI --allow-inexact-metropolis) to run it anyway")
        warnings.warn(f"{what}; running it because allow_inexact_metropolis=True: check the temperature",
                      UserWarning, stacklevel=3)
    unconstrained_map = meta.constraints is None or meta.constraints == "none"
    if system.getNumConstraints() > 0 and unconstrained_map and is_structure_preserving(meta):
        warnings.warn(
            f"the {meta.architecture!r} forecaster is certified symplectic and reversible for systems without "
            f"constraints, but this System has {system.getNumConstraints()} constraints: projecting "
            "its forecasts onto them is not volume-preserving, so the Metropolis mode is approximate here "
            "(build the system with constraints=None for an exact chain)",
            UserWarning, stacklevel=3,
        )


def has_thermostat(system, integrator, thermostatted=None):
    """Whether integration thermalises (and so removes the drift of accepted jumps).

    ``thermostatted`` when given; else True for Langevin integrators with friction, a System with an
    ``AndersenThermostat``, and CustomIntegrators other than openmm-forecast's velocity Verlet (a
    vouched-for custom integrator is presumed thermostatted: pass ``thermostatted=False`` if not).
    """
    if thermostatted is not None:
        return bool(thermostatted)
    if any(isinstance(force, mm.AndersenThermostat) for force in system.getForces()):
        return True
    if hasattr(integrator, "getFriction"):
        return integrator.getFriction().value_in_unit(unit.picosecond**-1) > 0
    if type(integrator) is mm.CustomIntegrator:
        return not is_velocity_verlet(integrator)
    return False


def check_temperature_option(temperature, integrator):
    """``temperature`` (the accelerator's option) is for integrators without one; with one it must agree.

    Raises
    ------
    ValueError
        ``temperature`` differs from the integrator's.
    """
    if temperature is None or not hasattr(integrator, "getTemperature"):
        return
    option_K = positive(temperature, unit.kelvin, "temperature")
    integrator_K = integrator.getTemperature().value_in_unit(unit.kelvin)
    if abs(option_K - integrator_K) > 1e-6 * integrator_K:
        raise ValueError(
            f"temperature ({option_K} K) differs from the integrator's ({integrator_K} K): the jumps would be "
            "thermostatted and judged at another temperature than the integration; leave temperature unset "
            "(the integrator's is used, also after setTemperature)"
        )


def target_temperature_K(integrator, temperature, forecaster):
    """The temperature jumps are judged at, in K: the integrator's, else ``temperature``, else the forecaster's.

    Parameters
    ----------
    integrator : openmm.Integrator
    temperature : openmm.unit.Quantity or None
        The accelerator's ``temperature`` option.
    forecaster : Forecaster

    Raises
    ------
    ValueError
        No temperature is known.
    """
    if hasattr(integrator, "getTemperature"):
        return integrator.getTemperature().value_in_unit(unit.kelvin)
    if temperature is not None:
        return positive(temperature, unit.kelvin, "temperature")
    if forecaster.metadata.temperature_K is not None:
        return float(forecaster.metadata.temperature_K)
    raise ValueError(
        "the accelerator needs a temperature for its energy tolerance (in kT): the integrator has none and "
        "the forecaster's metadata neither; pass temperature=300*unit.kelvin (for example)"
    )


def integrator_settings(simulation, forecaster, rule, options):
    """The integrator's step size, temperature and friction, and what depends on them (stride and segment in
    steps), as keyword arguments of :meth:`JumpCycle.configure <openmm_forecast.jumps.JumpCycle.configure>`.

    Parameters
    ----------
    simulation : openmm.app.Simulation
    forecaster : Forecaster
        Its stride (ps), history and training temperature.
    rule : AcceptanceRule
        A rule that never integrates has no segment.
    options : AcceleratorOptions
        ``segment_steps``, ``thermostat_jumps``, ``temperature`` and ``thermostatted``.

    Returns
    -------
    dict
        ``timestep_ps``, ``stride_steps``, ``segment_steps``, ``temperature_K``, ``friction_per_ps`` (1/ps; 0
        without a Langevin integrator or with ``thermostat_jumps=False``), ``thermostatted``.

    Raises
    ------
    UnsupportedSystemError
        The forecaster's stride is not a whole number of the integrator's steps.
    ValueError
        ``segment_steps`` does not cover the forecaster's history, or no temperature is known.
    """
    integrator, meta = simulation.integrator, forecaster.metadata
    timestep_ps = integrator.getStepSize().value_in_unit(unit.picosecond)
    ratio = meta.stride_ps / timestep_ps
    stride_steps = int(round(ratio))
    if stride_steps < 1 or abs(ratio - stride_steps) > 1e-6 * ratio:
        raise UnsupportedSystemError(
            f"the forecaster's stride ({meta.stride_ps} ps) is not a whole number of the integrator's "
            f"steps ({timestep_ps} ps); use a step size that divides the stride"
        )
    history_steps = (meta.history - 1) * stride_steps
    segment_steps = max(history_steps, stride_steps) if options.segment_steps is None else options.segment_steps
    if not rule.integrates:
        segment_steps = 0
    if segment_steps < history_steps:
        raise ValueError(
            f"segment_steps ({segment_steps}) must cover the forecaster's history: at least "
            f"{history_steps} steps ({meta.history - 1} strides of {stride_steps} steps)"
        )
    has_friction = options.thermostat_jumps and hasattr(integrator, "getFriction")
    return dict(
        timestep_ps=timestep_ps, stride_steps=stride_steps, segment_steps=segment_steps,
        temperature_K=target_temperature_K(integrator, options.temperature, forecaster),
        friction_per_ps=integrator.getFriction().value_in_unit(unit.picosecond**-1) if has_friction else 0.0,
        thermostatted=has_thermostat(simulation.system, integrator, options.thermostatted),
    )
