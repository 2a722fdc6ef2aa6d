"""ForecastAccelerator: replace stretches of an OpenMM simulation by guarded forecast jumps.

The cycle
---------
:meth:`ForecastAccelerator.step` repeats one cycle until the requested number of steps is done.  The
state of the loop is explicit: the Context (positions, velocities, box, time, step count), the current
span ``span_frames``, the count of full-span acceptances in a row, the accumulated energy drift
``drift_kJ``, the Metropolis random stream, and a history of recent states (rebuilt every cycle).

0. Maintenance (tolerance and dynamics rules).  If the accumulated drift of accepted jumps (the dynamics
   rule: of its last ``drift_window`` accepted jumps) exceeds
   ``drift_tolerance_kT`` or the instantaneous kinetic temperature is outside ``temperature_sigmas``
   standard deviations of the target (its chi-squared distribution mapped to a normal one), the cycle is a re-equilibration: ``reequilibration_steps`` of the
   simulation's own (thermostatted) integrator; the drift is reset.  Nothing else happens in that cycle.
   Without a thermostat (NVE) integration cannot remove the drift: once it passes the bound the rest of
   the call, and of every later call, is integrated (jumps switched off, a warning once).
1. Segment.  ``segment_steps`` steps of the simulation's own integrator, through ``Simulation.step`` (so
   every reporter is served exactly as without the accelerator).  It thermalises, and supplies the
   current state and, for forecasters with ``history > 1``, the states ``stride`` apart before it.
2. Jumps, up to ``jumps_per_cycle``, each:

   a. plan: ``n_frames = min(span_frames, whole frames before the end of the call, whole frames before
      the next report)``.  A jump may end exactly on a report step; a report step that is not on a frame
      boundary ends the jump at the last boundary before it.  If not one frame fits, the cycle ends (the
      next segment integrates through the report).
   b. propose: the forecaster maps the history to ``n_frames`` frames ``stride`` apart.
   c. sanity (:class:`~openmm_forecast.guards.SanityGuard`): every frame finite, no clash, no stretched
      bond, no inverted stereocentre.  Nothing has been written to the Context yet.
   d. energy: the last frame is written to the Context and projected onto the constraints (positions,
      then velocities); the acceptance rule (:mod:`~openmm_forecast.acceptance`) decides from
      ``dH = (U + K)_after - (U + K)_before`` and may rescale the candidate's velocities (dynamics rule).
      A rule may take part of the thermostat's step for the span before the jump (dynamics: ``O/2``).
   e. accept: time and step count advance by the span; with a Langevin integrator the velocities get
      the thermostat's exact Ornstein-Uhlenbeck step for the span (``thermostat_jumps``: the jump is the
      Hamiltonian part of a Langevin splitting, so friction acts on all simulated time); reporters due at
      the jump's last step report from the Context (which now holds that frame); ``drift_kJ += dH``; after ``grow_after`` full-span
      acceptances in a row the span doubles (at most ``max_frames``).  If maintenance is now due, the
      cycle ends.
      reject: the exact pre-jump State is restored (positions, velocities, box, time, step) and the span
      halves (at least 1).  Then the rule covers the span: tolerance and dynamics rules integrate it with
      the simulation's own integrator and the cycle ends; the Metropolis rule reverses the velocities,
      keeps the configuration for the span (reporters due at its end report it) and the cycle goes on, as
      after an acceptance.

The ghmc rule (:class:`~openmm_forecast.cycles.GHMCCycle`) runs the same loop without steps 0 and 1: each
jump is preceded by its whole Ornstein-Uhlenbeck step (no force), the candidate's potential energy alone is
read, a rejection keeps the reversed state, and the simulation's integrator never steps (see
:mod:`openmm_forecast.cycles`).

Rejected forecasts never reach a reporter, and nothing non-finite ever reaches the Context.
"""

import contextlib
import dataclasses
import logging
import warnings

import numpy as np
from openmm import unit
from tqdm.auto import tqdm

from ._runtime import openmm as mm
from .checkpoint import forecaster_fingerprint, read_checkpoint, write_checkpoint
from .acceptance import MetropolisRule
from .cycles import ornstein_uhlenbeck
from .errors import (
    BadForecastError,
    CheckpointError,
    ModelMismatchError,
    RunInterrupted,
    UnsupportedSystemError,
    is_potential_evaluation_failure,
)
from .forecasters.base import is_structure_preserving
from .guards import (
    SanityGuard,
    degrees_of_freedom,
    kinetic_energy_kJ,
    kinetic_temperature_K,
    kinetic_temperature_score,
)
from .integrators import velocity_verlet_integrator
from .systems import constraints_name, particle_masses, removes_com_motion, system_fingerprint
from .options import AcceleratorOptions
from .reporters import describe_reports, generate_reports
from .stats import AcceleratorStats
from .units import kT_kJ, positive, require_int, whole_steps

logger = logging.getLogger(__name__)

SUPPORTED_INTEGRATORS = (mm.LangevinMiddleIntegrator, mm.LangevinIntegrator, mm.VerletIntegrator)
"""Integrator classes driven as they are (exact types; subclasses such as Drude integrators are refused)."""

SOLVENT_RESIDUES = {"HOH", "WAT", "SOL", "TIP3", "TIP4", "TIP5", "SPC", "NA", "CL", "K", "MG", "CA", "Na+", "Cl-", "K+"}
"""Residue names of water and ions: atoms in such residues beyond the forecaster's atoms mean a solvated system."""

TEMPERATURE_MISMATCH = 0.05
"""Relative difference of the forecaster's training temperature and the simulation's above which a warning says so."""

_warned = set()


def _warn_once(key, message, *arguments):
    """``logger.warning`` the first time ``key`` is seen in this process (walkers share one warning)."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *arguments)


# --------------------------------------------------------------------------------------------------
# Integrator checks
# --------------------------------------------------------------------------------------------------


def _program(integrator):
    return [integrator.getComputationStep(i) for i in range(integrator.getNumComputations())]


def _check_integrator(integrator, allow_custom):
    """Refuse integrators whose state or time step the accelerator cannot reason about."""
    kind = type(integrator)
    if kind in SUPPORTED_INTEGRATORS:
        return
    if kind is mm.CustomIntegrator:
        reference = velocity_verlet_integrator(integrator.getStepSize())
        if allow_custom or _program(integrator) == _program(reference):
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


def _check_supported_system(system):
    """Refuse what the accelerator cannot drive: barostats, virtual sites, Drude particles.

    A barostat changes the box between jumps that do not see it (a forecast carries no box), so even the
    exact ``verlet`` proposal is rejected (3 of 28 jumps accepted with a MonteCarloBarostat, 18 of 18
    without); virtual sites and Drude particles are not positions a forecaster predicts.
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


