"""Walkers on a Ray cluster: the same samples as in-process, spread over cores, GPUs and nodes.

:class:`RayBackend` connects to a Ray cluster (``RAY_ADDRESS``, or a private local one with as many CPUs as
this process may use) and :meth:`RayBackend.walkers` returns :class:`RayWalkers`: the drop-in counterpart of
:class:`~openmm_forecast.walkers.PlainWalkers` and :class:`~openmm_forecast.walkers.ForecastWalkers`, whose
walkers live in Ray actors.  Each actor owns ``cpus_per_worker`` CPUs (or ``gpus_per_worker`` GPUs) and a
contiguous batch of the walkers (seeds ``seed, seed + 1, ...`` in order), and runs them as in-process walkers
do, the accelerator (Python driver) included.  The backend reserves its workers once, as a Ray placement group
of one bundle (CPUs, GPUs) per worker spread over the nodes; worker ``i`` of every set of walkers (each arm of
a benchmark) runs in bundle ``i``, the sets taking turns (up to :data:`SETS_PER_WORKER` of them).  Nothing live crosses a process boundary: an actor rebuilds the
target from a :class:`TargetDescription` (System XML, topology as PDB and exact positions; or, for Systems with
forces that have no XML form such as TorchForce, the setup name and its options) and loads the forecaster by
name or path; its System and forecaster fingerprints are checked against the driver's.

Sampling runs in *rounds*: every actor takes the same number of samples of its walkers; the driver merges
them (walkers in seed order, each sample's wall clock the latest actor's) and keeps every actor's checkpoint
of the round's end (:meth:`~openmm_forecast.walkers.ForecastWalkers.checkpoint`).  An actor lost during a
round (its process or node died, ``ray.kill``) is replaced by a new actor that restores its walkers from the
last checkpoint and runs the round again; the round's samples are merged only when every actor has
delivered, so no sample is lost or repeated.  On the CPU platform (one random stream per Context) the
replacement's samples are bitwise those of the lost actor.

Data sent per round and actor: the request (a few hundred bytes), the samples (``n_samples x walkers x atoms
x 3`` float32 positions and one temperature per walker and sample) and one checkpoint per walker (the
Context's, a few kB for a small molecule, plus the accelerator's record).  The target and forecaster names are
sent once, when an actor starts.  See docs/guide/parallel.md for the measured scaling and its limits.

Ray is an optional dependency (``pip install openmm-forecast[ray]``); without it nothing here is imported
and every command runs in-process.

Units: nm, ps, K.
"""

import dataclasses
import io
import logging
import math
import os
import socket
import time

import numpy as np
from openmm import unit

from ._runtime import openmm as mm
from .errors import SamplingInterrupted, UsageError

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
"""Values of the ``--backend`` flag: in-process walkers, or walkers in Ray actors."""

INSTALL_HINT = "pip install openmm-forecast[ray]"

SETS_PER_WORKER = 16
"""Most sets of walkers whose actors share one worker's reservation (each actor asks for this fraction of it)."""

ROUND_SECONDS = 2.0
"""Wall clock a sampling round aims at: the work an actor's loss costs, and the checkpoint interval."""


def import_ray(flag="--backend ray"):
    """The ``ray`` module, or a :class:`~openmm_forecast.errors.UsageError` naming ``flag`` and the install command."""
    try:
        import ray
    except ImportError as error:
        raise UsageError(f"{flag} needs Ray, which is not installed here: {INSTALL_HINT}") from error
    return ray


def where():
    """Where this process runs: ``{"host", "pid"}``, and ``node_id`` and ``node_ip`` inside a Ray worker."""
    place = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray
    except ImportError:
        return place
    if ray.is_initialized():
        place.update(node_id=ray.get_runtime_context().get_node_id(), node_ip=ray.util.get_node_ip_address())
    return place


