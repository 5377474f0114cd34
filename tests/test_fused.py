"""Fused Bregman step and unchecked ρ, ρ⁻¹: values, gradients, slopes, ends of the domain, vmap."""

from __future__ import annotations

import math

import pytest
import sympy
import torch
from torch.func import functional_call, stack_module_state, vmap

from mmbilevel import legendre
from mmbilevel.nn import FFNN, BregmanLayer
from mmbilevel.nn import functional as fused

CATALOGUE = legendre.available()
# Activations whose catalogue ρ⁻¹ the tests can compare with: all closed forms.
BOUNDED = [name for name in CATALOGUE if all(math.isfinite(end) for end in legendre.get(name).domain)]


def interior_points(name: str, shape, dtype=torch.float64, seed=0) -> torch.Tensor:
    """Draw points uniformly in the inner 90 % of dom φ, or in [−3, 3] ∩ dom φ when unbounded."""
    low, high = legendre.get(name).domain
    low, high = max(low, -3.0), min(high, 3.0)
    width = high - low
    generator = torch.Generator().manual_seed(seed)
    return low + 0.05 * width + 0.9 * width * torch.rand(shape, generator=generator, dtype=dtype)


def shifts(shape, dtype=torch.float64, seed=1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(shape, generator=generator, dtype=dtype)


def unfused(phi: legendre.Legendre, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Return ρ(ρ⁻¹(s) + a) through the checked catalogue methods, the reference."""
    return phi.grad_conjugate(phi.grad(s) + a)


# --- values ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CATALOGUE)
def test_inverse_matches_catalogue_float64(name):
    phi = legendre.get(name)
    s = interior_points(name, (200,))
    # The one-operation forms (logit, atanh, tan) and the catalogue's forms
    # round differently; both are accurate to a few ulps of |ρ⁻¹(s)| ≥ 1e-3 here,
    # and ρ⁻¹ is steep near the ends, so 1e-13 relative leaves a wide margin.
    assert torch.allclose(fused.inverse_activation(phi, s), phi.grad(s), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", CATALOGUE)
def test_inverse_matches_float64_in_float32(name):
    phi = legendre.get(name)
    s = interior_points(name, (200,), dtype=torch.float32)
    reference = phi.grad(s.double())
    # float32 ρ⁻¹ is accurate to a few ulps of its result plus the input's
    # rounding amplified by φ''(s)·|s|/|ρ⁻¹(s)| < 50 on the inner 90 %.
    tolerance = 100 * torch.finfo(torch.float32).eps
    assert torch.allclose(fused.inverse_activation(phi, s).double(), reference, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", CATALOGUE)
def test_step_values_match_unfused(name):
    phi = legendre.get(name)
    s = interior_points(name, (50, 3)).requires_grad_(True)
    a = shifts((50, 3))
    y, u = fused.bregman_step(phi, s, a)
    with torch.no_grad():
        assert torch.allclose(y, unfused(phi, s, a), rtol=1e-13, atol=1e-13)
        assert torch.allclose(u, phi.grad(s) + a, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", CATALOGUE)
def test_step_without_gradient_matches_fused(name):
    phi = legendre.get(name)
    s = interior_points(name, (50, 3))
    a = shifts((50, 3))
    composed = fused.bregman_update(phi, s, a)
    fused_value = fused.bregman_update(phi, s.clone().requires_grad_(True), a)
    assert torch.equal(composed, fused_value.detach())


# --- gradients -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CATALOGUE)
def test_step_gradcheck(name):
    phi = legendre.get(name)
    s = interior_points(name, (4, 3)).requires_grad_(True)
    a = shifts((4, 3)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, a: fused.bregman_step(phi, s, a), (s, a))


@pytest.mark.parametrize("name", ["arctan", "sigmoid", "tanh", "isru", "softplus", "log"])
def test_step_gradgradcheck(name):
    phi = legendre.get(name)
    s = interior_points(name, (3, 2)).requires_grad_(True)
    a = shifts((3, 2)).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda s, a: fused.bregman_step(phi, s, a), (s, a))


@pytest.mark.parametrize("name", CATALOGUE)
def test_step_gradient_matches_unfused(name):
    phi = legendre.get(name)
    s = interior_points(name, (30, 3))
    a = shifts((30, 3))
    weights = shifts((30, 3), seed=2)
    gradients = []
    for function in (fused.bregman_update, unfused):
        s_leaf = s.clone().requires_grad_(True)
        a_leaf = a.clone().requires_grad_(True)
        (function(phi, s_leaf, a_leaf) * weights).sum().backward()
        gradients.append((s_leaf.grad, a_leaf.grad))
    (fused_s, fused_a), (reference_s, reference_a) = gradients
    assert torch.allclose(fused_a, reference_a, rtol=1e-12, atol=1e-12)
    assert torch.allclose(fused_s, reference_s, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CATALOGUE)
def test_activation_slope_is_reciprocal_hessian(name):
    # ρ'(u) = 1/φ''(ρ(u)), checked against autograd of the catalogue's ρ.
    phi = legendre.get(name)
    u = shifts((200,)).requires_grad_(True)
    y = phi.grad_conjugate(u)
    (expected,) = torch.autograd.grad(y.sum(), u)
    activation_slope, _ = fused._slopes(phi)
    slope = activation_slope(phi, u.detach(), y.detach())
    assert torch.allclose(slope, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", CATALOGUE)
def test_inverse_slope_is_hessian(name):
    phi = legendre.get(name)
    s = interior_points(name, (200,))
    _, inverse_slope = fused._slopes(phi)
    slope = inverse_slope(phi, s, phi.grad(s))
    assert torch.allclose(slope, phi.hessian(s), rtol=1e-11, atol=0.0)


def _sympy_slopes():
    """Return (name, ρ(u), φ''(t), ρ' as written in terms of u, φ'' in terms of t = ρ⁻¹(s)) cases."""
    u, s, t = sympy.symbols("u s t", real=True)
    return u, s, t, [
        ("arctan", sympy.atan(u), 1 + sympy.tan(s) ** 2, 1 / (1 + u**2), 1 + t**2, sympy.tan(s)),
        ("sigmoid", 1 / (1 + sympy.exp(-u)), 1 / (s * (1 - s)), None, None, sympy.log(s / (1 - s))),
        ("elliot", u / (1 + u), 1 / (1 - s) ** 2, 1 / (1 + u) ** 2, (1 + t) ** 2, s / (1 - s)),
        ("isru", u / sympy.sqrt(1 + u**2), 1 / (1 - s**2) ** sympy.Rational(3, 2),
         (1 + u**2) ** sympy.Rational(-3, 2), (1 + t**2) ** sympy.Rational(3, 2), s / sympy.sqrt(1 - s**2)),
        ("softplus", sympy.log(1 + sympy.exp(u)), 1 / (1 - sympy.exp(-s)),
         1 / (1 + sympy.exp(-u)), 1 + sympy.exp(-t), sympy.log(sympy.exp(s) - 1)),
    ]


@pytest.mark.parametrize("case", range(5))
def test_slope_forms_symbolic(case):
    # On the positive branch (u > 0, s > 0 for odd functions), where |·| is the identity.
    u, s, t, cases = _sympy_slopes()
    name, rho, hessian, activation_slope, inverse_slope, inverse = cases[case]
    points = [sympy.Rational(1, 3), sympy.Rational(1, 2), sympy.Rational(2, 3)]
    reciprocal = 1 / hessian.subs(s, rho)
    assert all(abs(float((sympy.diff(rho, u) - reciprocal).subs(u, p))) < 1e-12 for p in points), name
    if activation_slope is not None:
        assert sympy.simplify(activation_slope - sympy.diff(rho, u)) == 0, name
    if inverse_slope is not None:
        difference = inverse_slope.subs(t, inverse) - hessian
        assert all(abs(float(difference.subs(s, p))) < 1e-12 for p in points), name


# --- ends of the domain ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", BOUNDED)
def test_interior_bounds_are_nearest_inside(name, dtype):
    phi = legendre.get(name)
    lower, upper = fused.interior_bounds(phi, dtype)
    low_end, high_end = phi.domain
    assert lower > low_end
    assert upper < high_end
    below = torch.nextafter(torch.tensor(lower, dtype=dtype), torch.tensor(-math.inf, dtype=dtype))
    above = torch.nextafter(torch.tensor(upper, dtype=dtype), torch.tensor(math.inf, dtype=dtype))
    # Next to an end at 0 the point is the smallest normal number instead.
    assert float(below) <= low_end or lower == torch.finfo(dtype).tiny
    assert float(above) >= high_end or upper == -torch.finfo(dtype).tiny


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", BOUNDED)
def test_step_at_domain_ends_is_finite(name, dtype):
    phi = legendre.get(name)
    low, high = phi.domain
    # The ends rounded into dtype, the values of a saturated layer output.
    s = torch.tensor([[low, high], [high, low]], dtype=dtype).requires_grad_(True)
    a = torch.tensor([[0.5, -0.5], [3.0, -3.0]], dtype=dtype).requires_grad_(True)
    y, u = fused.bregman_step(phi, s, a)
    (y.sum() + 1e-3 * u.sum()).backward()
    assert torch.isfinite(y).all()
    assert torch.isfinite(s.grad).all()
    assert torch.isfinite(a.grad).all()
    assert ((y >= low) & (y <= high)).all()


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "arctan"])
def test_saturated_network_gradients_finite(name):
    # Large weights drive float32 outputs onto the ends of dom φ (arctan
    # rounds to float32(π/2) only for pre-activations beyond about 10⁸).
    torch.manual_seed(0)
    model = FFNN(4, [4, 4, 4], 2, name, "bregman")
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.mul_(1e9)
    x = 0.1 + 0.8 * torch.rand(8, 4)
    outputs = model.hidden_outputs(x)
    low, high = model.phi.domain
    assert any(((out == low) | (out == high)).any() for out in outputs[1:])
    model(x).sum().backward()
    for parameter in model.parameters():
        assert torch.isfinite(parameter.grad).all()


def test_check_domain_rejects_outside():
    phi = legendre.get("sigmoid")
    with pytest.raises(ValueError, match="outside the domain"):
        fused.check_domain(phi, torch.tensor([0.5, 1.5]))


def test_check_domain_rejects_nan():
    phi = legendre.get("arcsinh")
    with pytest.raises(ValueError, match="sinh|arcsinh"):
        fused.check_domain(phi, torch.tensor([0.5, math.nan]))


def test_check_domain_accepts_closed_domain():
    phi = legendre.get("tanh")
    fused.check_domain(phi, torch.tensor([-1.0, 0.0, 1.0]))


# --- networks --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["arctan", "sigmoid", "sin", "isru"])
def test_ffnn_hidden_outputs_match_layer_by_layer(name):
    model = FFNN(3, [3, 3, 3], 2, name, "bregman", dtype=torch.float64)
    x = interior_points(name, (20, 3))
    expected = [x]
    with torch.no_grad():
        for layer in model.layers:
            expected.append(unfused(model.phi, expected[-1], layer.affine(expected[-1])))
        for output, reference in zip(model.hidden_outputs(x), expected):
            assert torch.allclose(output, reference, rtol=1e-12, atol=1e-12)


def test_ffnn_gradient_matches_layer_by_layer():
    model = FFNN(3, [3, 3], 2, "arctan", "bregman", dtype=torch.float64)
    x = interior_points("arctan", (20, 3))
    model(x).square().sum().backward()
    fused_gradients = [parameter.grad.clone() for parameter in model.parameters()]
    model.zero_grad()
    z = x
    for layer in model.layers:
        z = unfused(model.phi, z, layer.affine(z))
    model.head(z).square().sum().backward()
    for fused_gradient, parameter in zip(fused_gradients, model.parameters()):
        assert torch.allclose(fused_gradient, parameter.grad, rtol=1e-11, atol=1e-12)


def test_bregman_layer_width_change_gradcheck():
    layer = BregmanLayer(5, 3, "tanh", dtype=torch.float64)
    z = interior_points("tanh", (4, 5)).requires_grad_(True)
    assert torch.autograd.gradcheck(layer, (z,))


@pytest.mark.parametrize("variant", ["standard", "euclidean", "bregman"])
def test_ffnn_runs_under_vmap(variant):
    torch.manual_seed(0)
    models = [FFNN(2, [2, 2, 2], 2, "arctan", variant, dtype=torch.float64) for _ in range(3)]
    params, buffers = stack_module_state(models)
    template = FFNN(2, [2, 2, 2], 2, "arctan", variant, dtype=torch.float64).to("meta")
    x = interior_points("arctan", (3, 5, 2))

    def call(params, buffers, inputs):
        return functional_call(template, (params, buffers), (inputs,))

    batched = vmap(call)(params, buffers, x)
    for index, model in enumerate(models):
        assert torch.allclose(batched[index], model(x[index]), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["arctan", "sigmoid"])
def test_step_on_device_matches_cpu(name, device):
    phi = legendre.get(name)
    s = interior_points(name, (6, 3))
    a = shifts((6, 3))
    values = []
    for where in (torch.device("cpu"), device):
        s_leaf = s.to(where).requires_grad_(True)
        a_leaf = a.to(where).requires_grad_(True)
        y, u = fused.bregman_step(phi, s_leaf, a_leaf)
        (y.sum() + u.sum()).backward()
        values.append([tensor.detach().cpu() for tensor in (y, u, s_leaf.grad, a_leaf.grad)])
    for reference, actual in zip(*values):
        assert torch.allclose(actual, reference, rtol=1e-12, atol=1e-12)


def test_check_domain_accepts_float32_end():
    # float32(π/2) = 1.5707963705 lies above π/2, yet phi.grad accepts it as the end in float32.
    phi = legendre.get("arctan")
    fused.check_domain(phi, torch.tensor([math.pi / 2, -math.pi / 2], dtype=torch.float32))
