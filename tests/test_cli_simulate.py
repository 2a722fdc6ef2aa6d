"""``openmm-forecast simulate``: outputs and errors."""

import json

import mdtraj
import numpy as np

from openmm_forecast.cli import main


def test_simulate_writes_trajectory_log_and_summary(tmp_path):
    out = tmp_path / "run"
    code = main(["simulate", "--time", "2", "--report-interval", "0.1", "--equilibration", "0.2",
                 "--platform", "Reference", "--out", str(out)])
    assert code == 0
    traj = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    assert traj.n_frames == 20 and traj.n_atoms == 22
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1000 and summary["platform"] == "Reference"
    log = np.genfromtxt(out / "log.csv", delimiter=",", names=True)
    assert len(log) == 20
    # Step column of StateDataReporter is the header's first field.
    assert log[log.dtype.names[0]][-1] == 1000


def test_simulate_refuses_time_not_a_multiple_of_the_step(tmp_path, capsys):
    code = main(["simulate", "--time", "0.0031", "--out", str(tmp_path / "x")])
    assert code == 2  # an argument error: argparse's exit code
    assert "multiple of the time step" in capsys.readouterr().err


def test_simulate_refuses_to_overwrite_earlier_results(tmp_path, capsys):
    out = tmp_path / "run"
    arguments = ["simulate", "--time", "0.2", "--report-interval", "0.1", "--equilibration", "0",
                 "--platform", "Reference", "--out", str(out)]
    assert main(arguments) == 0
    summary = (out / "summary.json").read_text()
    assert json.loads(summary)["temperature_K"] == 300.0
    assert main(arguments) == 1
    assert "already holds" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == summary
