"""Tests of the single-model trainer, its settings, losses, optimizers and result files."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch import nn

from mmbilevel.train import (
    LOSSES,
    OPTIMIZERS,
    EpochRecord,
    History,
    TrainConfig,
    accuracy,
    build_seeded,
    evaluate,
    get_loss,
    history_csv,
    load_checkpoint,
    make_optimizer,
    resolve_device,
    train_model,
)
from mmbilevel.train.batched import train_batched
from mmbilevel.train.results import summarize, write_results
from mmbilevel.train.trainer import epoch_batches


def toy_data(n: int = 120, seed: int = 0, dtype: torch.dtype = torch.float64):
    """Return two Gaussian blobs, linearly separable up to a few points."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    inputs = torch.randn(n, 2, generator=generator, dtype=dtype) * 0.5
    inputs[:, 0] += 2.0 * labels.to(dtype) - 1.0
    return inputs, labels


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def parameters_equal(first: nn.Module, second: nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))


# Settings.


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": -1},
        {"epochs": 1.5},
        {"lr": 0.0},
        {"lr": -0.1},
        {"lr": math.nan},
        {"lr": math.inf},
        {"batch_size": 0},
        {"eval_batch_size": 0},
        {"seed": -1},
        {"optimizer": "lbfgs"},
        {"loss": "hinge"},
    ],
)
def test_config_rejects_invalid(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_config_normalizes_names():
    config = TrainConfig(optimizer="Adam", loss="SQUARED")
    assert config.optimizer == "adam"
    assert config.loss == "squared"


def test_config_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="sgd"):
        TrainConfig(optimizer="rmsprop")


def test_registries_names():
    assert LOSSES.names() == ["cross-entropy", "squared"]
    assert OPTIMIZERS.names() == ["adam", "sgd"]


def test_resolve_device_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_auto():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_resolve_device_missing_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


# Losses and optimizers.


def test_cross_entropy_closed_form():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    log_normalizer = torch.log(torch.exp(logits).sum(dim=1))
    expected = ((log_normalizer[0] - 2.0) + (log_normalizer[1] - 0.0)) / 2
    torch.testing.assert_close(get_loss("cross-entropy")(logits, labels), expected, rtol=1e-14, atol=0)


def test_squared_closed_form():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    # (1 - 0)² + (2 - 1)² + 0.5² and (0 - 1)² + 1² + 3², over 6 entries.
    expected = torch.tensor((1 + 1 + 0.25 + 1 + 1 + 9) / 6, dtype=torch.float64)
    torch.testing.assert_close(get_loss("squared")(logits, labels), expected, rtol=1e-14, atol=0)


def test_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected logits"):
        get_loss("squared")(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_accuracy_counts_argmax():
    logits = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    labels = torch.tensor([1, 0, 0, 0])
    assert accuracy(logits, labels).item() == 0.75


def test_make_optimizer_types():
    parameter = nn.Parameter(torch.zeros(3))
    assert isinstance(make_optimizer("sgd", [parameter], 0.1), torch.optim.SGD)
    assert isinstance(make_optimizer("ADAM", [parameter], 0.1), torch.optim.Adam)


def test_make_optimizer_rejects_lr():
    with pytest.raises(ValueError, match="learning rate"):
        make_optimizer("sgd", [nn.Parameter(torch.zeros(3))], 0.0)


# Seeding and mini-batches.


def test_build_seeded_repeats():
    first = build_seeded(make_mlp, 3)
    second = build_seeded(make_mlp, 3)
    assert parameters_equal(first, second)


def test_build_seeded_seeds_differ():
    assert not parameters_equal(build_seeded(make_mlp, 3), build_seeded(make_mlp, 4))


def test_build_seeded_keeps_global_rng():
    state = torch.get_rng_state()
    build_seeded(make_mlp, 3)
    assert torch.equal(torch.get_rng_state(), state)


def test_epoch_batches_partition():
    batches = epoch_batches(23, 5, torch.Generator().manual_seed(0))
    assert [len(batch) for batch in batches] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(23))


# Training.


def test_train_deterministic():
    data = toy_data()
    config = TrainConfig(epochs=3, lr=0.1, batch_size=16, seed=5)
    first = train_model(build_seeded(make_mlp, 5), data, data, config, progress=False)
    second = train_model(build_seeded(make_mlp, 5), data, data, config, progress=False)
    assert first.history.column("train_loss") == second.history.column("train_loss")
    assert parameters_equal(first.model, second.model)


