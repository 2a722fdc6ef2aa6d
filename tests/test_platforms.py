"""Platform configurations chosen by measurement: platform, threads and pinning."""

import os

import pytest

from openmm_forecast import platforms
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.platforms import (
    PlatformConfiguration,
    PlatformTiming,
    candidate_configurations,
    fastest_configuration,
    get_platform,
    platform_properties,
    time_configuration,
)

FAST = PlatformConfiguration.create("Reference")
SLOW = PlatformConfiguration.create("CPU", {"Threads": 1})


@pytest.fixture
def stub_timings(monkeypatch):
    """time_configuration replaced by given block timings per configuration (the choice logic alone)."""
    table = {}

    def fake(molecular_system, configuration, **options):
        blocks = table.get(configuration)
        return None if blocks is None else PlatformTiming(configuration, list(blocks))

    monkeypatch.setattr(platforms, "time_configuration", fake)
    platforms._cache.clear()
    yield table
    platforms._cache.clear()


@pytest.mark.parametrize("slow_first", [True, False])
def test_the_faster_of_two_configurations_4x_apart_is_chosen(vacuum_system, stub_timings, slow_first):
    stub_timings[FAST] = [100.0, 130.0, 110.0, 95.0, 105.0]  # noisy, but the median is 105
    stub_timings[SLOW] = [420.0, 400.0, 430.0, 390.0, 410.0]
    order = [SLOW, FAST] if slow_first else [FAST, SLOW]
    best, timings = fastest_configuration(vacuum_system, order)
    assert best == FAST and timings[SLOW].us_per_step == 410.0
    stub_timings[FAST], stub_timings[SLOW] = stub_timings[SLOW], stub_timings[FAST]  # the control: swap speeds
    platforms._cache.clear()
    assert fastest_configuration(vacuum_system, order)[0] == SLOW


def test_a_configuration_that_cannot_run_is_skipped_and_none_at_all_is_an_error(vacuum_system, stub_timings):
    stub_timings[SLOW] = [50.0]
    assert fastest_configuration(vacuum_system, [FAST, SLOW])[0] == SLOW
    platforms._cache.clear()
    with pytest.raises(RuntimeError, match="no OpenMM platform"):
        fastest_configuration(vacuum_system, [FAST])


def test_real_timings_repeat_and_the_choice_is_not_slower_than_an_independent_measurement(vacuum_system):
    candidates = [FAST, PlatformConfiguration.create("CPU", {"Threads": 1})]
    platforms._cache.clear()
    best, timings = fastest_configuration(vacuum_system, candidates)
    assert set(timings) == set(candidates)
    for timing in timings.values():
        assert len(timing.block_us_per_step) == 5 and timing.us_per_step > 0
    again = {c: time_configuration(vacuum_system, c).us_per_step for c in candidates}
    # Two measurements on a shared machine agree only roughly: the choice may not be more than 2x slower than the
    # best of the second measurement.
    assert again[best] <= 2.0 * min(again.values())


def test_unstable_timings_are_flagged():
    timing = PlatformTiming(FAST, [100.0, 350.0, 120.0])
    assert timing.variation == 3.5 and timing.us_per_step == 120.0 and not timing.as_dict()["stable"]
    assert PlatformTiming(FAST, [100.0, 150.0]).as_dict()["stable"]


@pytest.mark.skipif(not platforms.can_pin(), reason="needs sched_setaffinity and two cores")
def test_pinning_pins_the_thread_and_restores_it():
    before = os.sched_getaffinity(0)
    saved = platforms.pin_to_one_core()
    try:
        assert saved == before and platforms.pinned_core() == min(before)
        # a pinned thread offers only pinned candidates to a library call that does not pin
        assert {c.pinned for c in candidate_configurations(pinning=True)} == {True}
    finally:
        platforms.restore_affinity(saved)
    assert os.sched_getaffinity(0) == before and platforms.pinned_core() is None


def test_candidates_cover_reference_cpu_threads_and_both_pinning_states():
    labels = {c.label for c in candidate_configurations()}
    if platforms.pinned_core() is not None:  # confined to one core already (taskset): everything runs pinned
        assert {"Reference, pinned", "CPU Threads=1, pinned"} <= labels and all(", pinned" in x for x in labels)
    elif platforms.can_pin():
        assert {"Reference", "CPU Threads=1", "CPU Threads=1, pinned"} <= labels
        assert {c.pinned for c in candidate_configurations(pinning=True)} == {True}
        assert {c.pinned for c in candidate_configurations(pinning=False)} == {False}
    else:
        assert {"Reference", "CPU Threads=1"} <= labels and not any(", pinned" in x for x in labels)


def test_a_configuration_carries_its_properties_to_the_context(vacuum_system):
    configuration = PlatformConfiguration.create("CPU", {"Threads": 1})
    simulation = vacuum_system.create_simulation(platform=configuration, seed=1, minimize=False)
    platform = simulation.context.getPlatform()
    assert platform.getName() == "CPU" and platform.getPropertyValue(simulation.context, "Threads") == "1"
    assert platform_properties("Reference") == {} and platform_properties(configuration) == {"Threads": "1"}


def test_unknown_platform_is_refused_with_the_list():
    with pytest.raises(ValueError, match="Reference"):
        get_platform("Quantum")
    assert isinstance(get_platform("Reference"), mm.Platform)
    assert get_platform(FAST).getName() == "Reference"
