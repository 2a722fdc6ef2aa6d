"""Many independent replicas of one system: plain MD walkers and forecast-accelerated walkers.

:class:`ForecastWalkers` runs ``n_walkers`` independent copies of one molecule, each in its own OpenMM
Context with its own thermostat seed, and drives them in lockstep cycles so that the forecaster is called
**once per round of jumps for all walkers together**.  On a GPU a batch of small molecules costs a network
little more than one; on a CPU the cost grows with the batch and batching saves only the per-call overhead
(measured in docs/benchmark.md).

Each walker is a :class:`~openmm_forecast.accelerator.ForecastAccelerator` around its own Simulation: the
segment, re-equilibration, guards, accept/restore, span adaptation, drift and statistics are the
accelerator's own code, applied per walker.  Only the proposal differs: it is the walker's slice of the
batched forecast.  A walker's rejection restores and integrates that walker alone; the others are never
touched, so every walker follows exactly the trajectory it would follow alone (same seeds, same
forecaster, same call pattern, same thermostat noise: see *Random numbers* below).

A lockstep cycle (compare :meth:`ForecastAccelerator._cycle`):

1. every walker not yet at the end does its maintenance (re-equilibration) or its segment;
2. up to ``jumps_per_cycle`` rounds: each walker still jumping plans its jump (``n_frames`` from its own
   span); ONE forecaster call with the largest ``n_frames`` of the round maps the stacked histories
   ``(n_walkers_jumping, history, n_atoms, 3)`` to frames, each walker takes its first ``n_frames`` (frame
   ``k`` of a forecast is the state at ``t + k * stride`` whatever the number of frames asked for), and
   judges them with its own guards.  A walker leaves the round when the accelerator's own rule says its
   cycle ends (a rejection in tolerance mode, or maintenance due).

:class:`PlainWalkers` is the baseline: the same replicas with the same seeds, integrated by OpenMM alone.
Both share :meth:`sample`, which records positions of every walker at a fixed simulated-time interval
(and the wall clock at each sample) until a number of samples or a wall-clock budget is reached.

*Random numbers.*  Each walker's thermostat gets its own seed, but OpenMM's Reference platform draws the
Langevin noise of every Context in a process from one shared generator: walkers are then statistically
independent but not individually reproducible (a walker's noise depends on how many numbers the others
drew; a whole run with the same seeds and call pattern is reproducible).  The CPU and GPU platforms keep
one stream per Context.

Units: nm, ps, kJ/mol, K, amu.
"""

import dataclasses
import os
import socket
import tempfile
import time

import numpy as np
from openmm import unit
from tqdm.auto import tqdm

from .accelerator import AcceleratorStats, ForecastAccelerator
from .errors import BadForecastError, SamplingInterrupted
from .guards import degrees_of_freedom, kinetic_energy_kJ, kinetic_temperature_K
from .units import positive, whole_steps


