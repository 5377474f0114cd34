"""Tests of the two-spiral figures, the Table 2 runner and the plots."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbilevel.data import load
from mmbilevel.experiments import plotting
from mmbilevel.experiments.table2 import (
    DATASET_ROWS,
    PAPER_TABLE2,
    CellResult,
    Table2Settings,
    collect_cells,
    format_table,
    run_cell,
    run_table2,
)
from mmbilevel.experiments.two_spiral import (
    INITS,
    VARIANTS,
    SpiralSettings,
    StackedFFNN,
    build_networks,
    figure4,
    figure5,
    figure6_left,
    figure6_right,
    layer_differences,
    loss_ordering,
    run_two_spiral,
    train_stacked,
)
from mmbilevel.nn import FFNN
from mmbilevel.train import TrainConfig, build_seeded, train_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Float64 trajectories of a few SGD steps agree to rounding: the stacked and
# the single-model computations differ only in the summation order of small
# matrix products, a few ulps per step.
TRAJECTORY_TOL = 1e-12

TINY = SpiralSettings(epochs=2, realizations=2, lr_grid=(0.1, 1.0), lr_epochs=2, depth=4, progress=False)


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def spiral_data() -> tuple[torch.Tensor, torch.Tensor]:
    return load("two-spiral", dtype=torch.float64)


def build_ffnn(variant: str, init: str, layers: int = 3) -> FFNN:
    return FFNN(2, [2] * layers, 2, "arctan", variant, init, clamp=True, dtype=torch.float64)


def max_difference(first: torch.nn.Module, second: torch.nn.Module) -> float:
    pairs = zip(first.state_dict().values(), second.state_dict().values())
    return max(float((a - b).abs().max()) for a, b in pairs)


# --- stacked networks -------------------------------------------------------------------


@pytest.mark.parametrize("init", INITS)
def test_stacked_forward_matches_ffnn(init):
    models = [build_seeded(lambda v=v: build_ffnn(v, init), seed) for v in VARIANTS for seed in (0, 1)]
    net = StackedFFNN(models)
    x, _ = spiral_data()
    stacked_outputs = net.hidden_outputs(x)
    stacked_logits = net.logits(x)
    for index, model in enumerate(models):
        with torch.no_grad():
            outputs = model.hidden_outputs(x)
            logits = model(x)
        for layer, (expected, actual) in enumerate(zip(outputs, stacked_outputs)):
            assert torch.allclose(actual[index], expected, rtol=0, atol=1e-14), (index, layer)
        assert torch.allclose(stacked_logits[index], logits, rtol=0, atol=1e-14), index


def test_stacked_model_roundtrip():
    models = [build_seeded(lambda: build_ffnn("bregman", "random"), seed) for seed in (3, 4)]
    net = StackedFFNN(models)
    assert max_difference(net.model(1), models[1]) == 0.0


def test_stacked_rejects_unequal_widths():
    wide = FFNN(2, [3, 2], 2, "arctan", "standard")
    with pytest.raises(ValueError, match="hidden layers of width 2"):
        StackedFFNN([wide])


def test_stacked_rejects_empty():
    with pytest.raises(ValueError, match="no models"):
        StackedFFNN([])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("init", INITS)
def test_train_stacked_matches_train_model(variant, init):
    seeds = [0, 5]
    net = build_networks([(variant, init, seed) for seed in seeds], SpiralSettings(), layers=3)
    x, y = spiral_data()
    history = train_stacked(net, x, y, lrs=[0.1, 0.1], seeds=seeds, epochs=3, batch_size=10)
    for index, seed in enumerate(seeds):
        model = build_seeded(lambda: build_ffnn(variant, init), seed)
        result = train_model(model, (x, y), None, TrainConfig(epochs=3, lr=0.1, batch_size=10, seed=seed),
                             progress=False)
        assert max_difference(net.model(index), model) < TRAJECTORY_TOL
        assert history.final_loss()[index] == pytest.approx(result.history.last.train_loss, abs=TRAJECTORY_TOL)
        assert history.final_accuracy()[index] == pytest.approx(result.history.last.train_accuracy)


def test_train_stacked_mixed_variants_match_train_model():
    # Figure 5 stacks all variants and both initializations in one batch.
    specs = [(variant, init, seed) for variant in VARIANTS for init in INITS for seed in (0, 3)]
    net = build_networks(specs, SpiralSettings(), layers=3)
    x, y = spiral_data()
    seeds = [seed for _, _, seed in specs]
    history = train_stacked(net, x, y, lrs=[0.1] * len(specs), seeds=seeds, epochs=2, batch_size=10)
    for index, (variant, init, seed) in enumerate(specs):
        model = build_seeded(lambda: build_ffnn(variant, init), seed)
        result = train_model(model, (x, y), None, TrainConfig(epochs=2, lr=0.1, batch_size=10, seed=seed),
                             progress=False)
        assert max_difference(net.model(index), model) < TRAJECTORY_TOL, (variant, init, seed)
        assert history.final_loss()[index] == pytest.approx(result.history.last.train_loss, abs=TRAJECTORY_TOL)


def test_train_stacked_uses_each_learning_rate():
    rates = [0.05, 0.5]
    net = build_networks([("bregman", "random", 1)] * 2, SpiralSettings(), layers=3)
    x, y = spiral_data()
    train_stacked(net, x, y, lrs=rates, seeds=[1, 1], epochs=2, batch_size=10)
    for index, rate in enumerate(rates):
        model = build_seeded(lambda: build_ffnn("bregman", "random"), 1)
        train_model(model, (x, y), None, TrainConfig(epochs=2, lr=rate, batch_size=10, seed=1), progress=False)
        assert max_difference(net.model(index), model) < TRAJECTORY_TOL


def test_train_stacked_freezes_diverged_model():
    net = build_networks([("standard", "random", 0), ("standard", "random", 0)], SpiralSettings(), layers=3)
    x, y = spiral_data()
    # A learning rate of 1e308 overflows the parameters within the first epoch.
    history = train_stacked(net, x, y, lrs=[0.1, 1e308], seeds=[0, 0], epochs=3, batch_size=10)
    assert history.diverged_at == [-1, 1]
    assert bool(torch.isfinite(net.flat).all())
    assert np.isfinite(history.train_loss[:, 0]).all()
    # Its loss overflows, so further training leaves the diverged model unchanged.
    frozen = net.flat[1].detach().clone()
    again = train_stacked(net, x, y, lrs=[0.1, 1e308], seeds=[0, 0], epochs=1, batch_size=10)
    assert again.diverged_at == [-1, 1]
    assert torch.equal(net.flat[1].detach(), frozen)


def test_train_stacked_records_every():
    net = build_networks([("euclidean", "random", 0)], SpiralSettings(), layers=3)
    x, y = spiral_data()
    history = train_stacked(net, x, y, lrs=[0.1], seeds=[0], epochs=5, batch_size=10, record_every=2)
    assert history.epochs == [0, 2, 4, 5]
    assert history.train_loss.shape == (4, 1)


def test_train_stacked_checks_lengths():
    net = build_networks([("euclidean", "random", 0)], SpiralSettings(), layers=3)
    x, y = spiral_data()
    with pytest.raises(ValueError, match="expected 1 learning rates"):
        train_stacked(net, x, y, lrs=[0.1, 0.2], seeds=[0], epochs=1, batch_size=10)


def test_layer_differences_against_loop():
    generator = torch.Generator().manual_seed(0)
    outputs = [torch.randn(3, 7, 2, generator=generator, dtype=torch.float64) for _ in range(5)]
    result = layer_differences(outputs)
    for model in range(3):
        for layer in range(1, 5):
            expected = np.mean([
                np.linalg.norm((outputs[layer][model, i] - outputs[layer - 1][model, i]).numpy())
                for i in range(7)
            ])
            assert float(result[model, layer - 1]) == pytest.approx(expected, rel=1e-12)


def test_bregman_zero_weights_have_zero_differences():
    net = build_networks([("bregman", "deterministic", 0)], SpiralSettings(), layers=6)
    x, _ = spiral_data()
    with torch.no_grad():
        differences = layer_differences(net.hidden_outputs(x))
    # W = 0 and b = 0 make every Bregman layer the identity ρ(ρ⁻¹(z)) = z, exact up to rounding.
    assert float(differences.max()) < 1e-14


# --- loss ordering ----------------------------------------------------------------------


def group(final: dict[str, float], average: dict[str, float]) -> dict:
    return {v: {"final_loss": [final[v]], "mean_loss_over_epochs": average[v]} for v in final}


def test_loss_ordering_matches_paper():
    losses = {"standard": 0.3, "euclidean": 0.2, "bregman": 0.1}
    ordering = loss_ordering(group(losses, losses))
    assert ordering["by_final_loss"] == ["bregman", "euclidean", "standard"]
    assert ordering["matches_paper"] is True


def test_loss_ordering_detects_mismatch():
    final = {"standard": 0.3, "euclidean": 0.2, "bregman": 0.1}
    average = {"standard": 0.1, "euclidean": 0.2, "bregman": 0.3}
    ordering = loss_ordering(group(final, average))
    assert ordering["by_loss_over_epochs"] == ["standard", "euclidean", "bregman"]
    assert ordering["matches_paper"] is False


# --- figures ----------------------------------------------------------------------------


def test_figure5_writes_plot_and_curves(tmp_path):
    result = figure5(TINY, tmp_path)
    assert is_png(tmp_path / "fig5.png")
    document = json.loads((tmp_path / "fig5.json").read_text())
    assert document["epochs"] == [0, 1, 2]
    for init in INITS:
        for variant in VARIANTS:
            curve = document["curves"][init][variant]
            assert len(curve["mean_loss"]) == 3
            assert len(curve["final_loss"]) == TINY.realizations
    assert result.net.count == len(INITS) * len(VARIANTS) * TINY.realizations
    assert len((tmp_path / "fig5.csv").read_text().splitlines()) == 1 + 6 * 3


def test_figure5_deterministic_standard_equals_euclidean(tmp_path):
    # W = I (Standard) and W = 0 (Euclidean, computing ρ(z + Wz + b)) are the same
    # network with the same gradients, so their trajectories coincide.
    document = figure5(TINY, tmp_path).document
    standard = document["curves"]["deterministic"]["standard"]["mean_loss"]
    euclidean = document["curves"]["deterministic"]["euclidean"]["mean_loss"]
    assert np.allclose(standard, euclidean, rtol=0, atol=1e-12)


def test_figure4_writes_layer_outputs(tmp_path):
    trained = figure5(TINY, tmp_path)
    document = figure4(trained, TINY, tmp_path)
    assert is_png(tmp_path / "fig4.png")
    assert document["seed"] in (0, 1)
    rows = (tmp_path / "fig4.csv").read_text().splitlines()
    # input and 3 layers, 200 samples each, plus the header
    assert len(rows) == 1 + 4 * 200


def test_figure6_left_writes_accuracy(tmp_path):
    document = figure6_left(TINY, tmp_path)
    assert is_png(tmp_path / "fig6-left.png")
    assert document["learning_rates"] == [0.1, 1.0]
    for variant in VARIANTS:
        accuracy = document["accuracy"][variant]
        assert len(accuracy["mean_accuracy"]) == 2
        assert all(0.0 <= value <= 100.0 for value in accuracy["mean_accuracy"])
    assert (tmp_path / "fig6-left.json").is_file()


def test_figure6_right_writes_differences(tmp_path):
    document = figure6_right(TINY, tmp_path)
    assert is_png(tmp_path / "fig6-right.png")
    assert document["layers"] == [1, 2, 3, 4]
    for variant in VARIANTS:
        assert len(document["differences"][variant]["mean_difference"]) == TINY.depth
    assert (tmp_path / "fig6-right.csv").is_file()


def test_run_two_spiral_subset_and_summary(tmp_path):
    report = run_two_spiral(TINY, tmp_path, figures=["fig6-right"])
    assert list(report.documents) == ["fig6-right"]
    assert not (tmp_path / "fig5.png").exists()
    run_two_spiral(TINY, tmp_path, figures=["fig5"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [run["figures"] for run in summary["runs"]] == [["fig6-right"], ["fig5"]]
    assert "fig5_ordering" in summary


def test_run_two_spiral_rejects_unknown_figure(tmp_path):
    with pytest.raises(ValueError, match="unknown figures"):
        run_two_spiral(TINY, tmp_path, figures=["fig7"])


def test_spiral_settings_reject_width():
    with pytest.raises(ValueError, match="width=3"):
        SpiralSettings(width=3)


# --- plotting ---------------------------------------------------------------------------


def test_plot_functions_write_png(tmp_path):
    band = ([1.0, 0.5, 0.25], [0.1, 0.1, 0.05])
    curves = {"random": {v: band for v in VARIANTS}}
    assert is_png(plotting.plot_loss_curves(curves, tmp_path / "loss.png"))
    points = [np.random.default_rng(0).normal(size=(10, 2)) for _ in range(3)]
    labels = np.arange(10) % 2
    path = plotting.plot_layer_outputs(points, labels, tmp_path / "layers.png", boundary=(np.array([1.0, 2.0]), 0.5))
    assert is_png(path)
    assert is_png(plotting.plot_accuracy_vs_lr([0.1, 1.0, 10.0], {v: ([50, 60, 70], [1, 2, 3]) for v in VARIANTS},
                                               tmp_path / "acc.png"))
    assert is_png(plotting.plot_layer_differences({v: band for v in VARIANTS}, tmp_path / "diff.png"))


# --- Table 2 ----------------------------------------------------------------------------


def test_paper_table_values():
    assert PAPER_TABLE2[("fashion-mnist", "ffnn1")] == {"standard": 89.11, "euclidean": 89.01, "bregman": 89.39}
    assert PAPER_TABLE2[("fashion-mnist", "cnn")]["bregman"] == 93.19
    assert PAPER_TABLE2[("mnist", "ffnn3")]["euclidean"] == 98.32
    assert PAPER_TABLE2[("cifar10", "cnn")] == {"standard": 78.02, "euclidean": 78.00, "bregman": 79.95}
    assert len(PAPER_TABLE2) == 7


def test_paper_table_bregman_best():
    # Table 2 of "Bilevel Learning of Deep Representations" has Bregman best or tied-best in every row.
    for key, row in PAPER_TABLE2.items():
        assert row["bregman"] == max(row.values()), key


def test_dataset_rows_cover_paper():
    assert {(dataset, row) for dataset, rows in DATASET_ROWS.items() for row in rows} == set(PAPER_TABLE2)


def write_idx(folder: Path, counts=(48, 24)) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in zip(("train", "t10k"), counts):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        for name, array, magic in ((f"{prefix}-images-idx3-ubyte", images, 2051),
                                   (f"{prefix}-labels-idx1-ubyte", labels, 2049)):
            header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
            (folder / f"{name}.gz").write_bytes(gzip.compress(header + array.tobytes()))


def write_cifar(folder: Path, count: int = 6) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            b"labels": (np.arange(count) % 10).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


SMALL = Table2Settings(epochs=1, realizations=2, width=16, cnn_features=8, cnn_channels=(2, 4),
                       limit=32, test_limit=16, device="cpu")


def test_table2_fashion_mnist_all_rows(tmp_path):
    data = tmp_path / "data"
    write_idx(data)
    cells = run_table2("fashion-mnist", SMALL, tmp_path / "out", data_dir=data, progress=False)
    assert [(cell.row, cell.variant) for cell in cells] == [
        (row, variant) for row in ("ffnn1", "ffnn3", "cnn") for variant in VARIANTS
    ]
    for cell in cells:
        assert len(cell.accuracies) == 2
        assert all(0.0 <= value <= 100.0 for value in cell.accuracies)
        assert cell.paper == PAPER_TABLE2[("fashion-mnist", cell.row)][cell.variant]
    folder = tmp_path / "out" / "fashion-mnist"
    document = json.loads((folder / "table2.json").read_text())
    assert len(document["cells"]) == 9
    assert len((folder / "table2.csv").read_text().splitlines()) == 10
    assert "89.11" in (folder / "table2.md").read_text()


def test_table2_ffnn_width_defaults_to_pixels(tmp_path):
    data = tmp_path / "data"
    write_idx(data)
    settings = Table2Settings(epochs=0, realizations=1, limit=8, test_limit=8, device="cpu")
    cell = run_cell("mnist", "ffnn1", "bregman", settings, tmp_path / "out", data_dir=data, progress=False)
    assert cell.settings["hidden"] == [784]


def test_table2_resume_reuses_cells(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_idx(data)
    first = run_cell("mnist", "ffnn1", "standard", SMALL, tmp_path / "out", data_dir=data, progress=False)

    def fail(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("mmbilevel.train.train_model", fail)
    again = run_cell("mnist", "ffnn1", "standard", SMALL, tmp_path / "out", data_dir=data, resume=True,
                     progress=False)
    assert again.accuracies == first.accuracies


def test_table2_cifar_cnn_row(tmp_path):
    data = tmp_path / "cifar"
    write_cifar(data)
    settings = Table2Settings(epochs=1, realizations=2, cnn_features=8, cnn_channels=(2, 4), device="cpu")
    cells = run_table2("cifar10", settings, tmp_path / "out", data_dir=data, progress=False)
    assert [cell.row for cell in cells] == ["cnn"] * 3
    assert cells[0].settings["channels"] == [2, 4]
    assert len(collect_cells(tmp_path / "out", "cifar10")) == 3


def test_table2_rejects_row_not_in_paper(tmp_path):
    with pytest.raises(ValueError, match="not in Table 2 for cifar10"):
        run_table2("cifar10", SMALL, tmp_path, rows=["ffnn1"])


def test_table2_rejects_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="no rows for data set"):
        run_table2("two-spiral", SMALL, tmp_path)


def test_format_table_marks_missing_variants():
    cell = CellResult("fashion-mnist", "ffnn1", "bregman", [89.0, 90.0], [0, 1], 60.0,
                      {"config": {"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "epochs": 10}})
    text = format_table([cell], "fashion-mnist")
    assert "89.50 ± 0.71 (89.39)" in text
    assert "not run (89.11)" in text
    assert "FFNN 3 hidden layers" not in text
