"""The ``surrogate`` proposal: integrate a cheaper System over the span, with velocity Verlet.

A jump of the accelerator need not be learned: the exact flow of a *different*, cheaper potential (the
surrogate; by default derived from the target itself, :func:`derived_surrogate_system`: its System without the
costly terms) is a proposal too.  Velocity Verlet (RATTLE
with constraints) at any time step, on any potential, is a volume-preserving and time-reversible map of
(positions, velocities); with the Metropolis rule (accept with ``min(1, exp(-dH / kT))`` judged with the
*target's* ``H``, reverse velocities on rejection) the chain then samples the target's Boltzmann
distribution exactly, however wrong the surrogate (it only costs acceptance).  The metadata certify it:
``extra['structure_preserving'] = True`` (:attr:`Forecaster.structure_preserving`).

Cost and batching.  The walkers of a batch are integrated one after the other in one private Context
(positions and velocities set, ``n`` steps, state read).  One Context holding ``n_walkers`` non-interacting
copies (cross-copy pairs excluded in the NonbondedForce) was measured slower on the Reference platform:
amber14-vacuum, 50 steps of 2 fs per walker, 2-core CPU under load: 8 walkers 13.1 ms one at a time
against 28.8 ms as one 176-atom Context (its NoCutoff pair loop and exclusions grow as ``n_walkers^2``),
so that is not what this class does.  It also keeps any System usable as a surrogate (an implicit-solvent
``CustomGBForce`` cannot exclude pairs between copies).

Units: nm, nm/ps, ps, amu.
"""

import os

import numpy as np
from openmm import app, unit

from .._runtime import openmm as mm
from ..integrators import velocity_verlet_integrator
from ..platforms import get_platform
from ..shipped import resource_path
from ..systems import force_class_name, particle_masses, system_fingerprint
from ..units import positive, strip_units
from .base import Forecaster, ForecasterMetadata, stride_in_ps

DEFAULT_SURROGATE = "derived"
"""The default surrogate: derived from the target itself (:func:`derived_surrogate_system`)."""

CLASSICAL_FORCES = ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "RBTorsionForce",
                    "CMAPTorsionForce", "NonbondedForce", "CustomBondForce", "CustomAngleForce", "CustomTorsionForce",
                    "CustomNonbondedForce", "CustomCompoundBondForce", "CustomExternalForce", "CMMotionRemover")
"""Force classes a derived surrogate keeps: cheap, pairwise or bonded terms.  Every other force of the target (an
implicit-solvent ``GBSAOBCForce`` or ``CustomGBForce``, a ``TorchForce``, a ``PythonForce``, a barostat) is left
out: on alanine dipeptide in OBC2, the GB term is most of a Reference-platform step."""


IMPLICIT_SOLVENT_FORCES = ("GBSAOBCForce", "CustomGBForce")
"""Implicit-solvent forces: a derived surrogate leaves them out and screens its Coulomb terms instead."""

SCREENING_DIELECTRIC = 4.0
"""Relative permittivity that divides the Coulomb terms of a surrogate derived from an implicit-solvent target.
Measured (metropolis, 0.1 ps jumps, 48 jumps each, amber14 + OBC2, 2-core CPU under load): zwitterionic
tetra-alanine 0/48 accepted in plain vacuum, 11/48 at 4, 9/48 at 10, 6/48 at 30; ACE-(ALA)3-NME 12/48 in vacuum,
17/48 at 4, 16/48 at 10.  Without it the charged termini of a zwitterion, unscreened, pull the surrogate's
trajectories into salt bridges that the solvated target does not favour."""