@dataclasses.dataclass
class WalkerSamples:
    """States of every walker at a fixed simulated-time interval.

    Attributes
    ----------
    positions_nm : numpy.ndarray, shape (n_samples, n_walkers, n_atoms, 3), float32
        Positions in nm of every walker at every sample.
    time_ps : numpy.ndarray, shape (n_samples,)
        Simulated time of each sample since the start of :meth:`_Walkers.sample`, ps (the same for every
        walker).
    wall_s : numpy.ndarray, shape (n_samples,)
        Wall-clock seconds from the start of :meth:`_Walkers.sample` to each sample.
    interval_ps : float
        Simulated time between samples, ps.
    temperature_K : numpy.ndarray, shape (n_samples, n_walkers)
        Kinetic temperature of every walker at every sample, K, from the velocities the Context holds (for
        LangevinMiddleIntegrator the half-step velocities, as ``StateDataReporter`` reads them) and the
        System's degrees of freedom (:func:`~openmm_forecast.guards.degrees_of_freedom`).
    """

    positions_nm: np.ndarray
    time_ps: np.ndarray
    wall_s: np.ndarray
    interval_ps: float
    temperature_K: np.ndarray

    @property
    def n_walkers(self):
        return self.positions_nm.shape[1]

    @property
    def simulated_ps(self):
        """Total simulated time over all walkers, ps."""
        return float(len(self.time_ps) * self.interval_ps * self.n_walkers)

    @classmethod
    def concatenate(cls, parts):
        """One record from consecutive pieces of sampling of the same walkers (times and clocks continued).

        Parameters
        ----------
        parts : list of WalkerSamples
            In order, with the same interval; each piece's times and wall clocks start at zero.
        """
        if not parts or len({part.interval_ps for part in parts}) != 1:
            raise ValueError("concatenate needs at least one piece, all with the same interval")
        time_offsets = np.cumsum([0.0] + [part.time_ps[-1] for part in parts[:-1]])
        wall_offsets = np.cumsum([0.0] + [part.wall_s[-1] for part in parts[:-1]])
        return cls(
            np.concatenate([part.positions_nm for part in parts]),
            np.concatenate([part.time_ps + offset for part, offset in zip(parts, time_offsets)]),
            np.concatenate([part.wall_s + offset for part, offset in zip(parts, wall_offsets)]),
            parts[0].interval_ps,
            np.concatenate([part.temperature_K for part in parts]),
        )

    def phi_psi(self, topology=None):
        """phi/psi in degrees of every sample, shape (n_walkers, n_samples, 2), or (n_walkers, n_samples,
        n_residues, 2) for a peptide of several residues with both angles.

        Parameters
        ----------
        topology : openmm.app.Topology, optional
            Topology of the positions (default: the package's alanine dipeptide).
        """
        from .analysis import phi_psi_from_positions

        n_samples, n_walkers = self.positions_nm.shape[:2]
        if n_samples == 0:
            return np.zeros((n_walkers, 0, 2))
        flat = np.swapaxes(self.positions_nm, 0, 1).reshape((n_walkers * n_samples,) + self.positions_nm.shape[2:])
        angles = phi_psi_from_positions(flat, topology)
        return angles.reshape((n_walkers, n_samples) + angles.shape[1:])


