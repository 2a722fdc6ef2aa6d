"""Shared fixtures: fixed seeds and small systems."""

import numpy as np
import pytest

import openmm_forecast  # noqa: F401  (torch before openmm for every test module)


@pytest.fixture
def rng():
    """A fixed-seed NumPy generator."""
    return np.random.default_rng(20261121)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (ML potentials on a shared 2-core CPU run ~7x slower with two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def vacuum_system():
    """amber14-vacuum alanine dipeptide with HBonds constraints (built once per session; do not modify)."""
    return openmm_forecast.build_system("amber14-vacuum")