def test_train_order_follows_seed():
    data = toy_data()
    results = [
        train_model(build_seeded(make_mlp, 0), data, None, TrainConfig(epochs=1, batch_size=16, seed=seed))
        for seed in (0, 1)
    ]
    assert not parameters_equal(results[0].model, results[1].model)


def test_train_keeps_global_rng():
    data = toy_data()
    state = torch.get_rng_state()
    train_model(build_seeded(make_mlp, 0), data, None, TrainConfig(epochs=2, batch_size=16))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("loss", ["cross-entropy", "squared"])
def test_train_decreases_loss(optimizer, loss):
    data = toy_data()
    lr = 0.05 if optimizer == "sgd" else 0.01
    config = TrainConfig(epochs=20, lr=lr, batch_size=10, optimizer=optimizer, loss=loss)
    result = train_model(build_seeded(make_mlp, 0), data, None, config, progress=False)
    losses = result.history.column("train_loss")
    assert losses[-1] < 0.5 * losses[0]
    assert result.history.last.train_accuracy >= 0.95


def test_train_history_layout():
    data = toy_data()
    result = train_model(build_seeded(make_mlp, 0), data, data, TrainConfig(epochs=3, batch_size=16))
    assert result.history.column("epoch") == [0, 1, 2, 3]
    assert all(record.seconds >= 0 for record in result.history)
    assert result.history.last.test_loss == result.history.last.train_loss


def test_train_without_test_gives_nan():
    data = toy_data()
    result = train_model(build_seeded(make_mlp, 0), data, None, TrainConfig(epochs=1, batch_size=16))
    assert math.isnan(result.final_metrics()["test_accuracy"])


def test_train_zero_epochs_keeps_model():
    data = toy_data()
    model = build_seeded(make_mlp, 0)
    before = [tensor.clone() for tensor in model.parameters()]
    result = train_model(model, data, None, TrainConfig(epochs=0))
    assert len(result.history) == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_train_dataloader_decreases_loss():
    inputs, labels = toy_data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, labels),
        batch_size=10,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    result = train_model(build_seeded(make_mlp, 0), loader, None, TrainConfig(epochs=15, lr=0.05))
    losses = result.history.column("train_loss")
    assert losses[-1] < 0.5 * losses[0]


def test_train_float32_follows_model(device):
    inputs, labels = toy_data(dtype=torch.float32)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).to(device)
    result = train_model(model, (inputs, labels), None, TrainConfig(epochs=2, batch_size=16))
    assert result.device == str(device)
    assert next(model.parameters()).dtype == torch.float32


def test_train_rejects_label_shape():
    inputs, labels = toy_data()
    with pytest.raises(ValueError, match="1-D integer tensor"):
        train_model(make_mlp(), (inputs, labels.double()), None, TrainConfig(epochs=1))


def test_evaluate_matches_direct():
    inputs, labels = toy_data()
    model = build_seeded(make_mlp, 0)
    loss, acc = evaluate(model, (inputs, labels), "cross-entropy", batch_size=7)
    with torch.no_grad():
        logits = model(inputs)
    torch.testing.assert_close(
        torch.tensor(loss, dtype=torch.float64), nn.functional.cross_entropy(logits, labels), rtol=1e-12, atol=0
    )
    assert acc == (logits.argmax(1) == labels).double().mean().item()


# History and result files.


def make_history(losses: list[float]) -> History:
    history = History()
    for epoch, loss in enumerate(losses):
        history.append(EpochRecord(epoch, loss, 0.5, loss + 1, 0.25, 0.1))
    return history


def test_history_round_trip():
    history = make_history([1.0, 0.5, 0.25])
    assert History.from_dict(history.to_dict()).records == history.records


def test_history_rejects_repeated_epoch():
    history = make_history([1.0])
    with pytest.raises(ValueError, match="does not follow"):
        history.append(EpochRecord(0, 1.0, 0.5))


def test_history_rejects_ragged_columns():
    columns = make_history([1.0, 0.5]).to_dict()
    columns["train_loss"] = [1.0]
    with pytest.raises(ValueError, match="different lengths"):
        History.from_dict(columns)


def test_history_csv_rows():
    text = history_csv([make_history([1.0, 0.5]), make_history([2.0])], [7, 8])
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 3
    assert rows[2]["seed"] == "8"
    assert [row["realization"] for row in rows] == ["1", "1", "2"]
    assert float(rows[1]["train_loss"]) == 0.5