def derived_surrogate_system(system, topology=None):
    """A cheap surrogate derived from a target System: the target without its costly terms.

    A target with classical terms keeps them (:data:`CLASSICAL_FORCES`); when it had an implicit-solvent force
    (:data:`IMPLICIT_SOLVENT_FORCES`, e.g. amber14 + OBC2), that force is left out and the Coulomb terms of its
    ``NonbondedForce`` are divided by :data:`SCREENING_DIELECTRIC`.  A target with none (a ``TorchForce`` or
    ``PythonForce`` alone) gets amber14 (``amber14-all.xml``, no cutoff) for ``topology``.  Either way the particles, masses (hydrogen mass repartitioning included),
    constraints and box are the target's, as :func:`check_same_particles_and_constraints` requires.

    Parameters
    ----------
    system : openmm.System
        The target's System (not modified).
    topology : openmm.app.Topology, optional
        The target's topology: needed only when the System has no classical term.

    Returns
    -------
    surrogate : openmm.System
    description : str
        What was kept or built, and what was left out (for the forecaster's metadata).

    Raises
    ------
    ValueError
        No surrogate can be derived: no classical term and no topology, or a topology amber14 has no template
        for (the message says how to pass one's own surrogate).
    """
    forces = [system.getForce(k) for k in range(system.getNumForces())]
    kept = [force for force in forces if force_class_name(force) in CLASSICAL_FORCES]
    left_out = sorted({force_class_name(force) for force in forces} - {force_class_name(force) for force in kept})
    surrogate = mm.System()
    surrogate.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    for particle in range(system.getNumParticles()):
        surrogate.addParticle(system.getParticleMass(particle))
    for k in range(system.getNumConstraints()):
        surrogate.addConstraint(*system.getConstraintParameters(k))
    if any(not isinstance(force, mm.CMMotionRemover) for force in kept):
        screened = any(name in IMPLICIT_SOLVENT_FORCES for name in left_out)
        for force in kept:
            copy = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(force))
            if screened and isinstance(copy, mm.NonbondedForce):
                _screen_coulomb(copy, SCREENING_DIELECTRIC)
            surrogate.addForce(copy)
        return surrogate, (("derived: the target without " + ", ".join(left_out) if left_out else "derived: the target")
                           + (f", Coulomb / {SCREENING_DIELECTRIC:g}" if screened else ""))
    how = ("pass surrogate= an openmm.System of the same atoms, masses and constraints (CLI: --surrogate FILE.xml), "
           "or fit one (fit_surrogate, openmm-forecast fit-surrogate)")
    if topology is None:
        raise ValueError(f"no surrogate can be derived from a System with only {', '.join(left_out) or 'no forces'} "
                         f"and no topology to parameterise with amber14: {how}")
    try:
        amber = app.ForceField("amber14-all.xml").createSystem(topology, nonbondedMethod=app.NoCutoff,
                                                                 constraints=None, rigidWater=False)
    except ValueError as error:
        raise ValueError(f"no surrogate can be derived: the target has only {', '.join(left_out) or 'no forces'} "
                         f"and amber14-all.xml cannot parameterise its topology ({error}); {how}") from None
    for k in range(amber.getNumForces()):
        surrogate.addForce(mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(amber.getForce(k))))
    return surrogate, f"derived: amber14-all.xml in vacuum for the topology (the target has only {', '.join(left_out)})"

SURROGATE_SUFFIX = ".xml"
"""File suffix of a surrogate System (``openmm.XmlSerializer``), shipped or the user's own."""


def surrogates_directory():
    """Directory of the shipped fitted surrogates (``openmm_forecast/resources/surrogates``)."""
    return resource_path("surrogates")


def shipped_surrogates():
    """Names of the shipped fitted surrogate Systems (sorted list of str), e.g. ``'fit-amber14-obc2'``.

    Each ``NAME.xml`` is a serialized System (written by ``openmm-forecast fit-surrogate``); ``NAME.json``
    beside it is the report of its fit (target setup, data, errors before and after).
    """
    directory = surrogates_directory()
    if not os.path.isdir(directory):
        return []
    return sorted(name[: -len(SURROGATE_SUFFIX)] for name in os.listdir(directory) if name.endswith(SURROGATE_SUFFIX))


