"""Tests of openmm_forecast.training: config validation, segment split, augmentation physics, overfitting,
resumable checkpoints and the exported model."""

import json

import numpy as np
import pytest
import torch
import yaml
from forecast_helpers import TINY, make_nve_file, tiny_config
from openmm import unit

from openmm_forecast import load_forecaster
from openmm_forecast.data import data_fingerprint, load_trajectory
from openmm_forecast.errors import CheckpointError, DataFileError
from openmm_forecast.evaluation import kinetic_energy
from openmm_forecast.training import (
    Trainer,
    TrainingConfig,
    augment,
    gather_windows,
    sample_starts,
    split_segments,
    train,
)


@pytest.fixture(scope="module")
def nve_file(tmp_path_factory):
    return make_nve_file(tmp_path_factory.mktemp("data") / "nve.h5")


# ------------------------------------------------------------------------------------------------- #
# Config
# ------------------------------------------------------------------------------------------------- #


def test_config_refuses_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="unknown training config keys.*learnign_rate"):
        TrainingConfig.from_dict(tiny_config("d.h5", tmp_path, learnign_rate=1e-3))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**tiny_config("d.h5", tmp_path), "batchsize": 3}))
    with pytest.raises(ValueError, match="batchsize"):
        TrainingConfig.from_yaml(path)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("stride_ps", 0.0, "stride_ps"),
        ("stride_ps", "10 fs", "stride_ps"),
        ("max_frames", 0, "max_frames"),
        ("max_frames", 2.5, "max_frames"),
        ("validation_fraction", 1.0, "validation_fraction"),
        ("learning_rate", -1e-3, "learning_rate"),
        ("lr_schedule", "linear", "lr_schedule"),
        ("dtype", "float16", "dtype"),
        ("augment_rotations", "yes", "augment_rotations"),
        ("device", "tpu", "device"),
        ("epochs", True, "epochs"),
        ("position_weighting", "charge", "position_weighting"),
        ("max_minutes", 0, "max_minutes"),
        ("learning_rate", "1e-3", r"'1e-3' \(str\).*write 1.0e-3"),  # how YAML reads 1e-3
    ],
)
def test_config_refuses_bad_values(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig.from_dict(tiny_config("d.h5", tmp_path, **{key: value}))


def test_config_requires_data_out_architecture(tmp_path):
    config = tiny_config("d.h5", tmp_path)
    del config["architecture"]
    with pytest.raises(ValueError, match="architecture"):
        TrainingConfig.from_dict(config)


def test_config_round_trips_through_yaml(tmp_path):
    config = TrainingConfig.from_dict(tiny_config("d.h5", tmp_path, max_minutes=2))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    again = TrainingConfig.from_yaml(path)
    assert again == config
    assert isinstance(again.max_minutes, float)


# ------------------------------------------------------------------------------------------------- #
# Data handling
# ------------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("n, fraction", [(2, 0.5), (12, 0.25), (101, 0.1)])
def test_split_is_by_segment_and_disjoint(n, fraction):
    train_segments, val_segments = split_segments(n, fraction, seed=5)
    assert set(train_segments).isdisjoint(val_segments)
    assert sorted(set(train_segments) | set(val_segments)) == list(range(n))
    assert len(val_segments) >= 1 and len(train_segments) >= 1
    assert abs(len(val_segments) - fraction * n) <= 1


def test_trainer_samples_never_share_a_segment(nve_file, tmp_path):
    trainer = Trainer(TrainingConfig.from_dict(tiny_config(nve_file, tmp_path / "run")))
    train_segments = set(trainer.train_starts[:, 0].tolist())
    val_segments = set(trainer.val_starts[:, 0].tolist())
    assert train_segments and val_segments and train_segments.isdisjoint(val_segments)
    # every valid start frame is used: 7 frames per segment, 3 strides of 1 frame ahead -> frames 0..3
    assert sorted(set(trainer.train_starts[:, 1].tolist())) == [0, 1, 2, 3]


def test_windows_respect_history_and_stride():
    n_frames, step, history, max_frames = 11, 2, 2, 3
    starts = sample_starts(np.array([4]), n_frames, step, history, max_frames)
    assert starts[:, 1].tolist() == [2, 3, 4]  # needs 2 frames before and 6 after
    positions = torch.arange(5 * n_frames, dtype=torch.float64).reshape(5, n_frames, 1, 1).expand(5, n_frames, 2, 3)
    x, v = gather_windows(positions, -positions, torch.as_tensor(starts), step, history, max_frames)
    assert x.shape == (3, history + max_frames, 2, 3)
    expected = 4 * n_frames + np.array([0, 2, 4, 6, 8])
    assert x[0, :, 0, 0].tolist() == expected.tolist()
    with pytest.raises(DataFileError, match="too short"):
        sample_starts(np.array([0]), 5, 2, 1, 3)


def test_time_reversed_window_is_a_true_trajectory(nve_file, vacuum_system):
    """A window played backwards with negated velocities is what velocity Verlet produces from its start."""
    from openmm_forecast.forecasters import VerletForecaster

    data = load_trajectory(nve_file)
    x = torch.as_tensor(data.positions[:2, :4])
    v = torch.as_tensor(data.velocities[:2, :4])
    generator = torch.Generator().manual_seed(0)
    flipped = None
    for _ in range(20):  # draw until both windows are reversed
        rx, rv = augment(x, v, 1, generator, rotations=False, time_reversal=True)
        if torch.equal(rx[:, 0], x[:, -1]):
            flipped = rx, rv
            break
    assert flipped is not None
    rx, rv = flipped
    verlet = VerletForecaster(vacuum_system, stride_ps=0.01, max_frames=3, timestep=0.5 * unit.femtosecond)
    px, pv = verlet.forecast(rx[:, :1].numpy(), rv[:, :1].numpy(), 3)
    assert np.abs(px - rx[:, 1:].numpy()).max() < 1e-5  # nm: reversibility up to constraint tolerance
    assert np.abs(pv - rv[:, 1:].numpy()).max() < 1e-2  # nm/ps (thermal velocities ~1 nm/ps)


def test_rotation_augmentation_preserves_geometry_and_energy(nve_file):
    data = load_trajectory(nve_file)
    x = torch.as_tensor(data.positions[:4, :4])
    v = torch.as_tensor(data.velocities[:4, :4])
    rx, rv = augment(x, v, 1, torch.Generator().manual_seed(1), rotations=True, time_reversal=False)
    assert not torch.allclose(rx, x)
    distances = torch.cdist(x.reshape(-1, 22, 3), x.reshape(-1, 22, 3))
    rotated = torch.cdist(rx.reshape(-1, 22, 3), rx.reshape(-1, 22, 3))
    assert torch.allclose(distances, rotated, atol=1e-12)
    ke = kinetic_energy(v.numpy(), data.masses)
    assert np.allclose(kinetic_energy(rv.numpy(), data.masses), ke, rtol=1e-12)
    # one rotation per window: displacements between frames rotate together with the velocities
    dx, rdx = x[:, 1] - x[:, 0], rx[:, 1] - rx[:, 0]
    assert torch.allclose((dx * v[:, 0]).sum((-1, -2)), (rdx * rv[:, 0]).sum((-1, -2)), atol=1e-12)


def test_rotation_augmentation_auto_follows_equivariance(nve_file, tmp_path):
    tiny = Trainer(TrainingConfig.from_dict(tiny_config(nve_file, tmp_path / "a", augment_rotations="auto")))
    assert tiny.rotate is True  # an MLP on coordinates is not rotation-equivariant
    equivariant = tiny_config(
        nve_file, tmp_path / "b", architecture="mdtrajnet", augment_rotations="auto",
        hyperparameters={"d_model": 8, "layers": 1, "heads": 2},
    )
    assert Trainer(TrainingConfig.from_dict(equivariant)).rotate is False


# ------------------------------------------------------------------------------------------------- #
# Training loop
# ------------------------------------------------------------------------------------------------- #


def test_tiny_model_overfits_tiny_dataset(nve_file, tmp_path):
    config = tiny_config(
        nve_file, tmp_path / "run", epochs=200, batch_size=64, learning_rate=1e-2, augment_time_reversal=False,
        hyperparameters={"hidden": 64, "max_frames": 3}, lr_schedule="constant", gradient_clip=None,
    )
    result = train(config)
    with open(tmp_path / "run" / "metrics.json") as handle:
        epochs = json.load(handle)["epochs"]
    first, last = epochs[0]["train"]["loss"], epochs[-1]["train"]["loss"]
    assert last < 1e-2 * first, (first, last)
    assert result["epochs_run"] == 200 and result["stopped"] == "epochs"


def _parameters(run_dir):
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return payload["model"], payload["optimizer"]["state"]


def test_resume_continues_exactly(nve_file, tmp_path):
    changes = dict(epochs=4, augment_rotations=True, augment_time_reversal=True, samples_per_epoch=24)
    train(tiny_config(nve_file, tmp_path / "straight", **changes))
    stop_after_two = lambda trainer, entry: entry["epoch"] == 2  # noqa: E731
    stopped = train(tiny_config(nve_file, tmp_path / "interrupted", **changes), callback=stop_after_two)
    assert stopped["stopped"] == "callback" and stopped["epochs_run"] == 2
    resumed = train(tiny_config(nve_file, tmp_path / "interrupted", **changes))
    assert resumed["epochs_run"] == 4
    straight, straight_opt = _parameters(tmp_path / "straight")
    again, again_opt = _parameters(tmp_path / "interrupted")
    for name in straight:
        assert torch.equal(straight[name], again[name]), name
    for key in straight_opt:
        assert torch.equal(straight_opt[key]["exp_avg"], again_opt[key]["exp_avg"])
    # a run that differs in what it learns is refused instead of silently mixed
    with pytest.raises(CheckpointError, match="learning_rate"):
        train(tiny_config(nve_file, tmp_path / "interrupted", **{**changes, "learning_rate": 1e-2}))


def test_time_budget_is_kept_across_resumes(nve_file, tmp_path):
    config = tiny_config(nve_file, tmp_path / "run", epochs=1000, max_minutes=0.002)  # 0.12 s of training
    first = train(config)
    assert first["stopped"] == "max_minutes" and first["model"] is not None
    assert 1 <= first["epochs_run"] < 1000
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert payload["train_seconds"] >= 0.12
    # the budget is spent: running again trains no further
    again = train(config)
    assert again["epochs_run"] == first["epochs_run"]



def test_an_export_interrupted_after_its_epoch_is_redone_on_resume(nve_file, tmp_path, monkeypatch):
    config = tiny_config(nve_file, tmp_path / "run", epochs=1)
    exported = Trainer.export

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(Trainer, "export", exported)
    result = train(config)
    assert result["best_epoch"] == 1 and result["epochs_run"] == 1
    assert load_forecaster(result["model"]).metadata.extra["validation"]["epoch"] == 1


def test_run_directory_and_exported_model(nve_file, tmp_path):
    run = tmp_path / "run"
    export = tmp_path / "shipped.pt"
    result = train(tiny_config(nve_file, run, epochs=3, export=str(export)))
    effective = yaml.safe_load((run / "config.yaml").read_text())
    assert effective["architecture"] == TINY
    assert effective["_provenance"]["data_fingerprints"] == [data_fingerprint(nve_file)]
    assert "torch" in effective["_provenance"]["versions"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    forecaster = load_forecaster(result["model"])
    meta = forecaster.metadata
    assert meta.setup == "amber14-vacuum" and meta.constraints == "HBonds" and meta.temperature_K == 300.0
    assert meta.stride_ps == 0.01 and meta.max_frames == 3 and meta.data_fingerprint == data_fingerprint(nve_file)
    assert meta.system_fingerprint == load_trajectory(nve_file).metadata["system_fingerprint"]
    split = meta.extra["split"][data_fingerprint(nve_file)]["validation_segments"]
    assert len(split) == 3  # 25 % of 12 segments
    assert meta.extra["validation"]["epoch"] == metrics["best_epoch"]
    assert meta.extra["training"]["learning_rate"] == 3e-3
    assert load_forecaster(str(export)).metadata.to_json() == meta.to_json()
    # the exported model is the best epoch's: its validation RMSD is reproduced by the loaded file
    data = load_trajectory(nve_file)
    segments = np.array(split)
    x0 = data.positions[segments, :4].reshape(-1, 22, 3)
    v0 = data.velocities[segments, :4].reshape(-1, 22, 3)
    truth = np.stack([data.positions[segments, k : k + 4].reshape(-1, 22, 3) for k in (1, 2, 3)], axis=1)
    px, _ = forecaster.forecast(x0, v0)
    rmsd = 10 * np.sqrt(((px - truth) ** 2).sum(-1).mean(-1).mean(0))
    assert np.allclose(rmsd, meta.extra["validation"]["position_rmsd_A"], rtol=1e-3)


def test_cli_train(nve_file, tmp_path):
    from openmm_forecast.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(nve_file, tmp_path / "ignored")))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "cli"), "--set", "epochs=1"]) == 0
    assert (tmp_path / "cli" / "model.pt").exists()
    assert main(["train", "--config", str(path), "--set", "bogus=1"]) == 1


