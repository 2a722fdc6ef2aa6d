"""Trajectory data: NVE physics, NVT/NVE consistency, round trips, resuming, and refusals."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from openmm import unit

from openmm_forecast import DataFileError, UnitError
from openmm_forecast.cli import main
from openmm_forecast.data import data_fingerprint, generate_nve_segments, generate_nvt, load_trajectory, to_mdtraj
from openmm_forecast.systems import PHI_ATOMS
from openmm_forecast.units import kT_kJ

FS = unit.femtosecond
PS = unit.picosecond
# Short runs on the Reference platform (the fastest for 22 atoms, and bitwise reproducible).
FAST = dict(seed=7, equilibration=1.0 * PS, platform="Reference", progress=False)


def _nvt(system, path, n_frames=12, **kwargs):
    options = {**FAST, "interval": 20 * FS, **kwargs}
    return generate_nvt(system, path, n_frames=n_frames, **options)


def _nve(system, path, n_segments=4, **kwargs):
    options = {**FAST, "segment_length": 20 * FS, "frame_interval": 4 * FS, "spacing": 40 * FS, **kwargs}
    return generate_nve_segments(system, path, n_segments=n_segments, **options)


class Interrupt(Exception):
    pass


def _interrupt_after(count):
    def callback(done, total):
        if done == count:
            raise Interrupt

    return callback


def _assert_same_records(a, b):
    for name in ("positions", "velocities", "times", "potential_energy", "kinetic_energy"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# --------------------------------------------------------------------------------------------------- #
# Physics
# --------------------------------------------------------------------------------------------------- #


def test_nve_segments_conserve_energy(vacuum_system, tmp_path):
    """H = U + K stays constant along each segment, with velocity Verlet's dt^2 error scaling.

    Bound: at 0.5 fs the largest |H(t) - H(0)| over 100 fs must stay below 0.1 kT (0.25 kJ/mol at 300 K),
    small against the thermal energy fluctuations a forecaster's energy guard has to judge (kT); measured
    ~0.09 kJ/mol.  The test can fail: at 2 fs (16x the dt^2) the error grows ~16x (measured 0.43 vs
    0.027 kJ/mol rms), and broken segments (half-step velocities, a thermostat left on) violate both.
    """
    kT = kT_kJ(300.0)
    errors = {}
    for dt_fs in (0.5, 2.0):
        path = tmp_path / f"nve_{dt_fs}.h5"
        _nve(vacuum_system, path, n_segments=3, segment_length=100 * FS, frame_interval=2 * FS,
             nve_timestep=dt_fs * FS, spacing=0.5 * PS)
        energy = load_trajectory(path).total_energy
        drift = energy - energy[:, :1]
        errors[dt_fs] = (np.abs(drift).max(), np.sqrt(np.mean(drift**2)))
    assert errors[0.5][0] < 0.1 * kT
    ratio = errors[2.0][1] / errors[0.5][1]
    assert 10 < ratio < 25, f"rms energy error ratio {ratio} for a 4x time step (expected ~16)"


def test_nve_starts_are_the_nvt_chain_unperturbed(vacuum_system, tmp_path):
    """Segment i starts from the Langevin chain at equilibration + i * spacing, the very chain generate_nvt
    runs with the same seed: the NVE offshoots must not perturb it.  Start states are consistent: zero
    centre-of-mass velocity (the System has a CMMotionRemover) and velocities orthogonal to the
    constrained X-H bonds."""
    _nvt(vacuum_system, tmp_path / "nvt.h5", n_frames=5, interval=40 * FS)
    _nve(vacuum_system, tmp_path / "nve.h5", n_segments=6, spacing=40 * FS)
    nvt, nve = load_trajectory(tmp_path / "nvt.h5"), load_trajectory(tmp_path / "nve.h5")
    np.testing.assert_allclose(nve.segment_start_times, 1.0 + 0.04 * np.arange(6), atol=1e-9)
    np.testing.assert_allclose(nve.segment_start_times[1:], nvt.times, atol=1e-9)
    # Constraint tolerance 1e-5 is relative to bond lengths of ~0.1 nm.
    np.testing.assert_allclose(nve.positions[1:, 0], nvt.positions, atol=1e-5)

    masses = nve.masses
    start_v = nve.velocities[:, 0]
    assert np.abs(masses @ start_v / masses.sum()).max() < 1e-8
    system = vacuum_system.system
    for index in range(system.getNumConstraints()):
        i, j, _ = system.getConstraintParameters(index)
        bond = nve.positions[:, :, i] - nve.positions[:, :, j]
        relative_v = nve.velocities[:, :, i] - nve.velocities[:, :, j]
        along = np.sum(bond * relative_v, axis=-1) / np.linalg.norm(bond, axis=-1)
        assert np.abs(along).max() < 1e-3  # nm/ps, against thermal H velocities of ~2.7 nm/ps


def test_nvt_frames_are_thermal_and_spaced(vacuum_system, tmp_path):
    """Frames are `interval` apart, after the equilibration; the kinetic energy matches 300 K on average."""
    _nvt(vacuum_system, tmp_path / "nvt.h5", n_frames=200, interval=50 * FS)
    data = load_trajectory(tmp_path / "nvt.h5")
    np.testing.assert_allclose(data.times, 1.0 + 0.05 * np.arange(1, 201), atol=1e-9)
    system = vacuum_system.system
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3  # minus the removed COM motion
    expected = 0.5 * dof * kT_kJ(300.0)
    # 200 frames 50 fs apart are correlated (~20 independent samples, relative std ~sqrt(2/dof/20) = 4%).
    assert abs(data.kinetic_energy.mean() / expected - 1) < 0.2


# --------------------------------------------------------------------------------------------------- #
# Storage
# --------------------------------------------------------------------------------------------------- #


def test_round_trip_keeps_metadata_and_units(vacuum_system, tmp_path):
    path = tmp_path / "nve.h5"
    _nve(vacuum_system, path, n_segments=3)
    data = load_trajectory(path)
    assert data.mode == "nve" and len(data) == 3
    assert data.positions.shape == data.velocities.shape == (3, 6, 22, 3)
    assert data.potential_energy.shape == data.kinetic_energy.shape == (3, 6)
    np.testing.assert_allclose(data.times, [0.0, 0.004, 0.008, 0.012, 0.016, 0.020])
    meta = data.metadata
    assert data.elements == vacuum_system.elements
    np.testing.assert_array_equal(data.masses, vacuum_system.masses)
    assert meta["system_fingerprint"] == vacuum_system.fingerprint()
    assert (meta["setup"], meta["constraints"], meta["temperature_K"], meta["seed"]) == (
        "amber14-vacuum", "HBonds", 300.0, 7)
    assert (meta["nve_timestep_ps"], meta["frame_interval_ps"], meta["spacing_ps"]) == (0.0005, 0.004, 0.04)
    assert meta["n_frames_per_segment"] == 6 and meta["platform"] == "Reference"
    assert meta["openmm_version"]
    # Units: nm (a C-H bond of ~0.109 nm), kinetic energy = sum m v^2 / 2 of the stored velocities.
    assert 0.10 < np.linalg.norm(data.positions[0, 0, 0] - data.positions[0, 0, 1]) < 0.12
    kinetic = 0.5 * np.einsum("i,sfik->sf", data.masses, data.velocities**2)
    np.testing.assert_allclose(kinetic, data.kinetic_energy, rtol=1e-6)


def test_fingerprint_identifies_content(vacuum_system, tmp_path):
    _nvt(vacuum_system, tmp_path / "a.h5")
    _nvt(vacuum_system, tmp_path / "b.h5")
    _nvt(vacuum_system, tmp_path / "c.h5", seed=8)
    first = data_fingerprint(tmp_path / "a.h5")
    assert first == data_fingerprint(tmp_path / "b.h5")  # same settings, same seed: same data
    assert first != data_fingerprint(tmp_path / "c.h5")
    with h5py.File(tmp_path / "b.h5", "r+") as handle:
        handle["positions"][3, 0, 0] += 1e-9
    assert first != data_fingerprint(tmp_path / "b.h5")


def test_to_mdtraj_dihedrals(vacuum_system, tmp_path):
    import mdtraj

    _nvt(vacuum_system, tmp_path / "nvt.h5", n_frames=4)
    data = load_trajectory(tmp_path / "nvt.h5")
    trajectory = to_mdtraj(data, vacuum_system.topology)
    assert trajectory.n_frames == 4
    phi = mdtraj.compute_dihedrals(trajectory, [PHI_ATOMS])[:, 0]
    # IUPAC dihedral from the stored positions: atan2(|b1| b0 . (b1 x b2), (b0 x b1) . (b1 x b2)).
    b0, b1, b2 = (data.positions[:, PHI_ATOMS[k + 1]] - data.positions[:, PHI_ATOMS[k]] for k in range(3))
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    expected = np.arctan2(np.linalg.norm(b1, axis=-1) * np.sum(b0 * n2, -1), np.sum(n1 * n2, -1))
    np.testing.assert_allclose(phi, expected, atol=1e-5)


# --------------------------------------------------------------------------------------------------- #
# Resuming
# --------------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("commit_seconds", [0.0, 1e9])
def test_interrupted_nvt_resumes_to_the_uninterrupted_run(vacuum_system, tmp_path, commit_seconds):
    """An exception after frame 5 (from a callback; commits after every frame, or only when interrupted)
    keeps 5 frames; resuming gives exactly the frames of an uninterrupted run."""
    _nvt(vacuum_system, tmp_path / "full.h5")
    path = tmp_path / "resumed.h5"
    with pytest.raises(Interrupt):
        _nvt(vacuum_system, path, commit_seconds=commit_seconds, callback=_interrupt_after(5))
    assert len(load_trajectory(path)) == 5
    _nvt(vacuum_system, path, commit_seconds=commit_seconds)
    _assert_same_records(load_trajectory(path), load_trajectory(tmp_path / "full.h5"))
    assert data_fingerprint(path) == data_fingerprint(tmp_path / "full.h5")


def test_extended_nve_equals_uninterrupted(vacuum_system, tmp_path):
    """2 segments, then 3 more after an interruption inside the third: equal to 5 in one go."""
    _nve(vacuum_system, tmp_path / "full.h5", n_segments=5)
    path = tmp_path / "resumed.h5"
    _nve(vacuum_system, path, n_segments=2)
    with pytest.raises(Interrupt):
        _nve(vacuum_system, path, n_segments=5, commit_seconds=0.0, callback=_interrupt_after(3))
    assert len(load_trajectory(path)) == 3
    _nve(vacuum_system, path, n_segments=5)
    resumed, full = load_trajectory(path), load_trajectory(tmp_path / "full.h5")
    _assert_same_records(resumed, full)
    np.testing.assert_array_equal(resumed.segment_start_times, full.segment_start_times)


def test_uncommitted_leftovers_are_ignored_and_dropped(vacuum_system, tmp_path):
    """A write cut short leaves records beyond the commit count (and a half-written checkpoint slot):
    readers ignore them, a resume overwrites them, and the result still equals an uninterrupted run."""
    _nvt(vacuum_system, tmp_path / "full.h5")
    path = tmp_path / "cut.h5"
    _nvt(vacuum_system, path, n_frames=4, commit_seconds=0.0)
    with h5py.File(path, "r+") as handle:
        for name in ("positions", "velocities", "times", "potential_energy", "kinetic_energy"):
            handle[name].resize(7, axis=0)
            handle[name][4:] = np.nan
        unused = "checkpoint_1" if '"checkpoint_0"' in handle.attrs["commit"] else "checkpoint_0"
        handle[unused].resize(10, axis=0)
        handle[unused][:] = 255
    assert len(load_trajectory(path)) == 4
    _nvt(vacuum_system, path)
    _assert_same_records(load_trajectory(path), load_trajectory(tmp_path / "full.h5"))


def test_file_held_open_by_a_reader_delays_commits_without_losing_frames(vacuum_system, tmp_path, caplog):
    """HDF5 file locking stops writes while another process reads the file: intermediate commits are
    postponed (frames kept in memory), the final one waits for the reader, and nothing is lost."""
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        pytest.skip("HDF5 file locking is switched off in this environment")
    _nvt(vacuum_system, tmp_path / "full.h5")
    path = tmp_path / "held.h5"
    _nvt(vacuum_system, path, n_frames=2)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, h5py; f = h5py.File(sys.argv[1], 'r'); print('open', flush=True);"
         " time.sleep(2)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with caplog.at_level("WARNING", logger="openmm_forecast.data"):
            _nvt(vacuum_system, path, commit_seconds=0.0)
    finally:
        holder.wait(timeout=30)
    assert "held open by another process" in caplog.text
    _assert_same_records(load_trajectory(path), load_trajectory(tmp_path / "full.h5"))


def test_mismatching_resume_is_refused(vacuum_system, tmp_path):
    path = tmp_path / "nvt.h5"
    _nvt(vacuum_system, path, n_frames=3)
    before = data_fingerprint(path)
    with pytest.raises(DataFileError, match="interval_ps"):
        _nvt(vacuum_system, path, n_frames=6, interval=40 * FS)
    with pytest.raises(DataFileError, match="seed"):
        _nvt(vacuum_system, path, n_frames=6, seed=8)
    with pytest.raises(DataFileError, match="mode"):
        _nve(vacuum_system, path)
    with pytest.raises(DataFileError, match="exists"):
        _nvt(vacuum_system, path, n_frames=6, resume=False)
    assert data_fingerprint(path) == before
    _nvt(vacuum_system, path, n_frames=2)  # fewer than the file holds: nothing to do, nothing lost
    assert len(load_trajectory(path)) == 3


# --------------------------------------------------------------------------------------------------- #
# Refusals
# --------------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_frames=0), ValueError, "n_frames"),
        (dict(n_frames=2.5), ValueError, "n_frames"),
        (dict(n_frames=True), ValueError, "n_frames"),
        (dict(interval=3 * FS), ValueError, "multiple"),
        (dict(interval=20), UnitError, "interval"),
        (dict(interval=1 * unit.nanometer), UnitError, "interval"),
        (dict(seed=0), ValueError, "seed"),
        (dict(equilibration=-1 * PS), ValueError, "equilibration"),
        (dict(platform="NoSuchPlatform"), ValueError, "platform"),
    ],
)
def test_bad_nvt_arguments(vacuum_system, tmp_path, kwargs, error, match):
    options = {"n_frames": 3, **kwargs}
    with pytest.raises(error, match=match):
        _nvt(vacuum_system, tmp_path / "x.h5", **options)
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_segments=-1), "n_segments"),
        (dict(segment_length=10 * FS), "segment_length"),  # not a multiple of the 4 fs frame interval
        (dict(frame_interval=0.7 * FS), "frame_interval"),  # not a multiple of the 0.5 fs NVE step
        (dict(spacing=41 * FS), "spacing"),  # not a multiple of the 2 fs Langevin step
        (dict(nve_timestep=0 * FS), "nve_timestep"),
    ],
)
def test_bad_nve_arguments(vacuum_system, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _nve(vacuum_system, tmp_path / "x.h5", **kwargs)
    assert not (tmp_path / "x.h5").exists()


def test_unreadable_files_raise_data_file_error(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        load_trajectory(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataFileError, match="HDF5"):
        load_trajectory(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["positions"] = np.zeros((2, 3))
    with pytest.raises(DataFileError, match="not an openmm-forecast"):
        data_fingerprint(tmp_path / "other.h5")


# --------------------------------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------------------------------- #


def test_cli_generate(tmp_path, capsys):
    path = tmp_path / "cli.h5"
    common = ["generate", "--mode", "nve", "--out", str(path), "--equilibration-ps", "0.2", "--platform",
              "Reference", "--no-progress", "--segment-fs", "8", "--frame-interval-fs", "2", "--spacing-ps", "0.02"]
    assert main(common + ["--segments", "2"]) == 0
    data = load_trajectory(path)
    assert data.positions.shape == (2, 5, 22, 3) and data.metadata["seed"] == 1
    assert data_fingerprint(path) in capsys.readouterr().out
    assert main(common + ["--segments", "3"]) == 0  # extends the same file
    assert len(load_trajectory(path)) == 3
    assert main(common + ["--segments", "3", "--seed", "2"]) == 1  # refuses different settings
    assert main(["generate", "--mode", "nvt", "--out", str(tmp_path / "y.h5")]) == 2  # --frames missing: a usage error
    assert "--frames" in capsys.readouterr().err
