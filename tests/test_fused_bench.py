"""The benchmark harness runs and reports ratios of the same rounds; no timing is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# bench/ is a folder of the repository, not of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest.importorskip("bench.run")

from bench.models import SHAPES, UnfusedBregman, mmbilevel_model, plain_mlp  # noqa: E402
from bench.run import Row, main, markdown_table  # noqa: E402


def test_row_ratio_pairs_rounds():
    # Round-wise ratios 2 and 4 and 3: the median is 3, not 9/3 from the medians.
    row = Row("two-spiral", "cpu", "train step", {"plain": [1.0, 1.0, 3.0], "bregman": [2.0, 4.0, 9.0]})
    assert row.ratio("bregman", "plain") == 3.0


def test_markdown_table_lists_every_model():
    row = Row("two-spiral", "cpu", "forward", {"plain": [2e-5], "bregman": [3e-5]})
    table = markdown_table([row])
    assert "| plain | bregman |" in table
    assert "30 µs (1.50×)" in table


def test_unfused_reference_matches_ffnn():
    torch.manual_seed(0)
    network = mmbilevel_model(SHAPES[0], "arctan", "bregman", torch.device("cpu")).double()
    x = 0.2 + 0.6 * torch.rand(10, 2, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(UnfusedBregman(network)(x), network(x), rtol=1e-12, atol=1e-12)


def test_plain_mlp_shapes():
    model = plain_mlp(SHAPES[1], "arctan", torch.device("cpu"))
    assert model(torch.zeros(3, 784)).shape == (3, 10)


def test_main_runs_two_spiral_row(capsys):
    status = main(["--shapes", "two-spiral", "--rounds", "1", "--min-run-time", "0.001", "--no-bregmanet"])
    output = capsys.readouterr().out
    assert status == 0
    assert "| two-spiral | cpu | train step |" in output
    assert "| two-spiral | cpu | forward |" in output


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--rounds", "0", "0 is not a positive integer"),
        ("--large-rounds", "-2", "-2 is not a positive integer"),
        ("--threads", "0", "0 is not a positive integer"),
        ("--figure5-threads", "0", "0 is not a positive integer"),
        ("--min-run-time", "-1", "-1 is not a finite number of seconds > 0"),
        ("--min-run-time", "0", "0 is not a finite number of seconds > 0"),
        ("--min-run-time", "nan", "nan is not a finite number of seconds > 0"),
        ("--rounds", "x", "invalid integer 'x'"),
        ("--devices", "tpu", "invalid devices 'tpu'"),
        ("--devices", ",", "invalid devices ','"),
    ],
)
def test_main_rejects_invalid_option(capsys, option, value, message):
    with pytest.raises(SystemExit) as info:
        main(["--shapes", "two-spiral", option, value])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}" in error
    assert message in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_main_rejects_cuda_without_cuda(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--shapes", "two-spiral", "--devices", "cpu,cuda"])
    assert info.value.code == 2
    assert "cuda is not available on this machine" in capsys.readouterr().err
