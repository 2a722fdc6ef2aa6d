"""The benchmark harness: a complete, consistent report on a tiny budget; the speed-up arithmetic; the CLI."""

import hashlib
import json
import os

import numpy as np
import pytest
from openmm import unit

from openmm_forecast import build_system
from openmm_forecast.analysis import js_divergence, ramachandran_histogram
from openmm_forecast.benchmark import (
    REQUIRED_ARM_KEYS,
    _reference_mismatch,
    convergence_curve,
    length_for_js,
    load_reference_runs,
    reference_window_curve,
    run_benchmark,
    run_interleaved,
    time_to_js,
)
from openmm_forecast.cli import main
from openmm_forecast.errors import DataFileError
from openmm_forecast.forecasters import create_forecaster, save_forecaster
from openmm_forecast.forecasters import registry
from openmm_forecast.walkers import PlainWalkers

from forecast_helpers import TINY


def synthetic_run(rng, n_frames):
    """phi/psi (degrees) from a two-basin mixture resembling alanine dipeptide in vacuum."""
    beta = rng.random(n_frames) < 0.7
    phi = np.where(beta, rng.normal(-80.0, 25.0, n_frames), rng.normal(-75.0, 15.0, n_frames))
    psi = np.where(beta, rng.normal(150.0, 20.0, n_frames), rng.normal(-35.0, 15.0, n_frames))
    return np.stack([phi, psi], axis=1)


@pytest.fixture
def reference_dir(tmp_path, rng):
    directory = tmp_path / "reference"
    directory.mkdir()
    for seed in (1, 2):
        np.save(directory / f"run{seed}_phipsi.npy", synthetic_run(rng, 4000))
    np.save(directory / "positions.npy", np.zeros((3, 22, 3)))  # not phi/psi: skipped
    return directory


def check_arm(arm, n_walkers):
    for key in REQUIRED_ARM_KEYS:
        assert key in arm, key
    for key in ("simulated_ns", "wall_seconds", "ns_per_day", "js_to_reference"):
        assert isinstance(arm[key], float) and np.isfinite(arm[key]), key
    assert arm["wall_seconds"] >= arm["wall_budget_seconds"]
    # Simulated time is walkers x samples x interval, and ns/day is that over the wall clock.
    assert arm["simulated_ns"] == pytest.approx(n_walkers * arm["samples_per_walker"] * arm["sample_interval_ps"] / 1000)
    assert arm["ns_per_day"] == pytest.approx(arm["simulated_ns"] / arm["wall_seconds"] * 86400)
    assert 0 <= arm["js_to_reference"] <= np.log(2)
    populations = [basin["population"] for basin in arm["basins"].values()]
    assert sum(populations) == pytest.approx(1.0)
    assert isinstance(arm["transitions"]["total"], int) and arm["transitions"]["total"] >= 0
    assert arm["transitions"]["total"] == sum(sum(row.values()) for row in arm["transitions"]["counts"].values())


def test_benchmark_report_records_the_surrogate_and_the_rule(vacuum_system, reference_dir, tmp_path):
    """Options that are not JSON types (a time step, a rule object) are recorded as text, not a crash."""
    from openmm_forecast.acceptance import DynamicsRule

    report = run_benchmark(vacuum_system, "surrogate", str(tmp_path / "bench"), n_walkers=1, wall_seconds=0.5,
                           reference=str(reference_dir), progress=False, platform="Reference", slice_seconds=None,
                           forecaster_options={"stride_ps": 0.01, "max_frames": 2, "timestep": 2 * unit.femtosecond},
                           acceptance=DynamicsRule(drift_window=5))
    on_disk = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert on_disk["acceptance"] == report["acceptance"] == "DynamicsRule(drift_window=5)"
    assert on_disk["forecaster"]["structure_preserving"] is True
    assert on_disk["forecaster"]["options"]["timestep"] == "2 fs"


