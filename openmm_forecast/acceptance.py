"""Acceptance rules: how a sane jump is judged from its energy, and what a rejection does.

The jump cycle (:class:`~openmm_forecast.jumps.JumpCycle`) proposes, checks sanity and writes the
candidate into the Context (projected onto the constraints, one potential evaluation); then its rule
decides, from ``dH = H_after - H_before`` and the candidate's kinetic energy, and says what follows a
rejection, through the cycle's public methods (:meth:`~openmm_forecast.jumps.JumpCycle.integrate`,
:meth:`~openmm_forecast.jumps.JumpCycle.keep_reversed`, :meth:`~openmm_forecast.jumps.JumpCycle.reequilibration_due`).
A rule is a small stateless object (one may serve many walkers); a new rule is a new subclass of
:class:`AcceptanceRule`, not a new branch in the accelerator.

================  =================================  ===============================  ======================
rule              accepts                            after a rejection                exact?
================  =================================  ===============================  ======================
tolerance         ``|dH| <= tolerance_kT * kT``      the span is integrated           no: dynamics with a
                                                                                      bounded energy error
metropolis        with ``min(1, exp(-dH / kT))``     configuration kept for the       yes, with a structure-
                                                     span, velocities reversed (GHMC) preserving proposal
dynamics          every jump whose momenta can be    the span is integrated           no: measured
                  rescaled to keep ``H``                                              (docs/benchmark.md)
ghmc              as metropolis; the target is       as metropolis                    yes, with a structure-
                  never integrated (one energy per                                    preserving proposal
                  jump; :mod:`openmm_forecast.cycles`)
================  =================================  ===============================  ======================

Exactness
---------
The tolerance rule (default) produces dynamics: rejected spans are integrated.  It
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

Units: kJ/mol.
"""

import abc
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Decision:
    """What a rule decided about one jump.

    Attributes
    ----------
    reason : str or None
        None when accepted, else the rejection reason (one of the rule's ``reasons``).
    velocity_scale : float
        Factor the accepted candidate's velocities are multiplied by (1: unchanged).
    """

    reason: str = None
    velocity_scale: float = 1.0

    @property
    def accepted(self):
        return self.reason is None


