"""End-to-end tests of ``mmbilevel reproduce two-spiral`` and ``mmbilevel reproduce table2``."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmbilevel.cli import main
from mmbilevel.cli.reproduce import parse_lr_grid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_idx(folder: Path, counts=(40, 20)) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in zip(("train", "t10k"), counts):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        for name, array, magic in ((f"{prefix}-images-idx3-ubyte", images, 2051),
                                   (f"{prefix}-labels-idx1-ubyte", labels, 2049)):
            header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
            (folder / f"{name}.gz").write_bytes(gzip.compress(header + array.tobytes()))


def test_two_spiral_end_to_end(tmp_path, capsys):
    out = tmp_path / "spiral"
    status = main([
        "reproduce", "two-spiral", "--epochs", "2", "--lr-epochs", "2", "--realizations", "2",
        "--lr-grid", "0.1,1", "--depth", "3", "--out", str(out),
    ])
    assert status == 0
    for name in ("fig4", "fig5", "fig6-left", "fig6-right"):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_SIGNATURE, name
        assert (out / f"{name}.json").is_file(), name
        assert (out / f"{name}.csv").is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][0]["settings"]["epochs"] == 2
    printed = capsys.readouterr().out
    assert "figure 5, random init" in printed
    assert "figure 6 left, bregman" in printed


def test_two_spiral_replot_redraws_png(tmp_path, capsys):
    out = tmp_path / "spiral"
    assert main(["reproduce", "two-spiral", "--figures", "fig4,fig6-left", "--epochs", "1", "--lr-epochs", "1",
                 "--realizations", "2", "--lr-grid", "0.5", "--out", str(out)]) == 0
    for name in ("fig4", "fig5", "fig6-left"):
        (out / f"{name}.png").unlink()
    assert main(["reproduce", "two-spiral", "--replot", "--out", str(out)]) == 0
    for name in ("fig4", "fig5", "fig6-left"):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_SIGNATURE, name
    assert not (out / "fig6-right.png").exists()
    assert capsys.readouterr().out.count("redrew") == 3


def test_two_spiral_replot_without_data(tmp_path, caplog):
    assert main(["reproduce", "two-spiral", "--replot", "--out", str(tmp_path)]) == 1
    assert "no figure data" in caplog.text


def test_two_spiral_figure_subset(tmp_path):
    out = tmp_path / "spiral"
    status = main(["reproduce", "two-spiral", "--figures", "fig6-right", "--epochs", "1",
                   "--realizations", "2", "--depth", "2", "--out", str(out)])
    assert status == 0
    assert (out / "fig6-right.png").is_file()
    assert not (out / "fig5.png").exists()


def test_two_spiral_rejects_unknown_figure(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "two-spiral", "--figures", "fig7", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "invalid figures 'fig7'" in capsys.readouterr().err


def test_table2_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    write_idx(data)
    out = tmp_path / "out"
    status = main([
        "reproduce", "table2", "--dataset", "fashion-mnist", "--data-dir", str(data), "--out", str(out),
        "--epochs", "1", "--realizations", "2", "--limit", "24", "--test-limit", "10", "--width", "8",
        "--cnn-features", "4", "--cnn-channels", "2,2", "--rows", "ffnn1,cnn", "--no-progress",
    ])
    assert status == 0
    printed = capsys.readouterr().out
    assert "89.11" in printed  # Table 2 value, Standard FFNN 1 hidden layer
    assert "93.19" in printed  # Table 2 value, Bregman CNN
    assert "FFNN 3 hidden layers" not in printed
    document = json.loads((out / "fashion-mnist" / "table2.json").read_text())
    assert len(document["cells"]) == 6
    cell = json.loads((out / "fashion-mnist" / "ffnn1" / "bregman" / "results.json").read_text())
    assert [item["seed"] for item in cell["realizations"]] == [0, 1]
    assert cell["config"]["optimizer"] == "adam"


def test_table2_resume_keeps_earlier_rows(tmp_path, capsys):
    data = tmp_path / "data"
    write_idx(data)
    common = ["reproduce", "table2", "--dataset", "mnist", "--data-dir", str(data), "--out", str(tmp_path / "out"),
              "--epochs", "1", "--realizations", "1", "--limit", "16", "--test-limit", "8", "--width", "8",
              "--variants", "bregman", "--no-progress"]
    assert main(common + ["--rows", "ffnn1"]) == 0
    assert main(common + ["--rows", "ffnn3", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "FFNN 1 hidden layer" in printed.split("trained or reused")[-2]
    assert "not run (95.27)" in printed


def test_table2_missing_data_exit_status(tmp_path, caplog):
    status = main(["reproduce", "table2", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"),
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert status == 1
    assert "not found" in caplog.text


def test_table2_cifar_ffnn_row_exit_status(tmp_path, caplog):
    status = main(["reproduce", "table2", "--dataset", "cifar10", "--rows", "ffnn1",
                   "--out", str(tmp_path), "--no-progress"])
    assert status == 2
    assert "not in Table 2 for cifar10" in caplog.text


def test_parse_lr_grid_list():
    assert parse_lr_grid("0.01, 0.1,1") == (0.01, 0.1, 1.0)


def test_parse_lr_grid_logspace():
    grid = parse_lr_grid("logspace:0.01:10:4")
    assert len(grid) == 4
    assert grid[0] == pytest.approx(0.01)
    assert grid[-1] == pytest.approx(10.0)
    assert grid[1] / grid[0] == pytest.approx(10.0)


@pytest.mark.parametrize("text", ["0.1,-1", "logspace:0.1:1", "0.1,nan", "abc"])
def test_parse_lr_grid_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_lr_grid(text)


def test_default_lr_grid_is_log_spaced():
    from mmbilevel.experiments.two_spiral import DEFAULT_LR_GRID

    ratios = [b / a for a, b in zip(DEFAULT_LR_GRID, DEFAULT_LR_GRID[1:])]
    assert DEFAULT_LR_GRID[0] == 0.01
    assert DEFAULT_LR_GRID[-1] == 10.0
    assert all(math.isclose(ratio, math.sqrt(10), rel_tol=1e-5) for ratio in ratios)


FIG4_CSV = "layer,z1,z2,label\n0,0.1,0.2,0\n0,0.3,-0.1,1\n1,0.2,0.2,0\n1,0.1,-0.3,1\n"


@pytest.mark.parametrize(
    "files, damaged",
    [
        ({"fig4.json": '{"head_weight": [[1, 0], [0', "fig4.csv": FIG4_CSV}, "fig4.json"),
        ({"fig4.json": "{}", "fig4.csv": FIG4_CSV}, "fig4.json"),
        ({"fig4.json": '{"head_weight": [[1, 0], [0, 1]], "head_bias": [0, 0]}',
          "fig4.csv": "layer,z1\n0,abc\n"}, "fig4.csv"),
        ({"fig5.json": '{"curves": {"random": []}, "epochs": 3}'}, "fig5.json"),
        ({"fig6-left.json": "[1, 2]"}, "fig6-left.json"),
        ({"fig6-right.json": '{"differences": {"standard": {"mean_difference": [1, 2]}}}'}, "fig6-right.json"),
    ],
    ids=["truncated-json", "empty-object", "bad-csv", "wrong-shape", "not-object", "missing-key"],
)
def test_two_spiral_replot_damaged_data(tmp_path, capsys, caplog, files, damaged):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main(["reproduce", "two-spiral", "--replot", "--out", str(tmp_path)]) == 1
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1
    assert str(tmp_path / damaged) in errors[0].getMessage()
    assert "without --replot" in errors[0].getMessage()
    assert errors[0].exc_info is None
    assert "Traceback" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_table2(tmp_path_factory):
    """Train one tiny Table 2 cell; return its data folder and the command that trained it."""
    root = tmp_path_factory.mktemp("table2")
    write_idx(root / "data")
    command = ["reproduce", "table2", "--dataset", "mnist", "--data-dir", str(root / "data"),
               "--out", str(root / "out"), "--epochs", "1", "--realizations", "1", "--limit", "16",
               "--test-limit", "8", "--width", "4", "--rows", "ffnn1", "--variants", "bregman", "--no-progress"]
    assert main(command) == 0
    return root, command


def copy_run(trained, tmp_path: Path) -> tuple[list[str], Path]:
    root, command = trained
    shutil.copytree(root / "out", tmp_path / "out")
    command = [str(tmp_path / "out") if part == str(root / "out") else part for part in command]
    return command, tmp_path / "out" / "mnist" / "ffnn1" / "bregman"


def single_error(caplog) -> str:
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert errors[0].exc_info is None
    return errors[0].getMessage()


def test_table2_resume_truncated_checkpoint(trained_table2, tmp_path, caplog, capsys):
    command, cell = copy_run(trained_table2, tmp_path)
    checkpoint = cell / "checkpoint-seed0.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    # Two epochs, so the stored results do not match and the checkpoint is read.
    command[command.index("--epochs") + 1] = "2"
    assert main(command + ["--resume"]) == 1
    message = single_error(caplog)
    assert str(checkpoint) in message
    assert "rerun without --resume" in message
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("text", ['{"run": {', "[]", '{"run": {"experiment": "table2"}}'],
                         ids=["truncated", "not-object", "missing-keys"])
def test_table2_resume_damaged_results(trained_table2, tmp_path, caplog, capsys, text):
    command, cell = copy_run(trained_table2, tmp_path)
    (cell / "results.json").write_text(text)
    assert main(command + ["--resume"]) == 1
    message = single_error(caplog)
    assert str(cell / "results.json") in message
    assert "rerun without --resume" in message
    assert "Traceback" not in capsys.readouterr().err


def test_table2_damaged_results_without_resume(trained_table2, tmp_path, caplog):
    # Without --resume the cell is trained again, but the table still reads every stored cell.
    command, cell = copy_run(trained_table2, tmp_path)
    other = cell.parent / "standard"
    other.mkdir()
    (other / "results.json").write_text("{")
    assert main(command) == 1
    message = single_error(caplog)
    assert str(other / "results.json") in message
    assert "Delete the file" in message


def test_reproduce_traceback_with_debug(tmp_path, caplog):
    (tmp_path / "fig6-left.json").write_text("{")
    caplog.set_level(logging.DEBUG, logger="mmbilevel")
    assert main(["-vv", "reproduce", "two-spiral", "--replot", "--out", str(tmp_path)]) == 1
    assert any(record.exc_info for record in caplog.records if record.levelname == "DEBUG")
