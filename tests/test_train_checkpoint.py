"""Tests of atomic writes and of resuming training from checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mmbilevel.train import (
    RunConfigMismatchError,
    TrainConfig,
    TrainingInterrupted,
    build_seeded,
    prepare_output_folder,
    run_config_differences,
    run_files,
    train_model,
)
from mmbilevel.train.batched import train_batched
from mmbilevel.train.checkpoint import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)

METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")


def toy_data(n: int = 60):
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    labels = (inputs.sum(dim=1) > 0).long()
    return inputs, labels


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()


# Atomic writes.


def test_atomic_write_replaces(tmp_path):
    path = tmp_path / "file.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_atomic_write_failure_keeps_old(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def failing_write(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing_write)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_atomic_write_failure_leaves_nothing(tmp_path):
    path = tmp_path / "new.bin"

    def failing_write(handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, failing_write)
    assert list(tmp_path.iterdir()) == []


def test_atomic_json_unencodable(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "out.json", {"value": object()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_creates_folder(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "b" / "file.txt", "text")
    assert path.read_text() == "text"


def test_save_checkpoint_unpicklable(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_load_checkpoint_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_load_checkpoint_not_training(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_checkpoint(path)


# Resuming a single model.


@pytest.mark.parametrize(
    "optimizer, options",
    [("sgd", {"momentum": 0.9}), ("adam", {})],
)
def test_resume_matches_straight_run(tmp_path, optimizer, options):
    data = toy_data()
    config = TrainConfig(epochs=4, lr=0.05, batch_size=7, optimizer=optimizer, optimizer_options=options, seed=3)
    straight = train_model(build_seeded(make_mlp, 3), data, data, config)

    path = tmp_path / "checkpoint.pt"
    first_half = TrainConfig(**{**config.to_dict(), "epochs": 2})
    train_model(build_seeded(make_mlp, 3), data, data, first_half, checkpoint_path=path)
    # A fresh model with other weights proves the state comes from the file.
    resumed = train_model(build_seeded(make_mlp, 99), data, data, config, checkpoint_path=path, resume=True)

    for first, second in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(first, second)
    for column in METRIC_COLUMNS:
        assert straight.history.column(column) == resumed.history.column(column)


def test_resume_dataloader_matches(tmp_path):
    inputs, labels = toy_data()

    def loader():
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(inputs, labels),
            batch_size=8,
            shuffle=True,
            generator=torch.Generator().manual_seed(5),
        )

    config = TrainConfig(epochs=4, lr=0.05)
    straight = train_model(build_seeded(make_mlp, 0), loader(), None, config)
    path = tmp_path / "checkpoint.pt"
    train_model(build_seeded(make_mlp, 0), loader(), None, TrainConfig(epochs=2, lr=0.05), checkpoint_path=path)
    resumed = train_model(build_seeded(make_mlp, 0), loader(), None, config, checkpoint_path=path, resume=True)
    assert straight.history.column("train_loss") == resumed.history.column("train_loss")


def test_resume_without_file_starts(tmp_path):
    data = toy_data()
    config = TrainConfig(epochs=2, batch_size=7)
    path = tmp_path / "checkpoint.pt"
    result = train_model(build_seeded(make_mlp, 0), data, None, config, checkpoint_path=path, resume=True)
    assert result.history.column("epoch") == [0, 1, 2]
    assert load_checkpoint(path)["epoch"] == 2


def test_resume_rejects_other_settings(tmp_path):
    data = toy_data()
    path = tmp_path / "checkpoint.pt"
    train_model(build_seeded(make_mlp, 0), data, None, TrainConfig(epochs=1, lr=0.1), checkpoint_path=path)
    with pytest.raises(ValueError, match="lr"):
        train_model(make_mlp(), data, None, TrainConfig(epochs=2, lr=0.2), checkpoint_path=path, resume=True)


def test_resume_rejects_fewer_epochs(tmp_path):
    data = toy_data()
    path = tmp_path / "checkpoint.pt"
    train_model(build_seeded(make_mlp, 0), data, None, TrainConfig(epochs=3), checkpoint_path=path)
    with pytest.raises(ValueError, match="beyond the requested"):
        train_model(make_mlp(), data, None, TrainConfig(epochs=2), checkpoint_path=path, resume=True)


def test_resume_needs_path():
    with pytest.raises(ValueError, match="checkpoint_path"):
        train_model(make_mlp(), toy_data(), None, TrainConfig(epochs=1), resume=True)


def test_checkpoint_every_period(tmp_path):
    data = toy_data()
    path = tmp_path / "checkpoint.pt"
    saved_epochs = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = make_mlp()

        def forward(self, inputs):
            if path.exists():
                saved_epochs.append(load_checkpoint(path)["epoch"])
                path.unlink()
            return self.inner(inputs)

    train_model(Spy(), data, None, TrainConfig(epochs=5, batch_size=60), checkpoint_path=path, checkpoint_every=2)
    assert saved_epochs == [2, 4]
    assert load_checkpoint(path)["epoch"] == 5


# Resuming a batch of realizations.


def test_batched_resume_matches(tmp_path):
    data = toy_data()
    config = TrainConfig(epochs=4, lr=0.05, batch_size=7, optimizer="adam", seed=2)
    straight = train_batched(make_mlp, data, data, config, realizations=3, device="cpu")

    path = tmp_path / "batched.pt"
    first_half = TrainConfig(**{**config.to_dict(), "epochs": 2})
    train_batched(make_mlp, data, data, first_half, realizations=3, device="cpu", checkpoint_path=path)
    resumed = train_batched(
        make_mlp, data, data, config, realizations=3, device="cpu", checkpoint_path=path, resume=True
    )

    for name, tensor in straight.params.items():
        assert torch.equal(tensor, resumed.params[name])
    for first, second in zip(straight.histories, resumed.histories):
        for column in METRIC_COLUMNS:
            assert first.column(column) == second.column(column)


def test_batched_resume_rejects_seeds(tmp_path):
    data = toy_data()
    path = tmp_path / "batched.pt"
    config = TrainConfig(epochs=1, batch_size=7)
    train_batched(make_mlp, data, None, config, seeds=[0, 1], device="cpu", checkpoint_path=path)
    with pytest.raises(ValueError, match="seeds"):
        train_batched(make_mlp, data, None, config, seeds=[0, 2], device="cpu", checkpoint_path=path, resume=True)


# Resuming with other model or data settings.


def test_resume_rejects_other_run_config(tmp_path):
    data = toy_data()
    path = tmp_path / "checkpoint.pt"
    config = TrainConfig(epochs=1, batch_size=7)
    train_model(build_seeded(make_mlp, 0), data, None, config, checkpoint_path=path, run_config={"hidden": (6,)})
    with pytest.raises(RunConfigMismatchError, match=r"hidden: stored \[6\], requested \[7\]") as raised:
        train_model(
            make_mlp(), data, None, TrainConfig(epochs=2, batch_size=7), checkpoint_path=path, resume=True,
            run_config={"hidden": [7]},
        )
    assert raised.value.differences == [("hidden", [6], [7])]


def test_resume_accepts_same_run_config(tmp_path):
    data = toy_data()
    path = tmp_path / "checkpoint.pt"
    run_config = {"dataset": "toy", "hidden": (6,), "limit": None}
    train_model(build_seeded(make_mlp, 0), data, None, TrainConfig(epochs=1), checkpoint_path=path, run_config=run_config)
    result = train_model(
        make_mlp(), data, None, TrainConfig(epochs=2), checkpoint_path=path, resume=True, run_config=run_config
    )
    assert result.history.column("epoch") == [0, 1, 2]


def test_resume_rejects_unrecorded_run_config(tmp_path):
    data = toy_data()
    path = tmp_path / "checkpoint.pt"
    train_model(build_seeded(make_mlp, 0), data, None, TrainConfig(epochs=1), checkpoint_path=path)
    with pytest.raises(ValueError, match="does not record the model and data settings"):
        train_model(
            make_mlp(), data, None, TrainConfig(epochs=2), checkpoint_path=path, resume=True,
            run_config={"hidden": [6]},
        )


def test_resume_other_shape_is_value_error(tmp_path):
    data = toy_data()
    path = tmp_path / "checkpoint.pt"
    train_model(build_seeded(make_mlp, 0), data, None, TrainConfig(epochs=1), checkpoint_path=path)
    wider = nn.Sequential(nn.Linear(3, 9), nn.Tanh(), nn.Linear(9, 2)).double()
    with pytest.raises(ValueError, match="do not fit the model"):
        train_model(wider, data, None, TrainConfig(epochs=2), checkpoint_path=path, resume=True)


def test_batched_resume_rejects_run_config(tmp_path):
    data = toy_data()
    path = tmp_path / "batched.pt"
    config = TrainConfig(epochs=1, batch_size=7)
    train_batched(
        make_mlp, data, None, config, seeds=[0, 1], device="cpu", checkpoint_path=path, run_config={"dtype": "float64"}
    )
    with pytest.raises(RunConfigMismatchError, match="dtype: stored 'float64', requested 'float32'"):
        train_batched(
            make_mlp, data, None, config, seeds=[0, 1], device="cpu", checkpoint_path=path, resume=True,
            run_config={"dtype": "float32"},
        )


def test_run_config_differences_fields():
    stored = {"activation": "arctan", "epochs": 4, "hidden": [2], "limit": 64}
    requested = {"activation": "tanh", "epochs": 9, "hidden": (2,), "seed": 1}
    differences = run_config_differences(stored, requested)
    assert differences == [("activation", "arctan", "tanh"), ("limit", 64, None), ("seed", None, 1)]


# Output folders.


def test_output_folder_keeps_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    prepare_output_folder(tmp_path, {"seed": 0})
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "run-config.json").read_text()) == {"seed": 0}


def test_output_folder_rejects_second_run(tmp_path):
    prepare_output_folder(tmp_path, {"seed": 0})
    (tmp_path / "checkpoint-seed0.pt").write_bytes(b"old")
    with pytest.raises(ValueError, match="--overwrite"):
        prepare_output_folder(tmp_path, {"seed": 1})


def test_output_folder_replaces_lone_config(tmp_path):
    prepare_output_folder(tmp_path, {"seed": 0})
    prepare_output_folder(tmp_path, {"seed": 1})
    assert json.loads((tmp_path / "run-config.json").read_text()) == {"seed": 1}


def test_output_folder_overwrite_deletes(tmp_path):
    prepare_output_folder(tmp_path, {"seed": 0})
    (tmp_path / "checkpoint-seed0.pt").write_bytes(b"old")
    (tmp_path / "results.json").write_text("{}")
    prepare_output_folder(tmp_path, {"seed": 1}, overwrite=True)
    assert run_files(tmp_path) == [tmp_path / "run-config.json"]


def test_output_folder_resume_checks(tmp_path):
    prepare_output_folder(tmp_path, {"seed": 0, "epochs": 2})
    (tmp_path / "checkpoint-seed0.pt").write_bytes(b"old")
    prepare_output_folder(tmp_path, {"seed": 0, "epochs": 5}, resume=True)
    with pytest.raises(RunConfigMismatchError, match="seed: stored 0, requested 1"):
        prepare_output_folder(tmp_path, {"seed": 1, "epochs": 5}, resume=True)


def test_output_folder_is_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(NotADirectoryError, match="existing file"):
        prepare_output_folder(path, {"seed": 0})


# Interrupts.


def test_interrupt_saves_last_epoch(tmp_path):
    data = toy_data()
    config = TrainConfig(epochs=4, lr=0.05, batch_size=7, optimizer="adam", seed=3)
    straight = train_model(build_seeded(make_mlp, 3), data, data, config)

    calls = []

    class InterruptInEpoch3(nn.Module):
        # An epoch of 60 samples in batches of 7 has 9 training forwards plus
        # 2 evaluation forwards, 11 in all; epoch 0 has the 2 evaluations.
        def __init__(self):
            super().__init__()
            self.inner = build_seeded(make_mlp, 3)

        def forward(self, inputs):
            calls.append(1)
            if len(calls) == 2 + 2 * 11 + 4:
                raise KeyboardInterrupt
            return self.inner(inputs)

    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingInterrupted) as raised:
        train_model(InterruptInEpoch3(), data, data, config, checkpoint_path=path, checkpoint_every=10)
    assert raised.value.epoch == 2
    assert load_checkpoint(path)["epoch"] == 2

    model = InterruptInEpoch3()
    calls.append(-1)  # past the interrupt
    resumed = train_model(model, data, data, config, checkpoint_path=path, resume=True)
    assert straight.history.column("train_loss") == resumed.history.column("train_loss")


def test_interrupt_batched_saves(tmp_path):
    data = toy_data()
    config = TrainConfig(epochs=3, batch_size=7)
    path = tmp_path / "batched.pt"
    original = torch.randperm
    calls = []

    def interrupting_randperm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the order of epoch 2 for the first seed
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "randperm", interrupting_randperm)
        with pytest.raises(TrainingInterrupted) as raised:
            train_batched(make_mlp, data, None, config, seeds=[0, 1], device="cpu", checkpoint_path=path,
                          checkpoint_every=5)
    assert raised.value.epoch == 1
    assert load_checkpoint(path)["epoch"] == 1
