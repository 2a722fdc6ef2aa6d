"""Options of the forecast accelerator: the one place their defaults and checks live.

:class:`AcceleratorOptions` holds every keyword argument of
:class:`~openmm_forecast.accelerator.ForecastAccelerator` (and of the walkers and benchmark arms that pass
them on), with its default and its validation.  Units: kT for energies, OpenMM quantities for temperatures
and lengths.
"""

import dataclasses

import numpy as np
from openmm import unit

from .acceptance import acceptance_rule
from .units import require_int


@dataclasses.dataclass
class AcceleratorOptions:
    """Settings of a :class:`ForecastAccelerator` (all keyword arguments of its constructor).

    Attributes
    ----------
    segment_steps : int, optional
        Integration steps at the start of every cycle (default: one stride, or ``history - 1`` strides; none,
        and refused, with a rule that never integrates: ``acceptance='ghmc'``).
    jumps_per_cycle : int
        Most jumps after one segment (default 4).
    max_frames : int, optional
        Longest jump in frames (default and upper bound: the forecaster's ``max_frames``).
    initial_frames : int, optional
        Span of the first jump (default ``max_frames``).
    adapt_span : bool, optional
        Halve the span after a rejection, double it after ``grow_after`` full-span acceptances in a row
        (default: the rule's ``adapts_span``: True, except for the Metropolis rule, whose exactness needs a
        fixed span).
    grow_after : int
        See ``adapt_span`` (default 4).
    acceptance : str or AcceptanceRule
        How a sane jump is judged and what a rejection does (:mod:`openmm_forecast.acceptance`):
        'tolerance' (default), 'metropolis', 'dynamics', 'ghmc' (generalised HMC at one target energy per
        jump, :mod:`openmm_forecast.cycles`), or a rule object; resolved to the rule object.
    energy_tolerance_kT : float
        Accept a jump when ``|dH| <= energy_tolerance_kT * kT`` (default 1.0; used by ``acceptance='tolerance'``
        given by name; a ToleranceRule object carries its own).
    allow_inexact_metropolis : bool
        Run the 'metropolis' or 'ghmc' rule with a forecaster that is not certified volume-preserving and
        reversible (``forecaster.structure_preserving`` False: the learned networks but ``symplectic``).  Refused
        by default: the test then certifies nothing, and the shipped network "accepted" 80-88 % of its jumps
        while the molecule cooled to 46-130 K.  True runs it with a warning; the option is recorded in every
        report that records the accelerator's options.
    drift_tolerance_kT : float
        Re-equilibrate when the accumulated ``dH`` of accepted jumps exceeds this many kT (default 5; the
        dynamics rule sums its last ``drift_window`` accepted jumps only).
    temperature_sigmas : float or None
        Re-equilibrate when the kinetic temperature is further from the target than a normal variable
        strays this many standard deviations (default 4; None disables): the chi-squared distribution of
        the kinetic energy is mapped to a normal one (:func:`~openmm_forecast.guards.kinetic_temperature_score`),
        so the check fires at equilibrium as rarely as a 4-sigma event (6e-5 per check), tails included.
        Only with a thermostat: in NVE the kinetic temperature is not canonical and integration cannot
        restore it.
    reequilibration_steps : int
        Steps of the simulation's integrator per re-equilibration (default 500; 0 disables it).
        Re-equilibration is part of the tolerance and dynamics rules only.  Without a thermostat it cannot
        remove the drift, which is then kept: past ``drift_tolerance_kT`` the run continues as plain MD.
    metropolis : bool
        Alias of ``acceptance='metropolis'`` (True with another ``acceptance`` is refused).
    seed : int, optional
        Seed of the Metropolis random stream (default: fresh entropy; the stream is checkpointed).
    temperature : openmm.unit.Quantity, optional
        Target temperature for an integrator without one (VerletIntegrator, velocity Verlet; default: the
        forecaster's training temperature).  An integrator with a temperature sets it (also after
        ``setTemperature``); a different value here is refused.
    clash_fraction : float
        Clash threshold as a fraction of the sum of the two atoms' van der Waals radii (default 0.5; see
        :class:`~openmm_forecast.guards.SanityGuard`).
    clash_distance : openmm.unit.Quantity, optional
        One absolute clash threshold (length) for every pair, instead of ``clash_fraction``.
    bond_stretch : float
        Largest factor by which a bond may differ from its length at construction (default 1.5).
    check_chirality : bool
        Reject inverted stereocentres (default True).
    thermostatted : bool, optional
        Whether the simulation's integrator thermalises, which decides whether a re-equilibration resets the
        drift (default: detected; see :func:`~openmm_forecast.compatibility.has_thermostat`).
    thermostat_jumps : bool
        With a Langevin integrator, follow every accepted jump (and every Metropolis rejection) by the
        exact Ornstein-Uhlenbeck velocity step of the Langevin thermostat over the jump's span,
        ``v <- a v + sqrt((1 - a^2) kT / m) xi`` with ``a = exp(-friction * span)``, so that the thermostat
        acts on all simulated time, not only on the integrated part (default True).  A jump is then the
        Hamiltonian part of a Langevin splitting: forecast flow, then friction and noise (the dynamics rule
        splits the step, half before the jump and half after).
    allow_custom_integrator : bool
        Accept a ``CustomIntegrator`` other than openmm-forecast's velocity Verlet; you vouch that its
        ``getStepSize()`` is its time step and that its state is positions and velocities.
    progress : bool, optional
        Show a tqdm progress bar (default None: only on a terminal).
    max_dh_samples : int
        Most recent ``dH`` values kept in the statistics (default 10000).
    """

    segment_steps: int = None
    jumps_per_cycle: int = 4
    max_frames: int = None
    initial_frames: int = None
    adapt_span: bool = None
    grow_after: int = 4
    energy_tolerance_kT: float = 1.0
    drift_tolerance_kT: float = 5.0
    temperature_sigmas: float = 4.0
    reequilibration_steps: int = 500
    acceptance: object = None
    metropolis: bool = False
    seed: int = None
    temperature: unit.Quantity = None
    clash_fraction: float = 0.5
    clash_distance: unit.Quantity = None
    bond_stretch: float = 1.5
    check_chirality: bool = True
    thermostatted: bool = None
    thermostat_jumps: bool = True
    allow_custom_integrator: bool = False
    allow_inexact_metropolis: bool = False
    progress: bool = None
    max_dh_samples: int = 10000

    def __post_init__(self):
        for name in ("jumps_per_cycle", "grow_after", "max_dh_samples"):
            require_int(name, getattr(self, name), minimum=1)
        require_int("reequilibration_steps", self.reequilibration_steps, minimum=0)
        for name in ("segment_steps", "max_frames", "initial_frames"):
            if getattr(self, name) is not None:
                require_int(name, getattr(self, name), minimum=1)
        for name in ("energy_tolerance_kT", "drift_tolerance_kT"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 (in kT), got {value!r}")
        sigmas = self.temperature_sigmas
        if sigmas is not None and not (isinstance(sigmas, (int, float)) and np.isfinite(sigmas) and sigmas > 0):
            raise ValueError(f"temperature_sigmas must be a finite number > 0 or None, got {sigmas!r}")
        if self.seed is not None:
            require_int("seed", self.seed, minimum=0)
        if self.metropolis and self.acceptance is not None:
            if getattr(self.acceptance, "name", self.acceptance) != "metropolis":
                raise ValueError(f"metropolis=True contradicts acceptance={self.acceptance!r}; pass one of them")
        default = "metropolis" if self.metropolis else "tolerance"
        self.acceptance = acceptance_rule(default if self.acceptance is None else self.acceptance,
                                          self.energy_tolerance_kT)
        if not self.acceptance.integrates and self.segment_steps is not None:
            raise ValueError(f"segment_steps ({self.segment_steps}) is refused with the {self.acceptance.name!r} rule, "
                             "which never integrates the target; leave it unset")
