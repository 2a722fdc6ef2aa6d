"""Tests of openmm_forecast.evaluation: baseline ordering from physics, energies of the rebuilt System,
constraint projection, held-out segments, report schema and the CLI."""

import json

import numpy as np
import pytest
from forecast_helpers import make_nve_file, tiny_config
from openmm import unit

from openmm_forecast import ModelMismatchError, build_system, load_forecaster
from openmm_forecast.data import data_fingerprint, generate_nve_segments, load_trajectory
from openmm_forecast.evaluation import (
    EnergyBudget,
    EnergyEvaluator,
    energy_budget,
    evaluate,
    kinetic_energy,
    molecular_system_from_metadata,
)
from openmm_forecast.training import train

SPAN_KEYS = {
    "span_ps", "n_finite", "position_rmsd_A", "velocity_rmse_nm_per_ps", "potential_energy_error_kJ",
    "total_energy_change_kJ", "within_1kT", "within_2kT", "dH_median_abs_kJ", "dH_mean_kJ", "metropolis_acceptance",
}


@pytest.fixture(scope="module")
def short_file(tmp_path_factory):
    """Frames every 2 fs over 6 fs: short enough that free flight beats standing still."""
    path = tmp_path_factory.mktemp("short") / "short.h5"
    return generate_nve_segments(
        build_system("amber14-vacuum"), str(path), n_segments=12, segment_length=6 * unit.femtosecond,
        frame_interval=2 * unit.femtosecond, nve_timestep=0.5 * unit.femtosecond, spacing=0.1 * unit.picosecond,
        equilibration=1.0 * unit.picosecond, seed=5, platform="Reference", progress=False,
    )


