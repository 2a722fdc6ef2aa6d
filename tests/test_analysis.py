"""Tests of openmm_forecast.analysis, openmm_forecast.plotting and the ``compare`` command."""

import importlib.util
import json
import math
import os
import sys

import numpy as np
import pytest

from openmm_forecast.analysis import (
    BASINS,
    Torsion,
    assign_basins,
    backbone_torsion_pairs,
    basin_populations,
    compute_phi,
    compute_phi_psi,
    compute_psi,
    count_transitions,
    js_convergence,
    js_divergence,
    js_divergence_phi_psi,
    last_visited_basin,
    load_angles,
    load_phi_psi,
    ramachandran_histogram,
    torsion_state_populations,
    window_js,
    wrap_degrees,
)
from openmm_forecast.errors import DataFileError
from openmm_forecast.systems import ALANINE_DIPEPTIDE_PDB, PHI_ATOMS, PSI_ATOMS, resource_path

REFERENCE = "/work/shared/reference/ala2_vacuum_seed{}_100ns_phipsi_1ps.npy"
BETA, ALPHA_R, ALPHA_L = (next(i for i, b in enumerate(BASINS) if b.name == n) for n in ("beta", "alpha_R", "alpha_L"))


def _dihedral_deg(p0, p1, p2, p3):
    """IUPAC dihedral by the textbook formula (independent of mdtraj)."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return math.degrees(math.atan2(np.linalg.norm(b2) * np.dot(b1, n2), np.dot(n1, n2)))


# ------------------------------------------------------------------------------------------------ JS


def test_js_identical_is_zero_and_disjoint_is_ln2():
    rng = np.random.default_rng(0)
    p = rng.random((36, 36))
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(p, 3.0 * p) == pytest.approx(0.0, abs=1e-12)  # counts are normalised
    q = np.zeros((36, 36))
    r = np.zeros((36, 36))
    q[:10] = rng.random((10, 36))
    r[20:] = rng.random((16, 36))
    assert js_divergence(q, r) == pytest.approx(math.log(2.0), rel=1e-12)


def test_js_symmetric_nonnegative_and_known_value():
    rng = np.random.default_rng(1)
    for _ in range(20):
        p, q = rng.random((6, 6)) * (rng.random((6, 6)) > 0.3), rng.random((6, 6))
        assert js_divergence(p, q) == pytest.approx(js_divergence(q, p), rel=1e-12)
        assert 0.0 <= js_divergence(p, q) <= math.log(2.0)
    # Two bins, p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4); JS = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2.
    expected = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    assert js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(expected, rel=1e-12)


def test_js_rejects_bad_histograms():
    with pytest.raises(ValueError, match="shapes"):
        js_divergence(np.ones((3, 3)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        js_divergence(-np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="not all zero"):
        js_divergence(np.zeros(3), np.ones(3))


def test_histogram_bins_wrapping_and_normalisation():
    # 10-degree bins over [-180, 180): (-175, 5) is bin (0, 18); 185 degrees wraps to -175.
    h = ramachandran_histogram([[-175.0, 5.0], [185.0, 5.0], [179.9, -180.0], [0.0, 0.0]])
    assert h.shape == (36, 36)
    assert h.sum() == pytest.approx(1.0)
    assert h[0, 18] == pytest.approx(0.5)
    assert h[35, 0] == pytest.approx(0.25)
    assert h[18, 18] == pytest.approx(0.25)


def test_phi_psi_js_across_the_periodic_boundary_is_zero():
    rng = np.random.default_rng(2)
    x = rng.uniform(-180, 180, size=(500, 2))
    assert js_divergence_phi_psi(x, x + 360.0) == pytest.approx(0.0, abs=1e-12)


def test_reference_runs_agree_and_short_windows_scatter_more():
    a, b = (load_phi_psi(REFERENCE.format(seed)) for seed in (1, 2))
    assert a.shape == b.shape == (100_000, 2)
    assert js_divergence_phi_psi(a, b) < 0.005
    pool = np.concatenate([a, b])
    one_ns = np.concatenate([window_js(run, pool, 1000) for run in (a, b)])
    fifty_ns = np.concatenate([window_js(run, pool, 50_000) for run in (a, b)])
    assert len(one_ns) == 200 and len(fifty_ns) == 4
    assert one_ns.mean() > 10 * fifty_ns.mean()


def test_js_convergence_prefixes_and_window_js_windows():
    rng = np.random.default_rng(3)
    reference = rng.uniform(-180, 180, size=(20_000, 2))
    x = rng.uniform(-180, 180, size=(5000, 2))
    frames, js = js_convergence(x, reference, n_points=8, min_frames=50)
    assert frames[0] == 50 and frames[-1] == 5000 and np.all(np.diff(frames) > 0)
    assert js[-1] < js[0]  # more samples of the same distribution get closer
    assert js[-1] == pytest.approx(js_divergence_phi_psi(x, reference), rel=1e-12)
    # Window statistics: the second window is disjoint from the reference (all at one point).
    y = np.concatenate([reference[:100], np.full((100, 2), 45.0), reference[:7]])
    values = window_js(y, reference, 100)
    assert len(values) == 2  # the 7 trailing frames are not used
    assert values[1] > values[0]
    with pytest.raises(ValueError, match="window_frames"):
        window_js(y, reference, 1000)


# ------------------------------------------------------------------------------------------- basins


def test_basin_assignment_of_hand_placed_points():
    points = {
        (-80.0, 70.0): BETA,  # C7eq
        (-155.0, 160.0): BETA,  # C5
        (-150.0, -170.0): BETA,  # C5 across psi = +-180
        (175.0, 160.0): BETA,  # C5 across phi = +-180, not alpha_L
        (-65.0, -40.0): ALPHA_R,
        (60.0, 40.0): ALPHA_L,
        (70.0, -70.0): ALPHA_L,  # C7ax
        (-70.0, 5.0): -1,  # barrier between C7eq and alpha_R
        (-70.0, -135.0): -1,
        (10.0, 0.0): -1,
        (140.0, 0.0): -1,
    }
    labels = assign_basins(np.array(list(points)))
    assert labels.tolist() == list(points.values())
    populations = basin_populations(np.array(list(points)))
    assert populations["beta"]["population"] == pytest.approx(4 / 11)
    assert populations["beta"]["free_energy_kT"] == pytest.approx(-math.log(4 / 11))
    assert sum(v["population"] for v in populations.values()) == pytest.approx(1.0)
    assert basin_populations([[-80.0, 70.0]])["alpha_R"]["free_energy_kT"] is None


def test_transitions_count_committed_changes_only():
    # beta, recross into the buffer and back (no transition), alpha_R (1), buffer, alpha_R, beta (2),
    # alpha_L (3), buffer, beta (4).
    b, r, lh, o = (-80, 70), (-65, -40), (60, 40), (-70, 5)
    sequence = np.array([o, b, b, o, b, o, r, r, o, r, b, lh, o, b], dtype=float)
    assert last_visited_basin(assign_basins(sequence)).tolist() == [
        -1, BETA, BETA, BETA, BETA, BETA, ALPHA_R, ALPHA_R, ALPHA_R, ALPHA_R, BETA, ALPHA_L, ALPHA_L, BETA]
    result = count_transitions(sequence)
    assert result["total"] == 4
    assert result["counts"]["beta"] == {"alpha_R": 1, "alpha_L": 1}
    assert result["counts"]["alpha_R"] == {"beta": 1, "alpha_L": 0}
    assert result["counts"]["alpha_L"] == {"beta": 1, "alpha_R": 0}
    assert count_transitions(np.array([o, o], dtype=float))["total"] == 0


# ------------------------------------------------------------------------------------------ phi/psi


def test_phi_psi_of_constructed_geometry(tmp_path):
    import mdtraj

    pdb = mdtraj.load(resource_path(ALANINE_DIPEPTIDE_PDB))
    # Put the four phi atoms on a known geometry: dihedral theta for p3 = (cos theta, sin theta, 1).
    thetas = np.array([-120.0, -60.0, 0.0, 45.0, 90.0, 179.0])
    xyz = np.repeat(pdb.xyz.astype(float), len(thetas), axis=0)
    for k, theta in enumerate(np.radians(thetas)):
        p0, p1, p2, p3 = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1], [math.cos(theta), math.sin(theta), 1]]) * 0.15
        xyz[k, list(PHI_ATOMS)] = [p0, p1, p2, p3]
    phi_psi = compute_phi_psi(mdtraj.Trajectory(xyz, pdb.topology))
    assert phi_psi[:, 0] == pytest.approx(thetas, abs=1e-3)
    # The same from a positions .npy file (default topology: the package's alanine dipeptide).
    np.save(tmp_path / "positions.npy", xyz)
    assert load_phi_psi(tmp_path / "positions.npy")[:, 0] == pytest.approx(thetas, abs=1e-3)


def test_phi_psi_atoms_and_sign_agree_with_mdtraj_on_shipped_pdb(tmp_path):
    import mdtraj

    traj = mdtraj.load(resource_path(ALANINE_DIPEPTIDE_PDB))
    assert mdtraj.compute_phi(traj)[0].tolist() == [list(PHI_ATOMS)]
    assert mdtraj.compute_psi(traj)[0].tolist() == [list(PSI_ATOMS)]
    # A C7eq-like conformation: rotate atoms so the angles are not the trivial +-180 of the PDB.
    rng = np.random.default_rng(4)
    xyz = traj.xyz[0].astype(float) + rng.normal(scale=0.03, size=traj.xyz[0].shape)
    frames = np.stack([xyz, xyz * np.array([1.0, 1.0, -1.0])])  # and its mirror image (D-alanine)
    phi_psi = compute_phi_psi(mdtraj.Trajectory(frames, traj.topology))
    expected = [_dihedral_deg(*xyz[list(atoms)]) for atoms in (PHI_ATOMS, PSI_ATOMS)]
    assert phi_psi[0] == pytest.approx(expected, abs=1e-3)
    assert phi_psi[1] == pytest.approx(-np.array(expected), abs=1e-3)  # mirror flips both signs
    # PDB and DCD + topology give the same angles.
    mdtraj.Trajectory(frames, traj.topology).save_dcd(str(tmp_path / "t.dcd"))
    from_dcd = load_phi_psi(tmp_path / "t.dcd", topology=resource_path(ALANINE_DIPEPTIDE_PDB))
    assert from_dcd == pytest.approx(phi_psi, abs=1e-2)


def test_loader_errors(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        load_phi_psi(tmp_path / "missing.npy")
    np.save(tmp_path / "wrong.npy", np.zeros((10, 3)))
    with pytest.raises(DataFileError, match=r"shape \(10, 3\)"):
        load_phi_psi(tmp_path / "wrong.npy")
    np.save(tmp_path / "atoms.npy", np.zeros((2, 5, 3)))
    with pytest.raises(DataFileError, match="5 atoms"):
        load_phi_psi(tmp_path / "atoms.npy")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataFileError, match="unknown extension"):
        load_phi_psi(tmp_path / "x.csv")
    (tmp_path / "x.dcd").write_bytes(b"")
    with pytest.raises(DataFileError, match="topology"):
        load_phi_psi(tmp_path / "x.dcd")
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    with pytest.raises(DataFileError, match="NaN"):
        load_phi_psi(tmp_path / "nan.npy")


def test_loader_reads_hdf5_files(tmp_path, monkeypatch):
    import h5py
    import mdtraj

    traj = mdtraj.load(resource_path(ALANINE_DIPEPTIDE_PDB))
    rng = np.random.default_rng(6)
    xyz = traj.xyz + rng.normal(scale=0.02, size=(3,) + traj.xyz.shape[1:]).astype(np.float32)
    expected = compute_phi_psi(mdtraj.Trajectory(xyz, traj.topology))
    # mdtraj's HDF5 layout (nm coordinates and a JSON topology node), written without PyTables.
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        handle["coordinates"] = xyz
        handle["coordinates"].attrs["units"] = "nanometers"
        handle["topology"] = np.array([b"{}"])
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "tables", None)  # as without PyTables: h5py and the package's topology
        assert load_phi_psi(tmp_path / "t.h5") == pytest.approx(expected, abs=1e-3)
    if importlib.util.find_spec("tables") is not None:  # a real mdtraj HDF5 file, read by mdtraj
        mdtraj.Trajectory(xyz, traj.topology).save_hdf5(str(tmp_path / "mdtraj.h5"))
        assert load_phi_psi(tmp_path / "mdtraj.h5") == pytest.approx(expected, abs=1e-3)
    # An openmm_forecast nvt data file (positions (n_frames, N, 3) nm), a few Reference-platform frames.
    from openmm import unit

    from openmm_forecast.data import generate_nvt, load_trajectory
    from openmm_forecast.systems import build_system

    path = tmp_path / "nvt.h5"
    generate_nvt(build_system("amber14-vacuum"), path, n_frames=3, interval=0.1 * unit.picosecond, seed=1,
                 equilibration=0.1 * unit.picosecond, platform="Reference", progress=False)
    positions = load_trajectory(path).positions
    expected = compute_phi_psi(mdtraj.Trajectory(positions, traj.topology))
    assert load_phi_psi(path) == pytest.approx(expected, abs=1e-6)
    assert len(np.unique(expected[:, 0])) == 3  # three different frames, not one repeated


# ----------------------------------------------------------------------------------------- CLI, plot


def test_compare_cli_writes_complete_report_and_png(tmp_path):
    from openmm_forecast.cli import main

    rng = np.random.default_rng(5)
    a = np.column_stack([rng.normal(-80, 15, 400), rng.normal(65, 20, 400)])  # C7eq
    b = np.concatenate([a[:200], np.column_stack([rng.normal(-65, 8, 200), rng.normal(-40, 8, 200)])])  # + alpha_R
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--out", str(out),
                 "--labels", "md", "hybrid"]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("js_divergence", "basins", "transitions", "n_frames", "definitions"):
        assert key in report
    assert report["n_frames"] == {"md": 400, "hybrid": 400}
    assert report["js_divergence"] == pytest.approx(js_divergence_phi_psi(a, b), rel=1e-12)
    assert 0.1 < report["js_divergence"] < math.log(2.0)  # half of b is where a never goes
    assert report["basins"]["hybrid"]["alpha_R"]["population"] > 0.45
    assert report["basins"]["md"]["alpha_R"]["population"] < 0.01
    assert report["transitions"]["hybrid"]["total"] >= 1
    assert report["definitions"]["bins"] == 36 and report["definitions"]["range_deg"] == [-180.0, 180.0]
    assert set(report["definitions"]["basins"]) == {"beta", "alpha_R", "alpha_L"}
    png = (out / "ramachandran.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # A missing input is a clean error, not a traceback.
    assert main(["compare", str(tmp_path / "none.npy"), str(tmp_path / "b.npy"), "--out", str(out)]) == 1



def test_phi_psi_files_in_radians_are_refused(tmp_path, rng):
    degrees = np.column_stack([rng.normal(-80, 20, 50), rng.normal(150, 20, 50)])
    degrees = (degrees + 180.0) % 360.0 - 180.0  # as dihedral codes write them: [-180, 180), [-pi, pi)
    np.save(tmp_path / "degrees.npy", degrees)
    np.save(tmp_path / "radians.npy", np.radians(degrees))
    assert load_phi_psi(tmp_path / "degrees.npy").shape == (50, 2)
    with pytest.raises(DataFileError, match="radians"):
        load_phi_psi(tmp_path / "radians.npy")


# ------------------------------------------------------------------------------------------------ any peptide

TETRAPEPTIDE = os.path.join(os.path.dirname(__file__), "data", "ace-ala3-nme.pdb")
"""ACE-ALA-ALA-ALA-NME, built with Modeller for the input tests: three residues with phi and psi."""


def _tetrapeptide_frames(rng, n_frames=40, noise_nm=0.01):
    """Noisy copies of the tetrapeptide's structure (nm) and its mdtraj topology."""
    import mdtraj

    pdb = mdtraj.load(TETRAPEPTIDE)
    frames = pdb.xyz[0][None] + rng.normal(scale=noise_nm, size=(n_frames,) + pdb.xyz.shape[1:])
    return frames.astype(np.float32), pdb.topology