class AcceptanceRule(abc.ABC):
    """Base class of the acceptance rules.

    Class attributes
    ----------------
    name : str
        The rule's name for ``ForecastAccelerator(acceptance=...)``.
    reasons : tuple of str
        Rejection reasons the rule can give (besides the sanity guard's).
    adapts_span : bool
        Default of the accelerator's ``adapt_span`` (a span that depends on past outcomes).
    maintains : bool
        Whether the accelerator's maintenance (re-equilibration on energy drift or temperature) applies.
    drift_window : int or None
        Number of most recent accepted jumps whose ``dH`` make up the drift that triggers a re-equilibration
        (None: every accepted jump since the last re-equilibration).
    thermostat_before : float
        Fraction of the span's Langevin Ornstein-Uhlenbeck step applied before the jump (the rest after the
        jump, accepted or kept reversed): 0 gives ``jump - O``, 0.5 gives ``O/2 - jump - O/2``.
    integrates : bool
        Whether the accelerator steps the simulation's integrator (segments, re-equilibrations, rejected
        spans) and keeps the Context's velocities in the integrator's convention.  False for a pure Monte Carlo
        cycle (:class:`~openmm_forecast.cycles.GHMCCycle`): no segment, synchronous velocities, and the
        potential's energy alone is read for each candidate (forces only for forecasters that read them).
    """

    name = None
    reasons = ()
    adapts_span = True
    maintains = True
    drift_window = None
    thermostat_before = 0.0
    integrates = True

    @abc.abstractmethod
    def decide(self, dh_kJ, kinetic_kJ, kT_kJ, rng):
        """Judge one sane candidate.

        Parameters
        ----------
        dh_kJ : float
            ``H_after - H_before`` in kJ/mol (the candidate projected onto the constraints).
        kinetic_kJ : float
            Kinetic energy of the candidate, kJ/mol.
        kT_kJ : float
            Thermal energy, kJ/mol.
        rng : numpy.random.Generator
            The accelerator's random stream (checkpointed).

        Returns
        -------
        Decision
        """

    def after_rejection(self, cycle, before, n_frames, reports):
        """Cover a rejected span, the pre-jump state ``before`` restored: integrate it (default).

        Parameters
        ----------
        cycle : JumpCycle
            The walker's cycle (:class:`~openmm_forecast.jumps.JumpCycle`), through its public methods.
        before : Snapshot
            The pre-jump state, restored in the Context.
        n_frames : int
            The rejected jump's span in frames.
        reports : list of (reporter, description)
            The reporters' next reports, described before the jump.
        """
        cycle.integrate(n_frames * cycle.stride_steps)

    def velocity_decay(self, friction_per_ps, span_ps):
        """Factor ``a`` of the Ornstein-Uhlenbeck velocity step over ``span_ps`` ps (1: none).

        Default: the Langevin thermostat's ``exp(-friction * span)`` (``friction_per_ps`` is 0 without a
        Langevin integrator or with ``thermostat_jumps=False``).
        """
        return float(np.exp(-friction_per_ps * span_ps))

    def keeps_jumping(self, cycle, accepted):
        """Whether the cycle goes on after a jump: after an acceptance, unless maintenance is now due."""
        return accepted and not cycle.reequilibration_due()

    def __repr__(self):
        fields = {key: value for key, value in vars(self).items() if not key.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


def _finite_or_refused(dh_kJ):
    """The 'energy' rejection for a NaN or infinite ``dH`` (None when finite)."""
    return None if np.isfinite(dh_kJ) else Decision("energy")


class ToleranceRule(AcceptanceRule):
    """Accept a jump when ``|dH| <= tolerance_kT * kT`` (the default rule); a rejected span is integrated.

    It produces dynamics, biased by up to the accepted ``|dH|`` per jump; the thermostat between jumps and
    the re-equilibrations (``drift_tolerance_kT``) bound the accumulated drift.

    Parameters
    ----------
    tolerance_kT : float
        Largest accepted ``|dH|`` in kT (> 0).
    """

    name = "tolerance"
    reasons = ("energy",)

    def __init__(self, tolerance_kT=1.0):
        if not (isinstance(tolerance_kT, (int, float)) and np.isfinite(tolerance_kT) and tolerance_kT > 0):
            raise ValueError(f"tolerance_kT must be a finite number > 0 (in kT), got {tolerance_kT!r}")
        self.tolerance_kT = float(tolerance_kT)

    def decide(self, dh_kJ, kinetic_kJ, kT_kJ, rng):
        refused = _finite_or_refused(dh_kJ)
        if refused is not None:
            return refused
        return Decision() if abs(dh_kJ) <= self.tolerance_kT * kT_kJ else Decision("energy")


class MetropolisRule(AcceptanceRule):
    """Generalised hybrid Monte Carlo: accept with probability ``min(1, exp(-dH / kT))``.

    Exactly one uniform number is drawn per finite ``dH``, accepted or not, so that the random stream does
    not depend on the outcome.  A rejected jump keeps the configuration for its span with reversed
    velocities (reporters due at its end report it, as hybrid Monte Carlo repeats a rejected sample), and
    the cycle goes on as after an acceptance: the schedule does not depend on outcomes (fixed span by
    default, no re-equilibration).  Exact for a volume-preserving, time-reversible proposal
    (:attr:`~openmm_forecast.forecasters.base.Forecaster.structure_preserving`): the surrogate and verlet
    forecasters.  With a learned forecaster it is approximate, with a bias controlled by ``dH``.
    """

    name = "metropolis"
    reasons = ("metropolis",)
    adapts_span = False
    maintains = False

    def decide(self, dh_kJ, kinetic_kJ, kT_kJ, rng):
        refused = _finite_or_refused(dh_kJ)
        if refused is not None:
            return refused
        uniform = rng.random()
        return Decision() if uniform < np.exp(min(0.0, -dh_kJ / kT_kJ)) else Decision("metropolis")

    def after_rejection(self, cycle, before, n_frames, reports):
        cycle.keep_reversed(before, n_frames, reports)

    def keeps_jumping(self, cycle, accepted):
        """Always (whatever the outcome), except that a rejection leaves one state of history, so with
        ``history > 1`` every cycle ends after its first jump."""
        return cycle.history == 1


class DynamicsRule(AcceptanceRule):
    """FlashMD's recipe: accept every sane jump, rescale its momenta so that ``H`` is kept.

    With ``K'`` the candidate's kinetic energy and ``dH`` the jump's energy error (from the one energy
    evaluation the jump already makes), the velocities are multiplied by ``alpha = sqrt(1 - dH / K')``, so
    that ``U' + alpha^2 K' = H``.  When that is impossible (``dH > K'``: the kinetic energy would be
    negative) the jump is refused (reason ``'rescale'``) and its span integrated.  With a Langevin
    integrator the span's Ornstein-Uhlenbeck step is split around the jump (``O/2 - jump - rescale - O/2``).
    A windowed drift check triggers re-equilibration: when the ``dH`` the rescaling removed over the last
    ``drift_window`` accepted jumps add up to more than ``drift_tolerance_kT`` (an accelerator option), the
    forecasts are systematically off and the next cycle re-equilibrates.

    Rescaling hides the energy error instead of refusing it; what it does to the ensemble depends on the
    forecaster and is measured, not promised (docs/benchmark.md).

    Parameters
    ----------
    drift_window : int
        Accepted jumps in the drift window (>= 1, default 20).
    """

    name = "dynamics"
    reasons = ("rescale",)
    thermostat_before = 0.5

    def __init__(self, drift_window=20):
        if isinstance(drift_window, bool) or not isinstance(drift_window, (int, np.integer)) or drift_window < 1:
            raise ValueError(f"drift_window must be an integer >= 1, got {drift_window!r}")
        self.drift_window = int(drift_window)

    def decide(self, dh_kJ, kinetic_kJ, kT_kJ, rng):
        refused = _finite_or_refused(dh_kJ)
        if refused is not None:
            return refused
        if not kinetic_kJ > 0:
            return Decision("rescale")
        squared = 1.0 - dh_kJ / kinetic_kJ
        return Decision(velocity_scale=float(np.sqrt(squared))) if squared >= 0 else Decision("rescale")


RULES = {rule.name: rule for rule in (ToleranceRule, MetropolisRule, DynamicsRule)}
"""Rule classes by name (:mod:`openmm_forecast.cycles` adds 'ghmc' when the package is imported)."""

REJECTION_REASONS = tuple(dict.fromkeys(reason for rule in RULES.values() for reason in rule.reasons))
"""Every reason a built-in rule can give: 'energy', 'metropolis', 'rescale'."""


def acceptance_rule(acceptance, energy_tolerance_kT=1.0):
    """The rule an ``acceptance`` argument names.

    Parameters
    ----------
    acceptance : str or AcceptanceRule
        A name of :data:`RULES` ('tolerance', 'metropolis', 'dynamics', 'ghmc'; built with their defaults,
        the tolerance from ``energy_tolerance_kT``), or a rule object (used as it is).
    energy_tolerance_kT : float
        Tolerance of ``'tolerance'`` given by name.

    Returns
    -------
    AcceptanceRule

    Raises
    ------
    ValueError
        An unknown name.
    TypeError
        Neither a name nor an AcceptanceRule.
    """
    if isinstance(acceptance, AcceptanceRule):
        return acceptance
    if isinstance(acceptance, str):
        if acceptance not in RULES:
            raise ValueError(f"unknown acceptance rule {acceptance!r}; choose one of {', '.join(RULES)} or pass a rule")
        if acceptance == "tolerance":
            return ToleranceRule(energy_tolerance_kT)
        return RULES[acceptance]()
    raise TypeError(f"acceptance must be a rule name ({', '.join(RULES)}) or an AcceptanceRule, got "
                    f"{type(acceptance).__name__}")