# --------------------------------------------------------------------------------------------------
# What an actor rebuilds
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TargetDescription:
    """A MolecularSystem as plain data (picklable, no live OpenMM object), rebuilt by :meth:`build`.

    Either ``system_xml`` and ``pdb`` (OpenMM's XML of the System; topology as PDB text) or, when the System has
    forces without an XML form (TorchForce, Python forces), ``build_options``: the arguments of
    :func:`~openmm_forecast.systems.build_system` for ``setup``.  ``positions_nm`` are exact (the PDB's are
    rounded); ``fingerprint`` is the System's, checked after the rebuild.
    """

    setup: str
    fingerprint: str
    positions_nm: np.ndarray
    temperature_K: float
    timestep_fs: float
    friction_per_ps: float
    constraints: str
    potential: str
    solute_atoms: int
    hydrogen_mass_amu: float = None
    system_xml: str = None
    pdb: str = None
    build_options: dict = None

    @classmethod
    def of(cls, molecular_system, build_options=None):
        """Describe ``molecular_system``.

        Parameters
        ----------
        molecular_system : MolecularSystem
        build_options : dict, optional
            Extra :func:`~openmm_forecast.systems.build_system` arguments (``potential_file``), used only for a
            System that OpenMM's XML cannot hold.
        """
        from openmm import XmlSerializer, app

        ms = molecular_system
        mass = ms.hydrogen_mass
        fields = dict(
            setup=ms.setup, fingerprint=ms.fingerprint(),
            positions_nm=np.asarray(ms.positions.value_in_unit(unit.nanometer), dtype=np.float64),
            temperature_K=ms.temperature.value_in_unit(unit.kelvin), timestep_fs=ms.timestep.value_in_unit(
                unit.femtosecond), friction_per_ps=ms.friction.value_in_unit(unit.picosecond**-1),
            constraints=ms.constraints, potential=ms.potential, solute_atoms=ms.solute_atoms,
            hydrogen_mass_amu=None if mass is None else mass.value_in_unit(unit.dalton),
        )
        # A plugin's force (TorchForce) comes back from getForces() as the bare base class openmm.Force
        foreign = [type(force).__name__ for force in ms.system.getForces()
                   if type(force) is mm.Force or not type(force).__module__.startswith("openmm.openmm")]
        if foreign:
            from .systems import SETUPS

            if ms.setup not in SETUPS:
                raise UsageError(f"--backend ray: this target's System has forces that OpenMM's XML cannot hold "
                                 f"({', '.join(sorted(set(foreign)))}) and is not a named setup, so Ray workers "
                                 "cannot rebuild it; run it with --backend local")
            options = dict(temperature=fields["temperature_K"] * unit.kelvin,
                           timestep=fields["timestep_fs"] * unit.femtosecond,
                           friction=fields["friction_per_ps"] / unit.picosecond, constraints=ms.constraints,
                           **({} if mass is None else {"hydrogen_mass": mass}), **(build_options or {}))
            return cls(**fields, build_options=options)
        text = io.StringIO()
        app.PDBFile.writeFile(ms.topology, ms.positions, text, keepIds=True)
        return cls(**fields, system_xml=XmlSerializer.serialize(ms.system), pdb=text.getvalue())

    def build(self):
        """The MolecularSystem (:class:`~openmm_forecast.errors.UsageError` if its fingerprint differs)."""
        from openmm import XmlSerializer, app

        from .systems import MolecularSystem, build_system

        positions = unit.Quantity(self.positions_nm, unit.nanometer)
        if self.build_options is not None:
            built = build_system(self.setup, **self.build_options)
            built = dataclasses.replace(built, positions=positions)
        else:
            built = MolecularSystem(
                setup=self.setup, topology=app.PDBFile(io.StringIO(self.pdb)).topology,
                system=XmlSerializer.deserialize(self.system_xml), positions=positions,
                temperature=self.temperature_K * unit.kelvin, timestep=self.timestep_fs * unit.femtosecond,
                friction=self.friction_per_ps / unit.picosecond, constraints=self.constraints,
                potential=self.potential, solute_atoms=self.solute_atoms,
                hydrogen_mass=None if self.hydrogen_mass_amu is None else self.hydrogen_mass_amu * unit.dalton,
            )
        if built.fingerprint() != self.fingerprint:
            raise UsageError(
                f"a Ray worker on {socket.gethostname()} rebuilt setup {self.setup!r} as another System (fingerprint "
                f"{built.fingerprint()[:12]}..., the driver's {self.fingerprint[:12]}...): give the same "
                "--potential-file, readable on every node, or run with --backend local"
            )
        return built