def test_every_residue_gets_its_phi_psi_pair_with_mdtraj_atoms_and_textbook_angles(rng):
    import mdtraj

    frames, topology = _tetrapeptide_frames(rng)
    pairs = backbone_torsion_pairs(topology)
    assert [pair.label for pair in pairs] == ["ALA2", "ALA3", "ALA4"]
    traj = mdtraj.Trajectory(frames, topology)
    phi_atoms, phi = compute_phi(traj)
    psi_atoms, psi = compute_psi(traj)
    assert [tuple(a) for a in phi_atoms] == [p.phi for p in pairs] and [tuple(a) for a in psi_atoms] == [p.psi for p in pairs]
    for pair in pairs:  # phi is C(i-1)-N-CA-C of the residue, psi N-CA-C-N(i+1)
        names = [topology.atom(i).name for i in pair.phi] + [topology.atom(i).name for i in pair.psi]
        assert names == ["C", "N", "CA", "C", "N", "CA", "C", "N"]
    angles = compute_phi_psi(traj)
    assert angles.shape == (40, 3, 2)
    for frame in (0, 17):
        for r, pair in enumerate(pairs):
            for column, atoms in enumerate((pair.phi, pair.psi)):
                expected = _dihedral_deg(*(frames[frame, i].astype(float) for i in atoms))
                assert angles[frame, r, column] == pytest.approx(expected, abs=1e-3)
    np.testing.assert_allclose(angles[..., 0], phi, atol=1e-4)
    np.testing.assert_allclose(angles[..., 1], psi, atol=1e-4)


