"""Importance sampling from a surrogate: the weighted samples give the target's populations, the raw ones do not;
the benchmark runs such an arm and refuses a bad one before any work."""

import json

import numpy as np
import pytest
from openmm import unit

from openmm_forecast._runtime import openmm as mm
from openmm_forecast.benchmark import BenchmarkArm, run_benchmark
from openmm_forecast.cli import main
from openmm_forecast.reweighting import ReweightedWalkers
from openmm_forecast.systems import MolecularSystem
from openmm_forecast.units import kT_kJ
from forecast_helpers import wells_system, wells_topology
from test_benchmark import reference_dir  # noqa: F401  (a fixture: a small plain-MD reference)

KT = kT_kJ(300.0)
N = 2
WELL = "h*((dx/b)^2-1)^2 + c*dx/b + 0.5*k*(y^2+z^2)"
TARGET = dict(h=8.0 * KT, b=0.05, c=1.0 * KT, k=2000.0)  # 8 kT barrier, the right well 2 kT above the left
SURROGATE = dict(TARGET, h=2.0 * KT, c=0.0)  # barrier lowered to 2 kT and no tilt: half the samples on the right
CENTRES = np.array([[i, 0.0, 0.0] for i in range(N)], dtype=float)


def right_population(h, b, c, k):
    x = np.linspace(-0.2, 0.2, 200001)
    weight = np.exp(-(h * ((x / b) ** 2 - 1) ** 2 + c * x / b) / KT)
    return float(weight[x > 0].sum() / weight.sum())


def wells_target():
    return MolecularSystem.from_openmm(wells_system(WELL, N, **TARGET), wells_topology(N),
                                       CENTRES - [TARGET["b"], 0.0, 0.0], timestep=2 * unit.femtosecond)


def weighted_mean(right, weights, n_batches=20):
    """Weighted right-well population and its standard error: the ratio estimator's linearisation
    ``z = w (r - p) / mean(w)`` averaged in contiguous batches of every walker's samples (they are correlated).

    right : shape (n_walkers, n_samples, N); weights : shape (n_walkers, n_samples)."""
    r = right.mean(axis=2)
    population = float((weights * r).sum() / weights.sum())
    z = weights * (r - population) / weights.mean()
    batches = np.concatenate([[batch.mean() for batch in np.array_split(walker, n_batches)] for walker in z])
    return population, float(batches.std(ddof=1) / np.sqrt(len(batches)))


def test_weighted_samples_of_a_lowered_surrogate_give_the_targets_rare_well_and_raw_ones_do_not():
    """Two particles in tilted double wells with an 8 kT barrier (exact right-well population 0.125): Langevin MD
    of a surrogate without the tilt and with a 2 kT barrier (right-well population 0.5), every sample weighted by
    exp(-(U_t - U_s)/kT), reproduces 0.125 within 4 batch standard errors (seeds 1 and 5: z -0.8 and 0.6, standard
    errors 0.014-0.018); the same samples unweighted (the control) sit near 0.5, many standard errors away."""
    walkers = ReweightedWalkers(wells_target(), wells_system(WELL, N, **SURROGATE), 4, seed=1, platform="Reference",
                                surrogate_platform="Reference", minimize=False)
    samples = walkers.sample(0.2 * unit.picosecond, n_samples=2000)
    x = samples.positions_nm[:, :, :, 0] - CENTRES[:, 0]  # (n_samples, n_walkers, N)
    right = np.swapaxes(x > 0, 0, 1).astype(float)  # (n_walkers, n_samples, N)
    weights = walkers.weights(len(samples.time_ps))
    assert weights.shape == right.shape[:2] and walkers.target_evaluations == 4 * 2000
    exact = right_population(**TARGET)
    population, error = weighted_mean(right, weights)
    assert error < 0.03 and abs(population - exact) < 4 * error
    raw, raw_error = weighted_mean(right, np.ones_like(weights))
    assert abs(raw - right_population(**SURROGATE)) < 4 * raw_error
    assert abs(raw - exact) > 10 * max(raw_error, error)


