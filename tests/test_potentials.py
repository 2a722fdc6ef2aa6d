"""ANI potentials: TorchForce agreement, forces, file round trips, refusals, training, ANI-2x loading."""

import copy
import importlib.util
import json
import os
import socket

import numpy as np
import pytest
import torch
import yaml
from openmm import unit
from forecast_helpers import FailsFarAway

from openmm_forecast import ModelFileError, ModelMismatchError, build_system
from openmm_forecast.errors import CheckpointError
from openmm_forecast.potential_training import (
    PotentialTrainingConfig,
    calibrate_energy_offset,
    config_from_dict,
    energies_and_forces,
    fit_potential,
    label_configurations,
    load_config,
    sample_configurations,
    train_potential,
)
from openmm_forecast.potentials import (
    ani2x_architecture,
    ani2x_module,
    ani2x_weights_path,
    build_ani_potential,
    load_potential,
    save_potential,
    shipped_potential,
)

KJ_PER_HARTREE = 2625.499639  # CODATA 2014, written out here rather than taken from torchani
TINY = {"ensemble_size": 2, "hidden_layers": (16, 8), "seed": 3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def elements(vacuum_system):
    return vacuum_system.elements


@pytest.fixture(scope="module")
def configurations(vacuum_system):
    """20 frames of 600 K unconstrained amber MD, nm, shape (20, 22, 3)."""
    reference = build_system("amber14-vacuum", constraints=None)
    return sample_configurations(
        reference, 600.0, 20, frame_interval_ps=0.05, equilibration_ps=0.5, timestep_fs=0.5,
        friction_per_ps=1.0, seed=4,
    )


@pytest.fixture(scope="module")
def potential_file(tmp_path_factory, elements):
    """A tiny random float64 ensemble potential saved with save_potential; (path, unscripted module)."""
    potential = build_ani_potential(elements, dtype="float64", **TINY)
    # self energies of a realistic size (Hartree), so that the unit conversion of the shift is exercised
    with torch.no_grad():
        potential.model.energy_shifter.self_energies.copy_(torch.tensor([-0.5, -37.8, -54.6, -75.0]))
    path = str(tmp_path_factory.mktemp("potential") / "tiny.pt")
    save_potential(potential, path, {"note": "test"})
    return path, potential


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_torchforce_matches_torch_energies_and_forces(potential_file, configurations, platform):
    path, potential = potential_file
    ml = build_system("ml", potential_file=path, constraints=None)
    simulation = ml.create_simulation(platform=platform, minimize=False)
    x = torch.as_tensor(configurations[::5])
    expected_e, expected_f = energies_and_forces(potential, x)
    for frame, energy, forces in zip(configurations[::5], expected_e, expected_f):
        simulation.context.setPositions(frame)
        state = simulation.context.getState(getEnergy=True, getForces=True)
        openmm_e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        openmm_f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        assert openmm_e == pytest.approx(float(energy.detach()), rel=1e-10, abs=1e-8)
        np.testing.assert_allclose(openmm_f, forces.detach().numpy(), rtol=1e-6, atol=1e-3)


def test_forces_are_minus_energy_gradient_by_finite_differences(potential_file, configurations):
    module, _ = load_potential(potential_file[0])
    x = torch.as_tensor(configurations[3])
    _, forces = energies_and_forces(module, x[None])
    h = 1e-5  # nm
    rng = np.random.default_rng(0)
    for atom, axis in zip(rng.integers(0, 22, 8), rng.integers(0, 3, 8)):
        plus, minus = x.clone(), x.clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(module(plus).item() - module(minus).item()) / (2 * h)
        assert float(forces[0, atom, axis]) == pytest.approx(numeric, rel=1e-5, abs=1e-3)


def test_units_are_nm_and_kJ_per_mol(potential_file, configurations):
    """The wrapper equals torchani's own Angstrom/Hartree model times 10 A/nm and 2625.5 kJ/mol/Ha."""
    path, potential = potential_file
    module, metadata = load_potential(path)
    x = torch.as_tensor(configurations[:4])
    species = torch.tensor([[{"H": 1, "C": 6, "N": 7, "O": 8}[e] for e in metadata["elements"]]] * 4)
    hartree = potential.model((species, x * 10.0)).energies
    np.testing.assert_allclose(module.energies(x).detach().numpy(), hartree.detach().numpy() * KJ_PER_HARTREE,
                               rtol=1e-9)
    assert metadata["units"] == {"positions": "nm", "energy": "kJ/mol"}
    assert metadata["dtype"] == "float64"


def test_energy_is_rotation_and_translation_invariant(potential_file, configurations):
    module, _ = load_potential(potential_file[0])
    x = torch.as_tensor(configurations[7])
    angle = 0.7
    rotation = torch.tensor([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0],
                             [0.0, 0.0, 1.0]], dtype=torch.float64)
    moved = x @ rotation.T + torch.tensor([1.5, -2.0, 0.3], dtype=torch.float64)
    assert module(moved).item() == pytest.approx(module(x).item(), abs=1e-8)


