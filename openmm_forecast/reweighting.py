"""Importance sampling from a surrogate: Langevin MD of a cheap System, every sample reweighted to the target.

:class:`ReweightedWalkers` runs plain Langevin MD of a *surrogate* System (a fitted one, or one whose barriers
along the slow torsions were lowered by ``lower-barriers``) and labels every sample ``x`` with one energy of the
*target*.  The surrogate's samples follow ``exp(-U_s / kT)``; the target's distribution is
``exp(-U_t / kT)``, so a sample weighs

    w(x) = exp(-(U_t(x) - U_s(x)) / kT)

(self-normalised: the unknown ratio of partition functions cancels in every average).  Averages over the
weighted samples estimate the target's (populations, histograms) consistently, whatever the surrogate, as long
as it visits everywhere the target does.  How good the surrogate is decides only how unequal the weights are
(Kish's effective sample size, :func:`~openmm_forecast.efficiency.kish_ess`): with ``D = U_t - U_s``, a
surrogate fitted to the target leaves a few tenths of a kJ/mol of spread in the basins, and the lowered
surrogate's bias ``-strength * F(phi, psi)`` is what the weights give back.

It is the same information the exact jump chain (``ghmc`` with the same surrogate) spends, one target energy
per sample, used differently: the chain must accept a jump into a rare basin to count it, the reweighted
samples count every visit of the surrogate with its weight.  Measured on OBC2 alanine dipeptide with the
flattened ``fit-amber14-obc2`` surrogate: see docs/guide/rare-states.md.

What it is not: a Markov chain on the target (a sample is not a state the target's dynamics visits), and it
inherits the surrogate's time-step error of Langevin sampling (``LangevinMiddleIntegrator``, whose
configurational error at 2 fs is far below the statistical error of these runs, but not zero).  Use the exact
rules of the accelerator where a trajectory of the target is wanted.

Units: nm, ps, kJ/mol, K.
"""

import dataclasses

import numpy as np
from openmm import unit

from .walkers import PlainWalkers


class ReweightedWalkers(PlainWalkers):
    """Independent Langevin walkers of a surrogate System, each sample weighted to the target's distribution.

    Parameters
    ----------
    molecular_system : MolecularSystem
        The target (its System gives ``U_t``; its topology, positions, temperature, friction, time step and
        constraints are the walkers').
    surrogate : str, openmm.System or MolecularSystem
        What the walkers integrate: anything :func:`~openmm_forecast.forecasters.surrogate.resolve_surrogate`
        takes (a shipped fitted surrogate such as ``'fit-amber14-obc2-lowered'``, a ``.xml`` file, ``'derived'``,
        a System); same particles, masses and constraints as the target.
    n_walkers : int, optional
        Number of walkers (seeds ``seed, seed + 1, ...``); or give ``seeds``.
    seeds : list of int, optional
    seed : int
    platform : str or openmm.Platform or PlatformConfiguration, optional
        Platform of the target's energy Context (default: the fastest measured for the target).
    surrogate_platform : str or openmm.Platform or PlatformConfiguration, optional
        Platform of the walkers' Contexts (default: the fastest measured for the surrogate System).
    minimize : bool
        Minimise each walker on the surrogate before drawing velocities (default True).

    Attributes
    ----------
    log_weights : list of numpy.ndarray
        One array of shape (n_walkers,) per :meth:`step`: ``-(U_t - U_s) / kT`` of every walker's state then
        (``-inf`` where the target's energy is not finite: such a state has no weight).
    surrogate_name : str
        What ``surrogate`` named (for reports).
    """

    def __init__(self, molecular_system, surrogate, n_walkers=None, *, seeds=None, seed=1, platform=None,
                 surrogate_platform=None, minimize=True):
        import openmm as mm

        from .forecasters.surrogate import resolve_surrogate
        from .platforms import fastest_platform, get_platform, platform_properties

        surrogate_system, name = resolve_surrogate(surrogate, molecular_system)
        self.surrogate_name = name or "the target's own System"
        walked = dataclasses.replace(molecular_system, system=surrogate_system)
        if surrogate_platform is None:
            surrogate_platform = fastest_platform(walked)
        self.simulations = self._create_simulations(walked, n_walkers, seeds, seed, surrogate_platform, minimize)
        self.molecular_system = molecular_system
        platform = platform if platform is not None else fastest_platform(molecular_system)
        self._target = mm.Context(molecular_system.system, mm.VerletIntegrator(0.001), get_platform(platform),
                                  platform_properties(platform) or {})
        self.kT_kJ = float((unit.MOLAR_GAS_CONSTANT_R * molecular_system.temperature).value_in_unit(
            unit.kilojoule_per_mole))
        self.log_weights = []
        self.target_evaluations = 0
        self.infinite_target_energies = 0

    def step(self, n_steps):
        """Advance every walker ``n_steps`` on the surrogate, then weigh its state with one target energy."""
        super().step(n_steps)
        self.log_weights.append(np.array([self._log_weight(simulation) for simulation in self.simulations]))

    def _log_weight(self, simulation):
        state = simulation.context.getState(getPositions=True, getEnergy=True)
        self._target.setPositions(state.getPositions())
        self.target_evaluations += 1
        target = self._target.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not np.isfinite(target):
            self.infinite_target_energies += 1
            return -np.inf
        return -(target - state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)) / self.kT_kJ

    def weights(self, n_samples):
        """Weights of the first ``n_samples`` samples, shape (n_walkers, n_samples), scaled to a maximum of 1.

        Raises
        ------
        ValueError
            No sample has a finite target energy.
        """
        log_weights = np.array(self.log_weights[:n_samples]).T
        if not np.any(np.isfinite(log_weights)):
            raise ValueError("no sample of the surrogate has a finite target energy: nothing to reweight")
        return np.exp(log_weights - log_weights[np.isfinite(log_weights)].max())

    def checkpoint(self):
        """:meth:`PlainWalkers.checkpoint` plus the log-weights recorded so far."""
        return {**super().checkpoint(), "log_weights": [w.copy() for w in self.log_weights]}

    def restore(self, checkpoint):
        super().restore(checkpoint)
        self.log_weights = [np.array(w) for w in checkpoint.get("log_weights", [])]