# --------------------------------------------------------------------------------------------------
# The accelerator
# --------------------------------------------------------------------------------------------------


class ForecastAccelerator:
    """Advance an ``openmm.app.Simulation`` by guarded forecast jumps and ordinary integration.

    Parameters
    ----------
    simulation : openmm.app.Simulation
        Any platform.  Its integrator must be a LangevinMiddleIntegrator, LangevinIntegrator,
        VerletIntegrator or :func:`~openmm_forecast.integrators.velocity_verlet_integrator` (see
        ``allow_custom_integrator``), and the forecaster's stride a whole number of its steps.
    forecaster : Forecaster or str
        A :class:`~openmm_forecast.forecasters.base.Forecaster`, or a name or path for
        :func:`~openmm_forecast.forecasters.load_forecaster`.
    molecular_system : MolecularSystem, optional
        The setup the simulation was built from: its setup name is checked against the forecaster's.  Default:
        a forecaster given by name is built for the simulation's own System (``'surrogate'``: its derived
        surrogate, :func:`~openmm_forecast.forecasters.surrogate.derived_surrogate_system`).
    forecaster_options : dict, optional
        Extra arguments of ``load_forecaster`` (for baselines: ``stride_ps``, ``max_frames``, ...).
    **options
        :class:`AcceleratorOptions` fields.

    Raises
    ------
    ModelMismatchError
        The forecaster was made for other atoms (count, elements, order) or another setup.
    UnsupportedSystemError
        An unsupported integrator, a stride that is not a whole number of steps, a barostat, virtual sites,
        Drude particles, or extra atoms (solvent) the forecaster does not describe.
    ModelMismatchError
        Also: the forecaster was trained with other constraints than the simulation's (a different
        temperature is a warning; see :meth:`_check_training_conditions`).
    ValueError
        Invalid options.

    Notes
    -----
    *Clock.*  An accepted jump advances ``simulation.currentStep`` and the Context time by its span; steps
    covered by jumps are never integrated.  Reporters receive reports at their usual steps, from the
    integrator or from an accepted jump that ends on the report step; a call pattern repeated with the
    same seeds repeats the trajectory (each :meth:`step` call starts a new cycle).

    *Integrators.*  OpenMM's leapfrog-type integrators (Verlet, Langevin) hold velocities half a step
    behind the positions.  The accelerator synchronises them: the forecaster and ``H`` see
    ``v + dt/2 F/m`` (projected onto the constraints), and an accepted frame goes back into the Context
    as ``v - dt/2 F/m``.  Without this, every jump would add about ``dt^2/8 sum(F^2/m)`` of kinetic
    energy (measured: alanine dipeptide with Langevin at 2 fs and the verlet baseline reached over
    500 K after 3 ps and 1500 K after 9 ps).
    ``velocity_verlet_integrator`` and vouched-for CustomIntegrators are taken as synchronous.  With a
    thermostat-free integrator (NVE), re-equilibration only integrates, which cannot remove the energy the
    jumps added: the accumulated drift is then kept, so once it passes ``drift_tolerance_kT`` every cycle
    re-equilibrates and the run goes on as plain MD (a warning says so), keeping ``H`` within the bound.

    *Exactness.*  The acceptance rule (``acceptance``, :mod:`openmm_forecast.acceptance`) decides.  The
    tolerance rule (default) produces dynamics: rejected spans are integrated.  It
    biases the ensemble by up to the accepted ``|dH|`` per jump; the thermostatted integrator between
    jumps and the re-equilibrations remove the accumulated drift.  The dynamics rule (FlashMD's recipe)
    accepts every sane jump and rescales its momenta so that ``H`` is kept: it hides the energy error
    rather than bounding it, and its fidelity is measured (docs/benchmark.md), not guaranteed.  The
    Metropolis rule (``acceptance='metropolis'``, alias ``metropolis=True``) samples instead, as
    generalised hybrid Monte Carlo: a jump is accepted with
    probability ``min(1, exp(-dH / kT))``; a rejected jump keeps the configuration for its span with
    reversed velocities, and what follows does not depend on the outcome (no integration of rejected
    spans, no re-equilibration, a fixed span).  Each jump then leaves the Boltzmann distribution
    ``exp(-(U + K) / kT)`` of the synchronous state exactly invariant (restricted to sane geometries)
    when the forecaster is a volume-preserving, time-reversible map (``forecaster.structure_preserving``):
    the ``surrogate`` and ``verlet`` forecasters, even at the wrong time step or with a wrong potential.  The
    whole chain is exact when the integration between jumps is too; a finite-step Langevin integrator is
    not, and velocity reversals after rejections amplify its O(dt) error (harmonic wells, verlet on a twice stiffer well as forecaster, ~60 %
    rejections, LangevinMiddleIntegrator at friction 50/ps, 20 fs of it per jump: <x^2> 10 +- 3 % low at
    10 fs, 5 +- 3 % at 2 fs, while accepting every jump gives 44 % low): use a small step or long segments.
    ``adapt_span=True`` makes the span depend on past outcomes and the chain approximate.  A learned
    forecaster is in general neither volume-preserving nor exactly reversible, so with one the Metropolis
    rule is approximate too, with a bias controlled by ``dH``; the exception are learned maps certified
    structure-preserving (``is_structure_preserving(metadata)``, the ``symplectic`` architecture: Verlet on
    a learned potential), exact on a System without constraints (with constraints, the projection breaks
    volume preservation: a warning says so).  The ghmc rule (:class:`~openmm_forecast.cycles.GHMCCycle`)
    removes the integration between jumps: the whole chain is then exact, at one potential energy evaluation
    per jump.

    *Reference platform.*  All Contexts of a process on OpenMM's Reference platform share one random
    stream: a forecaster that steps its own Context (the ``verlet`` baseline) changes the thermostat's
    noise (still random), so such a run is reproducible but not identical to plain MD with the same seed.

    *Failures and interruptions.*  A forecaster that raises is a rejected jump (reason ``forecast_error``,
    one warning); a potential that fails or gives NaN on a candidate rejects it too.  :meth:`request_stop`
    (from a signal handler, as ``openmm-forecast run`` does on Ctrl-C) ends :meth:`step` at the next cycle
    boundary with :class:`~openmm_forecast.errors.RunInterrupted`; ``progress_bar`` (a tqdm bar) is
    updated instead of one bar per :meth:`step` call.

    *Constraints and boxes.*  Accepted frames are projected onto the constraints (positions, then
    velocities) before their energy is evaluated.  The forecaster sees the Context's unwrapped positions,
    so molecules stay whole in periodic systems; a jump keeps the box.
    """

    def __init__(self, simulation, forecaster, *, molecular_system=None, forecaster_options=None, **options):
        import weakref

        self.simulation = simulation
        self.options = AcceleratorOptions(**options)
        _check_supported_system(simulation.system)
        target = molecular_system if molecular_system is not None else simulation  # a name is built for this target
        self.forecaster = self._resolve_forecaster(forecaster, target, forecaster_options or {})
        meta = self.forecaster.metadata
        integrator = simulation.integrator
        _check_integrator(integrator, self.options.allow_custom_integrator)
        self._check_atoms(molecular_system)
        self._check_training_conditions(molecular_system)

        self.history = meta.history
        opts = self.options
        self.rule = opts.acceptance
        if not self.rule.integrates and self.history > 1:
            raise ValueError(f"the {self.rule.name!r} rule never integrates, so it has no history of states to give "
                             f"the forecaster (history {self.history}); use a forecaster of history 1 (the surrogate)")
        self.adapt_span = self.rule.adapts_span if opts.adapt_span is None else bool(opts.adapt_span)
        self.max_frames = meta.max_frames if opts.max_frames is None else opts.max_frames
        if self.max_frames > meta.max_frames:
            raise ValueError(f"max_frames ({self.max_frames}) exceeds the forecaster's max_frames ({meta.max_frames})")
        self.span_frames = self.max_frames if opts.initial_frames is None else opts.initial_frames
        if self.span_frames > self.max_frames:
            raise ValueError(f"initial_frames ({self.span_frames}) exceeds max_frames ({self.max_frames})")
        self.masses_amu = particle_masses(simulation.system)
        self.dof = degrees_of_freedom(simulation.system)
        self._has_constraints = simulation.system.getNumConstraints() > 0
        # A certified map built without constraints (the symplectic architecture) is exact only on a System
        # without them; the surrogate and verlet proposals integrate with the System's own constraints (RATTLE).
        unconstrained_map = meta.constraints is None or meta.constraints == "none"
        exact_rule = isinstance(self.rule, MetropolisRule)  # metropolis and ghmc
        if exact_rule and not self.forecaster.structure_preserving:
            what = (f"the {self.rule.name!r} rule is exact only with a volume-preserving, time-reversible proposal "
                    f"(surrogate, verlet, symplectic); the {meta.architecture!r} forecaster is not certified so, and "
                    "with it the test certifies nothing: the shipped network 'accepted' 80-88 % of its jumps while the "
                    "molecule cooled to 46-130 K")
            if not opts.allow_inexact_metropolis:
                raise ValueError(f"{what}. Use acceptance='tolerance' or 'dynamics', or pass "
                                 "allow_inexact_metropolis=True (CLI --allow-inexact-metropolis) to run it anyway")
            warnings.warn(f"{what}; running it because allow_inexact_metropolis=True: check the temperature",
                          UserWarning, stacklevel=2)
        if exact_rule and self._has_constraints and unconstrained_map and is_structure_preserving(meta):
            warnings.warn(
                f"the {meta.architecture!r} forecaster is certified symplectic and reversible for systems without "
                f"constraints, but this System has {simulation.system.getNumConstraints()} constraints: projecting "
                "its forecasts onto them is not volume-preserving, so the Metropolis mode is approximate here "
                "(build the system with constraints=None for an exact chain)",
                UserWarning, stacklevel=2,
            )
        # Leapfrog-type integrators hold velocities dt/2 behind the positions; a rule that never integrates keeps
        # synchronous velocities in the Context instead (the conversion would need the forces).
        self._leapfrog = type(integrator) in SUPPORTED_INTEGRATORS and self.rule.integrates
        self._keeps_forces = self._leapfrog or self.forecaster.uses_forces  # read with every energy
        if not self.rule.integrates and type(integrator) in (mm.VerletIntegrator, mm.LangevinIntegrator):
            # Measured (TorchForce, ala2-ani-amber14): an energy read costs 8.1 ms under a VerletIntegrator, 3.9 ms
            # under a LangevinMiddleIntegrator, as much as energy and forces (8.0 ms).
            _warn_once(("shifted_kinetic_energy", type(integrator).__name__),
                       "OpenMM computes the forces for the kinetic energy of a %s at every energy read, so each %r "
                       "jump pays for the target's forces too; simulate with a LangevinMiddleIntegrator (the setups' "
                       "default) or openmm_forecast.velocity_verlet_integrator", type(integrator).__name__,
                       self.rule.name)
        self._check_temperature_option(integrator)
        self._read_integrator()

        reference = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        self.sanity_guard = self._sanity_guard(reference.value_in_unit(unit.nanometer))
        self._rng = np.random.Generator(np.random.PCG64(opts.seed))
        self.stats = AcceleratorStats(max_dh_samples=opts.max_dh_samples)
        self.drift_kJ = 0.0
        self._drift_terms_kJ = []  # dH of the accepted jumps in the rule's drift window (rules with one)
        self._jumps_switched_off = False
        self._accepted_in_row = 0
        self._history = []  # (positions nm, velocities nm/ps) stride_steps apart, newest last
        # With a CMMotionRemover the System keeps zero total momentum; the thermostat's noise must too, or the
        # remover takes the noise's centre-of-mass kinetic energy out during the next jump (dH ~ -kT).
        self._removes_com_motion = removes_com_motion(simulation.system)
        self._current = None  # Snapshot of the Context now
        self._parameters = {}  # the Context's global parameters when _current's energy was read
        self._system_fingerprint = system_fingerprint(simulation.system)
        self._forecaster_fingerprint = forecaster_fingerprint(self.forecaster)
        self.progress_bar = None  # a tqdm bar that step() updates instead of opening its own (one bar per run)
        self._stop_signal = None  # set by request_stop (e.g. from a signal handler)
        if getattr(simulation, "_forecast_accelerator", lambda: None)() is not None:
            # Two would each keep their own copy of the state and undo each other's jumps.
            raise UnsupportedSystemError("this Simulation is already driven by a ForecastAccelerator; step that one, "
                                         "or give the new one a Simulation of its own")
        simulation._forecast_accelerator = weakref.ref(self)  # refuses a second accelerator while this one lives

    # ---- construction helpers ---------------------------------------------------------------------

    @staticmethod
    def _resolve_forecaster(forecaster, molecular_system, forecaster_options):
        if isinstance(forecaster, str) or hasattr(forecaster, "__fspath__"):
            from .forecasters import load_forecaster

            return load_forecaster(forecaster, molecular_system=molecular_system, **forecaster_options)
        if forecaster_options:
            raise ValueError("forecaster_options are only used when the forecaster is given by name or path")
        if not hasattr(forecaster, "forecast") or not hasattr(forecaster, "metadata"):
            raise TypeError(f"forecaster must be a Forecaster or a name or path, got {type(forecaster).__name__}")
        return forecaster

    def _check_atoms(self, molecular_system):
        topology, system, meta = self.simulation.topology, self.simulation.system, self.forecaster.metadata
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
        self.forecaster.check_compatible(elements, setup=getattr(molecular_system, "setup", None))

    def _check_training_conditions(self, molecular_system):
        """Compare the forecaster's training conditions with the simulation's.

        Constraints that differ are refused: the forecaster's frames lie on another constraint manifold, so
        the projection changes every jump (issue 12: 0 of 47 jumps accepted for such mismatches).  A different temperature is only warned about, once: the jumps stay guarded, a model
        may well serve nearby temperatures, and annealing (``setTemperature``) must keep working.  The time
        step is not a training condition (the forecaster maps physical time; the stride must be a whole
        number of steps, checked by :meth:`_read_integrator`).  Baselines built on this simulation's own
        system record its conditions and never trigger either.
        """
        meta, integrator = self.forecaster.metadata, self.simulation.integrator
        simulated = getattr(molecular_system, "constraints", None)
        if simulated is None and self.simulation.system.getNumConstraints() == 0:
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
            _warn_once(
                ("temperature", self._forecaster_key(), trained_K, simulated_K),
                "forecaster %r was trained at %g K but the simulation runs at %g K: expect fewer accepted jumps "
                "(every jump is still checked)", meta.architecture, trained_K, simulated_K,
            )

    def _forecaster_key(self):
        return (self.forecaster.metadata.architecture, self.forecaster.metadata.data_fingerprint)

    def _sanity_guard(self, reference_nm):
        """The SanityGuard of this simulation with ``reference_nm`` (n_atoms, 3) as its sane structure."""
        opts = self.options
        clash_nm = None
        if opts.clash_distance is not None:
            clash_nm = positive(opts.clash_distance, unit.nanometer, "clash_distance")
        return SanityGuard(
            self.simulation.topology,
            reference_nm,
            clash_fraction=opts.clash_fraction,
            clash_distance_nm=clash_nm,
            bond_stretch=opts.bond_stretch,
            check_chirality=opts.check_chirality,
        )

    def _read_integrator(self):
        """Read the integrator's step size, temperature, friction, constraint tolerance and force groups, and
        derive what depends on them (stride and segment in steps, kT, half kick, thermal speeds).

        Called at construction and at the start of every :meth:`step`, so that changes made between calls
        (annealing with ``setTemperature``, another friction or step size) apply to the jumps as they apply to
        the integrator.  Nothing changes when a check fails.

        Raises
        ------
        UnsupportedSystemError
            The forecaster's stride is not a whole number of the integrator's steps.
        ValueError
            ``segment_steps`` no longer covers the forecaster's history.
        """
        integrator, meta, opts = self.simulation.integrator, self.forecaster.metadata, self.options
        timestep_ps = integrator.getStepSize().value_in_unit(unit.picosecond)
        ratio = meta.stride_ps / timestep_ps
        stride_steps = int(round(ratio))
        if stride_steps < 1 or abs(ratio - stride_steps) > 1e-6 * ratio:
            raise UnsupportedSystemError(
                f"the forecaster's stride ({meta.stride_ps} ps) is not a whole number of the integrator's "
                f"steps ({timestep_ps} ps); use a step size that divides the stride"
            )
        history_steps = (self.history - 1) * stride_steps
        segment_steps = max(history_steps, stride_steps) if opts.segment_steps is None else opts.segment_steps
        if not self.rule.integrates:
            segment_steps = 0
        if segment_steps < history_steps:
            raise ValueError(
                f"segment_steps ({segment_steps}) must cover the forecaster's history: at least "
                f"{history_steps} steps ({self.history - 1} strides of {stride_steps} steps)"
            )
        temperature_K = self._target_temperature(integrator)
        self.timestep_ps, self.stride_steps, self.segment_steps = timestep_ps, stride_steps, segment_steps
        self.temperature_K, self.kT_kJ = temperature_K, kT_kJ(temperature_K)
        self._groups = integrator.getIntegrationForceGroups()
        self._constraint_tolerance = integrator.getConstraintTolerance()
        inverse_mass = np.divide(1.0, self.masses_amu, out=np.zeros_like(self.masses_amu), where=self.masses_amu > 0)
        self._half_kick = (0.5 * timestep_ps * inverse_mass)[:, None]  # ps/amu: dt/2 F/m in nm/ps
        # Thermal velocity scale sqrt(kT/m) per atom, in nm/ps (kJ/mol/amu = nm^2/ps^2).
        self._thermal_speed = np.sqrt(self.kT_kJ * inverse_mass)[:, None]
        has_friction = opts.thermostat_jumps and hasattr(integrator, "getFriction")
        self.friction_per_ps = integrator.getFriction().value_in_unit(unit.picosecond**-1) if has_friction else 0.0
        self._thermostatted = self._has_thermostat(integrator)

    def _has_thermostat(self, integrator):
        """Whether integration thermalises (and so removes the drift of accepted jumps).

        ``thermostatted`` when given; else True for Langevin integrators with friction, a System with an
        ``AndersenThermostat``, and CustomIntegrators other than openmm-forecast's velocity Verlet (a
        vouched-for custom integrator is presumed thermostatted: pass ``thermostatted=False`` if not).
        """
        if self.options.thermostatted is not None:
            return bool(self.options.thermostatted)
        if any(isinstance(force, mm.AndersenThermostat) for force in self.simulation.system.getForces()):
            return True
        if hasattr(integrator, "getFriction"):
            return integrator.getFriction().value_in_unit(unit.picosecond**-1) > 0
        if type(integrator) is mm.CustomIntegrator:
            return _program(integrator) != _program(velocity_verlet_integrator(integrator.getStepSize()))
        return False

    def _check_temperature_option(self, integrator):
        """``temperature=`` is for integrators without one; with a thermostat it must agree with it."""
        if self.options.temperature is None or not hasattr(integrator, "getTemperature"):
            return
        option_K = positive(self.options.temperature, unit.kelvin, "temperature")
        integrator_K = integrator.getTemperature().value_in_unit(unit.kelvin)
        if abs(option_K - integrator_K) > 1e-6 * integrator_K:
            raise ValueError(
                f"temperature ({option_K} K) differs from the integrator's ({integrator_K} K): the jumps would be "
                "thermostatted and judged at another temperature than the integration; leave temperature unset "
                "(the integrator's is used, also after setTemperature)"
            )

    def _target_temperature(self, integrator):
        if hasattr(integrator, "getTemperature"):
            return integrator.getTemperature().value_in_unit(unit.kelvin)
        if self.options.temperature is not None:
            return positive(self.options.temperature, unit.kelvin, "temperature")
        if self.forecaster.metadata.temperature_K is not None:
            return float(self.forecaster.metadata.temperature_K)
        raise ValueError(
            "the accelerator needs a temperature for its energy tolerance (in kT): the integrator has none and "
            "the forecaster's metadata neither; pass temperature=300*unit.kelvin (for example)"
        )

    # ---- public driving API ---------------------------------------------------------------------

    def step(self, n_steps):
        """Advance the simulation by ``n_steps`` of its time step (jumps and integration mixed).

        Parameters
        ----------
        n_steps : int
            Steps to advance; ``simulation.currentStep`` grows by exactly this much.
        """
        require_int("n_steps", n_steps, minimum=0)
        self._read_integrator()
        self._advance(int(n_steps))

    def run_for(self, simulated_time):
        """Advance the simulation by a span of simulated time (a whole number of steps).

        Parameters
        ----------
        simulated_time : openmm.unit.Quantity
            Time units, >= 0.
        """
        time_ps = positive(simulated_time, unit.picosecond, "simulated_time", allow_zero=True)
        self._read_integrator()
        self._advance(whole_steps(time_ps, self.timestep_ps, "simulated_time", allow_zero=True))

    def request_stop(self, signum=2):
        """Ask a running :meth:`step` to stop at the end of its current cycle (safe in a signal handler).

        Every jump is then finished or undone, and :meth:`step` raises
        :class:`~openmm_forecast.errors.RunInterrupted` with ``signum`` and the step reached; the
        simulation is consistent there, ready for :meth:`save_checkpoint`.

        Parameters
        ----------
        signum : int
            The signal that asked (default 2, SIGINT).
        """
        self._stop_signal = int(signum)

    def _advance(self, n_steps):
        """Cycles until ``n_steps`` more steps are done (the integrator's settings already read)."""
        end_step = self.simulation.currentStep + n_steps
        with self.stats.timing("transfer"):
            self._capture()
        if self.progress_bar is not None:
            progress = contextlib.nullcontext(self.progress_bar)
        else:
            progress = tqdm(total=n_steps, unit="step", disable=self._progress_disabled(), desc="forecast MD")
        with progress as bar:
            while self.simulation.currentStep < end_step:
                if self._stop_signal is not None:
                    signum, self._stop_signal = self._stop_signal, None
                    raise RunInterrupted(signum, self.simulation.currentStep)
                before = self.simulation.currentStep
                self._cycle(end_step)
                bar.update(self.simulation.currentStep - before)
                bar.set_postfix(accepted=f"{self.stats.jumps_accepted}/{self.stats.jumps_attempted}", refresh=False)

    def _progress_disabled(self):
        return None if self.options.progress is None else not self.options.progress

    # ---- one cycle -----------------------------------------------------------------------------------

    def _cycle(self, end_step):
        """One cycle (see the module docstring): maintenance or segment, then jumps."""
        self._history.clear()
        remaining = end_step - self.simulation.currentStep
        if self._maintain(remaining):
            return
        self._integrate(min(self.segment_steps, remaining))
        for _ in range(self.options.jumps_per_cycle):
            n_frames, reports = self._plan_jump(end_step)
            if n_frames == 0:
                return
            self._prepare_jump(n_frames)
            if not self._keeps_jumping(self._jump(n_frames, reports)):
                return

    def _keeps_jumping(self, accepted):
        """Whether the cycle goes on after a jump (the rule's :meth:`~.AcceptanceRule.keeps_jumping`)."""
        return self.rule.keeps_jumping(self, accepted)

    def _plan_jump(self, end_step):
        """Frames of the next jump (0: none fits) and the reporters' next reports.

        With a rule that never integrates (ghmc), a remainder shorter than one stride (before the end of the
        call or a report) is covered here by keeping the current state (:meth:`_keep`), and 0 is returned.

        Returns
        -------
        n_frames : int
        reports : list of (reporter, description)
            From :func:`describe_reports`, taken before the jump.
        """
        if len(self._history) < self.history:
            return 0, []
        reports = describe_reports(self.simulation)
        limit = end_step - self.simulation.currentStep
        for _, report in reports:
            if report["steps"] > 0:
                limit = min(limit, report["steps"])
        n_frames = min(self.span_frames, limit // self.stride_steps)
        if n_frames == 0 and limit > 0 and not self.rule.integrates:
            self._keep(limit, reports)
        return n_frames, reports

    def _prepare_jump(self, n_frames):
        """Before proposing a planned jump: the rule's share of the thermostat's step for the span."""
        self._thermalise(self.rule.thermostat_before * n_frames * self.stride_steps * self.timestep_ps)

    def _jump(self, n_frames, reports):
        """Propose, check, then accept or restore one jump of ``n_frames`` frames; True when accepted."""
        self.stats.record_attempt(n_frames)
        before = self._current
        try:
            positions, velocities = self.propose(n_frames)
        except BadForecastError:  # a broken contract (wrong shapes): a bug to fix, not a forecast to reject
            raise
        except Exception as error:  # a model that fails is a rejected jump; nothing reached the Context
            _warn_once(("forecast_error", self._forecaster_key(), type(error).__name__),
                       "forecaster %r raised %s: %s (the jump is rejected; later ones like it are counted as "
                       "'forecast_error')", self.forecaster.name, type(error).__name__, error)
            self._reject(before, "forecast_error", n_frames, reports)
            return False
        with self.stats.timing("guard"):
            reason = self.sanity_guard.check(positions, velocities)
        if reason is None:
            try:
                with self.stats.timing("guard"):
                    after = self._write_candidate(positions[-1], velocities[-1], before, n_frames)
                    dh_kJ = after.hamiltonian_kJ - before.hamiltonian_kJ
                    kinetic_kJ = after.hamiltonian_kJ - after.potential_kJ
                    decision = self.rule.decide(dh_kJ, kinetic_kJ, self.kT_kJ, self._rng)
                    reason = decision.reason
                    if reason is None and decision.velocity_scale != 1.0:  # no new energy evaluation
                        scaled = decision.velocity_scale * after.velocities_nm_ps
                        after = self._set_velocities(scaled, same_positions_as=after)
            except mm.OpenMMException as error:  # e.g. NaN after constraint projection on a GPU platform
                self._restore(before)
                logger.debug("candidate refused by OpenMM: %s", error)
                # a PotentialEvaluationError in a PythonForce (an SCF failure) arrives as its message only
                reason = "evaluation" if is_potential_evaluation_failure(error) else "nonfinite"
                dh_kJ = float("nan")
            except BaseException:
                self._restore(before)  # never leave a candidate in the Context
                raise
            self.stats.record_dh(dh_kJ)
        if reason is not None:
            self._reject(before, reason, n_frames, reports)
            return False
        try:
            earlier = self._projected_frames(positions[-self.history : -1], velocities[-self.history : -1], after)
        except mm.OpenMMException as error:  # as for the last frame: the forecast is refused
            logger.debug("intermediate frame refused by OpenMM: %s", error)
            self._reject(before, "nonfinite", n_frames, reports)
            return False
        except BaseException:
            self._restore(before)  # an interrupted jump is undone whole
            raise
        self._accept(after, earlier, n_frames, dh_kJ, reports)
        return True

    # ---- the pieces of a jump (reusable per walker) ----------------------------------------------------

    def propose(self, n_frames):
        """Forecast ``n_frames`` frames from the current history.

        Returns
        -------
        positions, velocities : numpy.ndarray, shape (n_frames, n_atoms, 3)
            nm and nm/ps.

        Raises
        ------
        BadForecastError
            The forecaster returned arrays of the wrong shape (nothing was written to the Context).
        """
        x = np.stack([x for x, _ in self._history[-self.history :]])[None]
        v = np.stack([v for _, v in self._history[-self.history :]])[None]
        forces = self._current.forces_kJ_nm[None] if self.forecaster.uses_forces else None  # of history[-1]
        with self.stats.timing("forecast"):
            positions, velocities = self.forecaster.forecast(x, v, n_frames, forces=forces)
        expected = (1, n_frames, x.shape[2], 3)
        if np.shape(positions) != expected or np.shape(velocities) != expected:
            raise BadForecastError(
                f"forecaster {self.forecaster.name!r} returned arrays of shape {np.shape(positions)} and "
                f"{np.shape(velocities)}, expected {expected}"
            )
        return np.asarray(positions, dtype=np.float64)[0], np.asarray(velocities, dtype=np.float64)[0]

    def _write_candidate(self, positions, velocities, before, n_frames):
        """Write a sane frame into the Context at the jump's end time, projected; return its Snapshot."""
        context = self.simulation.context
        context.setPositions(positions)
        if self._has_constraints:
            context.applyConstraints(self._constraint_tolerance)
        self._advance_clock(before, n_frames * self.stride_steps)
        return self._set_velocities(velocities)

    def _advance_clock(self, before, span_steps):
        """Set the Context's time and step count to ``span_steps`` steps after ``before``."""
        start_ps = before.state.getTime().value_in_unit(unit.picosecond)
        self.simulation.context.setTime(start_ps + span_steps * self.timestep_ps)
        self.simulation.context.setStepCount(before.state.getStepCount() + span_steps)

    def _set_velocities(self, velocities, same_positions_as=None):
        """Write synchronous velocities (nm/ps) into the Context in the integrator's convention; return the Snapshot.

        The velocities are projected onto the constraints; for a leapfrog-type integrator the Context then
        receives them half a kick earlier, ``v - dt/2 F/m`` (projected again).  The potential is evaluated
        once (energy and forces together), or not at all when ``same_positions_as`` is a Snapshot at the
        Context's current positions, whose energy and forces are reused: with a costly potential (an ML
        TorchForce) each evaluation costs as much as an MD step.
        """
        context = self.simulation.context
        context.setVelocities(velocities)
        if self._has_constraints:
            context.applyVelocityConstraints(self._constraint_tolerance)
        evaluate = same_positions_as is None
        state = context.getState(
            getPositions=True, getVelocities=True, getEnergy=evaluate, getForces=evaluate and self._keeps_forces,
            groups=self._groups,
        )
        synchronous = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        if evaluate:
            potential_kJ, forces = self._potential_and_forces(state)
        else:
            potential_kJ, forces = same_positions_as.potential_kJ, same_positions_as.forces_kJ_nm
        if self._leapfrog:
            context.setVelocities(synchronous - self._half_kick * forces)
            if self._has_constraints:
                context.applyVelocityConstraints(self._constraint_tolerance)
            state = context.getState(getPositions=True, getVelocities=True, groups=self._groups)
        return self._snapshot(state, synchronous, potential_kJ, forces)

    def _potential_and_forces(self, state):
        """``U`` (kJ/mol) and, when kept (see :class:`Snapshot`), the forces (kJ/mol/nm) of a State that has them."""
        potential_kJ = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = None
        if self._keeps_forces:
            forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return potential_kJ, forces

    def _snapshot(self, state, synchronous_velocities, potential_kJ, forces):
        kinetic = float(kinetic_energy_kJ(synchronous_velocities, self.masses_amu))
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        return Snapshot(state, positions, synchronous_velocities, potential_kJ + kinetic, potential_kJ, forces)

    def _accept(self, after, earlier, n_frames, dh_kJ, reports):
        """Keep the candidate: clock, history (``earlier``: the jump's last intermediate frames, from
        :meth:`_projected_frames`), drift, span, statistics, reports due at its last step."""
        self._current = after
        self._history.extend(earlier)
        self._history.append((after.positions_nm, after.velocities_nm_ps))
        del self._history[: -self.history]
        self._add_drift(dh_kJ)
        span_steps = n_frames * self.stride_steps
        self.stats.record_accept(n_frames, span_steps * self.timestep_ps)
        if self.adapt_span and n_frames == self.span_frames:
            self._accepted_in_row += 1
            if self._accepted_in_row >= self.options.grow_after:
                self.span_frames = min(self.max_frames, 2 * self.span_frames)
                self._accepted_in_row = 0
        logger.debug("step %d: jump of %d frames accepted, dH %.3f kJ/mol", after.state.getStepCount(), n_frames, dh_kJ)
        self._thermalise((1.0 - self.rule.thermostat_before) * span_steps * self.timestep_ps)
        self._report_due(reports, span_steps)

    def _add_drift(self, dh_kJ):
        """Count an accepted jump's ``dH`` in the drift (only the last ``rule.drift_window`` when it has one)."""
        window = self.rule.drift_window
        if window is None:
            self.drift_kJ += dh_kJ
            return
        self._drift_terms_kJ.append(float(dh_kJ))
        del self._drift_terms_kJ[:-window]
        self.drift_kJ = float(sum(self._drift_terms_kJ))

    def _projected_frames(self, positions, velocities, after):
        """Intermediate forecast frames for the history, projected onto the constraints like the last one.

        Only forecasters with ``history > 1`` read them.  Each frame passes through the Context
        (``applyConstraints``, ``applyVelocityConstraints``; no force evaluation), which is then restored to
        the candidate ``after``, also when interrupted.

        Parameters
        ----------
        positions, velocities : numpy.ndarray, shape (n_frames, n_atoms, 3)
            nm and nm/ps (synchronous).
        after : Snapshot
            The candidate the Context holds.

        Returns
        -------
        list of (positions, velocities)
        """
        if not self._has_constraints or len(positions) == 0:
            return list(zip(positions, velocities))
        context = self.simulation.context
        frames = []
        with self.stats.timing("guard"):
            try:
                for x, v in zip(positions, velocities):
                    context.setPositions(x)
                    context.applyConstraints(self._constraint_tolerance)
                    context.setVelocities(v)
                    context.applyVelocityConstraints(self._constraint_tolerance)
                    state = context.getState(getPositions=True, getVelocities=True)
                    frames.append((
                        state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                        state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond),
                    ))
            finally:  # even when interrupted: no forecast frame stays in the Context
                context.setState(after.state)
        return frames

    def _reject(self, before, reason, n_frames, reports):
        """Restore the pre-jump state, then let the rule cover the span (:meth:`~.AcceptanceRule.after_rejection`:
        :meth:`_integrate` it, or :meth:`keep_reversed`)."""
        self.stats.record_reject(reason)
        with self.stats.timing("transfer"):
            self._restore(before)
        if self.adapt_span:
            self.span_frames = max(1, self.span_frames // 2)
            self._accepted_in_row = 0
        logger.debug("step %d: jump of %d frames rejected (%s)", before.state.getStepCount(), n_frames, reason)
        self._history.clear()
        self.rule.after_rejection(self, before, n_frames, reports)

    def keep_reversed(self, before, n_frames, reports):
        """Cover a rejected span as generalised hybrid Monte Carlo does (the Metropolis and ghmc rules).

        The configuration ``before`` (restored) is kept for the span with its velocities reversed, then
        thermalised over the span (the part of the rule's Ornstein-Uhlenbeck step that follows a jump: all of
        it for the Metropolis rule, none for ghmc); reporters due at the span's end report it, as hybrid Monte
        Carlo repeats a rejected sample.  The next move does not depend on the outcome, which keeps the chain
        exact.

        Parameters
        ----------
        before : Snapshot
            The pre-jump state, already restored in the Context.
        n_frames : int
            The rejected jump's span in frames.
        reports : list of (reporter, description)
            From :func:`describe_reports`, taken before the jump.
        """
        span_steps = n_frames * self.stride_steps
        with self.stats.timing("transfer"):
            self._advance_clock(before, span_steps)
            self._current = self._set_velocities(-before.velocities_nm_ps, same_positions_as=before)
        self._history.append((self._current.positions_nm, self._current.velocities_nm_ps))
        self._thermalise((1.0 - self.rule.thermostat_before) * span_steps * self.timestep_ps)
        self.stats.kept_ps += span_steps * self.timestep_ps
        self._report_due(reports, span_steps)

    def _keep(self, n_steps, reports):
        """Cover ``n_steps`` (fewer than a stride) by keeping the current state; reports due at their end report it.

        Only for a rule that never integrates: the state does not move, so the chain stays exact.
        """
        with self.stats.timing("transfer"):
            self._advance_clock(self._current, n_steps)
            self._current = self._set_velocities(self._current.velocities_nm_ps, same_positions_as=self._current)
        self._history = [(self._current.positions_nm, self._current.velocities_nm_ps)]
        self.stats.kept_ps += n_steps * self.timestep_ps
        self._report_due(reports, n_steps)

    def _thermalise(self, span_ps):
        """Exact Ornstein-Uhlenbeck velocity step over ``span_ps`` on the current state (no force evaluation).

        :func:`~openmm_forecast.cycles.ornstein_uhlenbeck` with ``a = rule.velocity_decay(friction, span)``
        (the Langevin thermostat's ``exp(-friction span)`` unless the rule sets its own), applied to the
        synchronous velocities (then projected onto the constraints and written back in the integrator's
        convention).  It leaves the Maxwell-Boltzmann distribution invariant and does nothing when ``a = 1``
        (no friction).  When the System has a ``CMMotionRemover``, the centre-of-mass velocity is removed as
        the remover would.
        """
        if span_ps == 0.0:
            return
        decay = self.rule.velocity_decay(self.friction_per_ps, span_ps)
        if decay == 1.0:
            return
        with self.stats.timing("transfer"):
            masses = self.masses_amu if self._removes_com_motion else None
            velocities = ornstein_uhlenbeck(self._current.velocities_nm_ps, decay, self._thermal_speed, self._rng,
                                            masses)
            self._current = self._set_velocities(velocities, same_positions_as=self._current)
            self._history[-1] = (self._current.positions_nm, self._current.velocities_nm_ps)

    def _report_due(self, reports, span_steps):
        """Generate the reports (described before a jump) that fall on the jump's last step."""
        generate_reports(self.simulation, [(r, d) for r, d in reports if d["steps"] == span_steps])

    def _restore(self, before):
        self.simulation.context.setState(before.state)
        self._current = before

    # ---- integration, state capture, maintenance ----------------------------------------------------

    def _integrate(self, n_steps):
        """``n_steps`` of the simulation's own integrator (reporters as usual); keep the history.

        The last ``history - 1`` strides run one stride at a time so that their states can be read; if
        every step runs in such strides, the history continues, otherwise it restarts.
        """
        if n_steps <= 0:
            if not self._history:  # no segment (a rule that never integrates): the history is the current state
                self._history = [(self._current.positions_nm, self._current.velocities_nm_ps)]
            return
        s = self.stride_steps
        chunks = min(n_steps // s, self.history - 1)
        lead = n_steps - chunks * s
        with self.stats.timing("integration"):
            if lead:
                self.simulation.step(lead)
        if lead or not self._history:
            self._history = [self._timed_capture()]
        for _ in range(chunks):
            with self.stats.timing("integration"):
                self.simulation.step(s)
            self._history.append(self._timed_capture())
        del self._history[: -self.history]
        self.stats.integrated_ps += n_steps * self.timestep_ps

    def _timed_capture(self):
        with self.stats.timing("transfer"):
            return self._capture()

    def _capture(self):
        """Read the Context's state into ``_current``; return its synchronous (positions, velocities).

        For a leapfrog-type integrator the synchronous velocities ``v + dt/2 F/m`` are projected onto the
        constraints in the Context, whose velocities are then put back as they were.  With a rule that never
        integrates (ghmc), a Context that still holds ``_current`` (:meth:`_holds_current`: nothing changed it
        since the last jump) is not evaluated again: each :meth:`step` call then costs no extra target energy.
        """
        context = self.simulation.context
        if not self.rule.integrates and self._holds_current():
            return self._current.positions_nm, self._current.velocities_nm_ps
        self._parameters = dict(context.getParameters())
        state = context.getState(
            getPositions=True, getVelocities=True, getEnergy=True, getForces=self._keeps_forces, groups=self._groups
        )
        velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        potential_kJ, forces = self._potential_and_forces(state)
        if self._leapfrog:
            velocities = velocities + self._half_kick * forces
            if self._has_constraints:
                try:
                    context.setVelocities(velocities)
                    context.applyVelocityConstraints(self._constraint_tolerance)
                    projected = context.getState(getVelocities=True).getVelocities(asNumpy=True)
                    velocities = projected.value_in_unit(unit.nanometer / unit.picosecond)
                finally:  # even when interrupted: the Context keeps its own state
                    context.setState(state)
        self._current = self._snapshot(state, velocities, potential_kJ, forces)
        return self._current.positions_nm, self._current.velocities_nm_ps

    def _holds_current(self):
        """Whether the Context holds exactly ``_current``: positions, velocities, box, time, step count, and the
        global parameters of its last evaluation.  A potential changed in place between calls (a Force's
        ``updateParametersInContext``) is not seen: create a new accelerator after such a change."""
        if self._current is None:
            return False
        context, held = self.simulation.context, self._current.state
        state = context.getState(getPositions=True, getVelocities=True)
        nm, nm_ps = unit.nanometer, unit.nanometer / unit.picosecond
        return (
            state.getStepCount() == held.getStepCount() and state.getTime() == held.getTime()
            and dict(context.getParameters()) == self._parameters
            and np.array_equal(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(nm),
                               held.getPeriodicBoxVectors(asNumpy=True).value_in_unit(nm))
            and np.array_equal(state.getPositions(asNumpy=True).value_in_unit(nm), self._current.positions_nm)
            and np.array_equal(state.getVelocities(asNumpy=True).value_in_unit(nm_ps), self._current.velocities_nm_ps)
        )

    def kinetic_temperature_K(self):
        """Instantaneous kinetic temperature of the current state, in K."""
        kinetic = float(kinetic_energy_kJ(self._current.velocities_nm_ps, self.masses_amu))
        return kinetic_temperature_K(kinetic, self.dof)

    def _reequilibration_due(self):
        if not self.rule.maintains or self.options.reequilibration_steps == 0:
            return False
        if self._drift_exceeded():
            return True
        if self.options.temperature_sigmas is None or self.dof <= 0 or not self._thermostatted:
            return False  # without a thermostat neither is T canonical nor can integration bring it back
        score = kinetic_temperature_score(self.kinetic_temperature_K(), self.temperature_K, self.dof)
        return abs(score) > self.options.temperature_sigmas

    def _drift_exceeded(self):
        return abs(self.drift_kJ) > self.options.drift_tolerance_kT * self.kT_kJ

    def _maintain(self, remaining):
        """Maintenance at the start of a cycle (tolerance mode); True when it took the cycle.

        A re-equilibration when one is due; without a thermostat, once the drift has passed its bound, the
        ``remaining`` steps are integrated (jumps are switched off for good: integration cannot remove the
        energy the jumps added, and more jumps would add to it).
        """
        if not self._reequilibration_due():
            return False
        if not self._thermostatted and self._drift_exceeded():
            if not self._jumps_switched_off:
                self._jumps_switched_off = True
                logger.warning(
                    "step %d: the energy errors of the accepted jumps add up to %.2f kJ/mol (more than %g kT) and "
                    "the integrator has no thermostat to remove them: continuing as plain MD (no more jumps)",
                    self.simulation.currentStep, self.drift_kJ, self.options.drift_tolerance_kT,
                )
            self._integrate(remaining)
            return True
        self._reequilibrate(min(self.options.reequilibration_steps, remaining))
        return True

    def _reequilibrate(self, n_steps):
        logger.info(
            "step %d: re-equilibrating for %d steps (accumulated drift %.2f kJ/mol, kinetic temperature %.1f K)",
            self.simulation.currentStep, n_steps, self.drift_kJ, self.kinetic_temperature_K(),
        )
        self._integrate(n_steps)
        self.stats.reequilibrations += 1
        if self._thermostatted:
            self.drift_kJ = 0.0
            self._drift_terms_kJ.clear()

    # ---- checkpoints ---------------------------------------------------------------------------------

    def save_checkpoint(self, path):
        """Write a checkpoint (atomically) from which :meth:`load_checkpoint` continues this run exactly.

        Parameters
        ----------
        path : str or os.PathLike
        """
        record = {
            "system_fingerprint": self._system_fingerprint,
            "forecaster_fingerprint": self._forecaster_fingerprint,
            "step": self.simulation.currentStep,
            "accelerator": {
                "span_frames": self.span_frames,
                "accepted_in_row": self._accepted_in_row,
                "drift_kJ": self.drift_kJ,
                "drift_terms_kJ": list(self._drift_terms_kJ),
            },
            "stats": self.stats.to_state(),
            "rng": self._rng.bit_generator.state,
            "sanity_reference_nm": self.sanity_guard.reference_positions_nm.tolist(),
        }
        write_checkpoint(path, self.simulation.context.createCheckpoint(), record)

    def load_checkpoint(self, path):
        """Continue from a checkpoint of :meth:`save_checkpoint`.

        Raises
        ------
        CheckpointError
            Missing or corrupt file, or one written for a different System or forecaster, or on another
            platform or OpenMM version.  The simulation and the accelerator are then left as they were.
        """
        context_bytes, record = read_checkpoint(path, self._system_fingerprint, self._forecaster_fingerprint)
        name = str(path)
        try:  # read everything before changing anything
            state = record["accelerator"]
            span_frames, accepted_in_row, drift_kJ = state["span_frames"], state["accepted_in_row"], state["drift_kJ"]
            drift_terms_kJ = [float(term) for term in state.get("drift_terms_kJ", [])]
            stats = AcceleratorStats.from_state(record["stats"])
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = record["rng"]
            sanity_guard = self._sanity_guard(np.array(record["sanity_reference_nm"], dtype=np.float64))
            step = int(record["step"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {name!r} lacks accelerator state: {error}") from error
        if not 1 <= span_frames <= self.max_frames:
            raise CheckpointError(f"checkpoint {name!r} has span {span_frames}, outside [1, {self.max_frames}]")
        context = self.simulation.context
        current = context.createCheckpoint()  # a refused checkpoint must not cost the running state
        try:
            context.loadCheckpoint(context_bytes)
        except Exception as error:
            context.loadCheckpoint(current)
            raise CheckpointError(
                f"OpenMM could not load the Context of checkpoint {name!r} (written on another platform or "
                f"OpenMM version?): {error}"
            ) from error
        if self.simulation.currentStep != step:
            found = self.simulation.currentStep
            context.loadCheckpoint(current)
            raise CheckpointError(f"checkpoint {name!r} is inconsistent: step {step} recorded, {found} in its Context")
        self.span_frames, self._accepted_in_row, self.drift_kJ = span_frames, accepted_in_row, drift_kJ
        self._drift_terms_kJ = drift_terms_kJ
        self.stats = stats
        self._rng, self.sanity_guard = rng, sanity_guard
        self._history.clear()
        self._capture()
