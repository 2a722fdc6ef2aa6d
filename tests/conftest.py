"""Shared fixtures: fixed seeds and small systems."""

import numpy as np
import pytest

import openmm_forecast  # noqa: F401  (torch before openmm for every test module)


@pytest.fixture
def rng():
    """A fixed-seed NumPy generator."""
    return np.random.default_rng(20261121)


@pytest.fixture(scope="session")
def vacuum_system():
    """amber14-vacuum alanine dipeptide with HBonds constraints (built once per session; do not modify)."""
    return openmm_forecast.build_system("amber14-vacuum")