class _Walkers:
    """What plain and accelerated walkers share: replicas of one system, stepping, sampling."""

    @staticmethod
    def check_seeds(n_walkers, seeds, seed):
        """The walkers' seeds (list of int): ``seeds``, or ``seed, seed + 1, ...`` for ``n_walkers`` walkers."""
        if seeds is None:
            if isinstance(n_walkers, bool) or not isinstance(n_walkers, (int, np.integer)) or n_walkers < 1:
                raise ValueError(f"n_walkers must be an integer >= 1, got {n_walkers!r}")
            seeds = [seed + i for i in range(int(n_walkers))]
        elif n_walkers is not None and n_walkers != len(seeds):
            raise ValueError(f"n_walkers ({n_walkers}) differs from the number of seeds ({len(seeds)})")
        if len(seeds) == 0 or any(int(s) < 1 for s in seeds):
            raise ValueError(f"seeds must be integers >= 1 (0 lets OpenMM pick a random seed), got {list(seeds)}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must differ between walkers, got {list(seeds)}")
        return [int(s) for s in seeds]

    def _create_simulations(self, molecular_system, n_walkers, seeds, seed, platform, minimize, integrator=None):
        """One Simulation per seed; ``integrator(seed)``, when given, makes each walker's integrator (default: the
        setup's LangevinMiddleIntegrator with that seed)."""
        seeds = self.check_seeds(n_walkers, seeds, seed)
        if platform is None:
            from .platforms import fastest_platform

            platform = fastest_platform(molecular_system)
        self.molecular_system = molecular_system
        self.seeds = seeds
        self.timestep_ps = molecular_system.timestep.value_in_unit(unit.picosecond)
        self._masses_amu = molecular_system.masses
        self._dof = degrees_of_freedom(molecular_system.system)
        return [molecular_system.create_simulation(platform=platform, seed=s, minimize=minimize,
                                                   integrator=None if integrator is None else integrator(s))
                for s in self.seeds]

    @property
    def n_walkers(self):
        return len(self.simulations)

    def describe_platform(self):
        """Platform of the walkers' Contexts (:func:`~openmm_forecast.platforms.describe_platform` of the first)."""
        from .platforms import describe_platform

        return describe_platform(self.simulations[0].context)

    def placement(self):
        """Where each walker runs: one list per walker of ``{"host", "pid", "first_sample"}`` (here: this process)."""
        return [[{"host": socket.gethostname(), "pid": os.getpid(), "first_sample": 0}] for _ in self.simulations]

    def checkpoint(self):
        """The state of every walker, from which :meth:`restore` continues exactly (a picklable dict).

        ``{"walkers": [bytes, ...]}``: each walker's ``Context.createCheckpoint()`` (plain MD) or its accelerator
        checkpoint file (:meth:`~openmm_forecast.accelerator.ForecastAccelerator.save_checkpoint`), with the
        counters of the batched forecast for accelerated walkers.  Platform- and OpenMM-version-specific, like
        OpenMM's own checkpoints.
        """
        return {"walkers": [simulation.context.createCheckpoint() for simulation in self.simulations]}

    def restore(self, checkpoint):
        """Continue from :meth:`checkpoint` of walkers with the same seeds, System and platform."""
        self._check_checkpoint(checkpoint)
        for simulation, state in zip(self.simulations, checkpoint["walkers"]):
            simulation.context.loadCheckpoint(state)

    def _check_checkpoint(self, checkpoint):
        if len(checkpoint["walkers"]) != self.n_walkers:
            raise ValueError(f"the checkpoint holds {len(checkpoint['walkers'])} walkers, these are {self.n_walkers}")

    def positions_nm(self):
        """Current positions of every walker, shape (n_walkers, n_atoms, 3), nm."""
        return self._positions_and_temperatures()[0]

    def _positions_and_temperatures(self):
        """Positions (n_walkers, n_atoms, 3) in nm and kinetic temperatures (n_walkers,) in K, one getState each."""
        positions, temperatures = [], []
        for sim in self.simulations:
            state = sim.context.getState(getPositions=True, getVelocities=True)
            positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
            velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
            temperatures.append(kinetic_temperature_K(kinetic_energy_kJ(velocities, self._masses_amu), self._dof))
        return np.stack(positions), np.array(temperatures)

    def step(self, n_steps):
        """Advance every walker by ``n_steps`` time steps."""
        raise NotImplementedError

    def sample(self, interval=1.0 * unit.picosecond, n_samples=None, wall_seconds=None, progress=None, label=None):
        """Advance all walkers, recording their positions every ``interval`` of simulated time.

        Stops after ``n_samples`` samples or, when ``wall_seconds`` is given, at the first sample at or
        after that wall-clock budget (whichever comes first; at least one must be given).

        Parameters
        ----------
        interval : openmm.unit.Quantity
            Simulated time between samples (a whole number of time steps), for example 1 ps.
        n_samples : int, optional
            Most samples.
        wall_seconds : float, optional
            Wall-clock budget in seconds.
        progress : bool, optional
            Show a tqdm progress bar (default: only on a terminal).
        label : str, optional
            Description of the progress bar.

        Returns
        -------
        WalkerSamples

        Raises
        ------
        SamplingInterrupted
            On Ctrl-C or SIGTERM (a ``KeyboardInterrupt``), carrying the samples completed before it.
        """
        if n_samples is None and wall_seconds is None:
            raise ValueError("give n_samples, wall_seconds or both")
        interval_ps = positive(interval, unit.picosecond, "interval")
        steps = whole_steps(interval_ps, self.timestep_ps, "interval")
        positions, temperatures, walls = [], [], []
        disable = None if progress is None else not progress
        total = n_samples if wall_seconds is None else float(wall_seconds)
        try:
            with tqdm(total=total, disable=disable, desc=label, unit="sample" if wall_seconds is None else "s") as bar:
                start = time.perf_counter()
                while True:
                    self.step(steps)
                    x, temperature = self._positions_and_temperatures()
                    sample_wall = time.perf_counter() - start
                    positions.append(x.astype(np.float32))
                    temperatures.append(temperature)
                    walls.append(sample_wall)
                    bar.update(1 if wall_seconds is None else walls[-1] - bar.n)
                    if (n_samples is not None and len(positions) >= n_samples) or (
                        wall_seconds is not None and walls[-1] >= wall_seconds
                    ):
                        break
        except KeyboardInterrupt as interruption:
            n = min(len(positions), len(temperatures), len(walls))  # the samples recorded completely
            partial = self._samples(positions[:n], temperatures[:n], walls[:n], interval_ps) if n else None
            raise SamplingInterrupted(SamplingInterrupted.signal_of(interruption), partial) from interruption
        return self._samples(positions, temperatures, walls, interval_ps)

    @staticmethod
    def _samples(positions, temperatures, walls, interval_ps):
        n = len(positions)
        return WalkerSamples(np.stack(positions), interval_ps * np.arange(1, n + 1), np.array(walls), interval_ps,
                             np.stack(temperatures))