def test_a_state_the_target_cannot_evaluate_weighs_nothing():
    """A target energy that is not finite (here: the target is infinite wherever a particle is in its right well) gives
    that sample no weight instead of a NaN average, and is counted."""
    expression = "select(step(dx), 1/0, 0) + " + WELL
    target = MolecularSystem.from_openmm(wells_system(expression, N, **TARGET), wells_topology(N),
                                         CENTRES - [TARGET["b"], 0.0, 0.0])
    walkers = ReweightedWalkers(target, wells_system(WELL, N, **SURROGATE), 1, platform="Reference",
                                surrogate_platform="Reference", minimize=False)
    walkers.sample(0.2 * unit.picosecond, n_samples=200)
    weights = walkers.weights(200)
    assert walkers.infinite_target_energies > 0 and np.all(np.isfinite(weights))
    assert np.count_nonzero(weights == 0) == walkers.infinite_target_energies


def test_a_reweighted_arm_is_weighted_in_the_benchmark_report(vacuum_system, reference_dir, tmp_path):
    arms = [BenchmarkArm("plain", vacuum_system),
            BenchmarkArm("flat", vacuum_system, reweighted_surrogate="fit-amber14-obc2-lowered")]
    report = run_benchmark(arms, str(tmp_path / "bench"), n_walkers=2, wall_seconds=1.0, reference=str(reference_dir),
                           progress=False, platform="Reference", slice_seconds=0.5, sample_interval=0.1 * unit.picosecond,
                           reference_interval=0.1 * unit.picosecond)
    flat = report["arms"]["flat"]
    assert flat["kind"] == "reweighted" and flat["reweighting"]["surrogate"] == "fit-amber14-obc2-lowered"
    assert 0 < flat["reweighting"]["kish_ess_fraction"] <= 1 and flat["reweighting"]["target_evaluations"] > 0
    assert all(value["weighted"] for value in flat["efficiency"].values())
    assert np.load(tmp_path / "bench" / "flat_weights.npy").shape == np.load(tmp_path / "bench" / "flat_phipsi.npy").shape[:2]
    with pytest.raises(ValueError, match="an arm of its own"):
        BenchmarkArm("x", vacuum_system, forecaster="surrogate", reweighted_surrogate="fit-amber14-obc2")


def test_cli_reweight_arm_parses_and_bad_ones_are_refused_before_any_work(reference_dir, tmp_path):
    from openmm_forecast.cli.benchmark import parse_arm

    assert parse_arm("fit-amber14-obc2-lowered:reweight", "tolerance") == (
        "fit-amber14-obc2-lowered-reweight", "fit-amber14-obc2-lowered", "reweight", None, "python")
    common = ["benchmark", "--arm", "plain", "--walkers", "1", "--wall-seconds", "0.3", "--reference",
              str(reference_dir), "--no-progress", "--platform", "Reference"]
    for bad in ("fit-amber14-obc2:reweight@500", "no-such-surrogate:reweight"):
        assert main(common + ["--arm", bad, "--out", str(tmp_path / "never")]) == 2
        assert not (tmp_path / "never").exists()
    out = tmp_path / "ok"
    assert main(common + ["--arm", "flat=fit-amber14-obc2:reweight", "--sample-interval", "0.2",
                          "--reference-interval", "0.1", "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["arms"]["flat"]["kind"] == "reweighted"


def test_a_reweighted_arm_whose_weights_rest_on_few_samples_is_warned_about(tmp_path, caplog):
    """amber14 + OBC2 reweighted from itself without its implicit solvent (the CustomGBForce removed, nothing in its
    place): the solvation energy left out varies by many kT between samples, so the Kish fraction falls below
    MIN_KISH_FRACTION and the run says so (the fitted surrogates of the demo keep about 0.2)."""
    from openmm_forecast import build_system
    from openmm_forecast.benchmark import MIN_KISH_FRACTION

    obc2 = build_system("amber14-obc2")
    no_solvent = mm.XmlSerializer.clone(obc2.system)
    for index in reversed(range(no_solvent.getNumForces())):
        if isinstance(no_solvent.getForce(index), mm.CustomGBForce):
            no_solvent.removeForce(index)
    arms = [BenchmarkArm("plain", obc2), BenchmarkArm("rw", obc2, reweighted_surrogate=no_solvent)]
    report = run_benchmark(arms, str(tmp_path / "bench"), n_walkers=2, wall_seconds=3.0, progress=False,
                           platform="Reference", slice_seconds=1.5, sample_interval=0.5 * unit.picosecond)
    assert report["arms"]["rw"]["reweighting"]["kish_ess_fraction"] < MIN_KISH_FRACTION  # measured 0.002-0.02
    assert any("effective fraction" in record.getMessage() and "'rw'" in record.getMessage() for record in caplog.records)