# --------------------------------------------------------------------------------------------------
# The actor
# --------------------------------------------------------------------------------------------------


class WalkerWorker:
    """A batch of walkers of one target in one process (the body of a Ray actor; usable in-process too).

    Parameters
    ----------
    target : TargetDescription
    seeds : list of int
    platform : str or PlatformConfiguration, optional
    forecaster : str, optional
        Name or path for :func:`~openmm_forecast.forecasters.load_forecaster`; None for plain MD.
    forecaster_options, accelerator_options : dict, optional
        As for :class:`~openmm_forecast.walkers.ForecastWalkers`.
    checkpoint : dict, optional
        Restore the walkers from this :meth:`~openmm_forecast.walkers.ForecastWalkers.checkpoint` (no
        minimisation).
    log_level : int, optional
        Level of the ``openmm_forecast`` loggers here (the driver's).
    threads : int, optional
        torch's CPU threads here (forecasters, ML potentials).
    """

    def __init__(self, target, seeds, platform=None, forecaster=None, forecaster_options=None,
                 accelerator_options=None, checkpoint=None, log_level=None, threads=None):
        from .walkers import ForecastWalkers, PlainWalkers

        if threads is not None:
            import torch

            torch.set_num_threads(int(threads))
        if log_level is not None:
            logging.getLogger("openmm_forecast").setLevel(log_level)
        molecular_system = target.build()
        minimize = checkpoint is None
        if forecaster is None:
            self.walkers = PlainWalkers(molecular_system, seeds=seeds, platform=platform, minimize=minimize)
        else:
            self.walkers = ForecastWalkers(molecular_system, forecaster, seeds=seeds, platform=platform,
                                           minimize=minimize, forecaster_options=forecaster_options,
                                           **(accelerator_options or {}))
        if checkpoint is not None:
            self.walkers.restore(checkpoint)

    def info(self):
        """Where this worker runs, its platform, and (accelerated walkers) its forecaster's fingerprint and rule."""
        from .checkpoint import forecaster_fingerprint

        info = {"where": where(), "platform": self.walkers.describe_platform()}
        if hasattr(self.walkers, "forecaster"):
            info.update(forecaster_fingerprint=forecaster_fingerprint(self.walkers.forecaster), rule=self.walkers.rule)
        return info

    def sample(self, interval_ps, n_samples):
        """``n_samples`` samples of the walkers, and their checkpoint after the last one."""
        samples = self.walkers.sample(interval_ps * unit.picosecond, n_samples=n_samples, progress=False)
        return samples, self.walkers.checkpoint()

    def stats(self):
        """Accelerated walkers: (AcceleratorStats of the batch, batched forecaster calls)."""
        return self.walkers.stats(), self.walkers.forecast_calls


# --------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------


