"""Platform choice by measurement."""

import pytest

from openmm_forecast._runtime import openmm as mm
from openmm_forecast.platforms import available_platforms, fastest_platform, get_platform, time_platforms


def test_fastest_platform_is_the_fastest_measured(vacuum_system):
    timings = time_platforms(vacuum_system, n_steps=200)
    assert set(timings) <= set(available_platforms()) and {"Reference", "CPU"} <= set(timings)
    chosen = fastest_platform(vacuum_system).getName()
    # GPU platforms are measured like the others.  The choice must not be much slower than the best of an
    # independent measurement.
    assert timings[chosen] <= 2.0 * min(timings.values())


def test_unknown_platform_is_refused_with_the_list():
    with pytest.raises(ValueError, match="Reference"):
        get_platform("Quantum")
    assert isinstance(get_platform("Reference"), mm.Platform)
