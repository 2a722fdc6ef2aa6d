"""Baseline forecasters: the floor (constant, ballistic) and the ceiling (the true integrator).

``constant``
    Nothing moves: every frame repeats the current state.  The error of a model that learned nothing.
``ballistic``
    Free flight: ``x(t + k s) = x(t) + v(t) k s`` with ``v`` unchanged (``s`` the stride).  Exact for a
    free particle; the learned models predict corrections to it.
``verlet``
    The true dynamics: velocity Verlet (RATTLE with constraints) at a small time step in a private OpenMM
    Context, from each walker's state.  The accuracy ceiling every learned model is measured against, and
    the source of NVE training targets.  It is the :class:`~.surrogate.SurrogateForecaster` whose surrogate
    is the System itself (the same integration code).

All three read only the current state (``history = 1``).
"""


import numpy as np
from openmm import unit

from .base import Forecaster, ForecasterMetadata, stride_in_ps
from .surrogate import SurrogateForecaster


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


class VerletForecaster(SurrogateForecaster):
    """The true NVE dynamics: the :class:`~.surrogate.SurrogateForecaster` of the System itself, at 0.25 fs.

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
    """

    architecture = "verlet"

    def __init__(self, molecular_system, stride_ps, max_frames=1, timestep=0.25 * unit.femtosecond,
                 platform="Reference"):
        super().__init__(molecular_system, stride_ps, max_frames, surrogate=None, timestep=timestep,
                         platform=platform)