class RayBackend:
    """A connection to a Ray cluster that runs walkers in actors.

    Parameters
    ----------
    address : str, optional
        Cluster to join; default ``$RAY_ADDRESS``, else a private local cluster started here with ``num_cpus``
        CPUs (no dashboard), shut down by :meth:`shutdown`.  A session already initialised (``ray.init``) is used
        as it is.
    num_cpus : int, optional
        CPUs of the local cluster (default: the cores this process may run on).
    workers : int, optional
        Workers reserved (placement-group bundles; default: as many as the cluster has CPUs /
        ``cpus_per_worker``, or GPUs / ``gpus_per_worker``); a set of walkers has one actor on each of
        ``min(workers, walkers)`` of them.
    cpus_per_worker : int
        CPUs of each worker (default 1; the walkers' CPU platform and torch get as many threads).
    gpus_per_worker : float
        GPUs of each worker (default 0; give 1, or a fraction to share a GPU, with a GPU platform).
    max_restarts : int
        Lost actors replaced per set of walkers before the run fails (default 3).
    build_options : dict, optional
        See :meth:`TargetDescription.of` (``{"potential_file": ...}`` for the ``ml`` setup).

    Raises
    ------
    UsageError
        Ray is not installed (the message names ``pip install openmm-forecast[ray]``).
    """

    def __init__(self, address=None, num_cpus=None, workers=None, cpus_per_worker=1, gpus_per_worker=0,
                 max_restarts=3, build_options=None):
        ray = import_ray()
        self._ray = ray
        self.started_here = False
        start = time.perf_counter()
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
                ray.init(address="local", num_cpus=int(num_cpus or cores), include_dashboard=False)
            self.started_here = True
        self.startup_s = time.perf_counter() - start
        resources = ray.cluster_resources()
        if workers is None:
            by_gpu = resources.get("GPU", 0) / gpus_per_worker if gpus_per_worker else math.inf
            workers = max(1, int(min(resources.get("CPU", 1) / cpus_per_worker, by_gpu)))
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers, self.cpus_per_worker, self.gpus_per_worker = workers, cpus_per_worker, gpus_per_worker
        self.max_restarts = int(max_restarts)
        self.build_options = build_options
        bundle = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
        self._placement = ray.util.placement_group([bundle] * workers, strategy="SPREAD")
        ready, _ = ray.wait([self._placement.ready()], timeout=120)
        if not ready:
            ray.util.remove_placement_group(self._placement)
            raise UsageError(f"--backend ray: the Ray cluster cannot hold {workers} workers of {bundle} (it has "
                             f"{dict(resources)} in all); ask for fewer")
        self.cluster = {"address": ray.get_runtime_context().gcs_address, "started_here": self.started_here,
                        "nodes": len([node for node in ray.nodes() if node["Alive"]]),
                        "resources": {key: resources[key] for key in ("CPU", "GPU") if key in resources},
                        "ray_version": ray.__version__, "startup_s": self.startup_s}
        self._actor_class = ray.remote(WalkerWorker)
        self.placements = []

    def describe(self):
        """The backend for reports: ``{"backend": "ray", workers, cpus/gpus per worker, cluster}``."""
        return {"backend": "ray", "workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker, "cluster": self.cluster}

    def default_platform(self, platform=None):
        """The walkers' platform: ``platform`` (a name, an openmm.Platform or a configuration) or CPU; the CPU
        platform gets ``Threads=cpus_per_worker`` unless its threads are given (so actors do not oversubscribe their
        cores).  A name is not looked up here: the driver's node may lack the workers' GPU platform."""
        from .platforms import PlatformConfiguration

        if isinstance(platform, PlatformConfiguration):
            configuration = platform
        else:
            name = "CPU" if platform is None else platform if isinstance(platform, str) else platform.getName()
            configuration = PlatformConfiguration.create(name)
        properties = configuration.properties_dict
        if configuration.name == "CPU" and "Threads" not in properties:
            configuration = PlatformConfiguration.create("CPU", {**properties, "Threads": self.cpus_per_worker})
        return dataclasses.replace(configuration, pinned=False)  # Ray places the actors' processes

    def walkers(self, molecular_system, n_walkers=None, *, seeds=None, seed=1, platform=None, forecaster=None,
                forecaster_options=None, **accelerator_options):
        """Walkers in actors: arguments as for :class:`~openmm_forecast.walkers.ForecastWalkers` (``forecaster``
        None: plain MD, as :class:`~openmm_forecast.walkers.PlainWalkers`); ``forecaster`` a name or path."""
        return RayWalkers(self, molecular_system, n_walkers, seeds=seeds, seed=seed, platform=platform,
                          forecaster=forecaster, forecaster_options=forecaster_options, **accelerator_options)

    def new_actor(self, worker, arguments):
        """An actor of worker ``worker``'s bundle, with a :data:`SETS_PER_WORKER`-th of its CPUs and GPUs."""
        return self._actor_class.options(**self._share(worker)).remote(threads=self.cpus_per_worker, **arguments)

    def _share(self, worker):
        """Ray options: a :data:`SETS_PER_WORKER`-th of worker ``worker``'s bundle."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        options = {"num_cpus": self.cpus_per_worker / SETS_PER_WORKER, "scheduling_strategy":
                   PlacementGroupSchedulingStrategy(self._placement, placement_group_bundle_index=worker)}
        if self.gpus_per_worker:
            options["num_gpus"] = self.gpus_per_worker / SETS_PER_WORKER
        return options

    def task(self, function, worker=0):
        """``function`` as a Ray task in worker ``worker``'s bundle, sharing it as an actor does (not run again if
        lost)."""
        return self._ray.remote(function).options(max_retries=0, **self._share(worker))

    def map_target(self, function, molecular_system, calls):
        """``[function(target, *arguments) for arguments in calls]``, call ``i`` as a Ray task on worker
        ``i % workers`` with the target rebuilt there from its :class:`TargetDescription`.

        ``function`` must be importable by name (a module-level function).  Results come back in the order of
        ``calls``; where each call ran is appended to :attr:`placements` (dicts of :func:`where`).  A task that
        raises re-raises its error here.
        """
        description = TargetDescription.of(molecular_system, self.build_options)
        references = [self.task(_call_on_target, i % self.workers).remote(function, description, tuple(arguments))
                      for i, arguments in enumerate(calls)]
        try:
            results = self._ray.get(references)
        except self._ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            raise cause if isinstance(cause, BaseException) else error
        self.placements.extend(place for _, place in results)
        return [result for result, _ in results]

    def shutdown(self):
        """Stop the local cluster this backend started (a joined cluster is left running)."""
        if not self._ray.is_initialized():
            return
        self._ray.util.remove_placement_group(self._placement)
        if self.started_here:
            self._ray.shutdown()


def _call_on_target(function, description, arguments):
    """Body of :meth:`RayBackend.map_target`'s tasks: (``function(target, *arguments)``, :func:`where`)."""
    return function(description.build(), *arguments), where()