def is_surrogate_file(name):
    """Whether ``name`` names a surrogate System: a shipped surrogate, or a path ending in ``.xml``."""
    return isinstance(name, (str, os.PathLike)) and (
        os.fspath(name) in shipped_surrogates() or os.fspath(name).endswith(SURROGATE_SUFFIX)
    )


def load_surrogate_system(name_or_path):
    """The OpenMM System of a shipped surrogate (by name) or of a serialized System file.

    Raises
    ------
    ValueError
        The file does not exist or is not a serialized System.
    """
    name_or_path = os.fspath(name_or_path)
    path = name_or_path
    if name_or_path in shipped_surrogates():
        path = os.path.join(surrogates_directory(), name_or_path + SURROGATE_SUFFIX)
    if not os.path.isfile(path):
        raise ValueError(
            f"surrogate file {name_or_path!r} does not exist (shipped surrogates: "
            f"{', '.join(shipped_surrogates()) or 'none'})"
        )
    with open(path) as handle:
        text = handle.read()
    try:
        system = mm.XmlSerializer.deserialize(text)
    except Exception as error:  # OpenMM raises a bare Exception for text that is not its XML
        raise ValueError(f"surrogate file {path!r} is not a serialized OpenMM System: {error}") from error
    if not isinstance(system, mm.System):
        raise ValueError(f"surrogate file {path!r} holds a {type(system).__name__}, not an OpenMM System")
    return system


