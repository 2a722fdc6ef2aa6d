"""The Ray backend: the same samples as in-process walkers, a lost actor resumed from its checkpoint, clear errors.

One private two-CPU local Ray cluster for the module (no dashboard, nothing outside this machine), two workers
of one CPU each.  Walkers run on the CPU platform with one thread: each Context keeps its own random stream and
one thread sums forces in a fixed order, so a walker's trajectory is bitwise the same in any process.
"""

import sys
import time

import numpy as np
import pytest
from openmm import unit

from openmm_forecast.distributed import INSTALL_HINT, TargetDescription, WalkerWorker
from openmm_forecast.errors import UsageError
from openmm_forecast.platforms import PlatformConfiguration
from openmm_forecast.walkers import ForecastWalkers, PlainWalkers

CPU = PlatformConfiguration.create("CPU", {"Threads": 1})
INTERVAL = 0.05 * unit.picosecond
VERLET = {"stride_ps": 0.01 * unit.picosecond, "max_frames": 4}


@pytest.fixture(scope="module")
def backend():
    ray = pytest.importorskip("ray")
    from openmm_forecast.distributed import RayBackend

    if ray.is_initialized():
        ray.shutdown()
    backend = RayBackend(num_cpus=2, workers=2)
    yield backend
    backend.shutdown()


def _kill_before_round(monkeypatch, walkers, worker, round_number):
    """Kill ``worker``'s actor (and wait until it is dead) before the ``round_number``-th round (from 1) of sampling,
    so that the round's request finds it lost."""
    import ray

    original, rounds = walkers._round, []

    def round_(*arguments):
        rounds.append(1)
        if len(rounds) == round_number:
            actor = walkers._actors[worker]
            ray.kill(actor)
            # ray.kill is asynchronous: a call sent right after it was seen answered (1 run in 4, under load).
            for _ in range(100):
                try:
                    ray.get(actor.info.remote())
                except ray.exceptions.RayActorError:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the killed actor still answers after 5 s")
        return original(*arguments)

    monkeypatch.setattr(walkers, "_round", round_)


def test_plain_walkers_same_samples_and_a_lost_actor_resumes(backend, vacuum_system, monkeypatch):
    local = PlainWalkers(vacuum_system, 4, seed=3, platform=CPU).sample(INTERVAL, n_samples=6)
    walkers = backend.walkers(vacuum_system, 4, seed=3, platform=CPU)
    _kill_before_round(monkeypatch, walkers, worker=1, round_number=2)  # after the first round's checkpoint
    remote = walkers.sample(INTERVAL, n_samples=6)

    assert len(walkers.restarts) == 1 and walkers.restarts[0]["walkers"] == [5, 6]
    assert remote.positions_nm.shape == local.positions_nm.shape  # no sample lost or repeated
    np.testing.assert_array_equal(remote.positions_nm, local.positions_nm)
    np.testing.assert_array_equal(remote.temperature_K, local.temperature_K)
    np.testing.assert_allclose(remote.time_ps, local.time_ps)
    assert np.all(np.diff(remote.wall_s) >= 0)
    placement = walkers.placement()
    first_pids = {entries[0]["pid"] for entries in placement}
    assert len(first_pids) == 2 and all(len(entries) == 1 for entries in placement[:2])
    replaced = placement[2:]
    assert all(len(entries) == 2 and entries[1]["first_sample"] == walkers.restarts[0]["at_sample"] > 0
               and entries[1]["pid"] not in first_pids for entries in replaced)

    more = walkers.sample(INTERVAL, wall_seconds=0.5)  # a wall-clock budget, met in rounds
    assert more.wall_s[-1] >= 0.5
    np.testing.assert_allclose(more.time_ps, INTERVAL.value_in_unit(unit.picosecond) * np.arange(1, len(more.time_ps) + 1))


def test_forecast_walkers_same_samples_and_statistics(backend, vacuum_system):
    local = ForecastWalkers(vacuum_system, "verlet", 4, seed=3, platform=CPU, forecaster_options=VERLET)
    expected = local.sample(INTERVAL, n_samples=5)
    walkers = backend.walkers(vacuum_system, 4, seed=3, platform=CPU, forecaster="verlet", forecaster_options=VERLET)
    remote = walkers.sample(INTERVAL, n_samples=5)

    np.testing.assert_array_equal(remote.positions_nm, expected.positions_nm)
    ours, theirs = walkers.stats().as_dict(), local.stats().as_dict()
    assert ours["jumps_attempted"] > 0
    for key in ("jumps_attempted", "jumps_accepted", "jumped_ps", "integrated_ps"):
        assert ours[key] == theirs[key], key
    assert repr(walkers.rule) == repr(local.rule)
    assert walkers.forecast_calls >= local.forecast_calls  # each worker batches only its own walkers


def test_forecast_walkers_restored_from_their_checkpoint_continue_exactly(vacuum_system):
    """What a replacement actor does (the plain case is killed through Ray above): restore, then sample on."""
    first = ForecastWalkers(vacuum_system, "verlet", 2, seed=3, platform=CPU, forecaster_options=VERLET)
    first.sample(INTERVAL, n_samples=2)
    checkpoint = first.checkpoint()
    expected = first.sample(INTERVAL, n_samples=3)
    restored = ForecastWalkers(vacuum_system, "verlet", 2, seed=3, platform=CPU, forecaster_options=VERLET,
                               minimize=False)
    restored.restore(checkpoint)
    continued = restored.sample(INTERVAL, n_samples=3)
    np.testing.assert_array_equal(continued.positions_nm, expected.positions_nm)
    assert restored.stats().as_dict()["jumps_attempted"] == first.stats().as_dict()["jumps_attempted"] > 0
    assert restored.forecast_calls == first.forecast_calls


