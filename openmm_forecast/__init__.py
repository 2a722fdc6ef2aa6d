"""openmm-forecast: accelerate OpenMM sampling with learned multi-step forecast jumps.

Importing this package imports torch before openmm (required by openmm-torch's plugins; see
:mod:`openmm_forecast._runtime`).  Units: OpenMM ``unit`` quantities at public boundaries; inside, plain
floats in nm, ps, kJ/mol, K and amu.
"""

from . import _runtime  # noqa: F401  (torch before openmm; must stay first)
from .acceptance import AcceptanceRule, DynamicsRule, MetropolisRule, ToleranceRule
from .accelerator import AcceleratorStats, ForecastAccelerator
from .cycles import GHMCCycle
from .plugin import ForecastIntegrator
from .errors import (
    BadForecastError,
    CheckpointError,
    DataFileError,
    ForecastError,
    ModelFileError,
    ModelMismatchError,
    OptionalDependencyError,
    PotentialEvaluationError,
    UnitError,
    UnknownSetupError,
    RunInterrupted,
    PluginError,
    UnsupportedSystemError,
)
from .forecasters import (
    BallisticForecaster,
    ConstantForecaster,
    Forecaster,
    ForecasterMetadata,
    SurrogateForecaster,
    TorchForecaster,
    VerletForecaster,
    available_architectures,
    is_structure_preserving,
    load_forecaster,
    save_forecaster,
)
from .analysis import (
    BASINS,
    basin_populations,
    check_phi_psi,
    compute_phi_psi,
    count_transitions,
    js_convergence,
    js_divergence,
    js_divergence_phi_psi,
    load_phi_psi,
    ramachandran_histogram,
    window_js,
)
from .data import TrajectoryData, data_fingerprint, generate_nve_segments, generate_nvt, load_trajectory
from .evaluation import evaluate
from .integrators import velocity_verlet_integrator
from .platforms import PlatformConfiguration, fastest_configuration, fastest_platform
from .barriers import lower_barriers, surrogate_free_energy
from .plotting import plot_ramachandran
from .potential_training import fit_potential
from .surrogate_fitting import AmberSurrogateEnergy, fit_surrogate, long_jump_acceptance, sample_target
from .forecasters.surrogate import load_surrogate_system, shipped_surrogates
from .potentials import TorchANIPotential, ani2x_module, build_ani_potential, load_potential, save_potential
from .systems import SETUPS, MolecularSystem, ani1x_force, build_system
from .training import TrainingConfig, train
from .walkers import ForecastWalkers, PlainWalkers
from .benchmark import BenchmarkArm, run_benchmark

__version__ = "0.1.0"

__all__ = [
    "AcceptanceRule", "DynamicsRule", "GHMCCycle", "MetropolisRule", "ToleranceRule",
    "AcceleratorStats",
    "ForecastAccelerator",
    "ForecastIntegrator",
    "PluginError",
    "BadForecastError",
    "BallisticForecaster",
    "ConstantForecaster",
    "Forecaster",
    "ForecasterMetadata",
    "SurrogateForecaster",
    "TorchForecaster",
    "VerletForecaster",
    "available_architectures",
    "is_structure_preserving",
    "load_forecaster",
    "save_forecaster",
    "CheckpointError",
    "DataFileError",
    "ForecastError",
    "ModelFileError",
    "ModelMismatchError",
    "OptionalDependencyError",
    "PotentialEvaluationError",
    "MolecularSystem",
    "SETUPS",
    "UnitError",
    "UnknownSetupError",
    "RunInterrupted",
    "UnsupportedSystemError",
    "build_system",
    "fastest_platform", "fastest_configuration", "PlatformConfiguration",
    "lower_barriers", "surrogate_free_energy", "ani1x_force",
    "TorchANIPotential",
    "ani2x_module",
    "build_ani_potential",
    "fit_potential",
    "AmberSurrogateEnergy", "fit_surrogate", "long_jump_acceptance", "load_surrogate_system", "sample_target",
    "shipped_surrogates",
    "load_potential",
    "save_potential",
    "velocity_verlet_integrator",
    "TrainingConfig", "evaluate", "train",
    "BASINS", "basin_populations", "check_phi_psi", "compute_phi_psi", "count_transitions", "js_convergence",
    "js_divergence",
    "js_divergence_phi_psi", "load_phi_psi", "plot_ramachandran", "ramachandran_histogram", "window_js",
    "BenchmarkArm", "ForecastWalkers", "PlainWalkers", "run_benchmark",
    "TrajectoryData", "data_fingerprint", "generate_nve_segments", "generate_nvt", "load_trajectory",
]
