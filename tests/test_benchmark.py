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
    SHIPPED_REFERENCES,
    BenchmarkArm,
    _reference_mismatch,
    convergence_curve,
    default_reference_path,
    format_summary,
    length_for_js,
    load_reference_runs,
    plain_noise_js,
    reference_key,
    reference_window_curve,
    run_benchmark,
    run_interleaved,
    time_to_js,
)
from openmm_forecast.systems import resource_path
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
    for key in ("simulated_ns", "wall_seconds", "ns_per_day", "js_to_reference", "mean_temperature_K"):
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

    arm = BenchmarkArm("surrogate-dynamics", vacuum_system, "surrogate",
                       {"stride_ps": 0.01, "max_frames": 2, "timestep": 2 * unit.femtosecond},
                       {"acceptance": DynamicsRule(drift_window=5)})
    report = run_benchmark([BenchmarkArm("plain", vacuum_system), arm], str(tmp_path / "bench"), n_walkers=1,
                           wall_seconds=0.5, reference=str(reference_dir), progress=False, platform="Reference",
                           slice_seconds=None)
    on_disk = json.loads((tmp_path / "bench" / "report.json").read_text())["arms"]["surrogate-dynamics"]
    assert on_disk["acceptance"] == report["arms"]["surrogate-dynamics"]["acceptance"] == "dynamics"
    assert on_disk["acceptance_rule"] == "DynamicsRule(drift_window=5)"
    assert on_disk["forecaster"]["structure_preserving"] is True
    assert on_disk["forecaster"]["options"]["timestep"] == "2 fs"


