"""Forecasters: learned and baseline flow maps behind one interface (see :mod:`.base`).

Baselines: :class:`ConstantForecaster`, :class:`BallisticForecaster`, :class:`VerletForecaster`, and the
physical proposal :class:`SurrogateForecaster` (velocity Verlet on a cheaper System; certified
``structure_preserving``, so exact in Metropolis mode).
Learned architectures are registered by name (:func:`available_architectures`), built untrained with
:func:`build_forecaster` / :func:`create_forecaster`, saved with :func:`save_forecaster` and loaded with
:func:`load_forecaster`.

What the learned architectures guarantee by construction (to floating-point rounding, tested):

================  =======  ======================  ======================================  =============
architecture      history  frames                  rotations and reflections               COM, momentum
================  =======  ======================  ======================================  =============
mdtrajnet         1        direct, span an input   equivariant (O(3))                      conserved
asteroid          >= 1     autoregressive          not equivariant: train with rotations   conserved
multiscale_ode    1        RK4 ODE, any span       equivariant (O(3))                      conserved
symplectic        1        Verlet substeps, k x    equivariant (O(3))                      conserved
================  =======  ======================  ======================================  =============

All four are exactly invariant under translations and Galilean boosts; the first three predict corrections
to free flight ``x + v t``.  ``symplectic`` is velocity Verlet on a learned potential: symplectic
(volume-preserving) and time-reversible by construction, so the accelerator's Metropolis mode is exact
with it (``is_structure_preserving(metadata)``).
"""

from .base import Forecaster, ForecasterMetadata, is_structure_preserving, uses_forces
from .baselines import BallisticForecaster, ConstantForecaster, VerletForecaster
from .surrogate import SurrogateForecaster
from .registry import (
    available_architectures,
    build_forecaster,
    create_forecaster,
    load_forecaster,
    register_architecture,
    shipped_models,
)
from .torch_forecaster import TorchForecaster, save_forecaster

# Built-in learned architectures register themselves on import.
from . import asteroid, mdtrajnet, multiscale_ode, symplectic  # noqa: E402,F401  isort: skip

__all__ = [
    "BallisticForecaster",
    "ConstantForecaster",
    "Forecaster",
    "ForecasterMetadata",
    "SurrogateForecaster",
    "TorchForecaster",
    "VerletForecaster",
    "available_architectures",
    "build_forecaster",
    "create_forecaster",
    "is_structure_preserving",
    "load_forecaster",
    "register_architecture",
    "save_forecaster",
    "shipped_models",
    "uses_forces",
]
