"""Quadratic forms, quadratic and Bregman majorants, and the surrogate check."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mmbilevel import legendre
from mmbilevel.majorants import (
    BregmanMajorant,
    QuadraticForm,
    QuadraticMajorant,
    check_surrogate,
)
from mmbilevel.prox import L1, Indicator

DT = torch.float64


def make_form(seed: int = 0, n: int = 4) -> QuadraticForm:
    """Build a QuadraticForm with A ≻ 0 and C ⪯ 0 (so A + C may be indefinite)."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, dtype=DT, generator=gen)
    k = torch.randn(n, n, dtype=DT, generator=gen)
    A = m @ m.T / n + torch.eye(n, dtype=DT)
    C = -(k @ k.T) / n
    d = torch.randn(n, dtype=DT, generator=gen)
    return QuadraticForm(A, C, d)


def nonconvex_f(z: torch.Tensor) -> torch.Tensor:
    """f(z) = Σ cos(zⱼ) + 0.1 zⱼ², whose gradient is 1.2-Lipschitz."""
    return (torch.cos(z) + 0.1 * z.square()).sum(-1)


def test_form_value_matches_matrix_formula():
    form = make_form()
    z = torch.randn(5, 4, dtype=DT)
    A, C, d = (t.numpy() for t in (form.A, form.C, form.d))
    expected = [0.5 * zi @ (A + C) @ zi + d @ zi for zi in z.numpy()]
    assert np.allclose(form(z).numpy(), expected, atol=1e-12)


def test_form_touches_surrogate():
    form = make_form()
    z = torch.randn(5, 4, dtype=DT)
    assert torch.allclose(form.surrogate(z, z), form(z), atol=1e-12)


def test_form_gradient_finite_differences():
    form = make_form()
    z = torch.randn(3, 4, dtype=DT)
    h = 1e-6
    eye = torch.eye(4, dtype=DT)
    numeric = torch.stack([(form(z + h * e) - form(z - h * e)) / (2 * h) for e in eye], dim=-1)
    assert torch.allclose(form.gradient(z), numeric, atol=1e-7)


def test_form_surrogate_tangent():
    # ∇₁Q(z; z) computed by autograd on Q equals ∇f(z).
    form = make_form()
    anchor = torch.randn(3, 4, dtype=DT)
    z = anchor.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(form.surrogate(z, anchor).sum(), z)
    assert torch.allclose(grad, form.gradient(anchor), atol=1e-12)


def test_form_surrogate_majorizes():
    form = make_form()
    anchor = torch.randn(50, 4, dtype=DT)
    z = torch.randn(50, 4, dtype=DT) * 3
    assert bool(torch.all(form.surrogate(z, anchor) >= form(z) - 1e-12))


def test_form_rejects_asymmetric_c():
    A = torch.eye(2, dtype=DT)
    C = torch.tensor([[-1.0, 0.5], [0.0, -1.0]], dtype=DT)
    with pytest.raises(ValueError, match="symmetric"):
        QuadraticForm(A, C, torch.zeros(2, dtype=DT))


def test_form_rejects_indefinite_a():
    with pytest.raises(ValueError, match="positive definite"):
        QuadraticForm(torch.diag(torch.tensor([1.0, -1.0], dtype=DT)), torch.zeros(2, 2, dtype=DT), torch.zeros(2, dtype=DT))


def test_form_rejects_positive_c():
    with pytest.raises(ValueError, match="negative semidefinite"):
        QuadraticForm(torch.eye(2, dtype=DT), torch.eye(2, dtype=DT), torch.zeros(2, dtype=DT))


@pytest.mark.parametrize(
    "shapes", [((2, 3), (2, 3), (2,)), ((2, 2), (3, 3), (2,)), ((2, 2), (2, 2), (3,))]
)
def test_form_rejects_shapes(shapes):
    a, c, d = shapes
    with pytest.raises(ValueError, match="shape"):
        QuadraticForm(torch.ones(a, dtype=DT), -torch.ones(c, dtype=DT), torch.zeros(d, dtype=DT))


