"""ConvFFNN input checks: images whose shape does not match the model."""

from __future__ import annotations

import pytest
import torch

from mmbilevel.nn import ConvFFNN


def _model(image_size: int | tuple[int, int] = 28, in_channels: int = 1) -> ConvFFNN:
    return ConvFFNN(in_channels, image_size, 10, "arctan", "bregman", features=4, channels=(2, 3))


def test_conv_rejects_wrong_image_size() -> None:
    with pytest.raises(ValueError, match=r"\(1, 28, 28\).*\(2, 1, 32, 32\)"):
        _model()(torch.rand(2, 1, 32, 32))


def test_conv_rejects_size_with_same_flat_length() -> None:
    # 29 × 29 pools to 7 × 7 like 28 × 28, so only the check catches it.
    with pytest.raises(ValueError, match="image_size"):
        _model()(torch.rand(2, 1, 29, 29))


def test_conv_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match=r"\(3, 32, 32\).*\(2, 1, 32, 32\)"):
        _model(32, in_channels=3)(torch.rand(2, 1, 32, 32))


def test_conv_rejects_unbatched_image() -> None:
    with pytest.raises(ValueError, match="N, 1, 28, 28"):
        _model()(torch.rand(1, 28, 28))


def test_conv_rejects_in_hidden_outputs() -> None:
    with pytest.raises(ValueError, match="image_size"):
        _model().hidden_outputs(torch.rand(2, 1, 32, 32))


def test_conv_accepts_rectangular_size() -> None:
    output = _model((28, 20))(torch.rand(2, 1, 28, 20))
    assert output.shape == (2, 10)
