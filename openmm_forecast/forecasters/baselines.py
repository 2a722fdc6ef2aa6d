"""Baseline forecasters: the floor (constant, ballistic) and the ceiling (the true integrator).

``constant``
    Nothing moves: every frame repeats the current state.  The error of a model that learned nothing.
``ballistic``
    Free flight: ``x(t + k s) = x(t) + v(t) k s`` with ``v`` unchanged (``s`` the stride).  Exact for a
    free particle; the learned models predict corrections to it.
``verlet``
    The true dynamics: velocity Verlet (RATTLE with constraints) at a small time step in a private OpenMM
    Context, from each walker's state.  The accuracy ceiling every learned model is measured against, and
    the source of NVE training targets.

All three read only the current state (``history = 1``).
"""


import numpy as np
from openmm import unit

from .._runtime import openmm as mm
from ..integrators import velocity_verlet_integrator
from ..platforms import get_platform
from ..systems import system_fingerprint
from ..units import positive, strip_units
from .base import Forecaster, ForecasterMetadata


MAX_PLAIN_STRIDE_PS = 1.0
"""Largest stride accepted as a plain number of ps; a longer one must be a Quantity (``10`` meant as fs is 10 ps)."""


def stride_in_ps(stride):
    """A forecast stride in ps from a time Quantity, or a plain number of ps in (0, :data:`MAX_PLAIN_STRIDE_PS`].

    Plain numbers above 1 ps are refused as implausible (a stride is a few fs to a few hundred fs; the CLI's
    ``--stride`` is in fs): ``stride_ps=10`` would silently mean 10 ps per frame.
    """
    if unit.is_quantity(stride):
        return float(positive(stride, unit.picosecond, "stride_ps"))
    if isinstance(stride, bool) or not isinstance(stride, (int, float, np.integer, np.floating)):
        raise TypeError(f"stride_ps must be a time Quantity or a number of ps, got {stride!r}")
    stride = float(stride)
    if not (stride > 0 and np.isfinite(stride)):
        raise ValueError(f"stride_ps must be finite and > 0 ps, got {stride}")
    if stride > MAX_PLAIN_STRIDE_PS:
        raise ValueError(
            f"stride_ps={stride:g} is read as ps ({stride * 1000:g} fs per forecast frame), an implausible stride; "
            f"give a Quantity (e.g. {stride:g}*unit.femtosecond) or a plain number of ps <= {MAX_PLAIN_STRIDE_PS:g}"
        )
    return stride


class ConstantForecaster(Forecaster):
    """Forecast that nothing changes: positions and velocities stay as they are.

    Parameters
    ----------
    elements : list of str
        Element symbol of every atom.
    stride_ps : float or openmm.unit.Quantity
        Time between forecast frames (ps when a plain number).
    max_frames : int
        Most frames per call.
    **metadata_kwargs
        Further :class:`ForecasterMetadata` fields (setup, constraints, ...).
    """

    architecture = "constant"

    def __init__(self, elements, stride_ps, max_frames=1, **metadata_kwargs):
        self.metadata = ForecasterMetadata(
            architecture=self.architecture,
            elements=list(elements),
            stride_ps=stride_in_ps(stride_ps),
            max_frames=max_frames,
            history=1,
            **metadata_kwargs,
        )

    def _forecast(self, positions, velocities, n_frames):
        shape = (positions.shape[0], n_frames) + positions.shape[2:]
        return (
            np.broadcast_to(positions[:, -1:], shape).copy(),
            np.broadcast_to(velocities[:, -1:], shape).copy(),
        )


class BallisticForecaster(ConstantForecaster):
    """Forecast free flight: ``x + v * k * stride``, velocities unchanged.

    Parameters are those of :class:`ConstantForecaster`.
    """

    architecture = "ballistic"

    def _forecast(self, positions, velocities, n_frames):
        spans_ps = self.metadata.stride_ps * np.arange(1, n_frames + 1)
        x0, v0 = positions[:, -1:], velocities[:, -1:]
        new_positions = x0 + v0 * spans_ps[None, :, None, None]
        return new_positions, np.broadcast_to(v0, new_positions.shape).copy()