def test_tiny_benchmark_of_three_arms_writes_a_complete_consistent_report(vacuum_system, reference_dir, tmp_path):
    out = tmp_path / "bench"
    hmr = build_system("amber14-vacuum", hydrogen_mass=1.5 * unit.amu, timestep=4 * unit.femtosecond)
    arms = [BenchmarkArm("plain", vacuum_system), BenchmarkArm("hmr", hmr),
            BenchmarkArm("verlet-tolerance", vacuum_system, "verlet", {"stride_ps": 0.01, "max_frames": 4})]
    report = run_benchmark(arms, str(out), n_walkers=2, wall_seconds=1.0, reference=str(reference_dir),
                           progress=False, platform="Reference", slice_seconds=0.5, sample_interval=0.1 * unit.picosecond,
                           reference_interval=0.1 * unit.picosecond)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    for name in ("ramachandran.png", "convergence.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    machine = on_disk["machine"]
    assert isinstance(machine["cpu_model"], str) and machine["cpu_cores"] >= 1
    assert isinstance(machine["gpus"], list) and "Reference" in machine["openmm_platforms"]
    assert set(machine["versions"]) >= {"openmm", "torch", "numpy", "openmm_forecast"}
    assert on_disk["setup"] == "amber14-vacuum" and on_disk["walkers"] == 2 and on_disk["baseline"] == "plain"
    assert list(on_disk["arms"]) == ["plain", "hmr", "verlet-tolerance"]
    for arm in on_disk["arms"].values():
        check_arm(arm, 2)
        # A thermostatted 22-atom molecule: the mean kinetic temperature of a few hundred samples is near 300 K.
        assert 200 < arm["mean_temperature_K"] < 400
    plain, hmr_arm, hybrid = (on_disk["arms"][name] for name in ("plain", "hmr", "verlet-tolerance"))
    assert plain["kind"] == hmr_arm["kind"] == "plain" and hybrid["kind"] == "hybrid"
    assert hmr_arm["timestep_fs"] == 4.0 and hmr_arm["hydrogen_mass_amu"] == 1.5 and plain["hydrogen_mass_amu"] is None
    # Exact dynamics as the forecaster: every jump passes the 1 kT guard.
    assert hybrid["acceptance"] == "tolerance" and hybrid["acceptance_rate"] == 1.0
    assert hybrid["speedup_ns_per_day"] == pytest.approx(hybrid["ns_per_day"] / plain["ns_per_day"])
    # The default bar is the baseline's final JS; the baseline reaches it (at the latest at its end), measured.
    bar = on_disk["js_bar"]
    assert bar["rule"] == "baseline_final" and bar["value"] == pytest.approx(plain["js_to_reference"])
    assert plain["time_to_bar"]["reached"] and not plain["time_to_bar"]["estimated"]
    assert plain["time_to_bar"]["wall_seconds"] <= plain["wall_seconds"]
    for arm in (hmr_arm, hybrid):
        reach = arm["time_to_bar"]
        if reach["reached"]:
            assert arm["speedup_time_to_bar"] == pytest.approx(plain["time_to_bar"]["wall_seconds"] / reach["wall_seconds"])
        else:
            assert arm["speedup_time_to_bar"] is None and reach["wall_seconds"] is None
        assert arm["time_to_js"]["target_js"] == pytest.approx(arm["js_to_reference"])
    first = on_disk["first_to_bar"]
    reached = {name: arm["time_to_bar"]["wall_seconds"] for name, arm in on_disk["arms"].items()
               if arm["time_to_bar"]["reached"]}
    assert first["arm"] == min(reached, key=reached.get)
    # Efficiency: every basin of every arm, ESS per second = samples / inefficiency over the wall clock, inside
    # its interval; ratios against both plain-MD arms; a winner only when its interval is above all others'.
    section = on_disk["efficiency"]
    assert section["observable"] == "beta indicator"
    for name, arm in on_disk["arms"].items():
        assert arm["cpu_seconds"] > 0
        for basin in ("beta", "alpha_R", "alpha_L"):
            value = arm["efficiency"][basin]
            assert value["samples"] == 2 * arm["samples_per_walker"] and len(value["jackknife_ess"]) == 2
            assert 1 <= value["statistical_inefficiency"] <= arm["samples_per_walker"]
            assert value["ess_per_second"] == pytest.approx(value["samples"] / value["statistical_inefficiency"]
                                                            / arm["wall_seconds"])
            if value["varied"]:
                assert value["interval"][0] <= value["ess_per_second"] <= value["interval"][1]
            else:  # a basin no walker visited (or left): nothing measured, no interval
                assert value["interval"] is None and value["ess"] == 2
        assert section["ess_per_second"][name]["value"] == arm["efficiency"]["beta"]["ess_per_second"]
        assert set(section["against"][name]) == {"plain", "hmr"} - {name}
    best = section["winner"]
    if best is not None:
        for name, value in section["ess_per_second"].items():
            assert name == best or value["interval"][1] < section["ess_per_second"][best]["interval"][0]
    if any(arm["efficiency"]["beta"]["interval"] is None for arm in on_disk["arms"].values()):
        assert best is None
    # The platform every arm ran on is named, with what was known of the choice (given here: nothing measured).
    for arm in on_disk["arms"].values():
        assert arm["platform"].startswith("Reference") and arm["platform_choice"]["by"] == "given"
        assert arm["platform_configuration"]["name"] == "Reference"
    assert len(on_disk["reference"]["files"]) == 2 and on_disk["reference"]["frames"] == 8000
    assert on_disk["reference"]["plain_md"] is True  # a user's reference is plain MD (--reference says so)
    # The saved phi/psi reproduce the reported JS.
    hybrid_phi_psi = np.load(out / "verlet-tolerance_phipsi.npy")
    assert hybrid_phi_psi.shape == (2, hybrid["samples_per_walker"], 2)
    reference = np.concatenate([np.load(reference_dir / f"run{s}_phipsi.npy") for s in (1, 2)])
    js = js_divergence(ramachandran_histogram(hybrid_phi_psi.reshape(-1, 2)), ramachandran_histogram(reference))
    assert js == pytest.approx(hybrid["js_to_reference"], rel=1e-9)
    assert hybrid["plain_noise_same_length"]["frames_per_walker"] == hybrid["samples_per_walker"]
    summary = format_summary(report)
    assert "winner:" in summary and "hmr: plain MD 4 fs, H 1.5 amu" in summary


def test_a_chain_reference_gives_js_but_no_plain_md_times_or_noise(vacuum_system, reference_dir, tmp_path,
                                                                    monkeypatch):
    """ANI-1x's reference is exact chains: their frames say nothing of how fast plain MD converges, so no arm's time
    to a JS is estimated from them and no plain-MD noise is quoted (both are for plain-MD references)."""
    import openmm_forecast.benchmark as benchmark

    monkeypatch.setitem(benchmark.SHIPPED_REFERENCES, "amber14-vacuum", str(reference_dir))
    monkeypatch.setattr(benchmark, "CHAIN_REFERENCES", ("amber14-vacuum",))
    assert not benchmark.reference_is_plain_md(str(reference_dir))
    arms = [BenchmarkArm("plain", vacuum_system),
            BenchmarkArm("verlet", vacuum_system, "verlet", {"stride_ps": 0.01, "max_frames": 4})]
    report = run_benchmark(arms, str(tmp_path / "bench"), n_walkers=1, wall_seconds=0.5, reference=str(reference_dir),
                           progress=False, platform="Reference", sample_interval=0.1 * unit.picosecond,
                           reference_interval=0.1 * unit.picosecond)
    assert report["reference"]["plain_md"] is False
    for arm in report["arms"].values():
        assert np.isfinite(arm["js_to_reference"]) and arm["plain_noise_same_length"] is None
        assert not arm["time_to_bar"]["estimated"]
    assert not report["arms"]["verlet"]["time_to_js"]["estimated"]


def test_a_benchmark_without_reference_measures_speed_only(vacuum_system, tmp_path):
    out = tmp_path / "noref"
    report = run_benchmark([BenchmarkArm("plain", vacuum_system)], str(out), n_walkers=1, wall_seconds=0.2,
                           reference=False, progress=False, platform="Reference", sample_interval=0.1 * unit.picosecond)
    arm = report["arms"]["plain"]
    assert arm["js_to_reference"] is None and arm["time_to_bar"] is None and arm["ns_per_day"] > 0
    assert report["js_bar"]["value"] is None and report["first_to_bar"] is None and report["reference"] is None
    assert report["efficiency"]["winner"] is None  # one arm: nothing to win against
    assert (out / "ramachandran.png").exists() and not (out / "convergence.png").exists()
    assert "no reference" in format_summary(report)


def test_arms_must_differ_in_name_and_share_molecule_potential_and_temperature(vacuum_system, tmp_path):
    with pytest.raises(ValueError, match="differ"):
        run_benchmark([BenchmarkArm("a", vacuum_system), BenchmarkArm("a", vacuum_system)], str(tmp_path), reference=False)
    with pytest.raises(ValueError, match="potential"):
        run_benchmark([BenchmarkArm("a", vacuum_system), BenchmarkArm("b", build_system("amber14-obc2"))],
                      str(tmp_path), reference=False)
    hot = build_system("amber14-vacuum", temperature=310 * unit.kelvin)
    with pytest.raises(ValueError, match="same ensemble"):
        run_benchmark([BenchmarkArm("a", vacuum_system), BenchmarkArm("b", hot)], str(tmp_path), reference=False)
    with pytest.raises(ValueError, match="names files"):
        BenchmarkArm("../x", vacuum_system)
    with pytest.raises(ValueError, match="plain MD"):
        BenchmarkArm("a", vacuum_system, accelerator_options={"metropolis": True})
    assert not os.listdir(tmp_path)


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


def test_time_to_js_measured_estimated_or_not_reached():
    wall = np.array([1.0, 2.0, 3.0, 4.0])
    js = np.array([0.3, 0.1, 0.05, 0.04])
    curve = (np.array([10, 100, 1000]), np.array([0.1, 0.01, 0.001]))
    measured = time_to_js(0.06, js, wall, 1000.0, curve, 1.0)
    assert measured["reached"] and not measured["estimated"] and measured["wall_seconds"] == 3.0
    # Never gets to 0.01 in its run: 100 frames of 1 ps = 0.1 ns at 1000 ns/day is 8.64 s.
    estimated = time_to_js(0.01, js, wall, 1000.0, curve, 1.0)
    assert estimated["estimated"] and not estimated["reached"] and "reference" in estimated["method"]
    assert estimated["simulated_ns_needed"] == pytest.approx(0.1)
    assert estimated["wall_seconds"] == pytest.approx(8.64)
    # An estimate shorter than what the arm already ran without getting there is replaced by that run.
    slow = time_to_js(0.01, js, wall * 10, 1000.0, curve, 1.0)
    assert slow["estimated"] and slow["wall_seconds"] == 40.0 and "lower bound" in slow["method"]
    # Without the reference curve (arms other than plain MD) there is no estimate.
    unknown = time_to_js(0.01, js, wall)
    assert unknown["wall_seconds"] is None and not unknown["reached"] and not unknown["estimated"]


def test_plain_noise_brackets_independent_samples_and_needs_enough_windows(rng):
    runs = [synthetic_run(rng, 4000) for _ in range(2)]
    noise = plain_noise_js(runs, n_walkers=4, frames_per_walker=200, n_draws=50)
    assert noise["windows_available"] == 40
    # Held out against a smaller reference that excludes the windows: higher than in the pool that contains them.
    assert noise["in_pool"]["mean"] < noise["held_out"]["mean"]
    # An independent sample of the same size from the same distribution falls in that range.
    fresh = synthetic_run(rng, 800)
    js = js_divergence(ramachandran_histogram(fresh), ramachandran_histogram(np.concatenate(runs)))
    assert noise["in_pool"]["p05"] < js < noise["held_out"]["p95"]
    # Twice as many frames per window: less noise.
    longer = plain_noise_js(runs, n_walkers=4, frames_per_walker=400, n_draws=50)
    assert longer["in_pool"]["mean"] < noise["in_pool"]["mean"]
    assert plain_noise_js(runs, n_walkers=4, frames_per_walker=2000) is None  # 4 windows, none left to hold out


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
    assert "winner" in printed and "report:" in printed
    report = json.loads((out / "report.json").read_text())
    assert list(report["arms"]) == ["plain", "tiny-tolerance"]
    forecaster = report["arms"]["tiny-tolerance"]["forecaster"]
    assert forecaster["architecture"] == TINY
    assert forecaster["file_sha256"] == hashlib.sha256((tmp_path / "tiny.pt").read_bytes()).hexdigest()
    assert main(["benchmark", "--model", "verlet", "--out", str(tmp_path / "x"), "--reference",
                 str(tmp_path / "nothing"), "--wall-seconds", "1"]) == 1


def test_cli_arms_plain_hmr_and_a_rule(reference_dir, tmp_path):
    out = tmp_path / "arms"
    code = main(["benchmark", "--arm", "plain", "--arm", "hmr", "--arm", "v=verlet:metropolis", "--walkers", "1",
                 "--wall-seconds", "0.3", "--out", str(out), "--reference", str(reference_dir), "--no-progress",
                 "--platform", "Reference", "--hmr-mass", "2", "--sample-interval", "0.1", "--reference-interval", "0.1",
                 "--js-bar", "0.5"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["arms"]) == ["plain", "hmr", "v"]
    assert report["js_bar"] == {"value": 0.5, "rule": "fixed", "description": "fixed JS 0.5"}
    assert report["arms"]["hmr"]["hydrogen_mass_amu"] == 2.0 and report["arms"]["hmr"]["timestep_fs"] == 4.0
    assert report["arms"]["v"]["acceptance"] == "metropolis"
    assert report["arms"]["v"]["accelerator_options"]["acceptance"] == "metropolis"


@pytest.mark.parametrize("arm, message", [("plain:metropolis", "takes no acceptance rule"),
                                          ("verlet:sometimes", "unknown acceptance rule"), ("x=", "no model")])
def test_cli_refuses_bad_arms_before_running(arm, message, tmp_path, capsys):
    # An argument error: exit 2, as argparse's (issue 21).
    assert main(["benchmark", "--arm", arm, "--out", str(tmp_path / "bad"), "--no-reference"]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")


def test_each_setup_gets_the_reference_of_its_own_potential(vacuum_system, monkeypatch, tmp_path):
    monkeypatch.delenv("OPENMM_FORECAST_REFERENCE", raising=False)
    assert default_reference_path(vacuum_system) == resource_path("reference")
    obc2 = build_system("amber14-obc2")
    assert reference_key(obc2) == "amber14-obc2"
    assert default_reference_path(obc2) == resource_path(SHIPPED_REFERENCES["amber14-obc2"])
    runs, files = load_reference_runs(default_reference_path(obc2))
    assert len(runs) >= 2 and all("obc2" in os.path.basename(name) for name in files)
    # HMR changes masses, not the configurational distribution: the same reference.
    assert reference_key(build_system("amber14-obc2", hydrogen_mass=1.5 * unit.amu)) == "amber14-obc2"
    with pytest.raises(DataFileError, match="no reference ships for setup 'amber14-tip3p'.*--no-reference"):
        default_reference_path(build_system("amber14-tip3p"))
    monkeypatch.setenv("OPENMM_FORECAST_REFERENCE", str(tmp_path))
    assert default_reference_path(obc2) == str(tmp_path)


def test_ml_potentials_are_keyed_by_the_shipped_file_they_come_from(tmp_path):
    import shutil

    from openmm_forecast.potentials import shipped_potential

    shipped = build_system("ml", potential_file="ala2-ani-amber14")
    assert reference_key(shipped) == "ala2-ani-amber14"
    copy = tmp_path / "ala2-ani-amber14.pt"
    shutil.copy(shipped_potential("ala2-ani-amber14"), copy)
    assert reference_key(build_system("ml", potential_file=str(copy))) == "ala2-ani-amber14"


def test_a_run_under_other_conditions_than_the_shipped_reference_is_flagged(vacuum_system):
    vacuum_reference = resource_path("reference")
    assert _reference_mismatch(vacuum_system, vacuum_reference) is None
    hot = build_system("amber14-vacuum", temperature=400 * unit.kelvin)
    assert "temperature 400 K" in _reference_mismatch(hot, vacuum_reference)
    assert _reference_mismatch(hot, "/somewhere/else") is None  # a user's reference: its conditions are unknown
    implicit = build_system("amber14-obc2")
    assert "setup 'amber14-obc2'" in _reference_mismatch(implicit, vacuum_reference)
    assert _reference_mismatch(implicit, resource_path(SHIPPED_REFERENCES["amber14-obc2"])) is None


def _demo_args(argv):
    from openmm_forecast.cli import build_parser

    return build_parser().parse_args(["demo"] + argv)


def test_demo_arms_and_settings_per_setup():
    from openmm_forecast.cli.demo import demo_arms

    args = _demo_args([])
    ghmc = ["learned=fit-amber14-obc2:ghmc@2000", "flat=fit-amber14-obc2-lowered:reweight"]
    assert args.setup == "amber14-obc2" and demo_arms(args) == ["plain", "hmr", *ghmc]
    # The demo's settings fill what the command line leaves open, and only that.
    assert (args.max_frames, args.sample_interval, args.segment_steps) == (1, 2.0, None)
    args = _demo_args(["--no-hmr", "--sample-interval", "4"])
    assert demo_arms(args) == ["plain", *ghmc] and args.sample_interval == 4.0
    args = _demo_args(["--setup", "ani1x"])
    assert demo_arms(args) == ["plain", "hmr", "fitted=fit-ani1x:ghmc@500"]
    assert (args.max_frames, args.sample_interval) == (1, 0.5)  # one 500 fs jump per sample
    args = _demo_args(["--setup", "amber14-vacuum"])
    assert demo_arms(args) == ["plain", "ala2-amber14-vacuum:tolerance"] and args.segment_steps is None
    assert args.sample_interval == 1.0
    with pytest.raises(SystemExit):
        _demo_args(["--setup", "amber14-tip3p"])


def test_vacuum_demo_refuses_to_run_without_the_shipped_model(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(registry, "shipped_models", lambda: [])
    assert main(["demo", "--setup", "amber14-vacuum", "--out", str(tmp_path / "demo")]) == 1
    assert "ala2-amber14-vacuum" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "demo" / "report.json")


def test_default_demo_runs_obc2_arms_against_the_obc2_reference(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENMM_FORECAST_REFERENCE", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--walkers", "1", "--wall-seconds", "0.2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "amber14-obc2" in printed and "winner" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["setup"] == "amber14-obc2"
    assert list(report["arms"]) == ["plain", "hmr", "learned", "flat"]
    assert report["reference"]["path"] == resource_path(SHIPPED_REFERENCES["amber14-obc2"])
    assert report["sample_interval_ps"] == 2.0 and report["reference_populations"]["alpha_L"]["population"] < 0.05
    arm = report["arms"]["learned"]
    assert arm["acceptance"] == "ghmc" and arm["forecaster"]["surrogate"] == "fit-amber14-obc2"
    assert arm["forecaster"]["structure_preserving"] and len(arm["forecaster"]["surrogate_fingerprint"]) == 64
    assert arm["forecaster"]["stride_ps"] == pytest.approx(2.0)
    flat = report["arms"]["flat"]
    assert flat["kind"] == "reweighted" and flat["reweighting"]["surrogate"] == "fit-amber14-obc2-lowered"


def test_an_arm_that_blows_up_stops_and_the_others_go_on(vacuum_system, caplog):
    """OpenMM's NaN error in one arm's slice: that arm keeps what it sampled, the others use their budget."""
    from openmm_forecast._runtime import openmm as mm
    from openmm_forecast.errors import PotentialEvaluationError

    class BlowsUp(PlainWalkers):
        slices = 0

        def sample(self, *args, **kwargs):
            self.slices += 1
            if self.slices > self.good_slices:
                raise mm.OpenMMException("Particle coordinate is NaN.  For more information, see ...")
            return super().sample(*args, **kwargs)

    bad = BlowsUp(vacuum_system, 1, platform="Reference")
    bad.good_slices = 1
    arms = {"good": PlainWalkers(vacuum_system, 1, platform="Reference"), "bad": bad}
    failures = {}
    samples = run_interleaved(arms, 0.01 * unit.picosecond, wall_seconds=0.6, slice_seconds=0.2, progress=False,
                              failures=failures)
    assert samples["good"].wall_s[-1] >= 0.6 and samples["bad"].wall_s[-1] < 0.6
    assert "Particle coordinate is NaN" in failures["bad"] and list(failures) == ["bad"]
    assert "the other arms go on" in caplog.text
    early = BlowsUp(vacuum_system, 1, platform="Reference")
    early.good_slices = 0
    with pytest.raises(PotentialEvaluationError, match="'early' blew up"):
        run_interleaved({"early": early}, 0.01 * unit.picosecond, wall_seconds=0.4, slice_seconds=0.2, progress=False)


def test_each_arm_runs_on_its_measured_fastest_configuration_and_pinning_follows_the_baseline(
        vacuum_system, monkeypatch):
    """choose_platforms with timings stubbed: the baseline's best decides pinning; another System (HMR) is
    timed on its own, in that pinning state; a given platform is used as given."""
    from openmm_forecast import platforms
    from openmm_forecast.benchmark import choose_platforms
    from openmm_forecast.platforms import PlatformConfiguration, PlatformTiming

    hmr = build_system("amber14-vacuum", hydrogen_mass=1.5 * unit.dalton, timestep=4 * unit.femtosecond)
    speeds = {("Reference", False): 400.0, ("Reference", True): 380.0, ("CPU", False): 900.0, ("CPU", True): 100.0}
    timed = []

    def fake(molecular_system, configuration, **options):
        timed.append((molecular_system is hmr, configuration))
        us = speeds[(configuration.name, configuration.pinned)] * (5.0 if molecular_system is hmr and
                                                                   configuration.name == "CPU" else 1.0)
        return PlatformTiming(configuration, [us, us])

    monkeypatch.setattr(platforms, "time_configuration", fake)
    monkeypatch.setattr(platforms, "can_pin", lambda: True)
    monkeypatch.setattr(platforms, "pinned_core", lambda: None)  # as on a free thread of a 2-core machine
    monkeypatch.setattr(platforms, "available_platforms", lambda: ["Reference", "CPU"])
    platforms._cache.clear()
    arms = [BenchmarkArm("plain", vacuum_system), BenchmarkArm("hmr", hmr), BenchmarkArm("v", vacuum_system, "verlet")]
    configurations, timings, pinned = choose_platforms(arms)
    platforms._cache.clear()
    assert pinned and configurations["plain"].name == "CPU" and configurations["plain"].pinned
    assert configurations["v"] == configurations["plain"]  # the same target System: the same measurement
    # HMR's System is timed on its own: there CPU is made 5x slower (500 us), so pinned Reference (380 us) wins
    assert configurations["hmr"] == PlatformConfiguration.create("Reference", pinned=True)
    assert all(c.pinned for is_hmr, c in timed if is_hmr)  # HMR timed only in the chosen pinning state
    assert len(timings["plain"]) == len([c for is_hmr, c in timed if not is_hmr])
    speeds[("CPU", True)] = speeds[("Reference", True)] = 500.0  # the control: unpinned wins, nothing is pinned
    configurations, _, pinned = choose_platforms(arms)
    platforms._cache.clear()
    assert not pinned and configurations["plain"] == PlatformConfiguration.create("Reference")
    given, timings, pinned = choose_platforms(arms, platform="Reference")
    assert {c.name for c in given.values()} == {"Reference"} and not pinned and timings["plain"] == []
    with pytest.raises(ValueError, match="pin"):
        choose_platforms(arms, pin="sometimes")


def test_a_measured_benchmark_names_platform_threads_pinning_and_the_baseline_speed(vacuum_system, tmp_path):
    """No platform given: each arm's configuration is measured; the report says which and how fast plain MD ran
    against the best measured; the process's affinity is restored afterwards."""
    import os

    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    report = run_benchmark([BenchmarkArm("plain", vacuum_system)], str(tmp_path / "measured"), n_walkers=1,
                           wall_seconds=0.5, reference=False, progress=False, sample_interval=0.1 * unit.picosecond)
    arm = report["arms"]["plain"]
    choice = arm["platform_choice"]
    assert choice["by"] == "measurement" and len(choice["timings"]) >= 2
    assert choice["best_us_per_step"] == min(t["us_per_step"] for t in choice["timings"]
                                             if t["pinned"] == choice["chosen"]["pinned"])
    assert arm["platform_configuration"]["name"] == choice["chosen"]["platform"]
    assert ("pinned to core" in arm["platform"]) == report["pinned"] == choice["chosen"]["pinned"]
    assert arm["us_per_step_in_run"] > 0 and arm["speed_vs_best_measured"] == pytest.approx(
        choice["best_us_per_step"] / arm["us_per_step_in_run"])
    if before is not None:
        assert os.sched_getaffinity(0) == before


def test_ani1x_reference_is_shipped_chains_with_populations_and_frames_for_js():
    """ANI-1x's reference (exact ghmc chains, scripts/make_chain_reference.py): independent chains of equal length
    whose angles are both the JS reference and the populations' frames (unweighted), and whose summary's
    populations are those of the frames."""
    from openmm_forecast.analysis import BASINS, assign_basins
    from openmm_forecast.benchmark import reference_frames, reference_populations

    system = build_system("ani1x")
    populations = reference_populations(system)
    assert populations["method"] == "exact ghmc chains"
    runs, _ = load_reference_runs(default_reference_path(system))
    assert len(runs) >= 2 and len({len(run) for run in runs}) == 1
    phi_psi, weights = reference_frames(populations["source"])
    assert np.allclose(weights, weights[0]) and len(phi_psi) == sum(len(run) for run in runs)
    labels = assign_basins(phi_psi)
    for index, basin in enumerate(BASINS):
        if not np.any(labels == index):  # a basin no chain visited has no population (unknown, not zero)
            assert basin.name not in populations
            continue
        assert np.mean(labels == index) == pytest.approx(populations[basin.name]["population"], abs=1e-6)
        assert populations[basin.name]["standard_error"] > 0
    assert populations["beta"]["population"] > 0.5  # C5/C7eq: ANI-1x's own chains start and mostly stay there


def test_a_basin_no_reference_seed_visited_has_no_reference_population(tmp_path, monkeypatch):
    """Zero frames in a basin in every seed means its population is unknown, not zero with no error (which would
    make every arm that finds the basin 'off the reference')."""
    import openmm_forecast.benchmark as benchmark

    seed = {"beta": {"population": 0.9, "interval_95": [0.85, 0.95]},
            "alpha_L": {"population": 0.0, "interval_95": [0.0, 0.0]}}
    summary = {"per_seed": {"seed1": seed, "seed2": seed}, "pooled_mean_of_seeds": {"beta": 0.9, "alpha_L": 0.0}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setitem(benchmark.SHIPPED_POPULATIONS, "amber14-vacuum", str(tmp_path / "summary.json"))
    populations = benchmark.reference_populations(build_system("amber14-vacuum"))
    assert "alpha_L" not in populations and populations["beta"]["population"] == 0.9
    assert populations["beta"]["standard_error"] > 0


def test_obc2_has_converged_reference_populations_and_arms_get_z_scores():
    """The shipped metadynamics reference: two seeds, populations summing to 1, alpha_L a few percent; an arm's
    z-score is its difference from the reference over the combined standard error."""
    from openmm_forecast.analysis import BASINS, assign_basins
    from openmm_forecast.benchmark import _populations_against, reference_frames, reference_populations

    populations = reference_populations(build_system("amber14-obc2"))
    assert populations["source"].endswith("summary.json")
    assert populations["method"] == "metadynamics, reweighted"
    basins = {name: value for name, value in populations.items() if name not in ("source", "method")}
    assert sum(value["population"] for value in basins.values()) == pytest.approx(1.0)
    assert 0.005 < basins["alpha_L"]["population"] < 0.05 and basins["alpha_L"]["standard_error"] > 0
    # the reweighted frames behind the plot give the same populations (each seed weighs the same)
    phi_psi, weights = reference_frames(populations["source"])
    labels = assign_basins(phi_psi)
    for index, basin in enumerate(BASINS):
        assert weights[labels == index].sum() / weights.sum() == pytest.approx(basins[basin.name]["population"],
                                                                               abs=1e-4)
    assert reference_populations(build_system("amber14-obc2", temperature=310 * unit.kelvin)) is None
    assert reference_populations(build_system("amber14-vacuum")) is None
    summary = {"basins": {"alpha_L": {"population": 0.1}}, "efficiency": {"alpha_L": {"standard_error": 0.03}}}
    against = _populations_against(summary, populations)["alpha_L"]
    combined = np.hypot(0.03, basins["alpha_L"]["standard_error"])
    assert against["z"] == pytest.approx((0.1 - basins["alpha_L"]["population"]) / combined)


def test_metadynamics_walkers_read_their_own_bias_and_weight_by_c_of_t(vacuum_system):
    """After the first deposit the bias at the walker's own torsions is the Gaussian's height (1 kJ/mol; bicubic
    table on a 5-degree grid: 3 %), and c(t) follows from the grid: kT ln(sum e^{gamma V/((gamma-1) kT)} /
    sum e^{V/((gamma-1) kT)}), computed here from Metadynamics' own bias array."""
    from openmm_forecast.benchmark import MetadynamicsWalkers

    walkers = MetadynamicsWalkers(vacuum_system, 2, seed=3, platform="Reference", deposit_ps=0.1, shared_bias=False)
    assert walkers.torsions.phi == (4, 6, 8, 14) and walkers.torsions.psi == (6, 8, 14, 16)
    walkers.step(50)  # one deposit (0.1 ps of 2 fs steps)
    meta = walkers.metadynamics[0]
    kT, gamma = walkers.kT_kJ, walkers.bias_factor
    bias = meta._totalBias[:-1, :-1]
    c = kT * np.log(np.sum(np.exp(gamma * bias / ((gamma - 1) * kT))) / np.sum(np.exp(bias / ((gamma - 1) * kT))))
    v = walkers.log_weights[0][0] * kT + c
    assert v == pytest.approx(1.0, rel=0.03)
    assert 0 < c < v  # one Gaussian: its weight is above the average
    samples = walkers.sample(0.1 * unit.picosecond, n_samples=5)
    assert len(walkers.log_weights) == 6 and walkers.weights(6).shape == (2, 6) and walkers.weights(6).max() == 1.0
    assert samples.positions_nm.shape[:2] == (5, 2)
    assert not np.allclose(walkers.metadynamics[0]._totalBias, walkers.metadynamics[1]._totalBias)  # own biases


def test_walkers_sharing_a_bias_each_deposit_into_it_and_are_weighted_by_it(vacuum_system):
    """Two walkers, one bias: after one round it holds two Gaussians (2 kJ/mol in all, well-tempered heights a few
    per cent lower once the first is there); the second walker's weight is computed from the bias that includes
    both (c(t) of the final grid, V read right after its deposit)."""
    from openmm_forecast.benchmark import MetadynamicsWalkers

    walkers = MetadynamicsWalkers(vacuum_system, 2, seed=3, platform="Reference", deposit_ps=0.1)
    assert walkers.metadynamics[0] is walkers.metadynamics[1]
    walkers.step(50)
    meta, kT, gamma = walkers.metadynamics[0], walkers.kT_kJ, walkers.bias_factor
    bias = meta._totalBias[:-1, :-1]
    spacing = (2 * np.pi / 71) ** 2
    gaussian_volume = 2 * np.pi * np.radians(20.0) ** 2  # a 2D Gaussian of unit height, rad^2
    assert bias.sum() * spacing / gaussian_volume == pytest.approx(2.0, rel=0.1)
    c = kT * np.log(np.sum(np.exp(gamma * bias / ((gamma - 1) * kT))) / np.sum(np.exp(bias / ((gamma - 1) * kT))))
    v = walkers.log_weights[0][1] * kT + c
    assert 1.0 < v < 2.0  # its own Gaussian and part of the other walker's, deposited nearby


def test_a_metadynamics_arm_is_reweighted_in_the_report(vacuum_system, reference_dir, tmp_path):
    arms = [BenchmarkArm("plain", vacuum_system), BenchmarkArm("metad", vacuum_system, metadynamics={"deposit_ps": 0.1})]
    report = run_benchmark(arms, str(tmp_path / "bench"), n_walkers=2, wall_seconds=1.0, reference=str(reference_dir),
                           progress=False, platform="Reference", slice_seconds=0.5, sample_interval=0.1 * unit.picosecond,
                           reference_interval=0.1 * unit.picosecond)
    metad = report["arms"]["metad"]
    check_arm(metad, 2)
    assert metad["kind"] == "metad" and metad["metadynamics"]["settings"]["deposit_ps"] == 0.1
    assert 0 < metad["metadynamics"]["kish_ess_fraction"] <= 1
    assert all(value["weighted"] for value in metad["efficiency"].values())
    assert not any(value["weighted"] for value in report["arms"]["plain"]["efficiency"].values())
    assert "plain" in report["efficiency"]["against"]["metad"] and "metad" in report["efficiency"]["against"]["plain"]
    assert "metadynamics" in format_summary(report)
    with pytest.raises(ValueError, match="unknown metadynamics"):
        BenchmarkArm("m", vacuum_system, metadynamics={"bias": 3})


TETRAPEPTIDE = os.path.join(os.path.dirname(__file__), "data", "ace-ala3-nme.pdb")


def tetrapeptide_system():
    """ACE-ALA3-NME in amber14 vacuum, built as a user would (not one of the package's setups)."""
    from openmm import app

    from openmm_forecast.systems import MolecularSystem

    pdb = app.PDBFile(TETRAPEPTIDE)
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                            constraints=app.HBonds)
    return MolecularSystem(setup=None, topology=pdb.topology, system=system, positions=pdb.positions,
                           temperature=300 * unit.kelvin, timestep=2 * unit.femtosecond, friction=1 / unit.picosecond,
                           constraints="HBonds", potential="amber14-all.xml, vacuum", solute_atoms=system.getNumParticles())


def test_a_tetrapeptide_benchmark_has_no_reference_and_reports_every_residue_and_torsion(tmp_path):
    """No reference exists for the user's molecule: the arms are compared with each other (efficiency with
    intervals), every residue and the user's torsion get populations and effective samples per second."""
    from openmm_forecast.analysis import Torsion

    molecule = tetrapeptide_system()
    arms = [BenchmarkArm("plain", molecule), BenchmarkArm("metad", molecule, metadynamics={"deposit_ps": 0.1})]
    out = tmp_path / "tetra"
    report = run_benchmark(arms, str(out), n_walkers=2, wall_seconds=1.0, progress=False, platform="Reference",
                           slice_seconds=0.5, sample_interval=0.1 * unit.picosecond,
                           torsions=[Torsion.parse("omega=8,10,16,18")])
    assert report["reference"] is None and report["js_bar"]["value"] is None
    for arm in report["arms"].values():
        assert arm["residue"] == "ALA2" and list(arm["residues"]) == ["ALA2", "ALA3", "ALA4"]
        assert arm["residues"]["ALA2"]["basins"] == arm["basins"]
        for numbers in arm["residues"].values():
            assert sum(b["population"] for b in numbers["basins"].values()) == pytest.approx(1.0)
            assert set(numbers["efficiency"]) == {"beta", "alpha_R", "alpha_L"}
        omega = arm["torsions"]["omega"]
        assert omega["atoms"] == [8, 10, 16, 18]
        # a trans peptide bond: omega stays near 180 degrees
        assert omega["populations"]["t"]["population"] > 0.95 and set(omega["efficiency"]) == {"g+", "t", "g-"}
    assert report["arms"]["metad"]["metadynamics"]["residue"] == "ALA2"
    assert np.load(out / "plain_phipsi.npy").shape[2:] == (3, 2)
    assert np.load(out / "metad_weights.npy").shape == np.load(out / "metad_phipsi.npy").shape[:2]
    assert not (out / "plain_weights.npy").exists()
    assert (out / "ramachandran.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = format_summary(report)
    assert "ALA4" in summary and "omega" in summary


def test_cli_metad_arm_takes_its_settings(reference_dir, tmp_path):
    out = tmp_path / "metad"
    assert main(["benchmark", "--arm", "plain", "--arm", "metad", "--walkers", "2", "--wall-seconds", "0.3", "--out",
                 str(out), "--reference", str(reference_dir), "--no-progress", "--platform", "Reference",
                 "--sample-interval", "0.2", "--reference-interval", "0.1", "--metad-deposit", "0.2", "--metad-height",
                 "1.5", "--metad-bias-factor", "8", "--metad-independent"]) == 0
    settings = json.loads((out / "report.json").read_text())["arms"]["metad"]["metadynamics"]["settings"]
    assert settings == {**settings, "deposit_ps": 0.2, "height_kJ": 1.5, "bias_factor": 8.0, "shared_bias": False}


def test_an_arm_off_the_converged_population_cannot_win(rng):
    """Two arms with distinct intervals: the faster one wins, unless its population of the deciding basin lies more
    than MAX_REFERENCE_Z combined standard errors from the converged reference (a precise wrong answer)."""
    from openmm_forecast.benchmark import MAX_REFERENCE_Z, _compare_efficiency
    from openmm_forecast.efficiency import efficiency
    from test_efficiency import two_state

    fast = efficiency(two_state(rng, 0.2, 8, 2_000), seconds=1.0).as_dict()
    slow = efficiency(two_state(rng, 0.002, 8, 2_000), seconds=1.0).as_dict()
    arms = [BenchmarkArm("a", None), BenchmarkArm("b", None)]

    def summaries(z_fast):
        return {"a": {"efficiency": {"beta": fast}, "basins_vs_reference": {"beta": {"z": z_fast}}},
                "b": {"efficiency": {"beta": slow}, "basins_vs_reference": {"beta": {"z": 0.5}}}}

    assert _compare_efficiency(arms, summaries(1.0), "beta")["winner"] == "a"
    off = _compare_efficiency(arms, summaries(MAX_REFERENCE_Z + 0.1), "beta")
    assert off["winner"] is None and off["ess_per_second"]["a"]["off_reference"]
    assert not off["ess_per_second"]["b"]["off_reference"]
    assert _compare_efficiency(arms, {k: {"efficiency": v["efficiency"]} for k, v in summaries(9.0).items()},
                               "beta")["winner"] == "a"  # no reference: nothing to be off