def test_a_mirror_image_flips_every_torsion_and_its_basins(rng, tmp_path):
    """Reflection turns every torsion into its negative: a check of the angles that shares no code with them."""
    frames, topology = _tetrapeptide_frames(rng)
    np.save(tmp_path / "a.npy", frames)
    np.save(tmp_path / "mirror.npy", frames * np.array([-1.0, 1.0, 1.0], dtype=np.float32))
    torsion = Torsion.parse("chi=4,6,8,9")
    a = load_angles(tmp_path / "a.npy", topology=TETRAPEPTIDE, torsions=[torsion])
    mirror = load_angles(tmp_path / "mirror.npy", topology=TETRAPEPTIDE, torsions=[torsion])
    assert a.labels == mirror.labels == ["ALA2", "ALA3", "ALA4"]
    np.testing.assert_allclose(wrap_degrees(a.phi_psi + mirror.phi_psi + 180.0) - (-180.0), 0.0, atol=1e-3)
    np.testing.assert_allclose(wrap_degrees(a.torsions["chi"] + mirror.torsions["chi"] + 180.0), -180.0, atol=1e-3)
    assert load_phi_psi(tmp_path / "a.npy", topology=TETRAPEPTIDE).shape == (40, 3, 2)
    np.save(tmp_path / "walkers.npy", np.stack([a.phi_psi, mirror.phi_psi]))  # a benchmark's (walkers, samples, ...)
    with pytest.raises(DataFileError, match="not coordinates"):
        load_angles(tmp_path / "walkers.npy", torsions=[torsion])
    pooled = load_angles(tmp_path / "walkers.npy")
    assert pooled.labels == ["pair 1", "pair 2", "pair 3"] and pooled.phi_psi.shape == (80, 3, 2)
    assert load_angles(tmp_path / "walkers.npy", topology=TETRAPEPTIDE).labels == ["ALA2", "ALA3", "ALA4"]
    np.save(tmp_path / "one.npy", np.stack([a.phi_psi[:, 1], mirror.phi_psi[:, 1]]))
    assert load_phi_psi(tmp_path / "one.npy").shape == (80, 2)