def _run_command(function, args):
    """Body of :func:`run_remotely`'s task: the command, in-process in this worker; (its result, what it printed)."""
    import contextlib

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = function(args)
    return result, printed.getvalue()


def run_remotely(function, args, backend):
    """Run a command (``function(args)``, ``args.backend`` 'ray') in one Ray worker of ``backend``, print what it
    printed and return its result; its output files are written on the worker's node (on another node: shared
    storage).

    A lost worker is not run again here: the command's own checkpoints make ``--resume`` exact, and the error
    says so.

    Raises
    ------
    RuntimeError
        The worker was lost.
    """
    import argparse

    ray = backend._ray
    arguments = argparse.Namespace(**{**vars(args), "backend": "local"})
    task = backend.task(_run_command)
    try:
        result, printed = ray.get(task.remote(function, arguments))
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        raise cause if isinstance(cause, BaseException) else error
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayActorError, ray.exceptions.NodeDiedError) as error:
        raise RuntimeError(f"the Ray worker running the command was lost ({str(error).strip().splitlines()[0]}); "
                           "its last checkpoint stands: run the same command with --resume") from error
    print(printed, end="")
    return result


class RayWalkers:
    """Walkers in Ray actors, with the interface of the in-process walkers (see the module docstring).

    Attributes
    ----------
    seeds : list of int
    forecaster : Forecaster or None
        The forecaster loaded in the driver too (metadata and fingerprint for reports; the actors' must match).
    rule : AcceptanceRule or None
    restarts : list of dict
        One per lost actor replaced: ``{"worker", "walkers", "at_sample", "error"}``.
    """

    def __init__(self, backend, molecular_system, n_walkers=None, *, seeds=None, seed=1, platform=None,
                 forecaster=None, forecaster_options=None, **accelerator_options):
        from .checkpoint import forecaster_fingerprint
        from .walkers import _Walkers

        if forecaster is not None and not isinstance(forecaster, (str, os.PathLike)):
            raise UsageError("walkers in Ray actors load their forecaster themselves: give its name or file path, "
                             "not a Forecaster object")
        self.seeds = _Walkers.check_seeds(n_walkers, seeds, seed)
        self._backend = backend
        self._ray = backend._ray
        self.molecular_system = molecular_system
        self.timestep_ps = molecular_system.timestep.value_in_unit(unit.picosecond)
        self.platform = backend.default_platform(platform)
        self.forecaster = None
        if forecaster is not None:
            from .forecasters import load_forecaster

            self.forecaster = load_forecaster(os.fspath(forecaster), molecular_system=molecular_system,
                                              **(forecaster_options or {}))
        target = TargetDescription.of(molecular_system, backend.build_options)
        groups = [list(group) for group in np.array_split(np.array(self.seeds), min(backend.workers, len(self.seeds)))]
        self._arguments = [
            {"target": target, "seeds": [int(s) for s in group], "platform": self.platform,
             "forecaster": None if forecaster is None else os.fspath(forecaster),
             "forecaster_options": forecaster_options, "accelerator_options": accelerator_options,
             "log_level": logging.getLogger("openmm_forecast").getEffectiveLevel()}
            for group in groups
        ]
        self._checkpoints = [None] * len(groups)
        self._samples_done = 0
        self.restarts = []
        self._actors = [backend.new_actor(i, arguments) for i, arguments in enumerate(self._arguments)]
        self._info = [self._call(i, "info") for i in range(len(self._actors))]
        self._where = [[dict(info["where"], first_sample=0)] for info in self._info]
        if self.forecaster is not None:
            expected = forecaster_fingerprint(self.forecaster)
            for info in self._info:
                if info["forecaster_fingerprint"] != expected:
                    raise UsageError(f"the Ray worker on {info['where']['host']} loaded forecaster {forecaster!r} as "
                                     "another model than the driver's: make the same file readable on every node")
        self.rule = self._info[0].get("rule")

    @property
    def n_walkers(self):
        return len(self.seeds)

    def describe_platform(self):
        """Platform of the first worker's Contexts (read in the worker)."""
        return self._info[0]["platform"]

    def placement(self):
        """Where each walker ran: one list per walker (seed order) of ``{"host", "pid", "node_id", "node_ip",
        "first_sample"}``, a new entry from the sample at which a replacement actor took over."""
        return [list(self._where[i]) for i, arguments in enumerate(self._arguments) for _ in arguments["seeds"]]

    def _call(self, i, method, *arguments):
        """``actor.method(*arguments)`` of worker ``i``, waited for, replacing a lost actor (see :meth:`_get`)."""
        return self._get(i, getattr(self._actors[i], method).remote(*arguments), method, arguments)

    def _get(self, i, reference, method, arguments):
        """The result of a call of worker ``i``; a lost actor is replaced from its last checkpoint and called again.

        An error raised by the walkers' own code is raised here as itself (OpenMM's exception, ...).
        """
        ray = self._ray
        while True:
            try:
                return ray.get(reference)
            except ray.exceptions.RayTaskError as error:
                cause = getattr(error, "cause", None)
                raise cause if isinstance(cause, BaseException) else error
            except ray.exceptions.RayActorError as error:
                if len(self.restarts) >= self._backend.max_restarts:
                    raise RuntimeError(f"Ray worker {i} (walkers with seeds {self._arguments[i]['seeds']}) was lost "
                                       f"after {len(self.restarts)} replacements: {error}") from error
                self._replace(i, error)
                reference = getattr(self._actors[i], method).remote(*arguments)

    def _replace(self, i, error):
        logger.warning("Ray worker %d (seeds %s) was lost at sample %d; a new one resumes from its last checkpoint",
                       i, self._arguments[i]["seeds"], self._samples_done)
        self.restarts.append({"worker": i, "walkers": self._arguments[i]["seeds"], "at_sample": self._samples_done,
                              "error": str(error).strip().splitlines()[0][:300]})
        self._actors[i] = self._backend.new_actor(i, dict(self._arguments[i], checkpoint=self._checkpoints[i]))
        place = self._ray.get(self._actors[i].info.remote())["where"]
        self._where[i].append(dict(place, first_sample=self._samples_done))

    def _round(self, interval_ps, n_samples, start):
        """One round: every worker's samples, merged, with the wall clock of each sample since ``start``."""
        issued = time.perf_counter() - start
        references = [actor.sample.remote(interval_ps, n_samples) for actor in self._actors]
        pieces, checkpoints, walls = [], [], []
        for i, reference in enumerate(references):
            lost = len(self.restarts)
            piece, checkpoint = self._get(i, reference, "sample", (interval_ps, n_samples))
            offset = issued if len(self.restarts) == lost else time.perf_counter() - start - piece.wall_s[-1]
            pieces.append(piece)
            checkpoints.append(checkpoint)
            walls.append(offset + piece.wall_s)
        self._checkpoints = checkpoints
        self._samples_done += n_samples
        first = pieces[0]
        from .walkers import WalkerSamples

        return WalkerSamples(np.concatenate([p.positions_nm for p in pieces], axis=1), first.time_ps,
                             np.max(walls, axis=0), first.interval_ps,
                             np.concatenate([p.temperature_K for p in pieces], axis=1))

    def sample(self, interval=1.0 * unit.picosecond, n_samples=None, wall_seconds=None, progress=None, label=None):
        """As :meth:`~openmm_forecast.walkers.PlainWalkers.sample`, in rounds of about :data:`ROUND_SECONDS`.

        A wall-clock budget is met at round granularity: the round that crosses it is sized from the time per
        sample measured so far, so that the last sample lands at or just after the budget.
        """
        from tqdm.auto import tqdm

        from .units import positive, whole_steps

        if n_samples is None and wall_seconds is None:
            raise ValueError("give n_samples, wall_seconds or both")
        interval_ps = positive(interval, unit.picosecond, "interval")
        whole_steps(interval_ps, self.timestep_ps, "interval")
        rounds, done, per_sample = [], 0, None
        disable = None if progress is None else not progress
        total = n_samples if wall_seconds is None else float(wall_seconds)
        start = time.perf_counter()
        try:
            with tqdm(total=total, disable=disable, desc=label, unit="sample" if wall_seconds is None else "s") as bar:
                while True:
                    size = 1 if per_sample is None else max(1, int(ROUND_SECONDS / per_sample))
                    if wall_seconds is not None and per_sample is not None:
                        elapsed = time.perf_counter() - start
                        size = min(size, max(1, math.ceil((wall_seconds - elapsed) / per_sample)))
                    if n_samples is not None:
                        size = min(size, n_samples - done)
                    part = self._round(interval_ps, size, start)
                    if rounds:
                        part.time_ps = part.time_ps + rounds[-1].time_ps[-1]
                    rounds.append(part)
                    done += size
                    per_sample = part.wall_s[-1] / done
                    bar.update(size if wall_seconds is None else part.wall_s[-1] - bar.n)
                    if (n_samples is not None and done >= n_samples) or (
                            wall_seconds is not None and part.wall_s[-1] >= wall_seconds):
                        break
        except KeyboardInterrupt as interruption:
            partial = self._merge(rounds) if rounds else None
            raise SamplingInterrupted(SamplingInterrupted.signal_of(interruption), partial) from interruption
        return self._merge(rounds)

    @staticmethod
    def _merge(rounds):
        from .walkers import WalkerSamples

        return WalkerSamples(np.concatenate([r.positions_nm for r in rounds]), np.concatenate([r.time_ps for r in rounds]),
                             np.maximum.accumulate(np.concatenate([r.wall_s for r in rounds])), rounds[0].interval_ps,
                             np.concatenate([r.temperature_K for r in rounds]))

    def stats(self):
        """Accelerated walkers: statistics of all walkers together (see ForecastWalkers.stats)."""
        from .accelerator import AcceleratorStats

        parts = [self._call(i, "stats") for i in range(len(self._actors))]
        return AcceleratorStats.merge([stats for stats, _ in parts])

    @property
    def forecast_calls(self):
        """Batched forecaster calls of all workers (each batches only its own walkers)."""
        return sum(self._call(i, "stats")[1] for i in range(len(self._actors)))
