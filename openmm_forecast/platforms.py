"""Choosing an OpenMM platform configuration by measuring it, fairly.

A *configuration* is a platform, its properties (the CPU platform's ``Threads``) and whether the thread that
steps the Context, and the worker threads the Context starts, are pinned to one core
(:class:`PlatformConfiguration`).  Which one is fastest depends on the System and on the machine, and the
differences are large: measured on a 2-vCPU virtual machine for alanine dipeptide in amber14 + OBC2
(microseconds per 2 fs step), Reference 880; CPU with ``Threads=1`` pinned 102, not pinned 108-1,049
(the CPU platform hands every step to a worker thread, and waking a thread on an idle vCPU costs hundreds
of microseconds, so unpinned its speed swings with the machine's load); CPU with its default threads 139
pinned.  In vacuum (no implicit solvent) Reference wins at 7.5 us.  So nothing is assumed:
:func:`time_configurations` times every candidate on the very System (warm-up, then several timed blocks,
median), and :func:`fastest_configuration` picks the fastest, GPU platforms included.

Pinning is a property of threads, not of a Context: a Context's worker threads inherit the affinity of the
thread that creates it.  A configuration with ``pinned=True`` therefore holds only while the calling thread
stays pinned (:func:`pin_to_one_core`); the benchmark pins its process before it creates any Context when
the measured best configuration is pinned, and records it.

Units: microseconds per step, seconds.
"""

import contextlib
import dataclasses
import logging
import os
import statistics
import time

from ._runtime import openmm as mm

logger = logging.getLogger(__name__)

VARIATION_WARNING = 2.0
"""A configuration whose timed blocks differ by more than this factor (slowest over fastest) is reported as
unstable: its timing depends on the machine's load at that moment."""

_cache = {}


def available_platforms():
    """Names of the OpenMM platforms that loaded in this process (list of str)."""
    return [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]


def can_pin():
    """Whether this process can pin threads to cores (Linux ``sched_setaffinity``, more than one core allowed)."""
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1


def pinned_core():
    """The core the calling thread is pinned to (int), or None when it may run on several."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = os.sched_getaffinity(0)
    return next(iter(cores)) if len(cores) == 1 else None


def pin_to_one_core(core=None):
    """Pin the calling thread, and every thread it starts from now on, to one core.

    Parameters
    ----------
    core : int, optional
        Default: the lowest core of the thread's current affinity set.

    Returns
    -------
    set of int
        The affinity set before, for :func:`restore_affinity`.
    """
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before) if core is None else int(core)})
    return before


def restore_affinity(cores):
    """Set the calling thread's affinity back to ``cores`` (the value :func:`pin_to_one_core` returned)."""
    os.sched_setaffinity(0, cores)


@contextlib.contextmanager
def _affinity(pinned):
    """Within the block the calling thread is pinned to one core (``pinned``) or free on its current set."""
    if not pinned or pinned_core() is not None or not can_pin():
        yield
        return
    before = pin_to_one_core()
    try:
        yield
    finally:
        restore_affinity(before)


@dataclasses.dataclass(frozen=True)
class PlatformConfiguration:
    """An OpenMM platform, its properties, and whether its threads are pinned to one core.

    Attributes
    ----------
    name : str
        Platform name ('Reference', 'CPU', 'CUDA', 'OpenCL', ...).
    properties : tuple of (str, str)
        Platform properties given to the Context, as sorted pairs (e.g. ``(("Threads", "1"),)``).
    pinned : bool
        The stepping thread and the Context's worker threads run on one core.
    """

    name: str
    properties: tuple = ()
    pinned: bool = False

    @classmethod
    def create(cls, name, properties=None, pinned=False):
        """From a properties dict (values turned into strings, as OpenMM wants them)."""
        return cls(name, tuple(sorted((str(k), str(v)) for k, v in (properties or {}).items())), bool(pinned))

    @property
    def properties_dict(self):
        return dict(self.properties)

    def platform(self):
        """The ``openmm.Platform`` object."""
        return get_platform(self.name)

    @property
    def label(self):
        """Short text, e.g. 'CPU Threads=1, pinned'."""
        props = " ".join(f"{k}={v}" for k, v in self.properties)
        return f"{self.name}{' ' + props if props else ''}{', pinned' if self.pinned else ''}"

    def as_dict(self):
        return {"platform": self.name, "properties": self.properties_dict, "pinned": self.pinned}


def get_platform(platform):
    """Return an ``openmm.Platform`` from a name, a Platform or a :class:`PlatformConfiguration`.

    Unknown names get a clear error listing the available platforms.
    """
    if isinstance(platform, mm.Platform):
        return platform
    if isinstance(platform, PlatformConfiguration):
        platform = platform.name
    names = available_platforms()
    if platform not in names:
        raise ValueError(f"OpenMM platform {platform!r} is not available here; available: {', '.join(names)}")
    return mm.Platform.getPlatformByName(platform)


def platform_properties(platform):
    """The Context properties a platform argument carries (a configuration's; none for a name or Platform)."""
    return platform.properties_dict if isinstance(platform, PlatformConfiguration) else {}