def test_fine_tuning_starts_from_the_pretrained_weights(nve_file, tmp_path):
    """init_from (MDtrajNet-1's pretrain-then-fine-tune protocol) copies the trained weights exactly."""
    pretrained = train(tiny_config(nve_file, tmp_path / "pre", epochs=3))["model"]
    source = load_forecaster(pretrained).module.state_dict()
    fine = Trainer(TrainingConfig(**tiny_config(nve_file, tmp_path / "fine", init_from=pretrained)))
    fresh = Trainer(TrainingConfig(**tiny_config(nve_file, tmp_path / "fresh")))
    for name, value in fine.model.state_dict().items():
        assert torch.equal(value, source[name].to(value.dtype)), name
    assert any(not torch.equal(value, fresh.model.state_dict()[name]) for name, value in source.items())
    result = train(tiny_config(nve_file, tmp_path / "fine", epochs=1, init_from=pretrained))
    assert load_forecaster(result["model"]).metadata.extra["initialised_from"]["model"] == pretrained


@pytest.mark.parametrize(
    "changes, message",
    [({"hyperparameters": {"hidden": 16, "max_frames": 3}}, "hyperparameters"), ({"stride_ps": 0.02}, "stride")],
)
def test_fine_tuning_refuses_a_model_of_another_shape(nve_file, tmp_path, changes, message):
    pretrained = train(tiny_config(nve_file, tmp_path / "pre", epochs=1))["model"]
    with pytest.raises(ValueError, match=message):
        Trainer(TrainingConfig(**tiny_config(nve_file, tmp_path / "fine", init_from=pretrained, **changes)))


def test_fine_tuning_refuses_a_learned_surrogate(nve_file, tmp_path):
    with pytest.raises(ValueError, match="no weights to start from"):
        Trainer(TrainingConfig(**tiny_config(nve_file, tmp_path / "fine", init_from="ala2-amber14-obc2")))
