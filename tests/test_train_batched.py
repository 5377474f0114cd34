"""Tests of vectorized training of many realizations against the single-model trainer.

Tolerance of the trajectory comparisons: in float64 the batched run and the
separate runs evaluate the same formulas, and differ only in the summation
order of the batched matrix products (about 1e-16 relative per operation).
Over the few dozen optimizer steps here, on losses and weights of order
one, those rounding differences stay below 1e-12; a wrong seed, order or
optimizer state changes the values at the 1e-3 level or more.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmbilevel.train import TrainConfig, build_seeded, train_model
from mmbilevel.train.batched import train_batched

TOLERANCE = 1e-12


def toy_data(n: int = 50):
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    labels = (inputs[:, 0] * inputs[:, 1] > 0).long()
    return inputs, labels


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).double()


@pytest.mark.parametrize(
    "optimizer, options, loss",
    [
        ("sgd", {}, "cross-entropy"),
        ("sgd", {"momentum": 0.9, "weight_decay": 1e-3}, "squared"),
        ("adam", {}, "cross-entropy"),
    ],
)
def test_batched_matches_single(optimizer, options, loss):
    data = toy_data()
    config = TrainConfig(
        epochs=6, lr=0.05, batch_size=7, optimizer=optimizer, optimizer_options=options, loss=loss, seed=10
    )
    batched = train_batched(make_mlp, data, data, config, realizations=3, device="cpu")

    for index, seed in enumerate(batched.seeds):
        single_config = TrainConfig(**{**config.to_dict(), "seed": seed})
        single = train_model(build_seeded(make_mlp, seed), data, data, single_config)
        for column in ("train_loss", "test_loss"):
            expected = torch.tensor(single.history.column(column))
            actual = torch.tensor(batched.histories[index].column(column))
            torch.testing.assert_close(actual, expected, rtol=0, atol=TOLERANCE)
        assert batched.histories[index].column("train_accuracy") == single.history.column("train_accuracy")
        for first, second in zip(single.model.parameters(), batched.model(index).parameters()):
            torch.testing.assert_close(second, first, rtol=0, atol=TOLERANCE)


def test_batched_seeds_are_consecutive():
    batched = train_batched(make_mlp, toy_data(), None, TrainConfig(epochs=0, seed=4), realizations=3, device="cpu")
    assert batched.seeds == [4, 5, 6]


def test_batched_realizations_differ():
    batched = train_batched(make_mlp, toy_data(), None, TrainConfig(epochs=1, batch_size=7), realizations=2, device="cpu")
    first, second = batched.model(0), batched.model(1)
    assert not torch.equal(first[0].weight, second[0].weight)


def test_batched_initial_weights_follow_seed():
    batched = train_batched(make_mlp, toy_data(), None, TrainConfig(epochs=0), seeds=[8, 3], device="cpu")
    expected = build_seeded(make_mlp, 3)
    for first, second in zip(expected.parameters(), batched.model(1).parameters()):
        assert torch.equal(first, second)


def test_batched_results_split():
    data = toy_data()
    batched = train_batched(make_mlp, data, data, TrainConfig(epochs=1, batch_size=7), realizations=2, device="cpu")
    results = batched.results()
    assert [result.seed for result in results] == [0, 1]
    assert results[1].history is batched.histories[1]


def test_batched_device(device):
    batched = train_batched(make_mlp, toy_data(), None, TrainConfig(epochs=1, batch_size=7), realizations=2, device=device)
    assert batched.device == str(device)
    assert batched.params["0.weight"].device.type == device.type


def test_batched_model_index_range():
    batched = train_batched(make_mlp, toy_data(), None, TrainConfig(epochs=0), realizations=2, device="cpu")
    with pytest.raises(IndexError, match="out of range"):
        batched.model(2)


def test_batched_rejects_zero_realizations():
    with pytest.raises(ValueError, match="realizations"):
        train_batched(make_mlp, toy_data(), None, TrainConfig(epochs=0), realizations=0, device="cpu")


def test_batched_rejects_loader():
    inputs, labels = toy_data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, labels), batch_size=5)
    with pytest.raises(TypeError, match="pair"):
        train_batched(make_mlp, loader, None, TrainConfig(epochs=0), device="cpu")


@pytest.mark.parametrize("variant", ["standard", "euclidean", "bregman"])
def test_batched_ffnn_matches_single(variant):
    from mmbilevel.data import prepare
    from mmbilevel.nn import FFNN

    data = prepare("two-spiral", "arctan", dtype=torch.float64, limit=40)

    def build() -> nn.Module:
        return FFNN(2, [2, 2, 2], 2, "arctan", variant, dtype=torch.float64)

    config = TrainConfig(epochs=3, lr=0.1, batch_size=10)
    batched = train_batched(build, data, None, config, realizations=2, device="cpu")
    single = train_model(build_seeded(build, 1), data, None, TrainConfig(epochs=3, lr=0.1, batch_size=10, seed=1))
    expected = torch.tensor(single.history.column("train_loss"))
    actual = torch.tensor(batched.histories[1].column("train_loss"))
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOLERANCE)


class CheckedMLP(nn.Module):
    """MLP that raises on NaN input through a Python `if`, which vmap cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = make_mlp()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if torch.isnan(inputs).any():
            raise ValueError("NaN input")
        return self.inner(inputs)


def test_batched_rejects_control_flow():
    from mmbilevel.train.batched import BatchingUnsupportedError

    with pytest.raises(BatchingUnsupportedError, match="train_model"):
        train_batched(CheckedMLP, toy_data(), None, TrainConfig(epochs=1), realizations=2, device="cpu")
