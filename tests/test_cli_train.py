"""End-to-end tests of ``mmbilevel train`` on tiny settings."""

from __future__ import annotations

import csv
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from mmbilevel.cli import main

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """Write a uint8 array in the IDX format: magic 0x0000 08 NDIM, big-endian sizes, bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_fake_fashion(folder: Path, train: int = 60, test: int = 20) -> None:
    """Write small IDX files in which the class is the brightness of the top rows."""
    rng = np.random.default_rng(0)
    for split, count, compress in (("train", train, True), ("t10k", test, False)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 40, size=(count, 28, 28))
        images[:, :4, :] = labels[:, None, None] * 25
        write_idx(folder / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress)


def read_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def spiral_args(out: Path, *extra: str) -> list[str]:
    return [
        "train", "--dataset", "two-spiral", "--epochs", "3", "--out", str(out), "--no-progress", *extra,
    ]


def test_cli_spiral_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(spiral_args(out)) == 0
    document = read_results(out)
    assert document["run"]["dataset"] == "two-spiral"
    assert document["config"]["lr"] == 0.1
    assert len(document["realizations"][0]["history"]["train_loss"]) == 4
    assert 0.0 <= document["final"]["test_accuracy"] <= 1.0
    assert "data set: two-spiral" in capsys.readouterr().out


def test_cli_history_csv(tmp_path):
    out = tmp_path / "run"
    main(spiral_args(out, "--realizations", "2"))
    with open(out / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    assert {row["seed"] for row in rows} == {"0", "1"}
    assert {(row["realization"], row["seed"]) for row in rows} == {("1", "0"), ("2", "1")}


def ffnn_batches_under_vmap() -> bool:
    """Return whether an FFNN's forward pass runs under torch.vmap."""
    import torch
    from torch.func import functional_call, stack_module_state, vmap

    from mmbilevel.nn import FFNN

    models = [FFNN(2, [2], 2, "arctan", "standard") for _ in range(2)]
    params, buffers = stack_module_state(models)
    try:
        vmap(lambda p, b: functional_call(models[0], (p, b), (torch.zeros(1, 2),)))(params, buffers)
    except RuntimeError:
        return False
    return True


def test_cli_realizations_batched(tmp_path):
    assert ffnn_batches_under_vmap()
    out = tmp_path / "run"
    main(spiral_args(out, "--realizations", "3", "--variant", "standard", "--optimizer", "adam"))
    document = read_results(out)
    assert document["run"]["batched"] is True
    assert [entry["seed"] for entry in document["realizations"]] == [0, 1, 2]


def test_cli_batched_matches_sequential(tmp_path):
    batched, sequential = tmp_path / "batched", tmp_path / "sequential"
    common = ("--realizations", "2", "--dtype", "float64", "--seed", "4")
    main(spiral_args(batched, *common))
    main(spiral_args(sequential, *common, "--sequential"))
    first = read_results(batched)["realizations"]
    second = read_results(sequential)["realizations"]
    for one, other in zip(first, second):
        assert one["final"]["train_loss"] == pytest.approx(other["final"]["train_loss"], abs=1e-12)


