"""The jump cycle: segments of integration, guarded forecast jumps, and what a rejection does.

:class:`JumpCycle` is the sampler of one walker, composed of small parts with public interfaces: a
proposal (``propose(n_frames)``: by default the forecaster from the recent states, :meth:`JumpCycle.forecast`),
the sanity guard (:class:`~openmm_forecast.guards.SanityGuard`), an acceptance rule
(:mod:`openmm_forecast.acceptance`), the drift guard (:class:`~openmm_forecast.guards.DriftGuard`) and the
Context's state (:class:`~openmm_forecast.context_state.ContextState`).  A rule sees the cycle through its
public methods only (:meth:`JumpCycle.integrate`, :meth:`JumpCycle.keep_reversed`,
:meth:`JumpCycle.reequilibration_due`), so a new rule or proposal needs no change here.
:class:`~openmm_forecast.accelerator.ForecastAccelerator` builds one and owns the clock, reporters'
progress and checkpoints; :class:`~openmm_forecast.walkers.ForecastWalkers` drives several in lockstep.

The cycle
---------
:meth:`~openmm_forecast.accelerator.ForecastAccelerator.step` calls :meth:`JumpCycle.run`, one cycle, until
the requested step is reached.  The state of the loop is
explicit: the Context (positions, velocities, box, time, step count), the current span ``span_frames``, the
count of full-span acceptances in a row, the drift guard's accumulated energy drift, the Metropolis random
stream, and the recent states (rebuilt every cycle).

0. Maintenance (tolerance and dynamics rules).  If the accumulated drift of accepted jumps (the dynamics
   rule: of its last ``drift_window`` accepted jumps) exceeds ``drift_tolerance_kT`` or the instantaneous
   kinetic temperature is outside ``temperature_sigmas`` standard deviations of the target (its chi-squared
   distribution mapped to a normal one), the cycle is a re-equilibration: ``reequilibration_steps`` of the
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
   b. propose: the forecaster maps the recent states to ``n_frames`` frames ``stride`` apart.
   c. sanity (:class:`~openmm_forecast.guards.SanityGuard`): every frame finite, no clash, no stretched
      bond, no inverted stereocentre.  Nothing has been written to the Context yet.
   d. energy: the last frame is written to the Context and projected onto the constraints (positions,
      then velocities); the acceptance rule (:mod:`~openmm_forecast.acceptance`) decides from
      ``dH = (U + K)_after - (U + K)_before`` and may rescale the candidate's velocities (dynamics rule).
      A rule may take part of the thermostat's step for the span before the jump (dynamics: ``O/2``).
   e. accept: time and step count advance by the span; with a Langevin integrator the velocities get
      the thermostat's exact Ornstein-Uhlenbeck step for the span (``thermostat_jumps``: the jump is the
      Hamiltonian part of a Langevin splitting, so friction acts on all simulated time); reporters due at
      the jump's last step report from the Context (which now holds that frame); the drift grows by ``dH``;
      after ``grow_after`` full-span acceptances in a row the span doubles (at most ``max_frames``).  If
      maintenance is now due, the cycle ends.
      reject: the exact pre-jump State is restored (positions, velocities, box, time, step) and the span
      halves (at least 1).  Then the rule covers the span: tolerance and dynamics rules integrate it with
      the simulation's own integrator and the cycle ends; the Metropolis rule reverses the velocities,
      keeps the configuration for the span (reporters due at its end report it) and the cycle goes on, as
      after an acceptance.

The ghmc rule (:class:`~openmm_forecast.cycles.GHMCCycle`) runs the same loop without steps 0 and 1: each
jump is preceded by its whole Ornstein-Uhlenbeck step (no force), the candidate's potential energy alone is
read, a rejection keeps the reversed state, and the simulation's integrator never steps (see
:mod:`openmm_forecast.cycles`).

Rejected forecasts never reach a reporter, and nothing non-finite ever reaches the Context.  Units: nm,
nm/ps, ps, kJ/mol, K, amu.
"""

import logging

import numpy as np

from ._logging import warn_once
from ._runtime import openmm as mm
from .compatibility import forecaster_key
from .cycles import ornstein_uhlenbeck
from .errors import BadForecastError, is_potential_evaluation_failure
from .guards import DriftGuard, degrees_of_freedom, kinetic_energy_kJ, kinetic_temperature_K
from .reporters import describe_reports, generate_reports
from .systems import removes_com_motion
from .units import kT_kJ

logger = logging.getLogger("openmm_forecast.accelerator")  # the driver's messages, under the name users filter on