def test_save_load_round_trip(potential_file, configurations, tmp_path):
    path, potential = potential_file
    module, metadata = load_potential(path)
    x = torch.as_tensor(configurations)
    assert torch.equal(module.energies(x), potential.energies(x))
    assert metadata["note"] == "test" and len(metadata["elements"]) == 22
    again = str(tmp_path / "again.pt")
    save_potential(potential, again)
    assert torch.equal(load_potential(again)[0].energies(x), module.energies(x))


def test_float32_export_agrees_with_float64(potential_file, configurations, tmp_path):
    path, potential = potential_file
    single = str(tmp_path / "single.pt")
    save_potential(copy.deepcopy(potential).float(), single)
    module32, metadata = load_potential(single)
    x = torch.as_tensor(configurations)
    assert metadata["dtype"] == "float32"
    np.testing.assert_allclose(module32.energies(x).detach().double().numpy(), potential.energies(x).detach().numpy(),
                               rtol=1e-5)


def test_ml_setup_refuses_mismatched_elements(elements, tmp_path):
    reordered = str(tmp_path / "reordered.pt")
    save_potential(build_ani_potential(list(reversed(elements)), **TINY), reordered)
    with pytest.raises(ModelMismatchError, match="elements"):
        build_system("ml", potential_file=reordered)
    shorter = str(tmp_path / "shorter.pt")
    save_potential(build_ani_potential(elements[:-1], **TINY), shorter)
    with pytest.raises(ModelMismatchError):
        build_system("ml", potential_file=shorter)