def test_cli_resume_continues(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(spiral_args(straight, "--epochs", "4"))
    main(spiral_args(resumed, "--epochs", "2"))
    main(spiral_args(resumed, "--epochs", "4", "--resume"))
    first = read_results(straight)["realizations"][0]["history"]
    second = read_results(resumed)["realizations"][0]["history"]
    assert first["train_loss"] == second["train_loss"]


def test_cli_fake_fashion(tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_fake_fashion(data_dir)
    out = tmp_path / "run"
    status = main([
        "train", "--dataset", "fashion-mnist", "--data-dir", str(data_dir), "--hidden", "16",
        "--epochs", "2", "--batch-size", "20", "--out", str(out), "--no-progress",
    ])
    assert status == 0
    document = read_results(out)
    assert document["run"]["train_samples"] == 60
    assert document["run"]["test_samples"] == 20
    assert "data set: fashion-mnist" in capsys.readouterr().out


def test_cli_default_uses_found_fashion(tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_fake_fashion(data_dir)
    out = tmp_path / "run"
    main(["train", "--data-dir", str(data_dir), "--hidden", "8", "--epochs", "1", "--out", str(out), "--no-progress"])
    assert read_results(out)["run"]["dataset"] == "fashion-mnist"
    assert "Fashion-MNIST files were found" in capsys.readouterr().out


def test_cli_default_falls_back_to_spiral(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    main(["train", "--data-dir", str(empty), "--epochs", "1", "--out", str(out), "--no-progress"])
    assert read_results(out)["run"]["dataset"] == "two-spiral"
    assert "were not found" in capsys.readouterr().out


def test_cli_missing_dataset_fails(tmp_path):
    status = main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")])
    assert status == 1


@pytest.mark.parametrize(
    "option, value",
    [
        ("--epochs", "-1"),
        ("--lr", "0"),
        ("--lr", "-0.5"),
        ("--lr", "nan"),
        ("--batch-size", "0"),
        ("--hidden", "784,,10"),
        ("--hidden", "0"),
        ("--hidden", "a,b"),
        ("--variant", "residual"),
        ("--activation", "relu"),
        ("--dataset", "imagenet"),
        ("--optimizer", "lbfgs"),
        ("--device", "tpu"),
    ],
)
def test_cli_rejects_invalid(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as raised:
        main(["train", option, value, "--out", str(tmp_path)])
    assert raised.value.code == 2
    assert option in capsys.readouterr().err


def test_cli_cnn_spiral_rejected(tmp_path):
    assert main(spiral_args(tmp_path / "run", "--model", "cnn")) == 2


def test_cli_spiral_reaches_accuracy(tmp_path):
    # Three layers of 16 neurons instead of 2 fit the spirals in a short run:
    # train and test accuracy were 1.00 after 15 epochs for seeds 0 to 2.
    out = tmp_path / "run"
    main(spiral_args(
        out, "--hidden", "16,16,16", "--epochs", "20", "--optimizer", "adam", "--lr", "0.02",
        "--batch-size", "20",
    ))
    document = read_results(out)
    assert document["final"]["train_accuracy"] >= 0.95
    assert document["final"]["test_accuracy"] >= 0.9


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST is not installed")
def test_cli_real_fashion_slice(tmp_path):
    # Default Bregman FFNN (784 sigmoid units, Adam 1e-3, batch 128): 0.805
    # test accuracy with seed 0, Standard and Euclidean 0.786 and 0.787.
    out = tmp_path / "run"
    status = main([
        "train", "--dataset", "fashion-mnist", "--data-dir", str(FASHION_MNIST), "--limit", "5000",
        "--test-limit", "2000", "--epochs", "3", "--out", str(out), "--no-progress",
    ])
    assert status == 0
    assert read_results(out)["final"]["test_accuracy"] >= 0.75


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--activation", "tanh", "activation: stored 'arctan', requested 'tanh'"),
        ("--hidden", "3", "hidden: stored [2], requested [3]"),
        ("--dtype", "float64", "dtype: stored 'float32', requested 'float64'"),
        ("--limit", "32", "limit: stored None, requested 32"),
    ],
)
def test_cli_resume_rejects_other_run(tmp_path, caplog, option, value, expected):
    out = tmp_path / "run"
    assert main(spiral_args(out, "--hidden", "2", "--epochs", "1")) == 0
    status = main(spiral_args(out, "--hidden", "2", "--epochs", "2", option, value, "--resume"))
    assert status == 2
    assert expected in caplog.text


def test_cli_rejects_folder_of_other_run(tmp_path, caplog):
    out = tmp_path / "run"
    assert main(spiral_args(out, "--epochs", "2")) == 0
    before = (out / "results.json").read_text()
    assert main(spiral_args(out, "--epochs", "1", "--seed", "5")) == 2
    assert "already contains the files of another run" in caplog.text
    assert (out / "results.json").read_text() == before


def test_cli_overwrite_deletes_old_run(tmp_path):
    out = tmp_path / "run"
    main(spiral_args(out, "--epochs", "2"))
    assert main(spiral_args(out, "--epochs", "1", "--seed", "5", "--overwrite")) == 0
    assert sorted(path.name for path in out.glob("checkpoint*.pt")) == ["checkpoint-seed5.pt"]
    assert read_results(out)["config"]["seed"] == 5


def test_cli_resume_without_checkpoint_warns(tmp_path, caplog):
    out = tmp_path / "run"
    assert main(spiral_args(out, "--epochs", "1", "--resume")) == 0
    assert "no checkpoint in" in caplog.text
    assert read_results(out)["realizations"][0]["history"]["epoch"] == [0, 1]


def test_cli_resume_other_seed_rejected(tmp_path, caplog):
    out = tmp_path / "run"
    main(spiral_args(out, "--epochs", "1"))
    assert main(spiral_args(out, "--epochs", "2", "--seed", "3", "--resume")) == 2
    assert "seed: stored 0, requested 3" in caplog.text


def test_cli_resume_overwrite_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(spiral_args(tmp_path / "run", "--resume", "--overwrite"))
    assert raised.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_divergence_exit_status(tmp_path, caplog):
    out = tmp_path / "run"
    status = main(spiral_args(out, "--activation", "euclidean", "--variant", "standard", "--lr", "1000"))
    assert status == 3
    assert read_results(out)["diverged"] is True
    assert "lower --lr" in caplog.text


def test_cli_out_file_error_line(tmp_path, caplog):
    out = tmp_path / "file"
    out.write_text("")
    assert main(spiral_args(out)) == 1
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1
    assert "is an existing file" in errors[0].getMessage()
    assert errors[0].exc_info is None


def test_cli_interrupt_exit_status(tmp_path, caplog, monkeypatch):
    import mmbilevel.cli.train as train_cli
    from mmbilevel.train import TrainingInterrupted

    checkpoint = tmp_path / "run" / "checkpoint-seed0.pt"

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(checkpoint, 2)

    monkeypatch.setattr(train_cli, "_train", interrupted)
    assert main(spiral_args(tmp_path / "run")) == 130
    assert f"epoch 2 is saved in {checkpoint}" in caplog.text
    assert "--resume" in caplog.text


def test_cli_interrupt_then_resume(tmp_path, monkeypatch):
    import mmbilevel.train.trainer as trainer

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(spiral_args(straight, "--epochs", "3", "--checkpoint-every", "10"))

    original = trainer.epoch_batches
    calls = []

    def interrupt_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "epoch_batches", interrupt_epoch_3)
    assert main(spiral_args(resumed, "--epochs", "3", "--checkpoint-every", "10")) == 130
    monkeypatch.setattr(trainer, "epoch_batches", original)
    assert main(spiral_args(resumed, "--epochs", "3", "--checkpoint-every", "10", "--resume")) == 0
    first = read_results(straight)["realizations"][0]["history"]
    second = read_results(resumed)["realizations"][0]["history"]
    assert first["train_loss"] == second["train_loss"]


def test_cli_rerun_after_missing_data(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(out)]) == 1
    assert main(spiral_args(out, "--epochs", "1")) == 0
