"""ForecastAccelerator: replace stretches of an OpenMM simulation by guarded forecast jumps.

The thin public entry point.  It checks what it is given (:mod:`openmm_forecast.compatibility`), composes
one walker's sampler, :class:`~openmm_forecast.jumps.JumpCycle`, from small parts with public interfaces (the
proposal, :class:`~openmm_forecast.guards.SanityGuard` and :class:`~openmm_forecast.guards.DriftGuard`, the
acceptance rule of :mod:`openmm_forecast.acceptance`, and the Context's state,
:class:`~openmm_forecast.context_state.ContextState`), and owns the clock (:meth:`ForecastAccelerator.step`,
:meth:`ForecastAccelerator.run_for`, the integrator's settings read at every call), the progress bar,
interruptions and checkpoints.  The cycle itself is described in :mod:`openmm_forecast.jumps`; the options
in :class:`~openmm_forecast.options.AcceleratorOptions`, the statistics in
:class:`~openmm_forecast.stats.AcceleratorStats`.
"""

import contextlib
import logging
import weakref

import numpy as np
from openmm import unit
from tqdm.auto import tqdm

from ._logging import warn_once
from ._runtime import openmm as mm
from .checkpoint import forecaster_fingerprint, read_checkpoint, write_checkpoint
from .compatibility import (
    SUPPORTED_INTEGRATORS,
    check_atoms,
    check_exact_rule,
    check_integrator,
    check_supported_system,
    check_temperature_option,
    check_training_conditions,
    integrator_settings,
)
from .context_state import ContextState
from .errors import CheckpointError, RunInterrupted, UnsupportedSystemError
from .forecasters import load_forecaster
from .guards import SanityGuard
from .jumps import JumpCycle
from .options import AcceleratorOptions
from .stats import AcceleratorStats
from .systems import particle_masses, system_fingerprint
from .units import positive, require_int, whole_steps

logger = logging.getLogger(__name__)


