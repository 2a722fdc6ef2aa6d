"""Choosing an OpenMM platform by measuring it.

On a CPU machine and a small molecule, the Reference platform is much faster than the CPU platform
(measured on a 2-core CPU for alanine dipeptide in vacuum: Reference ~8 us/step, CPU 270-460 us/step,
because the CPU platform's thread start-up dominates at 22 atoms); for a solvated system the CPU platform
wins.  Rather than guess, :func:`fastest_platform` times a few steps of the actual System on every
available platform, GPU platforms included (a 22-atom molecule need not run fastest on a GPU, and an
OpenCL platform may be a CPU runtime), and picks the fastest.
"""

import logging
import time

from ._runtime import openmm as mm

logger = logging.getLogger(__name__)
_cache = {}


def available_platforms():
    """Names of the OpenMM platforms that loaded in this process (list of str)."""
    return [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]


def get_platform(platform):
    """Return an ``openmm.Platform`` from a name or a Platform, with a clear error for unknown names."""
    if isinstance(platform, mm.Platform):
        return platform
    names = available_platforms()
    if platform not in names:
        raise ValueError(f"OpenMM platform {platform!r} is not available here; available: {', '.join(names)}")
    return mm.Platform.getPlatformByName(platform)


def time_platforms(molecular_system, n_steps=30, platforms=None):
    """Measure microseconds per MD step of ``molecular_system`` on each platform.

    Parameters
    ----------
    molecular_system : openmm_forecast.systems.MolecularSystem
    n_steps : int
        Steps timed per platform (after 5 warm-up steps).
    platforms : list of str, optional
        Platforms to time (default: every available one).

    Returns
    -------
    dict
        Platform name -> microseconds per step (float).
    """
    result = {}
    for name in platforms or available_platforms():
        integrator = molecular_system.integrator(seed=1)
        try:  # a platform can load and still have no usable device
            context = mm.Context(molecular_system.system, integrator, mm.Platform.getPlatformByName(name))
            context.setPositions(molecular_system.positions)
            context.setVelocitiesToTemperature(molecular_system.temperature, 1)
            integrator.step(5)
            context.getState(getPositions=True)
            start = time.perf_counter()
            integrator.step(n_steps)
            context.getState(getPositions=True)
        except mm.OpenMMException as error:
            logger.info("platform %s cannot run this System: %s", name, str(error).strip())
            continue
        result[name] = (time.perf_counter() - start) / n_steps * 1e6
        del context, integrator
    return result


def fastest_platform(molecular_system):
    """The fastest OpenMM platform for ``molecular_system`` on this machine.

    Every available platform, GPU platforms included, is timed over a few steps of this very System (a
    fraction of a second; a GPU platform's first Context adds its start-up) and the fastest one is
    returned; the result is cached per System fingerprint for the life of the process.

    Returns
    -------
    openmm.Platform
    """
    key = molecular_system.fingerprint()
    if key not in _cache:
        timings = time_platforms(molecular_system)
        if not timings:
            raise RuntimeError(f"no OpenMM platform can run this System (tried {', '.join(available_platforms())})")
        _cache[key] = min(timings, key=timings.get)
        logger.info("fastest platform: %s (us/step: %s)", _cache[key],
                    ", ".join(f"{name} {us:.0f}" for name, us in timings.items()))
    return mm.Platform.getPlatformByName(_cache[key])


def describe_platform(context):
    """Platform name and its main properties of a Context, as a dict for reports and logs."""
    platform = context.getPlatform()
    properties = {name: platform.getPropertyValue(context, name) for name in platform.getPropertyNames()}
    return {"name": platform.getName(), "properties": properties, "openmm_version": mm.__version__}