def test_torsion_specifications_and_states():
    assert Torsion.parse("chi1=0,1,2,3") == Torsion("chi1", (0, 1, 2, 3))
    assert Torsion.parse("4,6,8,9").name == "4-6-8-9"
    for bad in ("1,2,3", "a=1,2,3,x", "1,1,2,3", "-1,2,3,4"):
        with pytest.raises(ValueError, match="four distinct"):
            Torsion.parse(bad)
    populations = torsion_state_populations([60.0, 179.0, -179.0, -60.0, 0.0, 119.9, 120.0, -120.0])
    assert populations == {"g+": {"population": 3 / 8}, "t": {"population": 3 / 8}, "g-": {"population": 2 / 8}}


def test_compare_cli_on_a_tetrapeptide_reports_and_plots_every_residue(rng, tmp_path, capsys):
    from openmm_forecast.cli import main

    frames, _ = _tetrapeptide_frames(rng)
    np.save(tmp_path / "a.npy", frames)
    np.save(tmp_path / "mirror.npy", frames * np.array([-1.0, 1.0, 1.0], dtype=np.float32))
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "a.npy"), str(tmp_path / "mirror.npy"), "--topology", TETRAPEPTIDE,
                 "--torsion", "chi=4,6,8,9", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["residues"] == ["ALA2", "ALA3", "ALA4"]
    per_residue = report["js_divergence_per_residue"]
    assert report["js_divergence"] == pytest.approx(np.mean(list(per_residue.values())))
    assert all(value > 0.5 for value in per_residue.values())  # mirror images: (nearly) disjoint histograms
    for run in ("a", "mirror"):
        for residue in report["residues"]:
            assert sum(b["population"] for b in report["basins"][run][residue].values()) == pytest.approx(1.0)
    populations = report["torsions"]["chi"]["populations"]
    assert populations["a"]["g+"]["population"] == pytest.approx(populations["mirror"]["g-"]["population"])
    assert (out / "ramachandran.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ALA3" in capsys.readouterr().out