def test_form_rejects_point_dimension():
    with pytest.raises(ValueError, match="last dimension 4"):
        make_form()(torch.zeros(2, 3, dtype=DT))


def test_smoothness_is_spectral_norm():
    form = make_form()
    assert form.smoothness == pytest.approx(np.linalg.norm(form.A.numpy(), 2), rel=1e-12)


@pytest.mark.parametrize("step", [0.0, -0.5, math.nan])
def test_majorant_rejects_bad_step(step):
    with pytest.raises(ValueError, match="step tau"):
        QuadraticMajorant(nonconvex_f, step)


def test_quadratic_rejects_step_above_two_over_mu():
    form = make_form()
    with pytest.raises(ValueError, match="not admissible"):
        QuadraticMajorant(form, 2.0 / form.smoothness)


def test_quadratic_warns_between_one_and_two_over_mu(caplog):
    form = make_form()
    with caplog.at_level(logging.WARNING, logger="mmbilevel.majorants"):
        QuadraticMajorant(form, 1.5 / form.smoothness)
    assert "not a global majorant" in caplog.text


def test_quadratic_large_step_fails_majorization():
    # f = (μ/2)‖z‖² with μ = 1: τ = 1.5 gives F − f = (1/3 − 1/2)‖z − a‖² < 0.
    form = QuadraticForm(torch.eye(3, dtype=DT), torch.zeros(3, 3, dtype=DT), torch.zeros(3, dtype=DT))
    report = check_surrogate(QuadraticMajorant(form, 1.5), form, torch.randn(4, 3, dtype=DT))
    assert report.touching
    assert report.tangency
    assert not report.majorization
    assert not report.ok


def test_surrogate_check_flags_unknown_smoothness():
    # With μ unknown, a large step is accepted but the check catches it.
    # Fixed anchors: whether random samples around them find the violation depends on the draw.
    points = torch.randn(4, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    report = check_surrogate(QuadraticMajorant(nonconvex_f, 3.0), nonconvex_f, points)
    assert not report.majorization


def test_quadratic_surrogate_ok():
    majorant = QuadraticMajorant(nonconvex_f, 1 / 1.2)
    report = check_surrogate(majorant, nonconvex_f, torch.randn(4, 3, dtype=DT))
    assert report.ok
    assert report.convexity_modulus == pytest.approx(1.2, rel=1e-9)


def test_quadratic_form_surrogate_ok():
    form = make_form()
    report = check_surrogate(QuadraticMajorant(form, 0.9 / form.smoothness), form, torch.randn(4, 4, dtype=DT))
    assert report.ok


def test_surrogate_check_wrong_function_fails_touching():
    majorant = QuadraticMajorant(nonconvex_f, 0.5)
    report = check_surrogate(majorant, lambda z: nonconvex_f(z) + 1.0, torch.randn(4, 3, dtype=DT))
    assert not report.touching


def test_quadratic_minimize_matches_scipy():
    form = make_form()
    majorant = QuadraticMajorant(form, 0.8 / form.smoothness)
    anchor = torch.randn(4, dtype=DT)
    got = majorant.minimize(anchor, Indicator(-0.3, 0.4))
    surrogate = lambda z: majorant.value(torch.from_numpy(z), anchor).item()
    expected = minimize(surrogate, np.zeros(4), method="L-BFGS-B", bounds=[(-0.3, 0.4)] * 4, options={"ftol": 1e-15, "gtol": 1e-12}).x
    assert np.allclose(got.detach().numpy(), expected, atol=1e-6)


def test_quadratic_weight_bias_matches_minimize():
    form = make_form()
    majorant = QuadraticMajorant(form, 0.7 / form.smoothness)
    anchor = torch.randn(6, 4, dtype=DT)
    W, b = majorant.weight_bias()
    g = L1(0.2)
    assert torch.allclose(g.prox(anchor @ W.T + b, majorant.step), majorant.minimize(anchor, g), atol=1e-12)


def test_weight_is_symmetric():
    # Tangency forces C = Cᵀ, so W = I − τ(A + C)ᵀ is symmetric.
    form = make_form()
    W, _ = QuadraticMajorant(form, 0.5 / form.smoothness).weight_bias()
    assert torch.allclose(W, W.T, atol=1e-14)


def test_value_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="last dimension"):
        QuadraticMajorant(nonconvex_f, 0.5).value(torch.zeros(2, 3, dtype=DT), torch.zeros(2, 4, dtype=DT))