class _FromCycle:
    """A read-only attribute of the accelerator kept by its cycle (``accelerator.cycle.<name>``)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, accelerator, owner=None):
        return self if accelerator is None else getattr(accelerator.cycle, self.name)


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
        temperature is a warning; see :func:`~openmm_forecast.compatibility.check_training_conditions`).
    ValueError
        Invalid options.

    Notes
    -----
    *Clock.*  An accepted jump advances ``simulation.currentStep`` and the Context time by its span; steps
    covered by jumps are never integrated.  Reporters receive reports at their usual steps, from the
    integrator or from an accepted jump that ends on the report step; a call pattern repeated with the
    same seeds repeats the trajectory (each :meth:`step` call starts a new cycle).

    *Integrators.*  The forecaster and ``H`` see synchronous velocities, also with OpenMM's leapfrog-type
    integrators (Verlet, Langevin), which hold them half a step behind the positions
    (:mod:`openmm_forecast.context_state`).  With a thermostat-free integrator (NVE), re-equilibration only
    integrates, which cannot remove the energy the jumps added: the accumulated drift is then kept, so once it
    passes ``drift_tolerance_kT`` every cycle re-equilibrates and the run goes on as plain MD (a warning says
    so), keeping ``H`` within the bound.

    *Exactness.*  The acceptance rule (``acceptance``) decides: the tolerance rule (default) and the dynamics
    rule produce dynamics with a bounded or rescaled energy error; the Metropolis and ghmc rules sample
    ``exp(-(U + K) / kT)`` exactly with a volume-preserving, time-reversible proposal
    (``forecaster.structure_preserving``).  What each guarantees, and when: :mod:`openmm_forecast.acceptance`.

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

    span_frames = _FromCycle()
    drift_kJ = _FromCycle()
    sanity_guard = _FromCycle()
    dof = _FromCycle()
    timestep_ps = _FromCycle()
    stride_steps = _FromCycle()
    segment_steps = _FromCycle()
    temperature_K = _FromCycle()
    kT_kJ = _FromCycle()
    friction_per_ps = _FromCycle()

    def __init__(self, simulation, forecaster, *, molecular_system=None, forecaster_options=None, **options):
        self.simulation = simulation
        self.options = opts = AcceleratorOptions(**options)
        check_supported_system(simulation.system)
        target = molecular_system if molecular_system is not None else simulation  # a name is built for this target
        self.forecaster = self._resolve_forecaster(forecaster, target, forecaster_options or {})
        meta = self.forecaster.metadata
        integrator = simulation.integrator
        check_integrator(integrator, opts.allow_custom_integrator)
        check_atoms(simulation, self.forecaster, molecular_system)
        check_training_conditions(simulation, self.forecaster, molecular_system)

        self.history = meta.history
        self.rule = opts.acceptance
        if not self.rule.integrates and self.history > 1:
            raise ValueError(f"the {self.rule.name!r} rule never integrates, so it has no history of states to give "
                             f"the forecaster (history {self.history}); use a forecaster of history 1 (the surrogate)")
        adapt_span = self.rule.adapts_span if opts.adapt_span is None else bool(opts.adapt_span)
        self.max_frames = meta.max_frames if opts.max_frames is None else opts.max_frames
        if self.max_frames > meta.max_frames:
            raise ValueError(f"max_frames ({self.max_frames}) exceeds the forecaster's max_frames ({meta.max_frames})")
        span_frames = self.max_frames if opts.initial_frames is None else opts.initial_frames
        if span_frames > self.max_frames:
            raise ValueError(f"initial_frames ({span_frames}) exceeds max_frames ({self.max_frames})")
        self.masses_amu = particle_masses(simulation.system)
        check_exact_rule(self.rule, self.forecaster, simulation.system, opts.allow_inexact_metropolis)
        # Leapfrog-type integrators hold velocities dt/2 behind the positions; a rule that never integrates keeps
        # synchronous velocities in the Context instead (the conversion would need the forces).
        leapfrog = type(integrator) in SUPPORTED_INTEGRATORS and self.rule.integrates
        if not self.rule.integrates and type(integrator) in (mm.VerletIntegrator, mm.LangevinIntegrator):
            # Measured (TorchForce, ala2-ani-amber14): an energy read costs 8.1 ms under a VerletIntegrator, 3.9 ms
            # under a LangevinMiddleIntegrator, as much as energy and forces (8.0 ms).
            warn_once(logger, ("shifted_kinetic_energy", type(integrator).__name__),
                      "OpenMM computes the forces for the kinetic energy of a %s at every energy read, so each %r "
                      "jump pays for the target's forces too; simulate with a LangevinMiddleIntegrator (the setups' "
                      "default) or openmm_forecast.velocity_verlet_integrator", type(integrator).__name__,
                      self.rule.name)
        check_temperature_option(opts.temperature, integrator)
        settings = integrator_settings(simulation, self.forecaster, self.rule, opts)

        reference = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        state = ContextState(simulation, self.masses_amu, leapfrog, leapfrog or self.forecaster.uses_forces)
        proposal = weakref.WeakMethod(self.propose)  # no reference cycle: a discarded accelerator frees its Simulation
        self.cycle = JumpCycle(
            simulation, self.forecaster, self.rule, state, self._sanity_guard(reference.value_in_unit(unit.nanometer)),
            opts, max_frames=self.max_frames, span_frames=span_frames, adapt_span=adapt_span,
            rng=np.random.Generator(np.random.PCG64(opts.seed)), stats=AcceleratorStats(max_dh_samples=opts.max_dh_samples),
            propose=lambda n_frames: proposal()(n_frames),
        )
        self.cycle.configure(**settings)
        self._system_fingerprint = system_fingerprint(simulation.system)
        self._forecaster_fingerprint = forecaster_fingerprint(self.forecaster)
        self.progress_bar = None  # a tqdm bar that step() updates instead of opening its own (one bar per run)
        self._stop_signal = None  # set by request_stop (e.g. from a signal handler)
        if getattr(simulation, "_forecast_accelerator", lambda: None)() is not None:
            # Two would each keep their own copy of the state and undo each other's jumps.
            raise UnsupportedSystemError("this Simulation is already driven by a ForecastAccelerator; step that one, "
                                         "or give the new one a Simulation of its own")
        simulation._forecast_accelerator = weakref.ref(self)  # refuses a second accelerator while this one lives

    @property
    def stats(self):
        """:class:`~openmm_forecast.stats.AcceleratorStats` of this run (replaceable, e.g. to measure a stretch)."""
        return self.cycle.stats

    @stats.setter
    def stats(self, stats):
        self.cycle.stats = stats

    # ---- construction helpers ---------------------------------------------------------------------

    @staticmethod
    def _resolve_forecaster(forecaster, molecular_system, forecaster_options):
        if isinstance(forecaster, str) or hasattr(forecaster, "__fspath__"):
            return load_forecaster(forecaster, molecular_system=molecular_system, **forecaster_options)
        if forecaster_options:
            raise ValueError("forecaster_options are only used when the forecaster is given by name or path")
        if not hasattr(forecaster, "forecast") or not hasattr(forecaster, "metadata"):
            raise TypeError(f"forecaster must be a Forecaster or a name or path, got {type(forecaster).__name__}")
        return forecaster

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

    def read_integrator(self):
        """Read the integrator's settings again (step size, temperature, friction, constraint tolerance, force groups).

        :meth:`step` and :meth:`run_for` call it first, so that changes made between calls (annealing with
        ``setTemperature``, another friction or step size) apply to the jumps as they apply to the integrator.
        Nothing changes when a check fails (see :func:`~openmm_forecast.compatibility.integrator_settings`).
        """
        self.cycle.configure(**integrator_settings(self.simulation, self.forecaster, self.rule, self.options))

    # ---- public driving API ---------------------------------------------------------------------

    def step(self, n_steps):
        """Advance the simulation by ``n_steps`` of its time step (jumps and integration mixed).

        Parameters
        ----------
        n_steps : int
            Steps to advance; ``simulation.currentStep`` grows by exactly this much.
        """
        require_int("n_steps", n_steps, minimum=0)
        self.read_integrator()
        self._advance(int(n_steps))

    def run_for(self, simulated_time):
        """Advance the simulation by a span of simulated time (a whole number of steps).

        Parameters
        ----------
        simulated_time : openmm.unit.Quantity
            Time units, >= 0.
        """
        time_ps = positive(simulated_time, unit.picosecond, "simulated_time", allow_zero=True)
        self.read_integrator()
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

    def propose(self, n_frames):
        """The proposal of the next jump: ``n_frames`` frames (nm, nm/ps) from the recent states, by default
        :meth:`JumpCycle.forecast <openmm_forecast.jumps.JumpCycle.forecast>` (same returns and errors).

        The cycle calls it for every jump; a subclass may supply frames from elsewhere (the walkers hand each
        walker its slice of one batched forecast).
        """
        return self.cycle.forecast(n_frames)

    def kinetic_temperature_K(self):
        """Instantaneous kinetic temperature of the current state, in K."""
        return self.cycle.kinetic_temperature_K()

    def _advance(self, n_steps):
        """Cycles until ``n_steps`` more steps are done (the integrator's settings already read)."""
        end_step = self.simulation.currentStep + n_steps
        self.cycle.start()
        if self.progress_bar is not None:
            progress = contextlib.nullcontext(self.progress_bar)
        else:
            disabled = None if self.options.progress is None else not self.options.progress
            progress = tqdm(total=n_steps, unit="step", disable=disabled, desc="forecast MD")
        with progress as bar:
            while self.simulation.currentStep < end_step:
                if self._stop_signal is not None:
                    signum, self._stop_signal = self._stop_signal, None
                    raise RunInterrupted(signum, self.simulation.currentStep)
                before = self.simulation.currentStep
                self.cycle.run(end_step)
                bar.update(self.simulation.currentStep - before)
                bar.set_postfix(accepted=f"{self.stats.jumps_accepted}/{self.stats.jumps_attempted}", refresh=False)

    # ---- checkpoints ---------------------------------------------------------------------------------

    def save_checkpoint(self, path):
        """Write a checkpoint (atomically) from which :meth:`load_checkpoint` continues this run exactly.

        Parameters
        ----------
        path : str or os.PathLike
        """
        cycle = self.cycle
        record = {
            "system_fingerprint": self._system_fingerprint,
            "forecaster_fingerprint": self._forecaster_fingerprint,
            "step": self.simulation.currentStep,
            "accelerator": {
                "span_frames": cycle.span_frames,
                "accepted_in_row": cycle.accepted_in_row,
                "drift_kJ": cycle.drift_guard.drift_kJ,
                "drift_terms_kJ": list(cycle.drift_guard.terms_kJ),
            },
            "stats": cycle.stats.to_state(),
            "rng": cycle.rng.bit_generator.state,
            "sanity_reference_nm": cycle.sanity_guard.reference_positions_nm.tolist(),
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
        cycle = self.cycle
        cycle.span_frames, cycle.accepted_in_row = span_frames, accepted_in_row
        cycle.drift_guard.drift_kJ, cycle.drift_guard.terms_kJ = drift_kJ, drift_terms_kJ
        cycle.stats, cycle.rng, cycle.sanity_guard = stats, rng, sanity_guard
        cycle.recent_states.clear()
        cycle.state.capture(reuse_current=not self.rule.integrates)