class PlainWalkers(_Walkers):
    """``n_walkers`` independent replicas of one system integrated by OpenMM alone (the baseline).

    Parameters
    ----------
    molecular_system : MolecularSystem
    n_walkers : int, optional
        Number of replicas (seeds ``seed, seed + 1, ...``); or give ``seeds``.
    seeds : list of int, optional
        Thermostat and velocity seed of each walker (>= 1, distinct).
    seed : int
        First seed when ``seeds`` is not given (default 1).
    platform : str or openmm.Platform or PlatformConfiguration, optional
        Default: :func:`~openmm_forecast.platforms.fastest_platform`.
    minimize : bool
        Minimise each replica before drawing its velocities (default True).
    """

    def __init__(self, molecular_system, n_walkers=None, *, seeds=None, seed=1, platform=None, minimize=True):
        self.simulations = self._create_simulations(molecular_system, n_walkers, seeds, seed, platform, minimize)

    def step(self, n_steps):
        for simulation in self.simulations:
            simulation.step(int(n_steps))


class _Walker(ForecastAccelerator):
    """One accelerated walker: a ForecastAccelerator whose proposals come from the batched forecast."""

    proposal = None

    def propose(self, n_frames):
        """The first ``n_frames`` frames of this walker's slice of the batched forecast (set by the driver)."""
        proposal, self.proposal = self.proposal, None
        if isinstance(proposal, Exception):  # the batched forecast failed: this walker's jump is rejected
            raise proposal
        positions, velocities = proposal
        return positions[:n_frames], velocities[:n_frames]