class VerletForecaster(Forecaster):
    """The true NVE dynamics: velocity Verlet at a small time step, one walker at a time.

    Each walker's current state is loaded into a private Context (a copy of the System, constraints
    included; the caller's Context is never touched) and integrated with
    :func:`openmm_forecast.integrators.velocity_verlet_integrator`; the state is read every
    ``stride_ps``.  Positions and velocities of a frame refer to the same time.

    Parameters
    ----------
    molecular_system : MolecularSystem or tuple (openmm.System, list of str)
        The system whose dynamics to integrate: a :class:`~openmm_forecast.systems.MolecularSystem`, or an
        OpenMM System with the element symbol of every particle.
    stride_ps : float or openmm.unit.Quantity
        Time between forecast frames (ps when a plain number); a whole multiple of ``timestep``.
    max_frames : int
        Most frames per call.
    timestep : openmm.unit.Quantity
        Integration time step (default 0.25 fs: energy drift well below kT over a few hundred fs for
        alanine dipeptide in vacuum).
    platform : str or openmm.Platform
        OpenMM platform of the private Context (default 'Reference': fastest for a small molecule on a CPU).

    Notes
    -----
    Periodic systems use the System's default box vectors (the forecast interface carries no box): do
    not use this forecaster with a barostat.
    """

    def __init__(
        self,
        molecular_system,
        stride_ps,
        max_frames=1,
        timestep=0.25 * unit.femtosecond,
        platform="Reference",
    ):
        if isinstance(molecular_system, tuple):
            system, elements = molecular_system
            n_constraints = system.getNumConstraints()
            metadata_kwargs = {"constraints": f"{n_constraints} constraints" if n_constraints else "none"}
        else:
            system, elements = molecular_system.system, molecular_system.elements
            metadata_kwargs = dict(
                setup=molecular_system.setup,
                potential=molecular_system.potential,
                constraints=molecular_system.constraints,
                temperature_K=float(strip_units(molecular_system.temperature, unit.kelvin, "temperature")),
            )
        if system.getNumParticles() != len(elements):
            raise ValueError(
                f"the System has {system.getNumParticles()} particles but {len(elements)} elements were given"
            )
        stride = stride_in_ps(stride_ps)
        dt_ps = positive(timestep, unit.picosecond, "timestep")
        steps = int(round(stride / dt_ps))
        if steps < 1 or abs(steps * dt_ps - stride) > 1e-9 * stride:
            raise ValueError(
                f"stride_ps ({stride} ps) must be a whole multiple of the integration time step ({dt_ps} ps); "
                f"choose a stride of n * {dt_ps} ps or another timestep"
            )
        self.metadata = ForecasterMetadata(
            architecture="verlet",
            elements=list(elements),
            stride_ps=stride,
            max_frames=max_frames,
            history=1,
            system_fingerprint=system_fingerprint(system),
            extra={"timestep_ps": dt_ps, "steps_per_stride": steps},
            **metadata_kwargs,
        )
        self.steps_per_stride = steps
        self._integrator = velocity_verlet_integrator(dt_ps * unit.picosecond)
        # The Context keeps its own copy of the System's parameters; no deep copy, which would round-trip the System
        # through XML and crashes for a System holding an openmm-torch TorchForce.
        self._context = mm.Context(system, self._integrator, get_platform(platform))

    def _forecast(self, positions, velocities, n_frames):
        n_walkers = positions.shape[0]
        shape = (n_walkers, n_frames) + positions.shape[2:]
        out_x, out_v = np.empty(shape), np.empty(shape)
        for walker in range(n_walkers):
            self._context.setPositions(positions[walker, -1])
            self._context.setVelocities(velocities[walker, -1])
            for frame in range(n_frames):
                self._integrator.step(self.steps_per_stride)
                state = self._context.getState(getPositions=True, getVelocities=True)
                out_x[walker, frame] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                out_v[walker, frame] = state.getVelocities(asNumpy=True).value_in_unit(
                    unit.nanometer / unit.picosecond
                )
        return out_x, out_v