class JumpCycle:
    """One walker's sampler: segments, guarded jumps, and what follows a rejection (see the module docstring).

    Parameters
    ----------
    simulation : openmm.app.Simulation
    forecaster : Forecaster
        The proposal of :meth:`forecast`.
    rule : AcceptanceRule
    state : ContextState
        The simulation's Context, read and written as Snapshots.
    sanity_guard : SanityGuard
    options : AcceleratorOptions
        ``jumps_per_cycle``, ``grow_after``, ``reequilibration_steps``, ``drift_tolerance_kT`` and
        ``temperature_sigmas`` are read from it.
    max_frames, span_frames : int
        Longest jump and first span, in frames.
    adapt_span : bool
        Halve the span after a rejection, double it after ``grow_after`` full-span acceptances in a row.
    rng : numpy.random.Generator
        The Metropolis and thermostat random stream.
    stats : AcceleratorStats
    propose : callable, optional
        ``propose(n_frames) -> (positions, velocities)``, each of shape (n_frames, n_atoms, 3) in nm and nm/ps
        (default :meth:`forecast`).

    Attributes
    ----------
    history : int
        States the proposal reads (the forecaster's ``history``).
    recent_states : list of (positions, velocities)
        Synchronous states ``stride_steps`` apart, newest last (at most ``history``).
    drift_guard : DriftGuard
    jumps_switched_off : bool
        Without a thermostat, whether the drift passed its bound (the rest of the run is integrated).
    timestep_ps, stride_steps, segment_steps, temperature_K, kT_kJ, friction_per_ps, thermostatted
        Read from the integrator by :meth:`configure`.
    """

    def __init__(self, simulation, forecaster, rule, state, sanity_guard, options, *, max_frames, span_frames,
                 adapt_span, rng, stats, propose=None):
        self.simulation, self.forecaster, self.rule, self.state = simulation, forecaster, rule, state
        self.sanity_guard, self.options, self.rng, self.stats = sanity_guard, options, rng, stats
        self.propose = self.forecast if propose is None else propose
        self.history = forecaster.metadata.history
        self.max_frames, self.span_frames, self.adapt_span = max_frames, span_frames, adapt_span
        self.accepted_in_row = 0
        self.drift_guard = DriftGuard(options.drift_tolerance_kT, options.temperature_sigmas, rule.drift_window)
        self.jumps_switched_off = False
        self.recent_states = []
        self.dof = degrees_of_freedom(simulation.system)
        # With a CMMotionRemover the System keeps zero total momentum; the thermostat's noise must too, or the
        # remover takes the noise's centre-of-mass kinetic energy out during the next jump (dH ~ -kT).
        self._removes_com_motion = removes_com_motion(simulation.system)

    def configure(self, timestep_ps, stride_steps, segment_steps, temperature_K, friction_per_ps, thermostatted):
        """Settings read from the integrator (at construction and at every ``step`` call, so that changes made
        between calls, such as ``setTemperature``, apply to the jumps as they apply to the integrator).

        Parameters
        ----------
        timestep_ps : float
        stride_steps, segment_steps : int
            Steps per forecast frame and per segment.
        temperature_K : float
            Target temperature.
        friction_per_ps : float
            Friction of the jumps' Ornstein-Uhlenbeck step (0: none).
        thermostatted : bool
            Whether integration thermalises.
        """
        self.timestep_ps, self.stride_steps, self.segment_steps = timestep_ps, stride_steps, segment_steps
        self.temperature_K, self.kT_kJ = temperature_K, kT_kJ(temperature_K)
        self.friction_per_ps, self.thermostatted = friction_per_ps, thermostatted
        masses = self.state.masses_amu
        inverse_mass = np.divide(1.0, masses, out=np.zeros_like(masses), where=masses > 0)
        # Thermal velocity scale sqrt(kT/m) per atom, in nm/ps (kJ/mol/amu = nm^2/ps^2).
        self._thermal_speed = np.sqrt(self.kT_kJ * inverse_mass)[:, None]
        self.state.configure()

    @property
    def current(self):
        """The Snapshot of the Context now."""
        return self.state.current

    @property
    def drift_kJ(self):
        """The drift guard's accumulated ``dH`` of accepted jumps, kJ/mol."""
        return self.drift_guard.drift_kJ

    # ---- driving -------------------------------------------------------------------------------------

    def start(self):
        """Read the Context (at the start of every ``step`` call: the user may have changed it).

        With a rule that never integrates (ghmc), a Context that still holds the current Snapshot is not
        evaluated again: each ``step`` call then costs no extra target energy.
        """
        with self.stats.timing("transfer"):
            self.state.capture(reuse_current=not self.rule.integrates)

    def run(self, end_step):
        """One cycle (see the module docstring): maintenance or segment, then jumps, without passing ``end_step``."""
        if not self.begin(end_step - self.simulation.currentStep):
            return
        for _ in range(self.options.jumps_per_cycle):
            n_frames, reports = self.plan_jump(end_step)
            if n_frames == 0:
                return
            self.prepare_jump(n_frames)
            if not self.keeps_jumping(self.jump(n_frames, reports)):
                return

    def begin(self, remaining):
        """Start a cycle with ``remaining`` steps to go: maintenance, or the segment; True when jumps follow."""
        self.recent_states.clear()
        if self._maintain(remaining):
            return False
        self.integrate(min(self.segment_steps, remaining))
        return True

    def plan_jump(self, end_step):
        """Frames of the next jump (0: none fits) and the reporters' next reports.

        With a rule that never integrates (ghmc), a remainder shorter than one stride (before ``end_step`` or a
        report) is covered here by keeping the current state, and 0 is returned.

        Returns
        -------
        n_frames : int
        reports : list of (reporter, description)
            From :func:`~openmm_forecast.reporters.describe_reports`, taken before the jump.
        """
        if len(self.recent_states) < self.history:
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

    def prepare_jump(self, n_frames):
        """Before proposing a planned jump: the rule's share of the thermostat's step for the span."""
        self._thermalise(self.rule.thermostat_before * n_frames * self.stride_steps * self.timestep_ps)

    def keeps_jumping(self, accepted):
        """Whether the cycle goes on after a jump (the rule's :meth:`~.AcceptanceRule.keeps_jumping`)."""
        return self.rule.keeps_jumping(self, accepted)

    # ---- one jump: propose, check, accept or restore -------------------------------------------------

    def proposal_input(self):
        """What a proposal reads: the recent states and the current forces.

        Returns
        -------
        positions, velocities : numpy.ndarray, shape (history, n_atoms, 3)
            nm and nm/ps, oldest first.
        forces : numpy.ndarray, shape (n_atoms, 3), or None
            kJ/mol/nm of the newest state, for forecasters that read them.
        """
        x = np.stack([x for x, _ in self.recent_states[-self.history :]])
        v = np.stack([v for _, v in self.recent_states[-self.history :]])
        return x, v, self.current.forces_kJ_nm if self.forecaster.uses_forces else None

    def forecast(self, n_frames):
        """The default proposal: the forecaster's ``n_frames`` frames from the recent states.

        Returns
        -------
        positions, velocities : numpy.ndarray, shape (n_frames, n_atoms, 3)
            nm and nm/ps.

        Raises
        ------
        BadForecastError
            The forecaster returned arrays of the wrong shape (nothing was written to the Context).
        """
        x, v, forces = self.proposal_input()
        with self.stats.timing("forecast"):
            positions, velocities = self.forecaster.forecast(x[None], v[None], n_frames,
                                                             forces=None if forces is None else forces[None])
        expected = (1, n_frames, x.shape[1], 3)
        if np.shape(positions) != expected or np.shape(velocities) != expected:
            raise BadForecastError(
                f"forecaster {self.forecaster.name!r} returned arrays of shape {np.shape(positions)} and "
                f"{np.shape(velocities)}, expected {expected}"
            )
        return np.asarray(positions, dtype=np.float64)[0], np.asarray(velocities, dtype=np.float64)[0]

    def jump(self, n_frames, reports):
        """Propose, check, then accept or restore one jump of ``n_frames`` frames; True when accepted.

        Parameters
        ----------
        n_frames : int
        reports : list of (reporter, description)
            From :meth:`plan_jump`.
        """
        self.stats.record_attempt(n_frames)
        before = self.current
        try:
            positions, velocities = self.propose(n_frames)
        except BadForecastError:  # a broken contract (wrong shapes): a bug to fix, not a forecast to reject
            raise
        except Exception as error:  # a model that fails is a rejected jump; nothing reached the Context
            warn_once(logger, ("forecast_error", forecaster_key(self.forecaster), type(error).__name__),
                      "forecaster %r raised %s: %s (the jump is rejected; later ones like it are counted as "
                      "'forecast_error')", self.forecaster.name, type(error).__name__, error)
            self._reject(before, "forecast_error", n_frames, reports)
            return False
        with self.stats.timing("guard"):
            reason = self.sanity_guard.check(positions, velocities)
        if reason is None:
            try:
                with self.stats.timing("guard"):
                    after, dh_kJ, reason = self._judge(positions[-1], velocities[-1], before, n_frames)
            except mm.OpenMMException as error:  # e.g. NaN after constraint projection on a GPU platform
                self.state.restore(before)
                logger.debug("candidate refused by OpenMM: %s", error)
                # a PotentialEvaluationError in a PythonForce (an SCF failure) arrives as its message only
                reason = "evaluation" if is_potential_evaluation_failure(error) else "nonfinite"
                dh_kJ = float("nan")
            except BaseException:
                self.state.restore(before)  # never leave a candidate in the Context
                raise
            self.stats.record_dh(dh_kJ)
        if reason is not None:
            self._reject(before, reason, n_frames, reports)
            return False
        try:
            with self.stats.timing("guard"):
                earlier = self.state.project_frames(positions[-self.history : -1], velocities[-self.history : -1],
                                                    after)
        except mm.OpenMMException as error:  # as for the last frame: the forecast is refused
            logger.debug("intermediate frame refused by OpenMM: %s", error)
            self._reject(before, "nonfinite", n_frames, reports)
            return False
        except BaseException:
            self.state.restore(before)  # an interrupted jump is undone whole
            raise
        self._accept(after, earlier, n_frames, dh_kJ, reports)
        return True

    def _judge(self, positions, velocities, before, n_frames):
        """Write the candidate frame into the Context and let the rule decide: ``(after, dH, reason)``."""
        after = self.state.write_candidate(positions, velocities, before, n_frames * self.stride_steps,
                                           self.timestep_ps)
        dh_kJ = after.hamiltonian_kJ - before.hamiltonian_kJ
        decision = self.rule.decide(dh_kJ, after.hamiltonian_kJ - after.potential_kJ, self.kT_kJ, self.rng)
        if decision.reason is None and decision.velocity_scale != 1.0:  # no new energy evaluation
            after = self.state.set_velocities(decision.velocity_scale * after.velocities_nm_ps, same_positions_as=after)
        return after, dh_kJ, decision.reason

    def _accept(self, after, earlier, n_frames, dh_kJ, reports):
        """Keep the candidate: clock, recent states (``earlier``: the jump's last intermediate frames, projected),
        drift, span, statistics, reports due at its last step."""
        self.state.current = after
        self.recent_states.extend(earlier)
        self.recent_states.append((after.positions_nm, after.velocities_nm_ps))
        del self.recent_states[: -self.history]
        self.drift_guard.add(dh_kJ)
        span_steps = n_frames * self.stride_steps
        self.stats.record_accept(n_frames, span_steps * self.timestep_ps)
        if self.adapt_span and n_frames == self.span_frames:
            self.accepted_in_row += 1
            if self.accepted_in_row >= self.options.grow_after:
                self.span_frames = min(self.max_frames, 2 * self.span_frames)
                self.accepted_in_row = 0
        logger.debug("step %d: jump of %d frames accepted, dH %.3f kJ/mol", after.state.getStepCount(), n_frames, dh_kJ)
        self._thermalise((1.0 - self.rule.thermostat_before) * span_steps * self.timestep_ps)
        self._report_due(reports, span_steps)

    def _reject(self, before, reason, n_frames, reports):
        """Restore the pre-jump state, then let the rule cover the span (:meth:`~.AcceptanceRule.after_rejection`:
        :meth:`integrate` it, or :meth:`keep_reversed`)."""
        self.stats.record_reject(reason)
        with self.stats.timing("transfer"):
            self.state.restore(before)
        if self.adapt_span:
            self.span_frames = max(1, self.span_frames // 2)
            self.accepted_in_row = 0
        logger.debug("step %d: jump of %d frames rejected (%s)", before.state.getStepCount(), n_frames, reason)
        self.recent_states.clear()
        self.rule.after_rejection(self, before, n_frames, reports)

    # ---- covering a span: what rules call ------------------------------------------------------------

    def integrate(self, n_steps):
        """``n_steps`` of the simulation's own integrator (reporters as usual); keep the recent states.

        The last ``history - 1`` strides run one stride at a time so that their states can be read; if
        every step runs in such strides, the recent states continue, otherwise they restart.
        """
        if n_steps <= 0:
            if not self.recent_states:  # no segment (a rule that never integrates): the current state only
                self.recent_states = [(self.current.positions_nm, self.current.velocities_nm_ps)]
            return
        s = self.stride_steps
        chunks = min(n_steps // s, self.history - 1)
        lead = n_steps - chunks * s
        with self.stats.timing("integration"):
            if lead:
                self.simulation.step(lead)
        if lead or not self.recent_states:
            self.recent_states = [self._timed_capture()]
        for _ in range(chunks):
            with self.stats.timing("integration"):
                self.simulation.step(s)
            self.recent_states.append(self._timed_capture())
        del self.recent_states[: -self.history]
        self.stats.integrated_ps += n_steps * self.timestep_ps

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
            From :meth:`plan_jump`, taken before the jump.
        """
        span_steps = n_frames * self.stride_steps
        with self.stats.timing("transfer"):
            self.state.advance_clock(before, span_steps, self.timestep_ps)
            self.state.current = self.state.set_velocities(-before.velocities_nm_ps, same_positions_as=before)
        self.recent_states.append((self.current.positions_nm, self.current.velocities_nm_ps))
        self._thermalise((1.0 - self.rule.thermostat_before) * span_steps * self.timestep_ps)
        self.stats.kept_ps += span_steps * self.timestep_ps
        self._report_due(reports, span_steps)

    def _keep(self, n_steps, reports):
        """Cover ``n_steps`` (fewer than a stride) by keeping the current state; reports due at their end report it.

        Only for a rule that never integrates: the state does not move, so the chain stays exact.
        """
        current = self.current
        with self.stats.timing("transfer"):
            self.state.advance_clock(current, n_steps, self.timestep_ps)
            self.state.current = self.state.set_velocities(current.velocities_nm_ps, same_positions_as=current)
        self.recent_states = [(self.current.positions_nm, self.current.velocities_nm_ps)]
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
            current = self.current
            masses = self.state.masses_amu if self._removes_com_motion else None
            velocities = ornstein_uhlenbeck(current.velocities_nm_ps, decay, self._thermal_speed, self.rng, masses)
            self.state.current = self.state.set_velocities(velocities, same_positions_as=current)
            self.recent_states[-1] = (self.current.positions_nm, self.current.velocities_nm_ps)

    def _report_due(self, reports, span_steps):
        """Generate the reports (described before a jump) that fall on the jump's last step."""
        generate_reports(self.simulation, [(r, d) for r, d in reports if d["steps"] == span_steps])

    def _timed_capture(self):
        with self.stats.timing("transfer"):
            current = self.state.capture(reuse_current=not self.rule.integrates)
        return current.positions_nm, current.velocities_nm_ps

    # ---- maintenance ---------------------------------------------------------------------------------

    def kinetic_temperature_K(self):
        """Instantaneous kinetic temperature of the current state, in K."""
        kinetic = float(kinetic_energy_kJ(self.current.velocities_nm_ps, self.state.masses_amu))
        return kinetic_temperature_K(kinetic, self.dof)

    def reequilibration_due(self):
        """Whether the next cycle must re-equilibrate (:meth:`DriftGuard.due`; never for a rule without maintenance)."""
        if not self.rule.maintains or self.options.reequilibration_steps == 0:
            return False
        return self.drift_guard.due(self.kT_kJ, self.kinetic_temperature_K(), self.temperature_K, self.dof,
                                    self.thermostatted)

    def _maintain(self, remaining):
        """Maintenance at the start of a cycle (tolerance mode); True when it took the cycle.

        A re-equilibration when one is due; without a thermostat, once the drift has passed its bound, the
        ``remaining`` steps are integrated (jumps are switched off for good: integration cannot remove the
        energy the jumps added, and more jumps would add to it).
        """
        if not self.reequilibration_due():
            return False
        if not self.thermostatted and self.drift_guard.exceeded(self.kT_kJ):
            if not self.jumps_switched_off:
                self.jumps_switched_off = True
                logger.warning(
                    "step %d: the energy errors of the accepted jumps add up to %.2f kJ/mol (more than %g kT) and "
                    "the integrator has no thermostat to remove them: continuing as plain MD (no more jumps)",
                    self.simulation.currentStep, self.drift_guard.drift_kJ, self.options.drift_tolerance_kT,
                )
            self.integrate(remaining)
            return True
        n_steps = min(self.options.reequilibration_steps, remaining)
        logger.info(
            "step %d: re-equilibrating for %d steps (accumulated drift %.2f kJ/mol, kinetic temperature %.1f K)",
            self.simulation.currentStep, n_steps, self.drift_guard.drift_kJ, self.kinetic_temperature_K(),
        )
        self.integrate(n_steps)
        self.stats.reequilibrations += 1
        if self.thermostatted:
            self.drift_guard.reset()
        return True
