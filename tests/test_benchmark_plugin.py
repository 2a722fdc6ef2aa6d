"""Benchmark arms on the C++ plugin (``engine='plugin'``, ``--arm MODEL:RULE@JUMP_FS:plugin``) beside the Python
driver's arm of the same surrogate, rule and jump; refusals before any work (the plugin must be built, as for
tests/test_plugin.py; the refusal tests hide it)."""

import json
import os

import pytest
from openmm import unit

from openmm_forecast import plugin
from openmm_forecast.benchmark import BenchmarkArm, run_benchmark
from openmm_forecast.cli import main
from openmm_forecast.errors import PluginError

SURROGATE = {"stride_ps": 0.1 * unit.picosecond, "max_frames": 1, "timestep": 2 * unit.femtosecond}


def test_a_plugin_arm_runs_beside_the_python_arm_of_the_same_surrogate_rule_and_jump(vacuum_system, tmp_path):
    arms = [BenchmarkArm("plain", vacuum_system),
            BenchmarkArm("python", vacuum_system, "fit-amber14-obc2", SURROGATE, {"acceptance": "ghmc"}),
            BenchmarkArm("plugin", vacuum_system, "fit-amber14-obc2", SURROGATE, {"acceptance": "ghmc"},
                         engine="plugin")]
    report = run_benchmark(arms, str(tmp_path / "bench"), n_walkers=2, wall_seconds=1.0, reference=False,
                           progress=False, platform="Reference", slice_seconds=0.5,
                           sample_interval=0.2 * unit.picosecond)
    assert json.loads((tmp_path / "bench" / "report.json").read_text())["arms"]["plugin"]["engine"] == "plugin"
    python, on_plugin = report["arms"]["python"], report["arms"]["plugin"]
    assert python["engine"] == "python" and "plugin" not in python["label"]
    assert on_plugin["label"] == "plugin: fit-amber14-obc2 + ghmc (plugin)"
    assert on_plugin["acceptance"] == python["acceptance"] == "ghmc"
    assert on_plugin["forecaster"]["jump_ps"] == python["forecaster"]["stride_ps"] == 0.1
    assert on_plugin["forecaster"]["surrogate_step_ps"] == 0.002
    assert on_plugin["forecaster"]["file_sha256"] == python["forecaster"]["surrogate_fingerprint"]
    stats = on_plugin["stats"]
    assert stats["jumps_attempted"] == on_plugin["forecast_calls"] > 0 and on_plugin["mean_batch_size"] == 1.0
    # ghmc: the arm's simulated time is its jumps (accepted or kept), 100 fs each, and nothing integrated
    assert stats["jumps_attempted"] * 0.1 == pytest.approx(on_plugin["simulated_ns"] * 1000)
    assert 0 < on_plugin["acceptance_rate"] <= 1 and 250 < on_plugin["mean_temperature_K"] < 350


def test_cli_plugin_arm_is_named_after_its_engine(tmp_path):
    out = tmp_path / "cli"
    assert main(["benchmark", "--setup", "amber14-vacuum", "--arm", "plain", "--arm", "fit-amber14-obc2:ghmc@100:plugin",
                 "--walkers", "1", "--wall-seconds", "0.5", "--max-frames", "1", "--sample-interval", "0.2",
                 "--no-reference", "--no-progress", "--platform", "Reference", "--out", str(out)]) == 0
    arm = json.loads((out / "report.json").read_text())["arms"]["fit-amber14-obc2-ghmc-100fs-plugin"]
    assert arm["engine"] == "plugin" and arm["forecaster"]["jump_ps"] == 0.1


@pytest.fixture
def no_plugin(monkeypatch, tmp_path):
    """The plugin library as if not built: a missing file, nothing loaded yet in this process."""
    monkeypatch.setattr(plugin, "_library", None)
    monkeypatch.setenv(plugin.LIBRARY_ENVIRONMENT_VARIABLE, str(tmp_path / "missing" / plugin.LIBRARY_NAME))


def test_a_plugin_arm_is_refused_before_any_work_when_the_library_is_missing(no_plugin, vacuum_system, tmp_path,
                                                                           capsys):
    spec = "fit-amber14-obc2:ghmc@500:plugin"
    assert main(["benchmark", "--arm", "plain", "--arm", spec, "--no-reference", "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert f"--arm {spec!r} runs on the C++ plugin" in error and "does not exist: build it" in error
    assert not os.path.exists(tmp_path / "x")
    with pytest.raises(PluginError, match="arm 'p' \\(engine 'plugin'\\) runs on the C\\+\\+ plugin"):
        BenchmarkArm("p", vacuum_system, "fit-amber14-obc2", SURROGATE, {"acceptance": "ghmc"}, engine="plugin")


@pytest.mark.parametrize("arm, message", [
    ("plain:plugin", "takes no acceptance rule, stride or engine"),
    ("verlet:metropolis:plugin", "the plugin's proposal is a fitted surrogate System"),
    ("surrogate:ghmc@500:plugin", "not 'surrogate'"),
    ("fit-amber14-obc2:dynamics@500:plugin", "the plugin's rules are tolerance, metropolis, ghmc"),
])
def test_cli_refuses_arms_the_plugin_cannot_run(arm, message, tmp_path, capsys):
    assert main(["benchmark", "--arm", arm, "--out", str(tmp_path / "bad"), "--no-reference"]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")