def test_missing_or_corrupt_files_raise_model_file_error(tmp_path):
    missing = str(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torchscript archive" * 10)
    for path in (missing, str(corrupt)):
        with pytest.raises(ModelFileError):
            load_potential(path)
        with pytest.raises(ModelFileError):
            build_system("ml", potential_file=path)
    no_metadata = str(tmp_path / "no_metadata.pt")
    torch.jit.script(torch.nn.Identity()).save(no_metadata)
    with pytest.raises(ModelFileError, match="metadata"):
        load_potential(no_metadata)


def test_training_reduces_errors(elements, configurations):
    reference = build_system("amber14-vacuum", constraints=None)
    energies, forces = label_configurations(reference.system, configurations)
    data = (configurations, energies, forces)
    potential = build_ani_potential(elements, ensemble_size=1, hidden_layers=(64,), seed=1)
    calibrate_energy_offset(potential, configurations, energies)
    _, start_f = energies_and_forces(potential, torch.as_tensor(configurations, dtype=torch.float32))
    start = float(((start_f.detach().double().numpy() - forces) ** 2).mean())
    settings = PotentialTrainingConfig(batch_size=5, learning_rate=3e-3, max_epochs=10, patience=100)
    result = train_potential(potential, data, data, settings, progress=False)
    end_e, end_f = energies_and_forces(potential, torch.as_tensor(configurations, dtype=torch.float32))
    end = float(((end_f.detach().double().numpy() - forces) ** 2).mean())
    assert end < 0.5 * start
    # the energy constant is calibrated on the training data after training: no mean error is left
    assert float(end_e.detach().double().mean()) == pytest.approx(energies.mean(), abs=1e-3)
    assert result["energy_offset_kJ_per_mol"] != 0.0
    losses = [h["validation_loss"] for h in result["history"]]
    assert min(losses[-3:]) < 0.5 * losses[0]


def test_a_fit_stopped_by_its_time_budget_trains_no_further_when_run_again(elements, configurations, tmp_path):
    reference = build_system("amber14-vacuum", constraints=None)
    energies, forces = label_configurations(reference.system, configurations)
    data = (configurations, energies, forces)
    settings = PotentialTrainingConfig(batch_size=2, max_epochs=10_000, patience=10_000, max_minutes=0.01)  # 0.6 s
    checkpoint = str(tmp_path / "checkpoint.pt")
    runs = []
    for _ in range(3):
        potential = build_ani_potential(elements, ensemble_size=1, hidden_layers=(16,), seed=1)
        runs.append(train_potential(potential, data, data, settings, checkpoint_path=checkpoint, progress=False))
    assert all(run["stop_reason"] == "max_minutes" for run in runs)
    assert runs[0]["history"] and runs[1]["history"] == runs[0]["history"] == runs[2]["history"]


def test_validation_energy_errors_are_centred_over_the_whole_set(elements, configurations):
    """Validation frames come ordered by source; an offset between sources must show in the centred RMSE."""
    reference = build_system("amber14-vacuum", constraints=None)
    energies, forces = label_configurations(reference.system, configurations)
    positions = np.tile(configurations, (30, 1, 1))  # 600 frames: more than one chunk of 256
    offset = 1000.0  # kJ/mol: the first 300 frames +offset, the last 300 -offset (like two temperature sets)
    shifted = np.tile(energies, 30) + np.where(np.arange(600) < 300, offset, -offset)
    potential = build_ani_potential(elements, ensemble_size=1, hidden_layers=(16,), seed=1)
    settings = PotentialTrainingConfig(batch_size=10, max_epochs=1, patience=10)
    validation = (positions, shifted, np.tile(forces, (30, 1, 1)))
    result = train_potential(potential, (configurations, energies, forces), validation, settings, progress=False)
    assert result["history"][0]["validation_energy_rmse_centered_kJ_per_mol"] > 0.9 * offset


def test_reference_labels_include_constrained_bond_terms():
    """Labels come from the unconstrained System: stretching an X-H bond costs amber's bond energy."""
    reference = build_system("amber14-vacuum", constraints=None)
    x = np.array(reference.positions.value_in_unit(unit.nanometer))
    stretched = x.copy()
    bond = x[0] - x[1]  # H1-CH3 of ACE
    stretched[0] += 0.01 * bond / np.linalg.norm(bond)
    energies, _ = label_configurations(reference.system, np.stack([x, stretched]))
    assert energies[1] - energies[0] > 5.0  # k ~ 2.8e5 kJ/mol/nm^2: ~14 kJ/mol for 0.01 nm


def _tiny_config(run_dir, **training):
    return config_from_dict({
        "run_dir": str(run_dir),
        "sampling": {"states": [{"temperature_K": 300, "frames": 30}, {"temperature_K": 900, "frames": 20}],
                     "distorted_frames": 10, "equilibration_ps": 0.5},
        "model": {"ensemble_size": 1, "hidden_layers": [16]},
        "training": {"batch_size": 16, "max_epochs": 2, **training},
        "md_check": {"time_ps": 0.2, "minimize_iterations": 5},
    })


def test_fit_potential_writes_results_and_resumes(tmp_path, elements):
    run_dir = tmp_path / "run"
    first = fit_potential(_tiny_config(run_dir), progress=False)
    for name in ("config.yaml", "dataset.npz", "checkpoint.pt", "potential.pt", "metrics.json", "training.png"):
        assert (run_dir / name).exists(), name
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["model"]["hidden_layers"] == [16] and written["training"]["max_epochs"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with np.load(run_dir / "dataset.npz") as data:
        validation = data["validation"]
    assert metrics["validation"]["configurations"] == validation.sum()
    # held out: the last 10 % of each trajectory (3 of 30 at 300 K, 2 of 20 at 900 K)
    assert validation[:30].tolist() == [False] * 27 + [True] * 3
    assert validation[30:50].tolist() == [False] * 18 + [True] * 2
    assert metrics["md_check"]["requested_ps"] == 0.2
    history = json.loads((run_dir / "history.json").read_text())
    second = fit_potential(_tiny_config(run_dir, max_epochs=3), progress=False)
    resumed = json.loads((run_dir / "history.json").read_text())
    assert first["training"]["epochs"] == 2 and second["training"]["epochs"] == 3
    assert resumed[:2] == history  # the first two epochs were not redone
    assert load_potential(str(run_dir / "potential.pt"))[1]["elements"] == elements
    changed = _tiny_config(run_dir)
    changed.model.hidden_layers = [8]
    with pytest.raises(CheckpointError):
        fit_potential(changed, progress=False)


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config\.training keys \['learnig_rate'\]"):
        config_from_dict({"training": {"learnig_rate": 1e-3}})
    with pytest.raises(ValueError, match=r"unknown config keys \['modle'\]"):
        config_from_dict({"modle": {}})
    with pytest.raises(ValueError, match="batch_size"):
        config_from_dict({"training": {"batch_size": "32"}})
    with pytest.raises(ValueError, match="validation_fraction"):
        config_from_dict({"training": {"validation_fraction": 1.5}})
    with pytest.raises(ValueError, match="states"):
        config_from_dict({"sampling": {"states": [{"temperature_K": 300}]}})


def test_shipped_config_is_valid():
    from openmm_forecast.systems import resource_path

    path = os.path.join(os.path.dirname(os.path.dirname(resource_path(""))), "configs", "potential_ala2.yaml")
    if not os.path.exists(path):  # installed without the repository's configs/
        pytest.skip("configs/potential_ala2.yaml not present")
    config = load_config(path)
    assert config.setup == "amber14-vacuum"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_ani2x_without_local_weights_raises_without_network(tmp_path, monkeypatch, no_network, elements):
    monkeypatch.setenv("TORCHANI_DATA_DIR", str(tmp_path / "torchani"))
    expected = str(tmp_path / "torchani" / "StateDicts" / "ani2x_state_dict.pt")
    assert ani2x_weights_path() == expected
    with pytest.raises(ModelFileError, match="ani2x_state_dict.pt"):
        ani2x_module(elements)
    with pytest.raises(ModelFileError, match="StateDicts"):
        build_system("ml", potential_file="ani2x")
    assert not (tmp_path / "torchani").exists()  # nothing created, nothing fetched


def test_ani2x_loads_local_weights(tmp_path, monkeypatch, no_network, elements, configurations):
    """Weights placed where torchani keeps them are used as they are (random ones here).

    (The TorchForce path is the same as for any potential module; it is not repeated with ANI-2x's
    8 x 7 large networks, which take tens of seconds to serialise into a Context.)
    """
    monkeypatch.setenv("TORCHANI_DATA_DIR", str(tmp_path))
    model = ani2x_architecture()
    (tmp_path / "StateDicts").mkdir()
    torch.save(model.state_dict(), tmp_path / "StateDicts" / "ani2x_state_dict.pt")
    module = ani2x_module(elements)
    x = torch.as_tensor(configurations[0])
    species = torch.tensor([[{"H": 1, "C": 6, "N": 7, "O": 8}[e] for e in elements]])
    expected = model.double()((species, 10.0 * x[None])).energies[0].item() * KJ_PER_HARTREE
    assert module(x).item() == pytest.approx(expected, rel=1e-9)


def test_shipped_potential_reproduces_amber_at_300K():
    """The shipped fit is within its stated accuracy on fresh 300 K amber configurations."""
    try:
        path = shipped_potential("ala2-ani-amber14")
    except ModelFileError:
        pytest.skip("ala2-ani-amber14 is not shipped")
    reference = build_system("amber14-vacuum", constraints=None)
    x = sample_configurations(reference, 300.0, 30, frame_interval_ps=0.1, equilibration_ps=1.0, timestep_fs=0.5,
                              friction_per_ps=1.0, seed=99)
    energies, forces = label_configurations(reference.system, x)
    module, metadata = load_potential(path)
    predicted_e, predicted_f = energies_and_forces(module, torch.as_tensor(x))
    force_rmse = float(np.sqrt(((predicted_f.detach().numpy() - forces) ** 2).mean()))
    energy_error = predicted_e.detach().numpy() - energies
    assert force_rmse < 60.0  # held-out at 300 K when fitted: 36 kJ/mol/nm (rms force ~840)
    assert np.std(energy_error) < 3.0 and abs(np.mean(energy_error)) < 5.0  # kJ/mol
    assert metadata["elements"] == reference.elements
    with pytest.raises(ModelFileError):
        shipped_potential("no-such-potential")


def test_a_configuration_the_reference_cannot_evaluate_gets_nan_labels(configurations):
    import openmm

    reference = build_system("amber14-vacuum", constraints=None)
    plain_e, plain_f = label_configurations(reference.system, configurations[:3])
    reference.system.addForce(openmm.PythonForce(FailsFarAway()))
    x = configurations[:3].copy()
    x[1] += 10.0  # the reference fails here only
    energies, forces = label_configurations(reference.system, x)
    assert np.isnan(energies[1]) and np.isnan(forces[1]).all()
    assert np.allclose(energies[[0, 2]], plain_e[[0, 2]]) and np.allclose(forces[[0, 2]], plain_f[[0, 2]])


def test_reference_setup_must_be_a_setup():
    with pytest.raises(ValueError, match="reference_setup must be one of"):
        config_from_dict({"reference_setup": "gfn3-xtb"})


@pytest.mark.skipif(importlib.util.find_spec("tblite") is None, reason="tblite not installed")
def test_fit_potential_labels_amber_configurations_with_gfn2_xtb(tmp_path):
    from openmm_forecast.xtb import GFN2xTBComputation

    config = _tiny_config(tmp_path / "run")
    config.reference_setup = "gfn2-xtb"
    config.sampling.states = [{"temperature_K": 300.0, "frames": 12}]
    config.sampling.distorted_frames = 4
    config.md_check.time_ps = 0.0
    metrics = fit_potential(config, progress=False)
    assert metrics["reference_setup"] == "gfn2-xtb" and metrics["sampling_setup"] == "amber14-vacuum"
    assert metrics["unlabelled_configurations"] == 0 and metrics["labelling_seconds"] > 0
    with np.load(tmp_path / "run" / "dataset.npz") as data:
        x, energies, forces = data["positions"], data["energies"], data["forces"]
    assert len(x) == 16
    computation = GFN2xTBComputation([atom.element.atomic_number for atom in build_system("amber14-vacuum").topology.atoms()])
    for index in (0, 15):  # a sampled and a displaced frame: xTB's labels, not amber's
        energy, force = computation.energy_and_forces(x[index])
        assert energies[index] == pytest.approx(energy, rel=1e-12) and np.allclose(forces[index], force, atol=1e-8)
    metadata = load_potential(metrics["potential_file"])[1]
    assert metadata["reference_setup"] == "gfn2-xtb" and metadata["sampling_setup"] == "amber14-vacuum"