def test_callable_f_bad_output_shape():
    with pytest.raises(ValueError, match="values of shape"):
        QuadraticMajorant(lambda z: z.square(), 0.5).gradient(torch.zeros(2, 3, dtype=DT))


# Bregman majorants.


def sigmoid_phi():
    return legendre.get("sigmoid")


def test_bregman_rejects_step_above_bound():
    form = make_form()
    phi = sigmoid_phi()
    bound = min(1.0, phi.strong_convexity) / form.smoothness
    with pytest.raises(ValueError, match="not admissible"):
        BregmanMajorant(form, phi, bound)


def test_bregman_rejects_step_above_sigma_over_mu():
    # A Legendre function with σ < 1 tightens the bound below 1/μ.
    phi = legendre.get("isru", scale=2.0)
    sigma = phi.strong_convexity
    assert 0 < sigma < 1
    with pytest.raises(ValueError, match="not admissible"):
        BregmanMajorant(nonconvex_f, phi, 0.5 * (sigma + 1) / 1.2, smoothness=1.2)


def test_bregman_surrogate_ok():
    phi = sigmoid_phi()
    majorant = BregmanMajorant(nonconvex_f, phi, 0.8 / 1.2, smoothness=1.2)
    points = torch.rand(4, 3, dtype=DT) * 0.8 + 0.1
    report = check_surrogate(majorant, nonconvex_f, points)
    assert report.ok


def test_bregman_large_step_fails_majorization():
    # μ = 10 unknown to the majorant, τ = 5: near a = ½, D_φ(z, a)/τ ≈ 0.4‖z − a‖²
    # (φ″(½) = 4) falls short of the curvature term 5‖z − a‖² of f.
    phi = sigmoid_phi()
    f = lambda z: 5.0 * z.square().sum(-1)
    points = torch.full((3, 2), 0.5, dtype=DT)
    report = check_surrogate(BregmanMajorant(f, phi, 5.0), f, points)
    assert not report.majorization


def test_bregman_minimize_matches_scipy():
    phi = sigmoid_phi()
    majorant = BregmanMajorant(nonconvex_f, phi, 0.5, smoothness=1.2)
    anchor = torch.tensor([0.2, 0.5, 0.9], dtype=DT)
    got = majorant.minimize(anchor, Indicator(0.0, 1.0))
    surrogate = lambda z: majorant.value(torch.from_numpy(z), anchor).item()
    expected = minimize(surrogate, np.full(3, 0.5), method="L-BFGS-B", bounds=[(1e-12, 1 - 1e-12)] * 3, options={"ftol": 1e-15, "gtol": 1e-12}).x
    assert np.allclose(got.detach().numpy(), expected, atol=1e-6)


def test_bregman_weight_bias_matches_minimize():
    form = make_form()
    phi = sigmoid_phi()
    majorant = BregmanMajorant(form, phi, 0.5 / form.smoothness)
    anchor = torch.rand(6, 4, dtype=DT) * 0.8 + 0.1
    W, b = majorant.weight_bias()
    layer = phi.grad_conjugate(phi.grad(anchor) + anchor @ W.T + b)
    assert torch.allclose(layer, majorant.minimize(anchor, Indicator(0.0, 1.0)), atol=1e-12)