@pytest.fixture(scope="module")
def baseline_report(short_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return evaluate([], short_file, out, timing_batch_sizes=(1, 4), progress=False), out


def test_verlet_reproduces_data_and_free_flight_beats_standing_still(baseline_report):
    report, _ = baseline_report
    forecasters = report["forecasters"]
    longest = {name: forecasters[name]["spans"][-1] for name in ("constant", "ballistic", "verlet")}
    assert longest["verlet"]["span_ps"] == pytest.approx(0.006)
    rmsd = {name: entry["position_rmsd_A"]["mean"] for name, entry in longest.items()}
    # the data's own integrator (velocity Verlet + RATTLE, 0.5 fs) from the same start: round-off only
    assert rmsd["verlet"] < 1e-6 and longest["verlet"]["velocity_rmse_nm_per_ps"]["max"] < 1e-6
    # a few fs: x + v t is off by a t^2 / 2, standing still by v t
    assert rmsd["verlet"] < 1e-3 * rmsd["ballistic"] < 1e-3 * rmsd["constant"]
    # its energy change is the data's own (same trajectories, same energies)
    reference = report["reference"][f"{0.006:.6g}"]["data_total_energy_change_kJ"]["median"]
    assert longest["verlet"]["total_energy_change_kJ"]["median"] == pytest.approx(reference, rel=1e-6, abs=1e-9)
    assert longest["verlet"]["within_1kT"] == 1.0
    # states that did not move have exactly the start energy
    assert longest["constant"]["total_energy_change_kJ"]["max"] < 1e-9


def test_report_schema_and_files(baseline_report):
    report, out = baseline_report
    assert {"data", "kT_kJ_per_mol", "spans_ps", "reference", "forecasters", "versions"} <= set(report)
    assert report["kT_kJ_per_mol"] == pytest.approx(2.494, abs=1e-3)
    assert report["data"]["held_out"] == "separate file" and report["data"]["n_segments_used"] == 12
    assert report["spans_ps"] == pytest.approx([0.002, 0.004, 0.006])
    for name in ("constant", "ballistic", "verlet"):
        result = report["forecasters"][name]
        assert set(result["timing"]) == {"batch_1_seconds_per_call", "batch_4_seconds_per_call"}
        assert all(t > 0 for t in result["timing"].values())
        for span in result["spans"]:
            assert SPAN_KEYS <= set(span)
            assert SPAN_KEYS - {"span_ps", "n_finite"} <= set(span["projected"])  # HBonds: projected too
            assert 0 <= span["within_1kT"] <= span["within_2kT"] <= 1
    written = json.loads((out / "report.json").read_text())
    assert set(written["forecasters"]) == {"constant", "ballistic", "verlet"}
    assert "_abs_dH" not in json.dumps(written)
    for name in ("constant", "ballistic", "verlet"):
        result = report["forecasters"][name]
        # only the exact dynamics is certified volume-preserving and reversible
        assert result["metropolis_meaningful"] is (name == "verlet") and result["uses_forces"] is False
        for span in result["spans"]:
            assert 0 <= span["projected"]["metropolis_acceptance"] <= 1
            if name == "verlet":  # the exact dynamics: dH is the integrator's own, far below kT
                assert span["projected"]["metropolis_acceptance"] > 0.95
            assert set(span["energy_budget_kJ"]) == {"bond", "angle", "torsion", "nonbonded", "kinetic"}
    for png in ("rmsd_vs_span.png", "energy_change_hist.png", "energy_vs_span.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rebuilt_system_gives_the_data_energies(short_file):
    data = load_trajectory(short_file)
    system = molecular_system_from_metadata(data.metadata).system
    energy = EnergyEvaluator(system)
    u = energy.potential(data.positions[:3])
    assert np.allclose(u, data.potential_energy[:3], atol=1e-6)
    assert np.allclose(kinetic_energy(data.velocities[:3], data.masses), data.kinetic_energy[:3], rtol=1e-6)


def test_projection_restores_constraints(short_file, rng):
    data = load_trajectory(short_file)
    system = molecular_system_from_metadata(data.metadata).system
    energy = EnergyEvaluator(system)
    x = data.positions[:4, 1] + 0.002 * rng.standard_normal((4, 22, 3))
    v = data.velocities[:4, 1] + 0.5 * rng.standard_normal((4, 22, 3))
    px, pv = energy.project(x, v)
    for index in range(system.getNumConstraints()):
        i, j, length = system.getConstraintParameters(index)
        length = length.value_in_unit(unit.nanometer)
        assert abs(np.linalg.norm(x[:, i] - x[:, j], axis=-1) - length).max() > 1e-4  # perturbed
        assert np.allclose(np.linalg.norm(px[:, i] - px[:, j], axis=-1), length, rtol=1e-7)
        relative = pv[:, i] - pv[:, j]
        bond = px[:, i] - px[:, j]
        assert np.abs((relative * bond).sum(-1)).max() < 1e-6  # no velocity along a constrained bond


def test_held_out_segments_of_the_training_file(tmp_path):
    train_file = make_nve_file(tmp_path / "train.h5", seed=3)
    other_file = make_nve_file(tmp_path / "other.h5", seed=4)
    result = train(tiny_config(train_file, tmp_path / "run", epochs=1))
    forecaster = load_forecaster(result["model"])
    report = evaluate(result["model"], train_file, None, timing=False, progress=False, baselines=("ballistic",))
    assert report["data"]["held_out"] == "validation split of the training file"
    assert report["data"]["n_segments_used"] == 3  # 25 % of 12
    assert report["data"]["n_samples"] == 3 * 4  # starts 0..3 of 7 frames for 3 strides of 10 fs
    name = forecaster.metadata.architecture
    assert [s["span_ps"] for s in report["forecasters"][name]["spans"]] == pytest.approx([0.01, 0.02, 0.03])
    # The same 12 validation samples: evaluate's rms is training's validation RMSD (float32 network).
    training_rmsd = report["forecasters"][name]["training_validation"]["position_rmsd_A"]
    evaluated = [s["position_rmsd_A"] for s in report["forecasters"][name]["spans"]]
    assert [s["rms"] for s in evaluated] == pytest.approx(training_rmsd, rel=1e-4)
    assert all(s["mean"] <= s["rms"] for s in evaluated)
    again = evaluate([forecaster], other_file, None, timing=False, progress=False, baselines=())
    assert again["data"]["held_out"] == "separate file" and again["data"]["n_segments_used"] == 12
    # The training file extended by a later run (same chain, 4 more segments): still not used for training.
    fingerprint = data_fingerprint(train_file)
    make_nve_file(train_file, n_segments=16, seed=3)
    assert data_fingerprint(train_file) != fingerprint == data_fingerprint(train_file, 12)
    extended = evaluate([forecaster], train_file, None, timing=False, progress=False, baselines=())
    assert extended["data"]["held_out"].startswith("validation split of the training file and the segments appended")
    assert extended["data"]["n_segments_used"] == 3 + 4
    # a forecaster for another molecule is refused
    forecaster.metadata.elements = ["C"] * 22
    with pytest.raises(Exception, match="elements"):
        evaluate([forecaster], other_file, None, timing=False, progress=False, baselines=())


def test_cli_evaluate(short_file, tmp_path, capsys):
    from openmm_forecast.cli import main

    out = tmp_path / "cli"
    arguments = ["evaluate", "--data", short_file, "--out", str(out), "--no-timing", "--baselines", "constant,verlet"]
    assert main(arguments) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["forecasters"]) == {"constant", "verlet"}
    assert "verlet" in capsys.readouterr().out


def test_shipped_default_forecaster_beats_free_flight(short_file, tmp_path, vacuum_system):
    """The shipped model loads by name, fits the vacuum setup and beats x + v t at every span."""
    from openmm_forecast.forecasters import shipped_models

    if "ala2-amber14-vacuum" not in shipped_models():
        pytest.skip("no shipped default forecaster in this checkout")
    forecaster = load_forecaster("ala2-amber14-vacuum", molecular_system=vacuum_system)
    meta = forecaster.metadata
    assert meta.setup == "amber14-vacuum" and meta.constraints == "HBonds" and meta.temperature_K == 300.0
    assert meta.stride_ps == pytest.approx(0.01)
    # fresh states (a seed the training and held-out files did not use), frames every 10 fs
    data_file = make_nve_file(tmp_path / "fresh.h5", n_segments=8, segment_fs=10 * meta.max_frames, seed=99)
    report = evaluate([forecaster], data_file, None, timing=False, progress=False, baselines=("ballistic",))
    model, ballistic = report["forecasters"][meta.architecture], report["forecasters"]["ballistic"]
    for mine, free in zip(model["spans"], ballistic["spans"]):
        assert mine["position_rmsd_A"]["mean"] < 0.7 * free["position_rmsd_A"]["mean"], mine["span_ps"]


def test_ml_setup_data_is_evaluated_with_its_torchforce(tmp_path):
    """A System holding a TorchForce (openmm-torch) cannot be deep-copied: evaluate must not try."""
    from openmm_forecast.potentials import shipped_potential

    potential = shipped_potential("ala2-ani-amber14")
    ml = build_system("ml", potential_file=potential)
    path = generate_nve_segments(
        ml, str(tmp_path / "ml.h5"), n_segments=2, segment_length=4 * unit.femtosecond,
        frame_interval=2 * unit.femtosecond, nve_timestep=0.5 * unit.femtosecond, spacing=0.02 * unit.picosecond,
        equilibration=0.02 * unit.picosecond, seed=3, platform="Reference", progress=False,
    )
    report = evaluate([], path, tmp_path / "out", baselines=("constant", "verlet"), potential_file=potential,
                      timing_batch_sizes=(), progress=False)
    verlet = report["forecasters"]["verlet"]["spans"][-1]
    # the data's own dynamics, energies from the ML potential: what the data file recorded
    reference = report["reference"][f"{0.004:.6g}"]["data_total_energy_change_kJ"]["median"]
    assert verlet["total_energy_change_kJ"]["median"] == pytest.approx(reference, rel=1e-6, abs=1e-6)
    assert report["forecasters"]["constant"]["spans"][-1]["total_energy_change_kJ"]["max"] < 1e-9


def test_bad_evaluation_arguments_are_refused_before_any_work(short_file, tmp_path):
    with pytest.raises(ValueError, match="unknown baseline"):
        evaluate([], short_file, None, baselines=("balistic",), progress=False)
    with pytest.raises(ValueError, match="max_samples"):
        evaluate([], short_file, None, max_samples=0, progress=False)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        evaluate([], short_file, a_file, progress=False)


def test_energy_budget_adds_up_to_the_energy_error(short_file, rng):
    """Per-term errors (bond, angle, torsion, non-bonded, kinetic) sum to the total-energy error of the forecast."""
    data = load_trajectory(short_file)
    system = molecular_system_from_metadata(data.metadata).system
    energy, budget = EnergyEvaluator(system), EnergyBudget(system)
    x, v = data.positions[:5, 1], data.velocities[:5, 1]
    px, pv = energy.project(x + 0.002 * rng.standard_normal(x.shape), v + 0.3 * rng.standard_normal(v.shape))
    terms = energy_budget(budget, px, pv, x, v, data.masses)
    total = energy.potential(px) - energy.potential(x) + kinetic_energy(pv, data.masses) - kinetic_energy(v, data.masses)
    assert sum(t["mean"] for t in terms.values()) == pytest.approx(total.mean(), abs=1e-6)
    assert terms["bond"]["mean_abs"] > terms["torsion"]["mean_abs"]  # stiff terms pay for a random error
    assert budget.groups and system.getForce(0).getForceGroup() == 0  # the caller's System keeps its groups


def test_metropolis_is_flagged_meaningful_only_for_certified_maps(short_file):
    from openmm_forecast.forecasters import BallisticForecaster, is_structure_preserving

    data = load_trajectory(short_file)
    plain = BallisticForecaster(data.elements, stride_ps=0.002, max_frames=3, setup="amber14-vacuum")
    certified = BallisticForecaster(data.elements, stride_ps=0.002, max_frames=3, setup="amber14-vacuum")
    certified.metadata.extra["structure_preserving"] = True
    assert not is_structure_preserving(plain.metadata) and is_structure_preserving(certified.metadata)
    report = evaluate([plain, certified], short_file, None, baselines=(), timing=False, progress=False, max_samples=10)
    flags = [result["metropolis_meaningful"] for result in report["forecasters"].values()]
    assert flags == [False, True]


def test_learned_surrogate_files_are_evaluated_as_velocity_verlet_on_them(short_file, tmp_path, vacuum_system):
    """A surrogate System file is integrated for the data's System; the 'surrogate' baseline is amber14-vacuum."""
    import openmm

    exact = tmp_path / "exact.xml"
    exact.write_text(openmm.XmlSerializer.serialize(vacuum_system.system))
    weakened = openmm.XmlSerializer.deserialize(exact.read_text())
    nonbonded = next(f for f in weakened.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in range(nonbonded.getNumParticles()):
        charge, sigma, epsilon = nonbonded.getParticleParameters(i)
        nonbonded.setParticleParameters(i, 0.5 * charge, sigma, epsilon)
    (tmp_path / "weakened.xml").write_text(openmm.XmlSerializer.serialize(weakened))
    report = evaluate([str(exact), str(tmp_path / "weakened.xml")], short_file, None, baselines=("surrogate",),
                      timing=False, progress=False, max_samples=20)
    forecasters = report["forecasters"]
    assert set(forecasters) == {"exact.xml (learned surrogate)", "weakened.xml (learned surrogate)", "surrogate"}
    assert all(result["metropolis_meaningful"] for result in forecasters.values())
    mine, baseline = forecasters["exact.xml (learned surrogate)"], forecasters["surrogate"]
    assert mine["metadata"]["stride_ps"] == pytest.approx(0.002)  # the data's frame interval: no model file
    for a, b in zip(mine["spans"], baseline["spans"]):  # the same System and integrator as the baseline
        assert a["dH_mean_kJ"] == pytest.approx(b["dH_mean_kJ"], abs=1e-9)
    weak = forecasters["weakened.xml (learned surrogate)"]["spans"][-1]
    assert weak["position_rmsd_A"]["mean"] > 10 * mine["spans"][-1]["position_rmsd_A"]["mean"]
    assert weak["dH_median_abs_kJ"] > 3 * mine["spans"][-1]["dH_median_abs_kJ"]  # 2 fs shadow error: 0.5 kJ/mol


def test_a_shipped_learned_surrogate_model_is_evaluated_on_its_setup(short_file, tmp_path):
    obc2_file = generate_nve_segments(
        build_system("amber14-obc2"), str(tmp_path / "obc2.h5"), n_segments=2, segment_length=4 * unit.femtosecond,
        frame_interval=2 * unit.femtosecond, nve_timestep=0.5 * unit.femtosecond, spacing=0.02 * unit.picosecond,
        equilibration=0.1 * unit.picosecond, seed=4, platform="Reference", progress=False,
    )
    report = evaluate(["ala2-amber14-obc2", "fit-amber14-obc2"], obc2_file, None, baselines=(), timing=False,
                      progress=False)
    card, surrogate = report["forecasters"]["ala2-amber14-obc2"], report["forecasters"]["fit-amber14-obc2 (learned surrogate)"]
    assert card["metadata"]["stride_ps"] == pytest.approx(0.002) and card["structure_preserving"]
    assert [s["dH_mean_kJ"] for s in card["spans"]] == [s["dH_mean_kJ"] for s in surrogate["spans"]]
    with pytest.raises(ModelMismatchError, match="amber14-obc2"):
        evaluate(["ala2-amber14-obc2"], short_file, None, baselines=(), timing=False, progress=False)