class ForecastWalkers(_Walkers):
    """``n_walkers`` independent replicas of one system advanced by guarded forecast jumps, batched.

    Parameters
    ----------
    molecular_system : MolecularSystem
        The system; every walker gets ``molecular_system.create_simulation(seed=...)``.
    forecaster : Forecaster or str
        A forecaster, or a name or path for :func:`~openmm_forecast.forecasters.load_forecaster`.
    n_walkers : int, optional
        Number of replicas (seeds ``seed, seed + 1, ...``); or give ``seeds``.
    seeds : list of int, optional
        Seed of each walker (>= 1, distinct): thermostat, initial velocities and Metropolis stream.
    seed : int
        First seed when ``seeds`` is not given (default 1).
    platform : str or openmm.Platform or PlatformConfiguration, optional
        Platform of the walkers' Contexts (default: :func:`~openmm_forecast.platforms.fastest_platform`).
    minimize : bool
        Minimise each replica before drawing its velocities (default True).
    forecaster_options : dict, optional
        Extra arguments of ``load_forecaster`` (baselines: ``stride_ps``, ``max_frames``, ...).
    **options
        :class:`~openmm_forecast.accelerator.AcceleratorOptions` fields, the same for every walker
        (``seed`` and ``progress`` excepted: each walker's Metropolis seed is its own seed).

    Attributes
    ----------
    walkers : list of ForecastAccelerator
        One per replica (``walkers[i].simulation``, ``walkers[i].stats``, ...).
    forecast_wall_s : float
        Wall-clock seconds spent in batched forecaster calls.
    forecast_calls : int
        Number of batched forecaster calls.
    """

    def __init__(self, molecular_system, forecaster, n_walkers=None, *, seeds=None, seed=1, platform=None,
                 minimize=True, forecaster_options=None, **options):
        for name in ("seed", "progress"):
            if name in options:
                raise ValueError(f"{name!r} is set per walker by ForecastWalkers; do not pass it as an option")
        self.simulations = self._create_simulations(molecular_system, n_walkers, seeds, seed, platform, minimize)
        first = _Walker(self.simulations[0], forecaster, molecular_system=molecular_system,
                        forecaster_options=forecaster_options, seed=self.seeds[0], progress=False, **options)
        self.forecaster = first.forecaster
        self.walkers = [first] + [
            _Walker(sim, self.forecaster, molecular_system=molecular_system, seed=s, progress=False, **options)
            for sim, s in zip(self.simulations[1:], self.seeds[1:])
        ]
        self.jumps_per_cycle = first.options.jumps_per_cycle
        self.forecast_wall_s = 0.0
        self.forecast_calls = 0

    def step(self, n_steps):
        """Advance every walker by exactly ``n_steps`` time steps (jumps and integration mixed).

        Parameters
        ----------
        n_steps : int
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}")
        ends = [w.simulation.currentStep + int(n_steps) for w in self.walkers]
        for walker in self.walkers:
            walker.read_integrator()
            walker.cycle.start()
        while any(w.simulation.currentStep < end for w, end in zip(self.walkers, ends)):
            self._cycle(ends)

    def _cycle(self, ends):
        """One lockstep cycle (see the module docstring)."""
        jumping = []
        for walker, end in zip(self.walkers, ends):
            remaining = end - walker.simulation.currentStep
            if remaining <= 0:
                continue
            if walker.cycle.begin(remaining):
                jumping.append((walker, end))
        for _ in range(self.jumps_per_cycle):
            plans = [(walker, end) + walker.cycle.plan_jump(end) for walker, end in jumping]
            plans = [plan for plan in plans if plan[2] > 0]
            if not plans:
                return
            for walker, _, n_frames, _ in plans:
                walker.cycle.prepare_jump(n_frames)
            self._propose([walker for walker, *_ in plans], max(plan[2] for plan in plans))
            jumping = [
                (walker, end) for walker, end, n_frames, reports in plans
                if walker.cycle.keeps_jumping(walker.cycle.jump(n_frames, reports))
            ]

    def _propose(self, walkers, n_frames):
        """One batched forecast of ``n_frames`` frames for ``walkers``; hand each walker its slice."""
        inputs = [walker.cycle.proposal_input() for walker in walkers]
        x = np.stack([x for x, _, _ in inputs])
        v = np.stack([v for _, v, _ in inputs])
        forces = np.stack([forces for _, _, forces in inputs]) if self.forecaster.uses_forces else None
        start = time.perf_counter()
        try:
            positions, velocities = self.forecaster.forecast(x, v, n_frames, forces=forces)
        except Exception as error:  # each walker rejects its jump, with reason 'forecast_error'
            for walker in walkers:
                walker.proposal = error
            return
        finally:
            self.forecast_wall_s += time.perf_counter() - start
            self.forecast_calls += 1
        expected = (len(walkers), n_frames, x.shape[2], 3)
        if np.shape(positions) != expected or np.shape(velocities) != expected:
            raise BadForecastError(
                f"forecaster {self.forecaster.name!r} returned arrays of shape {np.shape(positions)} and "
                f"{np.shape(velocities)} for a batch of {len(walkers)} walkers, expected {expected}"
            )
        positions = np.asarray(positions, dtype=np.float64)
        velocities = np.asarray(velocities, dtype=np.float64)
        for i, walker in enumerate(walkers):
            walker.proposal = (positions[i], velocities[i])

    @property
    def rule(self):
        """The walkers' acceptance rule (the same for all)."""
        return self.walkers[0].rule

    def checkpoint(self):
        """See :meth:`_Walkers.checkpoint`; each walker's accelerator checkpoint, and the batched-forecast counters."""
        states = []
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "walker.chk")
            for walker in self.walkers:
                walker.save_checkpoint(path)
                with open(path, "rb") as handle:
                    states.append(handle.read())
        return {"walkers": states, "forecast_calls": self.forecast_calls, "forecast_wall_s": self.forecast_wall_s}

    def restore(self, checkpoint):
        """See :meth:`_Walkers.restore`; a checkpoint of another System or forecaster is refused (CheckpointError)."""
        self._check_checkpoint(checkpoint)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "walker.chk")
            for walker, state in zip(self.walkers, checkpoint["walkers"]):
                with open(path, "wb") as handle:
                    handle.write(state)
                walker.load_checkpoint(path)
        self.forecast_calls, self.forecast_wall_s = checkpoint["forecast_calls"], checkpoint["forecast_wall_s"]

    def stats(self):
        """Statistics of all walkers together (counts and times summed, ``dH`` samples pooled).

        The batched forecast time is in ``wall_s['forecast']``.

        Returns
        -------
        AcceleratorStats
        """
        total = AcceleratorStats.merge([walker.stats for walker in self.walkers])
        total.wall_s["forecast"] += self.forecast_wall_s
        return total


