"""Unit helpers: whole numbers of steps."""

import pytest

from openmm_forecast.units import whole_steps


def test_whole_steps_counts_and_refuses_fractions_negatives_and_zero():
    assert whole_steps(0.01, 0.002, "span") == 5
    assert whole_steps(1.0, 0.0005, "span") == 2000  # round-off in 1.0 / 0.0005 is tolerated
    assert whole_steps(0.0, 0.002, "span", allow_zero=True) == 0
    for span in (0.003, -0.004, 0.0):
        with pytest.raises(ValueError, match="span .* whole number of time steps: a multiple of the time step"):
            whole_steps(span, 0.002, "span")