def test_a_forecaster_object_is_refused(backend, vacuum_system):
    from openmm_forecast.forecasters import VerletForecaster

    with pytest.raises(UsageError, match="name or file path"):
        backend.walkers(vacuum_system, 2, forecaster=VerletForecaster(vacuum_system, stride_ps=0.01, max_frames=2))


def test_target_description_rebuilds_the_same_system(vacuum_system):
    description = TargetDescription.of(vacuum_system)
    assert description.system_xml is not None and description.build_options is None
    rebuilt = description.build()
    assert rebuilt.fingerprint() == vacuum_system.fingerprint()
    assert rebuilt.elements == vacuum_system.elements
    np.testing.assert_array_equal(rebuilt.positions.value_in_unit(unit.nanometer), description.positions_nm)


def test_a_worker_that_rebuilds_another_system_refuses(vacuum_system):
    import dataclasses

    wrong = dataclasses.replace(TargetDescription.of(vacuum_system), fingerprint="0" * 64)
    with pytest.raises(UsageError, match="another System"):
        WalkerWorker(wrong, seeds=[1], platform=CPU)


def test_backend_ray_without_ray_names_the_install_command(monkeypatch):
    from openmm_forecast.distributed import RayBackend

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UsageError, match=r"--backend ray.*" + INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        RayBackend()


def test_benchmark_through_ray_records_where_each_walker_ran(backend, vacuum_system, tmp_path):
    import os

    from openmm_forecast.benchmark import BenchmarkArm, run_benchmark

    report = run_benchmark([BenchmarkArm("plain", vacuum_system)], str(tmp_path / "bench"), n_walkers=2,
                           wall_seconds=0.5, reference=False, platform=CPU, pin=False, progress=False,
                           backend=backend)
    assert report["backend"]["backend"] == "ray" and report["backend"]["workers"] == 2
    ran_on = report["arms"]["plain"]["walkers_ran_on"]
    pids = [entries[0]["pid"] for entries in ran_on]
    assert len(ran_on) == 2 and len(set(pids)) == 2 and os.getpid() not in pids
    assert np.load(tmp_path / "bench" / "plain_phipsi.npy").shape[0] == 2


def test_cli_backend_ray_without_ray_names_the_flag_and_the_install_command(monkeypatch, tmp_path, capsys):
    from openmm_forecast.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["benchmark", "--setup", "amber14-vacuum", "--arm", "plain", "--walkers", "1", "--wall-seconds", "0.1",
                 "--no-reference", "--backend", "ray", "--out", str(tmp_path / "out")])
    assert code == 2
    error = capsys.readouterr().err
    assert "--backend ray" in error and INSTALL_HINT in error
    assert not (tmp_path / "out").exists()


def test_run_command_in_a_ray_worker_writes_the_same_run(backend, tmp_path, capsys):
    import json
    import os

    from openmm_forecast.cli import build_parser
    from openmm_forecast.cli.run import run
    from openmm_forecast.distributed import run_remotely

    def arguments(out, where):
        return build_parser().parse_args(["run", "--setup", "amber14-vacuum", "--model", "verlet", "--stride", "10",
                                          "--max-frames", "4", "--time", "1", "--report-interval", "0.25",
                                          "--checkpoint-interval", "0.5", "--platform", "Reference", "--no-progress",
                                          "--backend", where, "--out", str(out)])

    # Reference: the CPU platform with two threads hands out work dynamically, so even two local runs of the same
    # command differ in the last bits (seen under load); Reference is deterministic for a fixed seed.
    assert run(arguments(tmp_path / "local", "local")) == 0
    assert run_remotely(run, arguments(tmp_path / "ray", "ray"), backend) == 0
    assert capsys.readouterr().out.count("jumps accepted") == 2  # the worker's summary line is printed here too
    assert (tmp_path / "ray" / "log.csv").read_text() == (tmp_path / "local" / "log.csv").read_text()
    ran_on = json.loads((tmp_path / "ray" / "stats.json").read_text())["ran_on"]
    assert ran_on["pid"] != os.getpid() and "node_id" in ran_on


def test_a_system_xml_cannot_hold_is_rebuilt_from_its_setup_or_refused():
    import dataclasses

    from openmm_forecast import build_system

    ani1x = build_system("ani1x")  # a TorchForce: OpenMM's XML cannot hold it
    description = TargetDescription.of(ani1x)
    assert description.system_xml is None and description.build_options is not None
    assert description.build().fingerprint() == ani1x.fingerprint()
    with pytest.raises(UsageError, match="--backend local"):
        TargetDescription.of(dataclasses.replace(ani1x, setup="user"))


def test_fit_surrogate_sampling_chains_through_ray_are_the_local_ones(backend, vacuum_system):
    """fit-surrogate's target chains as Ray tasks, one per worker: the same frames, energies and forces, bitwise
    (CPU platform, one thread), as the chains run one after the other here; where each ran is recorded."""
    from openmm_forecast.surrogate_fitting import sample_target

    options = dict(n_chains=2, frame_interval_ps=0.02, equilibration_ps=0.02, seed=5, platform=CPU)
    local = sample_target(vacuum_system, 12, **options)
    before = len(backend.placements)
    remote = sample_target(vacuum_system, 12, backend=backend, **options)
    for here, there in zip(local, remote):
        assert here.shape[0] == 12 and np.array_equal(here, there)
    placements = backend.placements[before:]
    assert len(placements) == 2 and all("node_id" in place for place in placements)