def test_summarize_mean_std():
    data = toy_data()
    results = [
        train_model(build_seeded(make_mlp, seed), data, data, TrainConfig(epochs=1, batch_size=16, seed=seed))
        for seed in (0, 1, 2)
    ]
    values = [result.final_metrics()["train_loss"] for result in results]
    summary = summarize(results)
    mean = sum(values) / 3
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / 2)
    assert summary["mean"]["train_loss"] == pytest.approx(mean, rel=1e-12)
    assert summary["std"]["train_loss"] == pytest.approx(std, rel=1e-9)


def test_write_results_files(tmp_path):
    data = toy_data()
    config = TrainConfig(epochs=2, batch_size=16)
    result = train_model(build_seeded(make_mlp, 0), data, None, config)
    paths = write_results(tmp_path, [result], config, wall_seconds=1.5, device="cpu", run={"dataset": "toy"})
    document = json.loads(paths["json"].read_text())
    assert document["run"]["dataset"] == "toy"
    assert document["final"]["train_accuracy"] == result.final_metrics()["train_accuracy"]
    assert document["final"]["test_accuracy"] is None
    assert document["realizations"][0]["history"]["epoch"] == [0, 1, 2]
    assert document["torch_version"] == torch.__version__
    assert len(paths["csv"].read_text().splitlines()) == 4


def test_history_from_results_json(tmp_path):
    history = make_history([1.0, 0.5])
    document = json.loads(json.dumps({"history": history.to_dict()}))
    document["history"]["test_loss"] = [None, None]
    rebuilt = History.from_dict(document["history"])
    assert math.isnan(rebuilt.last.test_loss)
    assert rebuilt.column("train_loss") == [1.0, 0.5]


def test_train_stops_on_divergence(caplog):
    # The squared loss at lr 1e6 overflows float64 in epoch 3 (losses 0.46,
    # 5e105, 5e213, then inf).
    config = TrainConfig(epochs=20, lr=1e6, batch_size=16, loss="squared")
    result = train_model(build_seeded(make_mlp, 0), toy_data(), None, config)
    assert result.diverged_epoch == 3
    assert result.history.last.epoch == 3
    assert "training diverged at epoch 3" in caplog.text
    assert "--lr" in caplog.text


def test_divergence_saves_held_state(tmp_path):
    # Diverges at epoch 3 (see above), so with checkpoints every 10 epochs
    # the state after epoch 2 exists only in memory until the divergence.
    path = tmp_path / "checkpoint.pt"
    config = TrainConfig(epochs=20, lr=1e6, batch_size=16, loss="squared")
    train_model(build_seeded(make_mlp, 0), toy_data(), None, config, checkpoint_path=path, checkpoint_every=10)
    assert load_checkpoint(path)["epoch"] == 2


def test_divergence_keeps_finite_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    config = TrainConfig(epochs=20, lr=1e6, batch_size=16, loss="squared")
    train_model(build_seeded(make_mlp, 0), toy_data(), None, config, checkpoint_path=path)
    state = load_checkpoint(path)
    assert state["epoch"] == 2
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values())


def test_batched_divergence_stops_history(caplog):
    config = TrainConfig(epochs=5, lr=1e6, batch_size=16, loss="squared")
    result = train_batched(make_mlp, toy_data(), None, config, seeds=[0, 1], device="cpu")
    assert result.diverged_epochs[0] is not None
    assert len(result.histories[0]) == result.diverged_epochs[0] + 1
    assert "training diverged" in caplog.text


def test_finished_run_not_diverged():
    result = train_model(build_seeded(make_mlp, 0), toy_data(), None, TrainConfig(epochs=1, batch_size=16))
    assert not result.diverged


def test_results_mark_divergence(tmp_path):
    config = TrainConfig(epochs=5, lr=1e6, batch_size=16, loss="squared")
    result = train_model(build_seeded(make_mlp, 0), toy_data(), None, config)
    paths = write_results(tmp_path, [result], config, wall_seconds=0.0, device="cpu")
    document = json.loads(paths["json"].read_text())
    assert document["diverged"] is True
    assert document["realizations"][0]["diverged_epoch"] == 3


# Hidden widths of the trained networks.


def test_ffnn_int_hidden_one_layer():
    from mmbilevel.nn import FFNN

    model = FFNN(2, 4, 3, "arctan", "bregman")
    assert model.hidden == [4]
    assert len(model.layers) == 1
    assert model(torch.zeros(5, 2)).shape == (5, 3)


@pytest.mark.parametrize("hidden, error", [(0, ValueError), ([2, 0], ValueError), (2.5, TypeError), ("4", TypeError)])
def test_ffnn_rejects_bad_hidden(hidden, error):
    from mmbilevel.nn import FFNN

    with pytest.raises(error, match="hidden"):
        FFNN(2, hidden, 3)
