"""The public API: a short list in ``openmm_forecast.__all__``, every name there real, and every name the package
once exported at the top still importable from its submodule (issue 22)."""

import importlib

import pytest

import openmm_forecast

FORMERLY_AT_THE_TOP = {
    "acceptance": ["AcceptanceRule", "DynamicsRule", "MetropolisRule", "ToleranceRule"],
    "accelerator": ["AcceleratorStats", "ForecastAccelerator"],
    "analysis": ["BASINS", "basin_populations", "check_phi_psi", "compute_phi_psi", "count_transitions",
                 "js_convergence", "js_divergence", "js_divergence_phi_psi", "load_phi_psi", "ramachandran_histogram",
                 "window_js"],
    "barriers": ["lower_barriers", "surrogate_free_energy"],
    "benchmark": ["BenchmarkArm", "run_benchmark"],
    "cycles": ["GHMCCycle"],
    "data": ["TrajectoryData", "data_fingerprint", "generate_nve_segments", "generate_nvt", "load_trajectory"],
    "errors": ["BadForecastError", "CheckpointError", "DataFileError", "ForecastError", "ModelFileError",
               "ModelMismatchError", "OptionalDependencyError", "PluginError", "PotentialEvaluationError",
               "RunInterrupted", "UnitError", "UnknownSetupError", "UnsupportedSystemError"],
    "evaluation": ["evaluate"],
    "forecasters": ["BallisticForecaster", "ConstantForecaster", "Forecaster", "ForecasterMetadata",
                    "SurrogateForecaster", "TorchForecaster", "VerletForecaster", "available_architectures",
                    "is_structure_preserving", "load_forecaster", "save_forecaster"],
    "forecasters.surrogate": ["load_surrogate_system", "shipped_surrogates"],
    "integrators": ["velocity_verlet_integrator"],
    "platforms": ["PlatformConfiguration", "fastest_configuration", "fastest_platform"],
    "plotting": ["plot_ramachandran"],
    "plugin": ["ForecastIntegrator"],
    "potential_training": ["fit_potential"],
    "potentials": ["TorchANIPotential", "ani2x_module", "build_ani_potential", "load_potential", "save_potential"],
    "surrogate_fitting": ["AmberSurrogateEnergy", "fit_surrogate", "long_jump_acceptance", "sample_target"],
    "systems": ["MolecularSystem", "SETUPS", "ani1x_force", "build_system"],
    "training": ["TrainingConfig", "train"],
    "walkers": ["ForecastWalkers", "PlainWalkers"],
}
"""The 78 names of the top-level API before issue 22, by the submodule that keeps them."""


def test_every_public_name_is_defined_once():
    names = openmm_forecast.__all__
    assert len(names) == len(set(names)), [name for name in names if names.count(name) > 1]
    missing = [name for name in names if not hasattr(openmm_forecast, name)]
    assert missing == []


def test_the_public_api_is_small_and_holds_the_extension_points():
    assert len(openmm_forecast.__all__) <= 50
    for name in ("ForecastAccelerator", "AcceleratorOptions", "register_architecture", "AcceptanceRule",
                 "MolecularSystem", "build_system", "ForecastIntegrator", "fit_surrogate", "run_benchmark"):
        assert name in openmm_forecast.__all__


@pytest.mark.parametrize("module", sorted(FORMERLY_AT_THE_TOP))
def test_names_once_at_the_top_stay_importable_from_their_submodule(module):
    imported = importlib.import_module(f"openmm_forecast.{module}")
    missing = [name for name in FORMERLY_AT_THE_TOP[module] if not hasattr(imported, name)]
    assert missing == []


def test_a_top_level_name_is_its_submodule_object():
    """No wrapper or copy at the top: ``openmm_forecast.X`` is the submodule's ``X``."""
    for module, names in FORMERLY_AT_THE_TOP.items():
        imported = importlib.import_module(f"openmm_forecast.{module}")
        for name in set(names) & set(openmm_forecast.__all__):
            assert getattr(openmm_forecast, name) is getattr(imported, name), name