class SurrogateForecaster(Forecaster):
    """Forecast by velocity Verlet on a surrogate System: a cheap, exactly reversible proposal.

    Each walker's current state is loaded into a private Context of the surrogate System (the caller's
    Context is never touched) and integrated with
    :func:`openmm_forecast.integrators.velocity_verlet_integrator`; the state is read every ``stride_ps``.
    Positions and velocities of a frame refer to the same time.

    Parameters
    ----------
    molecular_system : MolecularSystem or tuple (openmm.System, list of str)
        The *target*: the system the forecaster will drive (its atoms, masses, constraints, temperature
        and setup name go into the metadata), or an OpenMM System with the element symbol of every
        particle.
    stride_ps : float or openmm.unit.Quantity
        Time between forecast frames (ps when a plain number); a whole multiple of ``timestep``.
    max_frames : int
        Most frames per call.
    surrogate : str, MolecularSystem, openmm.System or None
        The System to integrate: ``'derived'`` (default: :func:`derived_surrogate_system` of the target, its
        System without the costly terms), a setup name for :func:`~openmm_forecast.systems.build_system` (built
        with the target's constraints and temperature), the name of a shipped
        fitted surrogate (:func:`shipped_surrogates`, see :mod:`openmm_forecast.surrogate_fitting`) or the
        path of a serialized System (``.xml``), a MolecularSystem, an OpenMM System, or None for the target's own System (the true dynamics: see
        :class:`~.baselines.VerletForecaster`).  It must have the target's particles, masses and
        constraints, so that its flow stays on the target's constraint manifold.
    timestep : openmm.unit.Quantity
        Integration time step of the surrogate (default 2 fs).
    platform : str or openmm.Platform
        OpenMM platform of the private Context (default 'Reference': fastest for a small molecule on a CPU).

    Raises
    ------
    ValueError
        A stride that is not a whole multiple of the time step, a surrogate whose particle count,
        masses or constraints differ from the target's, or no surrogate to derive (see
        :func:`derived_surrogate_system`).

    Notes
    -----
    Periodic systems use the System's default box vectors (the forecast interface carries no box): do
    not use this forecaster with a barostat.  A ``CMMotionRemover`` of the surrogate never acts (its integrator
    has no context-state update): velocity Verlet conserves the total momentum of a translation-invariant
    surrogate by itself, while a remover would take the centre-of-mass kinetic energy out of every jump of a
    target that keeps it (one without a remover, such as the ANI-1x setup), a map that is not reversible.
    """

    architecture = "surrogate"

    def __init__(self, molecular_system, stride_ps, max_frames=1, surrogate=DEFAULT_SURROGATE,
                 timestep=2.0 * unit.femtosecond, platform="Reference"):
        if isinstance(molecular_system, tuple):
            system, elements = molecular_system
            n_constraints = system.getNumConstraints()
            metadata_kwargs = {"constraints": f"{n_constraints} constraints" if n_constraints else "none"}
        else:
            system, elements = molecular_system.system, molecular_system.elements
            metadata_kwargs = dict(
                setup=molecular_system.setup,
                potential=molecular_system.potential,
                constraints=molecular_system.constraints,
            )
            if molecular_system.temperature is not None:  # None: read from a Simulation without a thermostat
                metadata_kwargs["temperature_K"] = float(strip_units(molecular_system.temperature, unit.kelvin,
                                                                     "temperature"))
        if system.getNumParticles() != len(elements):
            raise ValueError(
                f"the System has {system.getNumParticles()} particles but {len(elements)} elements were given"
            )
        surrogate_system, surrogate_name = resolve_surrogate(surrogate, molecular_system)
        stride = stride_in_ps(stride_ps)
        dt_ps = positive(timestep, unit.picosecond, "timestep")
        steps = int(round(stride / dt_ps))
        if steps < 1 or abs(steps * dt_ps - stride) > 1e-9 * stride:
            raise ValueError(
                f"stride_ps ({stride} ps) must be a whole multiple of the integration time step ({dt_ps} ps); "
                f"choose a stride of n * {dt_ps} ps or another timestep"
            )
        extra = {"timestep_ps": dt_ps, "steps_per_stride": steps, "structure_preserving": True}
        if surrogate_name is not None:
            extra["surrogate"] = surrogate_name
            extra["surrogate_fingerprint"] = system_fingerprint(surrogate_system)
        self.metadata = ForecasterMetadata(
            architecture=self.architecture,
            elements=list(elements),
            stride_ps=stride,
            max_frames=max_frames,
            history=1,
            system_fingerprint=system_fingerprint(system),
            extra=extra,
            **metadata_kwargs,
        )
        self.steps_per_stride = steps
        # No context-state update: a CMMotionRemover of the surrogate stays idle (see the Notes).
        self._integrator = velocity_verlet_integrator(dt_ps * unit.picosecond, update_context_state=False)
        # The Context keeps its own copy of the System's parameters; no deep copy, which would round-trip the System
        # through XML and crashes for a System holding an openmm-torch TorchForce.
        self._context = mm.Context(surrogate_system, self._integrator, get_platform(platform))

    def _forecast(self, positions, velocities, n_frames):
        n_walkers = positions.shape[0]
        shape = (n_walkers, n_frames) + positions.shape[2:]
        out_x, out_v = np.empty(shape), np.empty(shape)
        for walker in range(n_walkers):
            self._context.setPositions(positions[walker, -1])
            self._context.setVelocities(velocities[walker, -1])
            for frame in range(n_frames):
                self._integrator.step(self.steps_per_stride)
                state = self._context.getState(getPositions=True, getVelocities=True)
                out_x[walker, frame] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                out_v[walker, frame] = state.getVelocities(asNumpy=True).value_in_unit(
                    unit.nanometer / unit.picosecond
                )
        return out_x, out_v