def test_tiny_benchmark_writes_a_complete_consistent_report(vacuum_system, reference_dir, tmp_path):
    out = tmp_path / "bench"
    report = run_benchmark(vacuum_system, "verlet", str(out), n_walkers=2, wall_seconds=1.5,
                           reference=str(reference_dir), forecaster_options={"stride_ps": 0.01, "max_frames": 4},
                           progress=False, platform="Reference", slice_seconds=0.5)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["speedup_ns_per_day"] == pytest.approx(report["speedup_ns_per_day"])
    for name in ("ramachandran.png", "convergence.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    machine = on_disk["machine"]
    assert isinstance(machine["cpu_model"], str) and machine["cpu_cores"] >= 1
    assert isinstance(machine["gpus"], list) and "Reference" in machine["openmm_platforms"]
    assert set(machine["versions"]) >= {"openmm", "torch", "numpy", "openmm_forecast"}
    assert on_disk["setup"] == "amber14-vacuum" and on_disk["walkers"] == 2
    check_arm(on_disk["plain"], 2)
    check_arm(on_disk["hybrid"], 2)
    hybrid, plain = on_disk["hybrid"], on_disk["plain"]
    # Exact dynamics as the forecaster: every jump passes the 1 kT guard.
    assert hybrid["acceptance_rate"] == 1.0
    assert on_disk["speedup_ns_per_day"] == pytest.approx(hybrid["ns_per_day"] / plain["ns_per_day"])
    detail = on_disk["time_to_js"]
    assert isinstance(detail["estimated"], bool) and isinstance(detail["method"], str)
    assert detail["target_js"] == pytest.approx(hybrid["js_to_reference"])
    assert on_disk["speedup_time_to_js"] == pytest.approx(detail["plain_wall_seconds"] / hybrid["wall_seconds"])
    assert len(on_disk["reference"]["files"]) == 2 and on_disk["reference"]["frames"] == 8000
    # The saved phi/psi reproduce the reported JS.
    hybrid_phi_psi = np.load(out / "hybrid_phipsi.npy")
    assert hybrid_phi_psi.shape == (2, hybrid["samples_per_walker"], 2)
    reference = np.concatenate([np.load(reference_dir / f"run{s}_phipsi.npy") for s in (1, 2)])
    js = js_divergence(ramachandran_histogram(hybrid_phi_psi.reshape(-1, 2)), ramachandran_histogram(reference))
    assert js == pytest.approx(hybrid["js_to_reference"], rel=1e-9)


def test_interleaved_arms_get_equal_budgets_and_continuous_records(vacuum_system):
    arms = {"a": PlainWalkers(vacuum_system, 1, platform="Reference"),
            "b": PlainWalkers(vacuum_system, seeds=[7, 8], platform="Reference")}
    samples = run_interleaved(arms, 0.01 * unit.picosecond, wall_seconds=0.6, slice_seconds=0.2, progress=False)
    for name, record in samples.items():
        assert record.wall_s[-1] >= 0.6
        assert np.all(np.diff(record.wall_s) > 0)
        np.testing.assert_allclose(np.diff(record.time_ps), 0.01)
        # The record covers exactly what the walkers simulated, and ends at their current state.
        steps = arms[name].simulations[0].currentStep
        assert steps == 5 * len(record.time_ps)
        np.testing.assert_allclose(record.positions_nm[-1], arms[name].positions_nm(), atol=1e-6)
    assert samples["b"].positions_nm.shape[1] == 2


def test_convergence_curve_pools_walkers_round_by_round(rng):
    reference = synthetic_run(rng, 5000)
    phi_psi = synthetic_run(rng, 3 * 40).reshape(3, 40, 2)
    curve = convergence_curve(phi_psi, ramachandran_histogram(reference))
    for rounds in (1, 7, 40):
        pooled = phi_psi[:, :rounds].reshape(-1, 2)
        expected = js_divergence(ramachandran_histogram(pooled), ramachandran_histogram(reference))
        assert curve[rounds - 1] == pytest.approx(expected, rel=1e-12)


def test_length_for_js_inverts_a_power_law():
    frames = np.array([10, 30, 100, 300, 1000])
    mean_js = 2.0 / frames  # JS = 2 / L
    length, how = length_for_js(frames, mean_js, 2.0 / 50)
    assert how == "interpolated" and length == pytest.approx(50)
    length, how = length_for_js(frames, mean_js, 2.0 / 20000)
    assert how.startswith("extrapolated") and length == pytest.approx(20000)
    assert length_for_js(frames, mean_js, 1.0) == (10.0, "shortest window")
    flat = np.array([0.1, 0.05, 0.05, 0.05, 0.05])
    assert length_for_js(frames, flat, 0.01)[0] == np.inf


def test_time_to_js_measured_and_estimated():
    wall = np.array([1.0, 2.0, 3.0, 4.0])
    plain_js = np.array([0.3, 0.1, 0.05, 0.04])
    curve = (np.array([10, 100, 1000]), np.array([0.1, 0.01, 0.001]))
    measured = time_to_js(0.06, plain_js, wall, 1000.0, 2.0, curve, 1.0)
    assert not measured["estimated"] and measured["plain_wall_seconds"] == 3.0 and measured["speedup"] == 1.5
    # Plain never gets to 0.01 in its budget: 100 frames of 1 ps = 0.1 ns at 1000 ns/day is 8.64 s.
    estimated = time_to_js(0.01, plain_js, wall, 1000.0, 2.0, curve, 1.0)
    assert estimated["estimated"] and "reference" in estimated["method"]
    assert estimated["plain_simulated_ns_needed"] == pytest.approx(0.1)
    assert estimated["plain_wall_seconds"] == pytest.approx(8.64)
    assert estimated["speedup"] == pytest.approx(4.32)
    # An estimate shorter than what plain MD already ran without getting there is replaced by that run.
    slow = time_to_js(0.01, plain_js, wall * 10, 1000.0, 2.0, curve, 1.0)
    assert slow["estimated"] and slow["plain_wall_seconds"] == 40.0 and "lower bound" in slow["method"]


def test_reference_window_curve_decreases_for_independent_samples(rng):
    runs = [synthetic_run(rng, 4000) for _ in range(2)]
    frames, mean_js = reference_window_curve(runs)
    assert frames[0] == 10 and frames[-1] == 2000
    # Independent frames: finite-sample JS falls roughly as 1 / length.
    assert np.all(np.diff(mean_js) < 0)
    assert mean_js[0] / mean_js[-1] > 30


def test_reference_loading_errors(tmp_path):
    with pytest.raises(DataFileError, match="--reference"):
        load_reference_runs(None)
    with pytest.raises(DataFileError, match="does not exist"):
        load_reference_runs(tmp_path / "missing")
    np.save(tmp_path / "positions.npy", np.zeros((4, 22, 3)))
    with pytest.raises(DataFileError, match="no phi/psi"):
        load_reference_runs(tmp_path)


def test_cli_benchmark_with_a_model_file(vacuum_system, reference_dir, tmp_path, capsys):
    model = create_forecaster(TINY, elements=vacuum_system.elements, stride_ps=0.002, max_frames=2, history=1,
                              setup=vacuum_system.setup, hidden=8)
    save_forecaster(model, tmp_path / "tiny.pt")
    out = tmp_path / "cli"
    code = main(["benchmark", "--model", str(tmp_path / "tiny.pt"), "--walkers", "2", "--wall-seconds", "0.5",
                 "--out", str(out), "--reference", str(reference_dir), "--no-progress", "--platform", "Reference"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "speed-up in ns/day" in printed and "report:" in printed
    forecaster = json.loads((out / "report.json").read_text())["forecaster"]
    assert forecaster["architecture"] == TINY
    assert forecaster["file_sha256"] == hashlib.sha256((tmp_path / "tiny.pt").read_bytes()).hexdigest()
    assert main(["benchmark", "--model", "verlet", "--out", str(tmp_path / "x"), "--reference",
                 str(tmp_path / "nothing"), "--wall-seconds", "1"]) == 1


def test_demo_refuses_to_run_without_the_shipped_model(monkeypatch, reference_dir, tmp_path, capsys):
    monkeypatch.setattr(registry, "shipped_models", lambda: [])
    assert main(["demo", "--out", str(tmp_path / "demo"), "--reference", str(reference_dir)]) == 1
    assert "ala2-amber14-vacuum" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "demo" / "report.json")


def test_a_run_under_other_conditions_than_the_reference_is_flagged(vacuum_system):
    assert _reference_mismatch(vacuum_system, shipped=True) is None
    hot = build_system("amber14-vacuum", temperature=400 * unit.kelvin)
    assert "temperature 400 K" in _reference_mismatch(hot, shipped=True)
    assert _reference_mismatch(hot, shipped=False) is None  # a user's reference: its temperature is unknown
    implicit = build_system("amber14-obc2")
    assert "setup 'amber14-obc2'" in _reference_mismatch(implicit, shipped=False)