class PluginWalkers(_Walkers):
    """``n_walkers`` independent replicas advanced by the C++ plugin: each walker is a plain ``Simulation`` whose
    integrator is a :class:`~openmm_forecast.plugin.ForecastIntegrator` (the proposal and the acceptance rule run
    inside ``Integrator.step``).

    The same replicas as :class:`ForecastWalkers` (same seeds, minimisation and initial velocities), with the
    same interface, but nothing is batched: every walker's integrator calls its own proposal once per jump.  Each
    walker is advanced by ``Simulation.step`` (OpenMM's loop of at most 10 steps per ``Integrator.step`` call; the
    plugin carries a jump over the calls: docs/guide/plugin.md), as a user's script would.

    Parameters
    ----------
    molecular_system : MolecularSystem
        The target; its time step, temperature and friction are the integrator's ``stepSize``, ``temperature`` and
        ``friction``.
    proposal : str, os.PathLike or openmm.System
        What :class:`~openmm_forecast.plugin.ForecastIntegrator` takes: a shipped surrogate's name
        (``'fit-amber14-obc2'``), a model card naming one, a ``.xml`` System file, an ``openmm.System``, or a
        TorchScript forecaster.
    n_walkers : int, optional
        Number of replicas (seeds ``seed, seed + 1, ...``); or give ``seeds``.
    seeds : list of int, optional
        Seed of each walker (>= 1, distinct): initial velocities, Langevin noise and the jumps' random stream.
    seed : int
        First seed when ``seeds`` is not given (default 1).
    platform : str or openmm.Platform or PlatformConfiguration, optional
        Platform of the walkers' (target) Contexts (default: :func:`~openmm_forecast.platforms.fastest_platform`);
        the surrogate's private Context is on ``surrogate_platform`` (default Reference).
    minimize : bool
        Minimise each replica before drawing its velocities (default True).
    **options
        :class:`~openmm_forecast.plugin.ForecastIntegrator` options (``acceptance``, ``jump``, ``surrogate_step``,
        ``energy_tolerance_kT``, ...), the same for every walker (the jumps' ``seed`` is each walker's own).

    Raises
    ------
    PluginError
        The plugin library is not built or does not load (before any Context is created).
    """

    engine = "plugin"

    def __init__(self, molecular_system, proposal, n_walkers=None, *, seeds=None, seed=1, platform=None,
                 minimize=True, **options):
        from .plugin import ForecastIntegrator, load_plugin, resolve_proposal

        load_plugin()
        self.proposal_file, implied = resolve_proposal(proposal)  # one file for all walkers (a System: written once)
        self.options = {**implied, **options}

        def integrator(walker_seed):
            return ForecastIntegrator(self.proposal_file, molecular_system.timestep, molecular_system.temperature,
                                      molecular_system.friction, seed=walker_seed, **self.options)

        self.simulations = self._create_simulations(molecular_system, n_walkers, seeds, seed, platform, minimize,
                                                    integrator)
        self.settings = self.simulations[0].integrator.getSettings()

    @property
    def rule(self):
        """The walkers' acceptance rule's name ('tolerance', 'metropolis' or 'ghmc')."""
        return self.settings["acceptance"]

    @property
    def forecast_calls(self):
        """Proposals made, all walkers together: one per jump attempted (each walker calls its own)."""
        return sum(simulation.integrator.getStatistics().jumps_attempted for simulation in self.simulations)

    def step(self, n_steps):
        """Advance every walker by exactly ``n_steps`` time steps (``Simulation.step``)."""
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}")
        for simulation in self.simulations:
            simulation.step(int(n_steps))

    def stats(self):
        """Statistics of all walkers together (each integrator's ``getStatistics()``, merged).

        Returns
        -------
        AcceleratorStats
        """
        return AcceleratorStats.merge([simulation.integrator.getStatistics() for simulation in self.simulations])