def resolve_surrogate(surrogate, target):
    """The OpenMM System a ``surrogate`` argument names for ``target``, and a description of it.

    Parameters
    ----------
    surrogate : str, MolecularSystem, openmm.System or None
        As :class:`SurrogateForecaster`'s ``surrogate``: ``'derived'``, a setup name, a shipped fitted surrogate or a
        ``.xml`` file, a MolecularSystem, a System, or None (the target's own System).
    target : MolecularSystem or tuple (openmm.System, list of str)

    Returns
    -------
    system : openmm.System
    description : str or None
        None for the target's own System.

    Raises
    ------
    ValueError
        An unknown name, a surrogate that does not fit the target's particles, masses and constraints, or none
        to derive.
    """
    target_system = target[0] if isinstance(target, tuple) else target.system
    if surrogate is None:
        return target_system, None
    if surrogate == DEFAULT_SURROGATE:
        topology = None if isinstance(target, tuple) else target.topology
        surrogate_system, name = derived_surrogate_system(target_system, topology)
    elif is_surrogate_file(surrogate):
        surrogate_system, name = load_surrogate_system(surrogate), os.fspath(surrogate)
    elif isinstance(surrogate, str):
        from ..systems import SETUPS, build_system

        if surrogate not in SETUPS:
            raise ValueError(
                f"unknown surrogate {surrogate!r}: give {DEFAULT_SURROGATE!r}, a setup ({', '.join(SETUPS)}), a "
                f"shipped fitted surrogate ({', '.join(shipped_surrogates()) or 'none'}) or a serialized System file "
                "ending in .xml"
            )
        options = {}
        if not isinstance(target, tuple):
            options = dict(constraints=target.constraints, temperature=target.temperature)
        surrogate_system, name = build_system(surrogate, **options).system, surrogate
    elif isinstance(surrogate, mm.System):
        surrogate_system, name = surrogate, "System"
    elif hasattr(surrogate, "system") and hasattr(surrogate, "setup"):
        surrogate_system, name = surrogate.system, surrogate.setup
    else:
        raise TypeError(
            f"surrogate must be a setup name, a MolecularSystem, an openmm.System or None, got "
            f"{type(surrogate).__name__}"
        )
    check_same_particles_and_constraints(surrogate_system, target_system)
    return surrogate_system, name


def _screen_coulomb(force, dielectric):
    """Divide every Coulomb term of a NonbondedForce (pairs and exceptions) by ``dielectric``, in place."""
    scale = dielectric ** -0.5
    for i in range(force.getNumParticles()):
        charge, sigma, epsilon = force.getParticleParameters(i)
        force.setParticleParameters(i, charge * scale, sigma, epsilon)
    for k in range(force.getNumExceptions()):
        i, j, charge_product, sigma, epsilon = force.getExceptionParameters(k)
        force.setExceptionParameters(k, i, j, charge_product / dielectric, sigma, epsilon)


def _constraint_table(system):
    """Constraints of a System as a sorted array of rows (i, j, length nm), i < j."""
    rows = []
    for k in range(system.getNumConstraints()):
        i, j, length = system.getConstraintParameters(k)
        rows.append((min(i, j), max(i, j), length.value_in_unit(unit.nanometer)))
    return np.array(sorted(rows), dtype=np.float64).reshape(-1, 3)


def check_same_particles_and_constraints(surrogate, target):
    """Refuse a surrogate System whose particles, masses or constraints differ from the target's."""
    if surrogate.getNumParticles() != target.getNumParticles():
        raise ValueError(
            f"the surrogate System has {surrogate.getNumParticles()} particles, the target "
            f"{target.getNumParticles()}: a surrogate must describe the same atoms"
        )
    if not np.allclose(particle_masses(surrogate), particle_masses(target), rtol=1e-9, atol=0.0):
        raise ValueError(
            "the surrogate System's masses differ from the target's (hydrogen mass repartitioning?): the "
            "proposal would not preserve the target's phase-space volume; use the target's masses"
        )
    mine, theirs = _constraint_table(surrogate), _constraint_table(target)
    if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=1e-9, atol=0.0):
        raise ValueError(
            f"the surrogate System has {len(mine)} constraints, the target {len(theirs)} (or their atoms or "
            "lengths differ): build the surrogate with the target's constraints, so that its flow stays on "
            "the target's constraint manifold"
        )
