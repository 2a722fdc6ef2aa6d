"""The energy-aware loss: its dH estimate against exact energies, and that it lowers |dH| against plain MSE."""

import numpy as np
import pytest
import torch
from forecast_helpers import make_nve_file, tiny_config

from openmm_forecast.data import load_trajectory
from openmm_forecast.energy_loss import BondedEnergy, energy_change_estimate, energy_loss_terms
from openmm_forecast.evaluation import EnergyEvaluator, evaluate, kinetic_energy, molecular_system_from_metadata
from openmm_forecast.training import train


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("energy_loss")
    return make_nve_file(root / "train.h5", n_segments=16, seed=3), make_nve_file(root / "heldout.h5", seed=4)


def test_bonded_energy_matches_openmm(files, vacuum_system):
    data = load_trajectory(files[0])
    bonded = BondedEnergy(vacuum_system.system, dtype=torch.float64)
    # HBonds: the 12 X-H bonds are constraints and left out; 9 heavy-atom bonds and 36 angles remain
    assert len(bonded.bond_atoms) == 9 and len(bonded.angle_atoms) == 36
    from openmm_forecast.evaluation import EnergyBudget

    budget = EnergyBudget(vacuum_system.system).terms(data.positions[:3, 0])
    mine = bonded(torch.as_tensor(data.positions[:3, 0])).numpy()
    # the constrained bonds sit at their rest length r0 (HBonds constraints use r0): they add nothing
    np.testing.assert_allclose(mine, budget["bond"] + budget["angle"], rtol=1e-8, atol=1e-6)


def test_estimate_tracks_the_exact_energy_change(files, rng):
    data = load_trajectory(files[0])
    system = molecular_system_from_metadata(data.metadata).system
    energy = EnergyEvaluator(system)
    x, v = data.positions[:6, 2], data.velocities[:6, 2]
    forces = energy.forces(x)
    xp = x + 0.001 * rng.standard_normal(x.shape)
    vp = v + 0.05 * rng.standard_normal(v.shape)
    exact = energy.potential(xp) - energy.potential(x) + kinetic_energy(vp, data.masses) - kinetic_energy(v, data.masses)
    tensor = lambda a: torch.as_tensor(a)[:, None]  # noqa: E731  (one frame)
    estimate = energy_change_estimate(tensor(xp), tensor(vp), tensor(x), tensor(v), tensor(forces),
                                      torch.as_tensor(data.masses), BondedEnergy(system, dtype=torch.float64))
    assert np.abs(exact).min() > 2.0  # errors that cost about 1-5 kT ...
    # ... estimated to within 0.5 kT (what is left out: second order of torsions, non-bonded, constrained bonds)
    assert np.abs(estimate[:, 0].numpy() - exact).max() < 1.25
    energy_term, bias_term = energy_loss_terms(estimate, 2.494)
    assert float(energy_term) >= float(bias_term) >= 0  # <dH^2> >= <dH>^2


def test_energy_aware_loss_lowers_the_energy_error_against_mse(files, tmp_path):
    train_file, heldout = files
    results = {}
    for name, weights in (("mse", {}), ("energy", {"energy_weight": 0.05, "energy_bias_weight": 0.05})):
        config = tiny_config(train_file, tmp_path / name, epochs=8, architecture="mdtrajnet", seed=2,
                             hyperparameters={"d_model": 8, "layers": 1, "heads": 2, "uses_forces": True},
                             position_weighting="uniform", **weights)
        model = train(config)["model"]
        report = evaluate(model, heldout, None, baselines=(), timing=False, progress=False, max_samples=120)
        spans = next(iter(report["forecasters"].values()))["spans"]
        results[name] = [s["projected"] for s in spans]
    mse = np.array([s["dH_median_abs_kJ"] for s in results["mse"]])
    aware = np.array([s["dH_median_abs_kJ"] for s in results["energy"]])
    assert (aware < mse).all(), (aware, mse)
    assert abs(np.mean([s["dH_mean_kJ"] for s in results["energy"]])) < abs(
        np.mean([s["dH_mean_kJ"] for s in results["mse"]])
    )