def test_bregman_domain_check_rejects_boundary():
    majorant = BregmanMajorant(nonconvex_f, sigmoid_phi(), 0.5, smoothness=1.2)
    with pytest.raises(ValueError, match="domain"):
        majorant.check_domain(torch.tensor([0.0, 0.5], dtype=DT))


def test_bregman_domain_check_rejects_outside():
    majorant = BregmanMajorant(nonconvex_f, sigmoid_phi(), 0.5, smoothness=1.2)
    with pytest.raises(ValueError):
        majorant.check_domain(torch.tensor([1.5, 0.5], dtype=DT))


def test_tangency_forces_symmetric_c_sympy():
    # For Q(z; a) = ½zᵀAz + ½aᵀBa + aᵀCz + dᵀz + eᵀa + δ and f(z) = Q(z; z),
    # ∇f(z) − ∇₁Q(z; z) = ∇₂Q(z; z) = (sym B + C)z + e, which vanishes for
    # every z only when e = 0 and C = −sym B, a symmetric matrix.
    import sympy as sp

    n = 2
    z = sp.Matrix(sp.symbols("z0:2"))
    a = sp.Matrix(sp.symbols("a0:2"))
    A = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"A{min(i, j)}{max(i, j)}"))
    B = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"B{i}{j}"))
    C = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"C{i}{j}"))
    d = sp.Matrix(sp.symbols("d0:2"))
    e = sp.Matrix(sp.symbols("e0:2"))
    Q = (z.T * A * z / 2 + a.T * B * a / 2 + a.T * C * z + d.T * z + e.T * a)[0]
    f = Q.subs(dict(zip(a, z)), simultaneous=True)
    grad_f = sp.Matrix([sp.diff(f, zi) for zi in z])
    grad_1 = sp.Matrix([sp.diff(Q, zi) for zi in z]).subs(dict(zip(a, z)), simultaneous=True)
    expected = ((B + B.T) / 2 + C) * z + e
    assert sp.simplify(grad_f - grad_1 - expected) == sp.zeros(n, 1)


def test_quadratic_step_one_over_mu_is_majorant(caplog):
    # At τ = 1/μ, F − f = ½(z − a)ᵀ(μI − H)(z − a) ≥ 0: still a majorant, no warning.
    form = QuadraticForm(2.0 * torch.eye(3, dtype=DT), torch.zeros(3, 3, dtype=DT), torch.zeros(3, dtype=DT))
    with caplog.at_level(logging.WARNING, logger="mmbilevel.majorants"):
        majorant = QuadraticMajorant(form, 0.5)
    assert caplog.text == ""
    assert check_surrogate(majorant, form, torch.randn(4, 3, dtype=DT)).ok


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("field", ["A", "C", "d"])
def test_form_rejects_nonfinite(field: str, bad: float) -> None:
    form = make_form()
    data = {"A": form.A.clone(), "C": form.C.clone(), "d": form.d.clone()}
    data[field].view(-1)[0] = bad
    with pytest.raises(ValueError, match=f"{field} contains NaN or inf"):
        QuadraticForm(data["A"], data["C"], data["d"])


def test_form_rejects_mixed_dtypes() -> None:
    form = make_form()
    with pytest.raises(ValueError, match="share one floating dtype"):
        QuadraticForm(form.A.float(), form.C, form.d)


def test_form_point_dtype_mismatch() -> None:
    form = make_form()
    with pytest.raises(ValueError, match=r"convert the points with \.to\(torch\.float64\)"):
        form(torch.zeros(2, form.dim, dtype=torch.float32))


def test_check_surrogate_rejects_empty_points() -> None:
    form = make_form()
    majorant = QuadraticMajorant(form, 0.1)
    with pytest.raises(ValueError, match="no anchor"):
        check_surrogate(majorant, form, torch.zeros(0, form.dim, dtype=DT))
