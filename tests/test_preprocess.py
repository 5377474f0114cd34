"""Preprocessing into the domain: margin checks and strict interior in float32 and float64."""

from __future__ import annotations

import math

import pytest
import torch

from mmbilevel import legendre
from mmbilevel.nn.preprocess import domain_target, to_domain

DTYPES = [torch.float32, torch.float64]
TINY_MARGINS = [1e-300, 1e-20, 1e-9, 1e-6]


def assert_strict_interior(phi, mapped: torch.Tensor) -> None:
    """Check a < y < b exactly (in float64, which represents every float32 exactly) and in the dtype of y."""
    low, high = (float(end) for end in phi.domain)
    exact = mapped.double()
    assert torch.all(exact > low), exact.min().item()
    assert torch.all(exact < high), exact.max().item()
    if math.isfinite(low):
        assert torch.all(mapped > torch.tensor(low, dtype=mapped.dtype)), mapped.min().item()
    if math.isfinite(high):
        assert torch.all(mapped < torch.tensor(high, dtype=mapped.dtype)), mapped.max().item()


@pytest.mark.parametrize("margin", [0.0, -1e-3, 0.5, 0.7, math.nan])
def test_domain_target_rejects_margin(margin):
    with pytest.raises(ValueError, match=rf"margin={margin}.*\(0, 0\.5\)"):
        domain_target("sigmoid", (0.0, 1.0), margin=margin)


def test_to_domain_rejects_zero_margin():
    with pytest.raises(ValueError, match="default 0.001"):
        to_domain(torch.zeros(2), "arctan", margin=0.0)


@pytest.mark.parametrize("name", legendre.available())
@pytest.mark.parametrize("margin", TINY_MARGINS)
def test_domain_target_tiny_margin_interior(name, margin):
    phi = legendre.get(name)
    low, high = (float(end) for end in phi.domain)
    target_low, target_high = domain_target(name, (-2.0, 2.0), margin=margin)
    assert low < target_low
    assert target_high < high
    assert target_low < target_high


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", legendre.available())
@pytest.mark.parametrize("margin", TINY_MARGINS)
def test_to_domain_tiny_margin_interior(name, margin, dtype):
    # Pixels and a source wider than every bounded domain, both with the source ends included.
    phi = legendre.get(name)
    for source in ((0.0, 1.0), (-2.0, 2.0)):
        data = torch.linspace(source[0] - 0.5, source[1] + 0.5, 41, dtype=dtype)
        mapped = to_domain(data, name, source=source, margin=margin)
        assert mapped.dtype == dtype
        assert_strict_interior(phi, mapped)
        assert torch.all(mapped.diff() >= 0)
        assert torch.isfinite(phi.grad(mapped)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_domain_sigmoid_float32_end(dtype):
    # 1 − 1e-9 rounds to 1.0 in float32, so the top pixel must move one ulp below 1.
    mapped = to_domain(torch.tensor([0.0, 1.0], dtype=dtype), "sigmoid", margin=1e-9)
    below_one = torch.nextafter(torch.tensor(1.0, dtype=dtype), torch.tensor(0.0, dtype=dtype))
    expected_top = below_one if dtype == torch.float32 else torch.tensor(1 - 1e-9, dtype=dtype)
    assert mapped[1] == expected_top
    assert mapped[0] == torch.tensor(1e-9, dtype=dtype)


def test_to_domain_arctan_rounded_end():
    # float32(π/2) lies above π/2, so an end near π/2 must land below it.
    source = (0.0, math.pi / 2 - 1e-12)
    mapped = to_domain(torch.tensor([source[1]], dtype=torch.float32), "arctan", source=source)
    assert mapped.double().item() < math.pi / 2
    assert torch.tan(mapped.double()).item() > 0


def test_to_domain_default_margin_affine():
    # Far from the ends the nudge does nothing: the map is exactly m + (1 − 2m)·x.
    pixels = torch.rand(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mapped = to_domain(pixels, "sigmoid")
    torch.testing.assert_close(mapped, 1e-3 + (1 - 2e-3) * pixels, rtol=0, atol=1e-15)
