"""The generalised hybrid Monte Carlo cycle at its limit: one target energy per jump, nothing else of the target.

:class:`GHMCCycle` (``ForecastAccelerator(acceptance='ghmc')``, benchmark arm ``MODEL:ghmc@STRIDE_FS``) makes
the accelerator a pure generalised-HMC chain (Horowitz 1991) whose Hamiltonian part is the proposal's flow.
From the synchronous state ``(x, v)`` held in the target's Context, each jump is:

1. refresh (O-step, no force): ``v <- a v + sqrt(1 - a^2) sqrt(kT/m) xi``, ``xi`` standard normal, projected
   onto the constraints (``Context.applyVelocityConstraints``); with a ``CMMotionRemover`` in the System the
   centre-of-mass velocity of the result is removed (the chain's velocities have none, so this removes the
   noise's), so that the remover takes no kinetic energy out of the jump.  ``a = 0`` is a full refresh
   (plain HMC), ``a`` close to 1 keeps momentum across jumps (Langevin-like dynamics);
2. jump: the forecaster maps ``(x, v)`` to ``(x', v')``; for an exact chain a volume-preserving,
   time-reversible map: :class:`~openmm_forecast.forecasters.surrogate.SurrogateForecaster` (velocity Verlet,
   RATTLE with constraints, on a cheaper System) or the ``verlet`` baseline;
3. one target evaluation, energy only (forces are never read): ``U(x')``, with ``K'`` from ``v'``;
4. Metropolis on ``H = U + K``: accept with ``min(1, exp(-(H' - H) / kT))`` and keep ``(x', v')``; on rejection
   restore ``(x, -v)`` (the reversal keeps detailed balance; an accepted jump is not flipped back).

The simulation's integrator never steps: no segment, no re-equilibration, no Langevin step between jumps,
and the Context holds synchronous velocities (no half-kick conversion, which would need forces).  The
integrator only supplies the temperature, the constraint tolerance, the force groups and (by default) the
friction that sets ``a``.  Every jump, accepted or rejected, advances the Simulation's time and step count by
its span; reporters due at its last step report from the Context.  A remainder shorter than one stride
(the end of a ``step`` call, or a report between two frame boundaries) is covered by keeping the current
state (counted in ``kept_ps``): choose ``step`` lengths and report intervals that are multiples of the jump.
A jump that fails (an exception of the forecaster or of OpenMM, a NaN energy, an insane geometry) is a
rejected jump, never a crash.

Each move (refresh, then jump with Metropolis and reversal) leaves ``exp(-(U + K) / kT)`` of the target
exactly invariant for a structure-preserving proposal, however wrong the surrogate: a bad surrogate costs
acceptance only.

Cost, measured (``scripts/measure_cycle_cost.py``: amber14-obc2 target, the learned ``fit-amber14-obc2``
surrogate, 498 fs jumps, one walker, ``step(500)`` per call, 2-core machine under load): 1.00 target
evaluations per jump against 2.5 for the Metropolis cycle with one Langevin step; a jump takes 1.11-1.15 times
(one target energy + its 249 surrogate steps), against 1.26-1.31 (CPU platform, ``Threads=1``, pinned) and
1.71-1.78 (Reference) for the Metropolis cycle; acceptance 0.80-0.89 for both.  Energy-only reads save
nothing for OBC2 but half of a TorchForce's cost (no backward pass), unless the integrator is a
``VerletIntegrator`` or ``LangevinIntegrator``, whose kinetic energy makes OpenMM compute forces (a warning).

Units: nm, nm/ps, ps, kJ/mol, amu.
"""

import numpy as np

from .acceptance import RULES, MetropolisRule
from .systems import without_com_velocity


def ornstein_uhlenbeck(velocities_nm_ps, decay, thermal_speed_nm_ps, rng, masses_amu=None):
    """The exact Ornstein-Uhlenbeck velocity step ``v <- a v + sqrt(1 - a^2) sqrt(kT/m) xi`` (no force).

    It leaves the Maxwell-Boltzmann distribution invariant for any ``a`` in [0, 1]; project the result onto
    the constraints (``Context.applyVelocityConstraints``) when there are any.

    Parameters
    ----------
    velocities_nm_ps : numpy.ndarray, shape (n_atoms, 3)
        Synchronous velocities, nm/ps.
    decay : float
        ``a`` in [0, 1]: ``exp(-friction * span)`` for a Langevin thermostat, 0 for a full refresh.
    thermal_speed_nm_ps : numpy.ndarray, shape (n_atoms, 1)
        ``sqrt(kT / m)`` per atom, nm/ps (0 for massless particles).
    rng : numpy.random.Generator
        Draws ``n_atoms * 3`` standard normal numbers.
    masses_amu : numpy.ndarray, shape (n_atoms,), optional
        Given when the System has a ``CMMotionRemover``: the centre-of-mass velocity of the result is removed.

    Returns
    -------
    numpy.ndarray, shape (n_atoms, 3)
        nm/ps.
    """
    noise = rng.standard_normal(velocities_nm_ps.shape)
    velocities = decay * velocities_nm_ps + np.sqrt(1.0 - decay * decay) * thermal_speed_nm_ps * noise
    if masses_amu is not None:
        velocities = without_com_velocity(velocities, masses_amu)
    return velocities


class GHMCCycle(MetropolisRule):
    """Generalised hybrid Monte Carlo at one target energy evaluation per jump (see the module docstring).

    An acceptance rule (``acceptance='ghmc'``) whose cycle has no integration of the target: the whole
    Ornstein-Uhlenbeck refresh comes before each jump (``thermostat_before = 1``), the decision is the
    Metropolis rule's, a rejection restores the pre-jump state with reversed velocities
    (:meth:`~openmm_forecast.jumps.JumpCycle.keep_reversed`), and the span is fixed.  Use it
    with a forecaster of history 1 (the surrogate, the ``verlet`` baseline, the symplectic architecture).

    Parameters
    ----------
    velocity_memory : float, optional
        ``a`` of the refresh, in [0, 1]: 0 is a full momentum refresh (HMC), 1 none (then the chain only
        alternates jumps and reversals: not ergodic).  Default: ``exp(-friction * span)`` with the friction
        of the simulation's Langevin integrator and the jump's span (the velocity memory of Langevin
        dynamics over the same time), or 0 (full refresh) without friction (a Verlet integrator, or
        ``thermostat_jumps=False``).

    Attributes
    ----------
    integrates : bool
        False: the accelerator never steps the simulation's integrator.
    """

    name = "ghmc"
    integrates = False
    thermostat_before = 1.0

    def __init__(self, velocity_memory=None):
        if velocity_memory is not None and not (
            isinstance(velocity_memory, (int, float)) and not isinstance(velocity_memory, bool)
            and 0.0 <= velocity_memory <= 1.0
        ):
            raise ValueError(f"velocity_memory must be a number in [0, 1] or None, got {velocity_memory!r}")
        self.velocity_memory = None if velocity_memory is None else float(velocity_memory)

    def velocity_decay(self, friction_per_ps, span_ps):
        """``a`` of the refresh before a jump of ``span_ps`` ps (``velocity_memory``, else from the friction)."""
        if self.velocity_memory is not None:
            return self.velocity_memory
        if friction_per_ps > 0.0:
            return super().velocity_decay(friction_per_ps, span_ps)
        return 0.0


# Registered by name, as openmm-ml registers its models: acceptance='ghmc', --acceptance ghmc, arms 'MODEL:ghmc'.
RULES[GHMCCycle.name] = GHMCCycle
