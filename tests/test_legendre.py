"""Tests for the Legendre catalogue: round trips, conjugates, derivatives, numerics and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, special

from mmbilevel import legendre
from mmbilevel.legendre.special import dilog_unit

DTYPES = [torch.float32, torch.float64]
# Every catalogue entry, plus ISRU with a scale other than 1 (the printed row is
# only right for λ = 1).
CASES = [(name, {}) for name in legendre.available()] + [("isru", {"scale": 2.5})]
CASE_IDS = [name + ("-" + "-".join(f"{k}{v}" for k, v in kw.items()) if kw else "") for name, kw in CASES]

# Bound used in place of an infinite end when sampling, chosen so that ∇φ
# (sinh, eˣ − 1) stays finite in the dtype.
INFINITE_END = {torch.float32: 40.0, torch.float64: 300.0}
# Smallest offset from a finite end, relative to max(1, |end|), that the dtype resolves.
MIN_OFFSET = {torch.float32: 1e-6, torch.float64: 1e-12}


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def _numpy_dtype(dtype: torch.dtype) -> type:
    return np.float32 if dtype == torch.float32 else np.float64


def _rounded_domain(phi: legendre.Legendre, dtype: torch.dtype) -> tuple[float, float]:
    np_dtype = _numpy_dtype(dtype)
    lower, upper = phi.domain
    return float(np_dtype(lower)), float(np_dtype(upper))


def _interior(phi: legendre.Legendre, dtype: torch.dtype) -> st.SearchStrategy[float]:
    """Sample points of the open domain, with most of the mass near the finite ends."""
    np_dtype = _numpy_dtype(dtype)
    lower, upper = _rounded_domain(phi, dtype)
    bound = INFINITE_END[dtype]
    low_sample = lower if math.isfinite(lower) else -bound
    high_sample = upper if math.isfinite(upper) else bound
    width = 32 if dtype == torch.float32 else 64
    strategies = [st.floats(low_sample, high_sample, width=width)]
    tiny = float(np.finfo(np_dtype).tiny)
    for end, inward in ((lower, 1.0), (upper, -1.0)):
        if not math.isfinite(end):
            continue
        spacing = max(float(np.spacing(np_dtype(end))), tiny)
        scale = max(1.0, abs(end))
        strategies.append(st.integers(1, 1000).map(lambda k, e=end, s=spacing, d=inward: e + d * k * s))
        strategies.append(
            st.floats(MIN_OFFSET[dtype], 0.1).map(lambda r, e=end, c=scale, d=inward: e + d * r * c)
        )
    return (
        st.one_of(*strategies)
        .map(lambda v: float(np_dtype(v)))
        .filter(lambda v: low_sample <= v <= high_sample and lower < v < upper)
    )


def _points(phi: legendre.Legendre, dtype: torch.dtype) -> st.SearchStrategy[torch.Tensor]:
    return st.lists(_interior(phi, dtype), min_size=1, max_size=16).map(lambda v: torch.tensor(v, dtype=dtype))


def _duals(dtype: torch.dtype, bound: float) -> st.SearchStrategy[torch.Tensor]:
    width = 32 if dtype == torch.float32 else 64
    if dtype == torch.float32:
        # The largest float32 not above the bound, which hypothesis requires.
        bound = float(np.nextafter(np.float32(bound), np.float32(0.0)))
    values = st.floats(-bound, bound, width=width)
    return st.lists(values, min_size=1, max_size=16).map(lambda v: torch.tensor(v, dtype=dtype))


def _get(name: str, kwargs: dict) -> legendre.Legendre:
    return legendre.get(name, **kwargs)


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_activation_inverts_gradient(name: str, kwargs: dict, dtype: torch.dtype) -> None:
    phi = _get(name, kwargs)

    @settings(max_examples=25, deadline=None)
    @given(_points(phi, dtype))
    def check(x: torch.Tensor) -> None:
        y = phi.grad(x)
        back = phi.grad_conjugate(y)
        # ρ⁻¹(x) is rounded by about eps·|y|, which ρ scales by ρ' = 1/φ''(x),
        # and ρ adds a few ulps of x.
        tolerance = 8 * _eps(dtype) * (x.abs() + y.abs() / phi.hessian(x)) + torch.finfo(dtype).tiny
        assert bool(((back - x).abs() <= tolerance).all()), (x, back)

    check()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_gradient_inverts_activation(name: str, kwargs: dict, dtype: torch.dtype) -> None:
    phi = _get(name, kwargs)
    # sin's ρ inverts ∇φ only on the range [−π/2, π/2] of arcsin; elsewhere
    # the bound keeps ρ(y) away from the rounding of the domain ends.
    if name == "sin":
        bound = math.pi / 2
    elif dtype == torch.float64:
        bound = 30.0
    else:
        bound = 10.0

    @settings(max_examples=25, deadline=None)
    @given(_duals(dtype, bound))
    def check(y: torch.Tensor) -> None:
        x = phi.grad_conjugate(y)
        back = phi.grad(x)
        # First-order bound: ρ(y) is rounded by about eps·|x|, which ∇φ
        # amplifies by φ''(x); ρ⁻¹ itself adds a few ulps of y.
        tolerance = 16 * _eps(dtype) * (1.0 + y.abs() + phi.hessian(x) * x.abs())
        assert bool(((back - y).abs() <= tolerance).all()), (y, back)

    check()


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_activation_monotone(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    y = torch.linspace(-50.0, 50.0, 2001, dtype=torch.float64)
    x = phi.grad_conjugate(y)
    assert bool((x[1:] >= x[:-1]).all())


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_activation_inside_domain(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    lower, upper = phi.domain
    y = torch.tensor([-1e300, -1e4, -30.0, 0.0, 30.0, 1e4, 1e300], dtype=torch.float64)
    x = phi.grad_conjugate(y)
    assert bool(((x >= lower) & (x <= upper)).all())


# ----------------------------------------------------------- conjugate identities


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_fenchel_young_equality(name: str, kwargs: dict, dtype: torch.dtype) -> None:
    phi = _get(name, kwargs)

    @settings(max_examples=25, deadline=None)
    @given(_points(phi, dtype))
    def check(x: torch.Tensor) -> None:
        y = phi.grad(x)
        lhs = phi(x) + phi.conjugate(y)
        rhs = x * y
        # Each of the three terms is rounded relative to its own size.
        scale = phi(x).abs() + phi.conjugate(y).abs() + rhs.abs() + 1.0
        assert bool(((lhs - rhs).abs() <= 32 * _eps(dtype) * scale).all()), (x, lhs, rhs)

    check()


def _scipy_projection(phi: legendre.Legendre, y: float) -> tuple[float, float]:
    """Return argmin and min of φ(x) − x·y over the closed domain (bounded Brent search)."""
    lower, upper = phi.domain
    lower = max(lower, -60.0)
    upper = min(upper, 60.0)

    def objective(x: float) -> float:
        return float(phi(torch.tensor(x, dtype=torch.float64))) - x * y

    result = optimize.minimize_scalar(objective, bounds=(lower, upper), method="bounded", options={"xatol": 1e-12})
    # The bounded method never evaluates the ends, where the minimum sits when ∇φ is bounded.
    candidates = [(result.fun, result.x)]
    for end in (lower, upper):
        value = objective(end)
        if math.isfinite(value):
            candidates.append((value, end))
    best_value, best_x = min(candidates)
    return best_x, best_value


DUAL_SAMPLES = [-8.0, -2.5, -1.0, -0.2, 0.0, 0.3, 1.2, 2.0, 4.0, 9.0]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_projection_matches_scipy(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    for y in DUAL_SAMPLES:
        expected_x, _ = _scipy_projection(phi, y)
        x = float(phi.grad_conjugate(torch.tensor(y, dtype=torch.float64)))
        # Brent's minimizer locates a minimum only to about sqrt(eps)·|x| because the objective is flat there.
        assert abs(x - expected_x) <= 1e-6 * max(1.0, abs(x)), (y, x, expected_x)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_conjugate_matches_scipy(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    for y in DUAL_SAMPLES:
        _, minimum = _scipy_projection(phi, y)
        value = float(phi.conjugate(torch.tensor(y, dtype=torch.float64)))
        # The minimum value is second-order in the argmin error (about 1e-8), so 1e-10 relative.
        assert abs(value - (-minimum)) <= 1e-10 * max(1.0, abs(value)), (y, value, -minimum)


def test_sin_projection_saturates() -> None:
    phi = legendre.get("sin")
    y = torch.tensor([-10.0, -math.pi / 2, 2.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(phi.grad_conjugate(y), torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64))


def test_sin_conjugate_beyond_range() -> None:
    phi = legendre.get("sin")
    y = torch.tensor([-4.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(phi.conjugate(y), y.abs() - math.pi / 2)


def test_sin_not_essentially_smooth() -> None:
    assert not legendre.get("sin").essentially_smooth


# ---------------------------------------------------------------- divergence


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_divergence_nonnegative(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    dtype = torch.float64

    @settings(max_examples=25, deadline=None)
    @given(_points(phi, dtype), _points(phi, dtype))
    def check(u: torch.Tensor, v: torch.Tensor) -> None:
        size = min(len(u), len(v))
        u, v = u[:size], v[:size]
        divergence = phi.divergence(u, v)
        # Rounding of φ(u), φ(v) and ∇φ(v)·(u − v) may leave D slightly below 0.
        scale = phi(u).abs() + phi(v).abs() + (phi.grad(v) * (u - v)).abs()
        assert bool((divergence >= -16 * _eps(dtype) * scale).all()), (u, v, divergence)

    check()


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_divergence_zero_on_diagonal(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    lower, upper = phi.domain
    points = [p for p in (lower, -0.7, 0.0, 0.2, 0.9, upper) if math.isfinite(p) and lower <= p <= upper]
    u = torch.tensor(points, dtype=torch.float64)
    assert bool((phi.divergence(u, u) == 0).all())


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_divergence_positive_off_diagonal(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    v = phi.grad_conjugate(torch.tensor([-1.0, 0.0, 0.5, 1.0], dtype=torch.float64))
    u = phi.grad_conjugate(torch.tensor([0.5, 1.0, -1.0, -0.5], dtype=torch.float64))
    # D ≥ σ/2·(u − v)² > 0 for strongly convex φ; all pairs differ by a visible amount.
    assert bool((phi.divergence(u, v) > 0).all())


# ---------------------------------------------------------------- derivatives


def _moderate_points(phi: legendre.Legendre) -> torch.Tensor:
    """Return interior points at least 0.05·width from finite ends, in float64."""
    lower, upper = phi.domain
    low = lower if math.isfinite(lower) else -3.0
    high = upper if math.isfinite(upper) else 3.0
    margin = 0.05 * (high - low)
    return torch.linspace(low + margin, high - margin, 37, dtype=torch.float64)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_grad_matches_autograd_of_value(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    x = _moderate_points(phi).requires_grad_(True)
    (derivative,) = torch.autograd.grad(phi(x).sum(), x)
    torch.testing.assert_close(derivative, phi.grad(x.detach()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_grad_matches_finite_differences(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    x = _moderate_points(phi)
    step = 1e-5
    central = (phi(x + step) - phi(x - step)) / (2 * step)
    # Central differences: truncation step²·φ'''/6 plus rounding eps·|φ|/step, both below 1e-6 here.
    torch.testing.assert_close(central, phi.grad(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_hessian_matches_autograd(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    x = _moderate_points(phi).requires_grad_(True)
    (second,) = torch.autograd.grad(phi.grad(x).sum(), x)
    torch.testing.assert_close(phi.hessian(x.detach()), second, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_conjugate_gradient_is_activation(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    y = torch.linspace(-6.0, 6.0, 41, dtype=torch.float64).requires_grad_(True)
    (derivative,) = torch.autograd.grad(phi.conjugate(y).sum(), y)
    torch.testing.assert_close(derivative, phi.grad_conjugate(y.detach()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_strong_convexity_bound(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    x = phi.grad_conjugate(torch.linspace(-40.0, 40.0, 4001, dtype=torch.float64))
    curvature = phi.hessian(x)
    assert bool((curvature >= phi.strong_convexity * (1 - 1e-12)).all())
    # The modulus is the infimum of φ'', not just some lower bound.
    assert float(curvature.min()) <= phi.strong_convexity * (1 + 1e-3)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_gradcheck_activation(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    # Away from sin's kinks at ±π/2.
    y = torch.tensor([-1.3, -0.4, 0.05, 0.7, 1.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(phi.grad_conjugate, (y,))


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_gradcheck_inverse_activation(name: str, kwargs: dict) -> None:
    phi = _get(name, kwargs)
    x = _moderate_points(phi)[::6].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(phi.grad, (x,))


# ------------------------------------------------------------------- numerics


EXTREME_DUALS = [-1e30, -1e4, -710.0, -50.0, -1e-30, 0.0, 1e-30, 50.0, 710.0, 1e4, 1e30]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_activation_finite_at_extremes(name: str, kwargs: dict, dtype: torch.dtype) -> None:
    phi = _get(name, kwargs)
    y = torch.tensor(EXTREME_DUALS, dtype=dtype, requires_grad=True)
    x = phi.grad_conjugate(y)
    (slope,) = torch.autograd.grad(x.sum(), y)
    assert bool(torch.isfinite(x).all()), x
    assert bool(torch.isfinite(slope).all()), slope


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_gradient_finite_near_ends(name: str, kwargs: dict, dtype: torch.dtype) -> None:
    phi = _get(name, kwargs)
    lower, upper = _rounded_domain(phi, dtype)
    points = []
    for end, towards in ((lower, math.inf), (upper, -math.inf)):
        if not math.isfinite(end):
            continue
        point = torch.tensor(end, dtype=dtype)
        for _ in range(3):
            point = torch.nextafter(point, torch.tensor(towards, dtype=dtype))
            points.append(point)
    if not points:
        pytest.skip("no finite end")
    x = torch.stack(points).requires_grad_(True)
    inverse = phi.grad(x)
    (slope,) = torch.autograd.grad(inverse.sum(), x)
    assert bool(torch.isfinite(inverse).all()), inverse
    # φ'' = 1/x overflows near 0 (sigmoid, softplus at subnormal x), so only
    # points where φ'' computed in float64 fits in the dtype must have finite slopes.
    representable = phi.hessian(x.detach().double()) < torch.finfo(dtype).max
    assert bool(torch.isfinite(slope[representable]).all()), slope
    assert bool(torch.isfinite(phi(x)).all()), phi(x)


@pytest.mark.parametrize(
    ("name", "y"),
    [("sigmoid", 1e4), ("sigmoid", -1e4), ("arcsinh", 1e30), ("tanh", 50.0), ("isru", 1e30), ("softplus", -1e4)],
)
def test_named_extremes(name: str, y: float) -> None:
    phi = legendre.get(name)
    for dtype in DTYPES:
        value = torch.tensor([y], dtype=dtype, requires_grad=True)
        out = phi.grad_conjugate(value)
        (slope,) = torch.autograd.grad(out.sum(), value)
        assert bool(torch.isfinite(out).all())
        assert bool(torch.isfinite(slope).all())


def test_arcsinh_large_input_value() -> None:
    phi = legendre.get("arcsinh")
    out = phi.grad_conjugate(torch.tensor([1e30], dtype=torch.float32))
    assert float(out) == pytest.approx(math.asinh(1e30), rel=1e-6)


def test_dilog_matches_scipy() -> None:
    w = torch.tensor([0.0, 1e-10, 0.1, 0.49, 0.5, 0.51, 0.9, 1 - 1e-10, 1.0], dtype=torch.float64)
    complement = 1.0 - w
    out = dilog_unit(w, complement, torch.log(w), torch.log(complement))
    # scipy's spence(z) is Li₂(1 − z).
    expected = torch.tensor(special.spence(complement.numpy()), dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=1e-14, atol=1e-16)


def test_softplus_value_matches_quadrature() -> None:
    phi = legendre.get("softplus")
    x = torch.tensor([1e-3, 0.5, 2.0, 9.0], dtype=torch.float64)
    # φ(0) = 0, so φ(x) = ∫₀ˣ log(eᵗ − 1) dt; quad handles the log singularity at 0.
    expected = [integrate.quad(lambda t: math.log(math.expm1(t)), 0.0, float(v), limit=200)[0] for v in x]
    torch.testing.assert_close(phi(x), torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------- errors and API


def test_get_case_insensitive() -> None:
    assert isinstance(legendre.get("SigMoid"), legendre.Sigmoid)


def test_get_unknown_name_lists_valid() -> None:
    with pytest.raises(ValueError, match="sigmoid"):
        legendre.get("relu6")


def test_available_lists_catalogue() -> None:
    expected = {
        "euclidean", "isru", "sigmoid", "softplus", "arctan", "tanh",
        "sin", "arcsinh", "scaled_arctan", "elliot", "log",
    }  # fmt: skip
    assert expected <= set(legendre.available())


@pytest.mark.parametrize("method", ["value", "grad", "hessian"])
def test_outside_domain_raises(method: str) -> None:
    phi = legendre.get("sigmoid")
    with pytest.raises(ValueError, match=r"sigmoid.*1\.5.*\[0, 1\]"):
        getattr(phi, method)(torch.tensor([0.5, 1.5]))


def test_nan_input_raises() -> None:
    with pytest.raises(ValueError, match="NaN"):
        legendre.get("tanh").grad_conjugate(torch.tensor([math.nan]))


def test_clamp_keyword_gives_finite_gradient() -> None:
    phi = legendre.get("tanh")
    out = phi.grad(torch.tensor([-3.0, 1.0, 2.0], dtype=torch.float64), clamp=True)
    assert bool(torch.isfinite(out).all())


def test_clamp_default_margin() -> None:
    phi = legendre.get("sigmoid")
    for dtype in DTYPES:
        x = phi.clamp(torch.tensor([-1.0, 0.5, 2.0], dtype=dtype))
        margin = 4 * _eps(dtype)
        torch.testing.assert_close(x, torch.tensor([margin, 0.5, 1 - margin], dtype=dtype))


def test_clamp_explicit_margin() -> None:
    x = legendre.get("isru", scale=2.0).clamp(torch.tensor([5.0, -5.0]), margin=0.5)
    torch.testing.assert_close(x, torch.tensor([1.5, -1.5]))


def test_isru_rejects_bad_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        legendre.get("isru", scale=-1.0)


def test_isru_scale_sets_domain() -> None:
    phi = legendre.get("isru", scale=3.0)
    assert phi.domain == (-3.0, 3.0)
    assert phi.strong_convexity == pytest.approx(1 / 3)


def test_repr_shows_name_and_domain() -> None:
    assert repr(legendre.get("sigmoid")) == "Sigmoid(name='sigmoid', domain=[0, 1])"


def test_aliases_match() -> None:
    phi = legendre.get("arctan")
    y = torch.tensor([0.3, -2.0])
    x = torch.tensor([0.3, -1.2])
    torch.testing.assert_close(phi.activation(y), phi.grad_conjugate(y))
    torch.testing.assert_close(phi.inverse_activation(x), phi.grad(x))


def test_catalogue_has_closed_forms() -> None:
    for name in legendre.available():
        assert legendre.get(name).has_closed_form_conjugate, name


def test_dtype_and_shape_follow_input(device: torch.device) -> None:
    phi = legendre.get("softplus")
    y = torch.randn(2, 3, 4, dtype=torch.float32, device=device)
    out = phi.grad_conjugate(y)
    assert out.shape == y.shape
    assert out.dtype == torch.float32
    assert out.device == y.device


@pytest.mark.parametrize("name", ["elliot", "isru"])
def test_activation_at_infinity(name: str) -> None:
    y = torch.tensor([-math.inf, math.inf], dtype=torch.float64)
    assert legendre.get(name).grad_conjugate(y).tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("name", ["arcsinh", "arctan", "log", "scaled_arctan", "elliot"])
def test_conjugate_at_infinity(name: str) -> None:
    y = torch.tensor([-math.inf, math.inf], dtype=torch.float64)
    assert legendre.get(name).conjugate(y).tolist() == [math.inf, math.inf]


@pytest.mark.parametrize(("name", "factor"), [("arctan", 1.0), ("tanh", 1.0), ("scaled_arctan", 2 / math.pi)])
@pytest.mark.parametrize("y", [1e-8, -3e-5, 0.3, 0.6])
def test_conjugate_small_input_precision(name: str, factor: float, y: float) -> None:
    # References: for arctan, factor·Σ (−1)^{k+1} y^{2k}/(2k(2k − 1)) summed far past convergence;
    # for tanh, the Taylor series of log cosh near 0 and math.log(math.cosh(y)) above 0.1.
    if name == "tanh":
        reference = math.log(math.cosh(y)) if abs(y) > 0.1 else y * y / 2 - y**4 / 12 + y**6 / 45 - 17 * y**8 / 2520
    else:
        reference = factor * sum((-1) ** (k + 1) * y ** (2 * k) / (2 * k * (2 * k - 1)) for k in range(1, 200))
    value = float(legendre.get(name).conjugate(torch.tensor([y], dtype=torch.float64)))
    assert math.isclose(value, reference, rel_tol=1e-14)


@pytest.mark.parametrize("name", ["isru", "arctan"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grad_derivative_at_end(name: str, dtype: torch.dtype) -> None:
    phi = legendre.get(name)
    x = torch.tensor(phi.domain, dtype=dtype, requires_grad=True)
    (second,) = torch.autograd.grad(phi.grad(x).sum(), x)
    # float64(π/2) lies below π/2, so there φ'' is finite but huge.
    torch.testing.assert_close(second, phi.hessian(x.detach()), rtol=0.0, atol=0.0)


@pytest.mark.parametrize("margin", [-0.1, 1.0, 5.0, math.nan])
def test_clamp_rejects_bad_margin(margin: float) -> None:
    with pytest.raises(ValueError, match="margin"):
        legendre.get("tanh").clamp(torch.tensor([0.3]), margin=margin)


def test_empty_input_gives_empty() -> None:
    phi = legendre.get("tanh")
    assert phi.grad_conjugate(torch.zeros(0, 3)).shape == (0, 3)