def candidate_configurations(pinning=None):
    """Every configuration worth timing on this machine.

    Reference; CPU with ``Threads=1`` and with one thread per allowed core; every other platform (GPU) with
    its defaults.

    Parameters
    ----------
    pinning : bool or None
        True: only pinned configurations; False: only unpinned; None: both.  A thread already confined to one
        core (``taskset -c N``, a one-core machine) can only run pinned; one that cannot pin only unpinned.

    Returns
    -------
    list of PlatformConfiguration
    """
    if pinned_core() is not None:
        states = [True]
    elif not can_pin():
        states = [False]
    else:
        states = [False, True] if pinning is None else [bool(pinning)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    result = []
    for pinned in states:
        for name in available_platforms():
            if name == "CPU":
                for threads in sorted({1, cores}):
                    result.append(PlatformConfiguration.create(name, {"Threads": threads}, pinned))
            else:
                result.append(PlatformConfiguration.create(name, None, pinned))
    return result


@dataclasses.dataclass
class PlatformTiming:
    """Microseconds per step of one configuration on one System: several timed blocks after a warm-up."""

    configuration: PlatformConfiguration
    block_us_per_step: list

    @property
    def us_per_step(self):
        """Median over the blocks."""
        return statistics.median(self.block_us_per_step)

    @property
    def variation(self):
        """Slowest block over fastest block (1 = perfectly stable)."""
        return max(self.block_us_per_step) / min(self.block_us_per_step)

    def as_dict(self):
        return {**self.configuration.as_dict(), "label": self.configuration.label,
                "us_per_step": self.us_per_step, "blocks_us_per_step": list(self.block_us_per_step),
                "variation": self.variation, "stable": self.variation <= VARIATION_WARNING}


def time_configuration(molecular_system, configuration, block_seconds=0.1, n_blocks=5, warmup_seconds=0.1):
    """Time MD steps of ``molecular_system`` in one configuration.

    A Context is created (in the configuration's pinning state), 10 steps and then ``warmup_seconds`` of
    steps are run untimed, then ``n_blocks`` blocks of about ``block_seconds`` each are timed (the block's
    step count is set from the warm-up's speed).

    Returns
    -------
    PlatformTiming or None
        None when the platform cannot run this System (a missing device, an unsupported force).
    """
    with _affinity(configuration.pinned):
        integrator = molecular_system.integrator(seed=1)
        try:  # a platform can load and still have no usable device
            context = mm.Context(molecular_system.system, integrator, configuration.platform(),
                                 configuration.properties_dict)
            context.setPositions(molecular_system.positions)
            context.setVelocitiesToTemperature(molecular_system.temperature, 1)
            integrator.step(10)
            context.getState(getEnergy=True)
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < warmup_seconds:
                integrator.step(10)
                context.getState(getEnergy=True)
                steps += 10
            per_step = (time.perf_counter() - start) / steps
            block_steps = max(10, int(block_seconds / per_step))
            blocks = []
            for _ in range(n_blocks):
                start = time.perf_counter()
                integrator.step(block_steps)
                context.getState(getEnergy=True)
                blocks.append((time.perf_counter() - start) / block_steps * 1e6)
        except mm.OpenMMException as error:
            logger.info("%s cannot run this System: %s", configuration.label, str(error).strip())
            return None
        del context, integrator
    timing = PlatformTiming(configuration, blocks)
    if timing.variation > VARIATION_WARNING:
        logger.warning("%s: timed blocks differ by %.1fx (%s us/step): its speed depends on the machine's load",
                       configuration.label, timing.variation, ", ".join(f"{b:.0f}" for b in blocks))
    return timing


def time_configurations(molecular_system, configurations=None, **options):
    """Time every configuration (default :func:`candidate_configurations`) on ``molecular_system``.

    Returns
    -------
    dict
        :class:`PlatformConfiguration` -> :class:`PlatformTiming`, for those that ran.
    """
    result = {}
    for configuration in configurations if configurations is not None else candidate_configurations():
        timing = time_configuration(molecular_system, configuration, **options)
        if timing is not None:
            result[configuration] = timing
    return result


def fastest_configuration(molecular_system, configurations=None):
    """The fastest configuration for ``molecular_system`` on this machine, and every timing behind the choice.

    Cached per System fingerprint and candidate set for the life of the process.

    Parameters
    ----------
    molecular_system : openmm_forecast.systems.MolecularSystem
    configurations : list of PlatformConfiguration, optional
        Candidates (default: :func:`candidate_configurations` in the calling thread's current pinning state:
        pinned ones when it is pinned, unpinned ones otherwise, since a library call does not change the
        process's affinity; the benchmark passes both and pins when a pinned one wins).

    Returns
    -------
    best : PlatformConfiguration
    timings : dict
        Configuration -> :class:`PlatformTiming`.

    Raises
    ------
    RuntimeError
        No platform can run this System.
    """
    if configurations is None:
        configurations = candidate_configurations(pinning=pinned_core() is not None)
    key = (molecular_system.fingerprint(), tuple(configurations))
    if key not in _cache:
        timings = time_configurations(molecular_system, configurations)
        if not timings:
            raise RuntimeError(f"no OpenMM platform can run this System (tried {', '.join(available_platforms())})")
        best = min(timings, key=lambda c: timings[c].us_per_step)
        logger.info("fastest platform configuration: %s (us/step: %s)", best.label,
                    ", ".join(f"{c.label} {t.us_per_step:.0f}" for c, t in timings.items()))
        _cache[key] = (best, timings)
    return _cache[key]


def fastest_platform(molecular_system):
    """The fastest :class:`PlatformConfiguration` for ``molecular_system`` in this thread's pinning state.

    Accepted wherever a platform is (``create_simulation``, walkers): its properties (``Threads``) go to the
    Context.  See :func:`fastest_configuration`.
    """
    return fastest_configuration(molecular_system)[0]


def describe_platform(context):
    """Platform name and properties of a live Context, and the core its thread is pinned to (a dict)."""
    platform = context.getPlatform()
    properties = {name: platform.getPropertyValue(context, name) for name in platform.getPropertyNames()}
    return {"name": platform.getName(), "properties": properties, "pinned_core": pinned_core(),
            "openmm_version": mm.__version__}
