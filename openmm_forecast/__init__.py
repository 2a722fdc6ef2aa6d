"""openmm-forecast: accelerate OpenMM sampling with learned multi-step forecast jumps.

The public API is what a user calls, below by task; everything else lives in named submodules
(:mod:`openmm_forecast.systems`, :mod:`~openmm_forecast.forecasters`, :mod:`~openmm_forecast.analysis`,
:mod:`~openmm_forecast.benchmark`, :mod:`~openmm_forecast.platforms`, :mod:`~openmm_forecast.data`,
:mod:`~openmm_forecast.training`, :mod:`~openmm_forecast.potentials`, ...), where every name once exported
here still is.  Importing this package imports torch before openmm (required by openmm-torch's plugins; see
:mod:`openmm_forecast._runtime`).  Units: OpenMM ``unit`` quantities at public boundaries; inside, plain
floats in nm, ps, kJ/mol, K and amu.
"""

from . import _runtime  # noqa: F401  (torch before openmm; must stay first)
from ._version import __version__  # noqa: F401  (openmm_forecast.__version__)
from .acceptance import AcceptanceRule, DynamicsRule, MetropolisRule, ToleranceRule
from .accelerator import ForecastAccelerator
from .analysis import basin_populations, compute_phi_psi, js_divergence, load_phi_psi
from .barriers import lower_barriers
from .benchmark import BenchmarkArm, run_benchmark
from .cycles import GHMCCycle
from .errors import (
    BadForecastError,
    CheckpointError,
    DataFileError,
    ForecastError,
    ModelFileError,
    ModelMismatchError,
    OptionalDependencyError,
    PluginError,
    PotentialEvaluationError,
    RunInterrupted,
    TargetInputError,
    UnitError,
    UnknownSetupError,
    UnsupportedSystemError,
)
from .forecasters import Forecaster, SurrogateForecaster, load_forecaster, register_architecture
from .options import AcceleratorOptions
from .plugin import ForecastIntegrator
from .stats import AcceleratorStats
from .surrogate_fitting import fit_surrogate
from .systems import MolecularSystem, build_system
from .walkers import ForecastWalkers

__all__ = [
    # the target: a System, Topology, positions and temperature
    "MolecularSystem", "build_system",
    # running: the accelerator, its options and statistics, walkers, the plugin integrator
    "ForecastAccelerator", "AcceleratorOptions", "AcceleratorStats", "ForecastWalkers", "ForecastIntegrator",
    # proposals (and the extension point for new architectures)
    "Forecaster", "SurrogateForecaster", "load_forecaster", "register_architecture",
    # acceptance rules and cycles
    "AcceptanceRule", "ToleranceRule", "MetropolisRule", "DynamicsRule", "GHMCCycle",
    # fitting a surrogate, lowering its barriers
    "fit_surrogate", "lower_barriers",
    # benchmark and analysis
    "BenchmarkArm", "run_benchmark", "compute_phi_psi", "load_phi_psi", "basin_populations", "js_divergence",
    # errors
    "ForecastError", "BadForecastError", "CheckpointError", "DataFileError", "ModelFileError", "ModelMismatchError",
    "OptionalDependencyError", "PluginError", "PotentialEvaluationError", "RunInterrupted", "TargetInputError",
    "UnitError", "UnknownSetupError", "UnsupportedSystemError",
]
