"""``openmm-forecast run``: outputs, statistics, resume to a longer time, refusals.

The kill-and-resume test of this command lives in tests/test_accelerator.py.
"""

import json

import mdtraj
import numpy as np

from openmm_forecast.cli import main


def _arguments(out, time_ps, *extra):
    return ["run", "--model", "verlet", "--time", str(time_ps), "--report-interval", "0.1", "--checkpoint-interval",
            "0.5", "--platform", "Reference", "--seed", "2", "--no-progress", "--out", str(out), *extra]


def test_run_writes_outputs_and_extends_on_resume(tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    assert main(_arguments(short, 1)) == 0
    for name in ("trajectory.dcd", "log.csv", "topology.pdb", "checkpoint.chk", "stats.json"):
        assert (short / name).exists(), name
    summary = json.loads((short / "stats.json").read_text())
    stats = summary["stats"]
    assert summary["step"] == 500 and abs(summary["time_ps"] - 1.0) < 1e-9
    assert stats["jumps_accepted"] == stats["jumps_attempted"] > 0
    assert abs(stats["jumped_ps"] + stats["integrated_ps"] - 1.0) < 1e-9

    # Resuming with a longer --time continues the same run: identical to running 2 ps at once.
    assert main(_arguments(short, 2, "--resume")) == 0
    assert main(_arguments(long, 2)) == 0
    resumed = mdtraj.load(str(short / "trajectory.dcd"), top=str(short / "topology.pdb"))
    reference = mdtraj.load(str(long / "trajectory.dcd"), top=str(long / "topology.pdb"))
    assert resumed.n_frames == reference.n_frames == 20
    assert np.array_equal(resumed.xyz, reference.xyz)
    assert json.loads((short / "stats.json").read_text())["stats"]["jumps_attempted"] == json.loads(
        (long / "stats.json").read_text())["stats"]["jumps_attempted"]


def test_run_refuses_to_overwrite_and_bad_times(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_arguments(out, 0.2)) == 0
    assert main(_arguments(out, 0.4)) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(_arguments(tmp_path / "odd", 0.0031)) == 2  # an argument error (argparse's exit code)
    assert "multiple of the time step" in capsys.readouterr().err
    # Killed before its first checkpoint: --resume has nothing to continue from and overwrites nothing (issue 12:
    # it used to start again, and 101 frames became 10).
    (out / "checkpoint.chk").unlink()
    frames = (out / "trajectory.dcd").read_bytes()
    capsys.readouterr()
    assert main(_arguments(out, 0.2, "--resume")) == 1
    assert "no checkpoint.chk" in capsys.readouterr().err
    assert (out / "trajectory.dcd").read_bytes() == frames


def test_resume_refuses_changed_settings_and_foreign_directories(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_arguments(out, 0.2)) == 0
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["temperature"] == 300.0 and recorded["platform"] == "Reference" and recorded["stride"] == 10.0
    frames = (out / "trajectory.dcd").read_bytes()
    for changed, flag in ((["--temperature", "500"], "--temperature"), (["--timestep", "1"], "--timestep"),
                          (["--report-interval", "0.05"], "--report-interval"), (["--model", "ballistic"], "--model")):
        arguments = _arguments(out, 0.4, "--resume")
        if changed[0] in arguments:
            arguments[arguments.index(changed[0]) + 1] = changed[1]
        else:
            arguments += changed
        assert main(arguments) == 1
        error = capsys.readouterr().err
        assert flag in error and "must keep its settings" in error, error
    assert (out / "trajectory.dcd").read_bytes() == frames  # nothing touched
    assert main(_arguments(out, 0.4, "--resume", "--threads", "1")) == 0  # allowed changes
    # A run from before run.json existed resumes unchecked once, and is checked from then on.
    (out / "run.json").unlink()
    assert main(_arguments(out, 0.6, "--resume")) == 0
    assert json.loads((out / "run.json").read_text()) == recorded
    assert main(_arguments(out, 0.8, "--resume", "--temperature", "310")) == 1

    # The output of another command (no run.json, no checkpoint) is not resumed, nor overwritten.
    other = tmp_path / "simulated"
    assert main(["simulate", "--time", "0.2", "--report-interval", "0.1", "--equilibration", "0",
                 "--platform", "Reference", "--out", str(other)]) == 0
    before = (other / "trajectory.dcd").read_bytes()
    assert main(_arguments(other, 0.2, "--resume")) == 1
    assert "nothing to continue from" in capsys.readouterr().err
    assert (other / "trajectory.dcd").read_bytes() == before


def test_surrogate_and_acceptance_rule_are_recorded_and_kept_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    arguments = _arguments(out, 0.2, "--acceptance", "metropolis", "--surrogate-timestep", "1")
    arguments[arguments.index("verlet")] = "surrogate"
    assert main(arguments) == 0
    recorded = json.loads((out / "run.json").read_text())
    assert (recorded["model"], recorded["surrogate"], recorded["surrogate_timestep"], recorded["acceptance"]) == (
        "surrogate", "derived", 1.0, "metropolis")  # the default: derived from the target
    assert "rejections" in json.loads((out / "stats.json").read_text())["stats"]
    resumed = [a for a in arguments if a not in ("--acceptance", "metropolis")] + ["--metropolis", "--resume"]
    resumed[resumed.index("0.2")] = "0.4"
    for flag, value in (("--surrogate-timestep", "2"), ("--acceptance", "dynamics")):
        changed = resumed + [flag, value]
        assert main(changed) == 1
        assert flag in capsys.readouterr().err
    assert main(resumed) == 0  # --metropolis is --acceptance metropolis
    # run.json of a run from before --acceptance (a 'metropolis' flag) still resumes, with its rule.
    old = dict(recorded)
    del old["acceptance"]
    old["metropolis"] = True
    (out / "run.json").write_text(json.dumps(old))
    resumed[resumed.index("0.4")] = "0.6"
    assert main(resumed) == 0
