"""Layers and models: shapes, identity property, MM equivalence, init, gradients."""

from __future__ import annotations

import math

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbilevel import legendre
from mmbilevel.nn import (
    FFNN,
    VARIANTS,
    BregmanLayer,
    ConvFFNN,
    EuclideanLayer,
    SkipMap,
    StandardLayer,
    domain_target,
    resampling_matrix,
    to_domain,
)
from mmbilevel.nn.skip import LEARNED_MIXING

LAYER_CLASSES = [StandardLayer, EuclideanLayer, BregmanLayer]
WIDTHS = [(3, 3), (4, 2), (2, 5)]
IDENTITY_ACTIVATIONS = [
    "arctan", "sigmoid", "tanh", "isru", "softplus", "arcsinh", "scaled_arctan", "elliot", "sin",
]


def interior_points(name: str, shape, dtype=torch.float64, seed=0) -> torch.Tensor:
    """Draw points uniformly in the inner 90 % of dom φ, or in [−3, 3] ∩ dom φ when unbounded."""
    low, high = legendre.get(name).domain
    low = max(low, -3.0)
    high = min(high, 3.0)
    width = high - low
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(shape, generator=generator, dtype=dtype)
    return low + 0.05 * width + 0.9 * width * unit


# --- registry, shapes, dtypes ---------------------------------------------------------


def test_variants_registry_names():
    assert VARIANTS.names() == ["bregman", "euclidean", "standard"]


def test_variants_unknown_name():
    with pytest.raises(ValueError, match="valid names are: bregman, euclidean, standard"):
        VARIANTS.get("resnet")


@pytest.mark.parametrize("layer_class", LAYER_CLASSES)
@pytest.mark.parametrize("widths", WIDTHS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_shape_dtype_device(layer_class, widths, dtype, device):
    in_features, out_features = widths
    layer = layer_class(in_features, out_features, "arctan", device=device, dtype=dtype)
    z = interior_points("arctan", (7, in_features), dtype).to(device)
    out = layer(z)
    assert out.shape == (7, out_features)
    assert out.dtype == dtype
    assert out.device.type == device.type
    assert layer.weight.shape == (out_features, in_features)
    assert layer.bias.shape == (out_features,)


@pytest.mark.parametrize("layer_class", LAYER_CLASSES)
def test_layer_leading_batch_dims(layer_class):
    layer = layer_class(3, 2, "tanh", dtype=torch.float64)
    z = interior_points("tanh", (4, 5, 3))
    assert layer(z).shape == (4, 5, 2)


@pytest.mark.parametrize("layer_class", LAYER_CLASSES)
def test_layer_without_bias(layer_class):
    layer = layer_class(3, 3, "arctan", bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]


class Hellinger(legendre.Legendre):
    """φ(t) = −√(1 − t²) on [−1, 1]: ρ⁻¹(t) = t/√(1 − t²), ρ(y) = y/√(1 + y²)."""

    name = "hellinger"
    domain = (-1.0, 1.0)

    def value(self, x):
        return -torch.sqrt(1 - x.square())

    def grad(self, x):
        return x / torch.sqrt(1 - x.square())

    def grad_conjugate(self, y):
        return y / torch.sqrt(1 + y.square())


def test_layer_custom_legendre_object():
    layer = BregmanLayer(2, 2, Hellinger(), dtype=torch.float64)
    z = torch.tensor([[0.3, -0.6]], dtype=torch.float64)
    pre_activation = z / torch.sqrt(1 - z.square()) + z @ layer.weight.T + layer.bias
    expected = pre_activation / torch.sqrt(1 + pre_activation.square())
    assert torch.allclose(layer(z), expected, atol=1e-15)


def test_layer_sympy_legendre_identity():
    t = sympy.Symbol("t")
    phi = legendre.Legendre.from_sympy(t * sympy.log(t) + (1 - t) * sympy.log(1 - t), t, (0, 1))
    layer = BregmanLayer(3, 3, phi, init="deterministic", dtype=torch.float64)
    z = torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64)
    assert torch.allclose(layer(z), z, atol=1e-12)


def test_layer_rejects_bad_width():
    with pytest.raises(ValueError, match="in_features=0"):
        StandardLayer(0, 2, "arctan")


def test_layer_rejects_bad_init():
    with pytest.raises(ValueError, match="unknown init 'zeros'"):
        BregmanLayer(2, 2, "arctan", init="zeros")


def test_layer_rejects_unknown_activation():
    with pytest.raises(ValueError, match="relu"):
        StandardLayer(2, 2, "relu")


def test_layer_extra_repr():
    text = repr(BregmanLayer(4, 2, "sigmoid", skip="learned", clamp=True))
    assert "in_features=4, out_features=2, bias=True, activation='sigmoid'" in text
    assert "skip='learned'" in text
    assert "clamp=True" in text


# --- identity property and domain handling --------------------------------------------


@pytest.mark.parametrize("name", IDENTITY_ACTIVATIONS)
@pytest.mark.parametrize(
    "dtype, tolerance",
    # ρ and ρ⁻¹ are each accurate to a few ulps, and on the inner 90 % of the
    # domain the round trip ρ(ρ⁻¹(z)) amplifies the error of ρ⁻¹ by
    # ρ'(ρ⁻¹(z))·|ρ⁻¹(z)|/|z| < 10, so 100 eps bounds the error with margin.
    [(torch.float32, 100 * torch.finfo(torch.float32).eps), (torch.float64, 100 * torch.finfo(torch.float64).eps)],
    ids=["float32", "float64"],
)
def test_bregman_zero_weights_identity(name, dtype, tolerance):
    layer = BregmanLayer(6, 6, name, init="deterministic", dtype=dtype)
    z = interior_points(name, (50, 6), dtype)
    assert torch.allclose(layer(z), z, rtol=tolerance, atol=tolerance)


def test_bregman_identity_through_depth():
    model = FFNN(4, [4] * 6, 3, "sigmoid", "bregman", init="deterministic", dtype=torch.float64)
    x = interior_points("sigmoid", (10, 4))
    for output in model.hidden_outputs(x)[1:]:
        assert torch.allclose(output, x, atol=1e-14)


def test_bregman_outside_domain_raises():
    layer = BregmanLayer(2, 2, "sigmoid")
    with pytest.raises(ValueError, match="outside the domain"):
        layer(torch.tensor([[0.5, 1.5]]))


def test_bregman_clamp_outside_domain():
    layer = BregmanLayer(2, 2, "sigmoid", clamp=True, init="deterministic", dtype=torch.float64)
    out = layer(torch.tensor([[-0.5, 1.5]], dtype=torch.float64))
    assert torch.all((out > 0) & (out < 1))


def test_bregman_clamp_boundary_gradient_finite():
    layer = BregmanLayer(2, 2, "sigmoid", clamp=True, dtype=torch.float64)
    z = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    layer(z).sum().backward()
    assert torch.isfinite(layer.weight.grad).all()


def test_standard_accepts_any_real_input():
    layer = StandardLayer(2, 2, "sigmoid")
    assert torch.isfinite(layer(torch.tensor([[-5.0, 7.0]]))).all()


# --- skip maps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "out_features, in_features, expected",
    [
        (2, 4, [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]),
        (4, 2, [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]),
        (2, 3, [[2 / 3, 1 / 3, 0.0], [0.0, 1 / 3, 2 / 3]]),
        (3, 2, [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]),
    ],
    ids=["4to2", "2to4", "3to2", "2to3"],
)
def test_resampling_matrix_values(out_features, in_features, expected):
    matrix = resampling_matrix(out_features, in_features, dtype=torch.float64)
    assert torch.allclose(matrix, torch.tensor(expected, dtype=torch.float64), atol=1e-15)


@pytest.mark.parametrize("widths", [(7, 3), (3, 7), (5, 5), (64, 10)], ids=str)
def test_resampling_matrix_row_stochastic(widths):
    out_features, in_features = widths
    matrix = resampling_matrix(out_features, in_features, dtype=torch.float64)
    assert torch.all(matrix >= 0)
    assert torch.allclose(matrix.sum(dim=1), torch.ones(out_features, dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40))
def test_resampling_matrix_property(out_features, in_features):
    matrix = resampling_matrix(out_features, in_features, dtype=torch.float64)
    assert torch.all(matrix >= 0)
    assert torch.allclose(matrix.sum(dim=1), torch.ones(out_features, dtype=torch.float64))
    # Each input cell has length 1/in and is spread over output cells of length 1/out.
    assert torch.allclose(matrix.sum(dim=0), torch.full((in_features,), out_features / in_features, dtype=torch.float64))


def test_resampling_matrix_square_identity():
    assert torch.equal(resampling_matrix(5, 5), torch.eye(5))


def test_skip_learned_initial_matrix():
    skip = SkipMap(4, 2, "learned", dtype=torch.float64)
    fixed = resampling_matrix(2, 4, dtype=torch.float64)
    expected = (1 - LEARNED_MIXING) * fixed + LEARNED_MIXING / 4
    assert torch.allclose(skip.matrix, expected, atol=1e-15)


def test_skip_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown skip mode 'free'"):
        EuclideanLayer(3, 2, "arctan", skip="free")


def test_skip_square_layer_has_none():
    assert BregmanLayer(3, 3, "arctan", skip="learned").skip is None


@pytest.mark.parametrize("skip", ["fixed", "learned"])
def test_bregman_width_change_zero_weights(skip):
    # With W = 0 and b = 0 the layer returns ρ(ρ⁻¹(S z)) = S z.
    layer = BregmanLayer(6, 4, "sigmoid", skip=skip, init="deterministic", dtype=torch.float64)
    z = interior_points("sigmoid", (8, 6))
    expected = z @ layer.skip.matrix.T
    assert torch.allclose(layer(z), expected, atol=1e-14)


def test_bregman_width_change_stays_in_domain():
    layer = BregmanLayer(5, 9, "tanh", skip="learned", dtype=torch.float64)
    z = interior_points("tanh", (20, 5))
    out = layer(z)
    assert torch.all(out.abs() < 1)


def test_learned_skip_stays_stochastic_after_training():
    layer = BregmanLayer(6, 3, "sigmoid", skip="learned", dtype=torch.float64)
    optimizer = torch.optim.SGD(layer.parameters(), lr=5.0)
    z = interior_points("sigmoid", (16, 6))
    for _ in range(20):
        optimizer.zero_grad()
        layer(z).square().sum().backward()
        optimizer.step()
    matrix = layer.skip.matrix
    assert torch.all(matrix >= 0)
    assert torch.allclose(matrix.sum(dim=1), torch.ones(3, dtype=torch.float64))


# --- initialisation -------------------------------------------------------------------


@pytest.mark.parametrize("widths", [(3, 3), (4, 2), (2, 5)], ids=str)
def test_deterministic_init_standard(widths):
    in_features, out_features = widths
    layer = StandardLayer(in_features, out_features, "arctan", init="deterministic")
    expected = torch.zeros(out_features, in_features)
    for i in range(min(in_features, out_features)):
        expected[i, i] = 1.0
    assert torch.equal(layer.weight, expected)
    assert torch.equal(layer.bias, torch.zeros(out_features))


@pytest.mark.parametrize("layer_class", [EuclideanLayer, BregmanLayer])
def test_deterministic_init_zero(layer_class):
    layer = layer_class(4, 3, "arctan", init="deterministic")
    assert torch.equal(layer.weight, torch.zeros(3, 4))
    assert torch.equal(layer.bias, torch.zeros(3))


@pytest.mark.parametrize("variant", ["standard", "euclidean", "bregman"])
def test_ffnn_deterministic_head(variant):
    model = FFNN(2, [2, 2, 2], 2, "arctan", variant, init="deterministic")
    assert torch.equal(model.head.bias, torch.zeros(2))
    assert model.head.weight.abs().sum() > 0


def test_random_init_bound():
    layer = BregmanLayer(16, 8, "arctan")
    bound = 1 / math.sqrt(16)
    assert float(layer.weight.detach().abs().max()) <= bound
    assert float(layer.bias.detach().abs().max()) <= bound
    assert float(layer.weight.detach().abs().max()) > 0


def test_reset_parameters_in_place():
    model = FFNN(3, [4, 2], 2, "tanh", "euclidean", skip="learned")
    before = [id(p) for p in model.parameters()]
    model.reset_parameters()
    assert [id(p) for p in model.parameters()] == before


def test_ffnn_rejects_unknown_variant():
    with pytest.raises(ValueError, match="unknown layer variant 'deep'"):
        FFNN(2, [2], 2, "arctan", "deep")


def test_ffnn_rejects_unknown_init():
    with pytest.raises(ValueError, match="unknown init 'ones'"):
        FFNN(2, [2], 2, "arctan", "bregman", init="ones")


# --- FFNN outputs ---------------------------------------------------------------------


def test_ffnn_hidden_outputs():
    model = FFNN(3, [5, 4], 2, "arctan", "bregman", dtype=torch.float64)
    x = interior_points("arctan", (6, 3))
    outputs = model.hidden_outputs(x)
    assert [tuple(o.shape) for o in outputs] == [(6, 3), (6, 5), (6, 4)]
    assert outputs[0] is x
    assert torch.equal(model(x), model.head(outputs[-1]))


def test_ffnn_without_hidden_layers():
    model = FFNN(3, [], 2, "arctan", "standard")
    assert model(torch.zeros(4, 3)).shape == (4, 2)


# --- gradients and training -----------------------------------------------------------


@pytest.mark.parametrize("variant", ["standard", "euclidean", "bregman"])
def test_every_parameter_gets_gradient(variant):
    model = FFNN(5, [4, 6, 6], 3, "sigmoid", variant, skip="learned", dtype=torch.float64)
    x = to_domain(torch.rand(12, 5, dtype=torch.float64), "sigmoid")
    target = torch.arange(12) % 3
    torch.nn.functional.cross_entropy(model(x), target).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert float(parameter.grad.abs().sum()) > 0, name


def test_learned_skip_parameters_registered():
    model = FFNN(5, [4, 6], 3, "sigmoid", "bregman", skip="learned")
    names = [name for name, _ in model.named_parameters()]
    assert "layers.0.skip.logits" in names
    assert "layers.1.skip.logits" in names


@pytest.mark.parametrize("variant", ["standard", "euclidean", "bregman"])
def test_parameters_keep_identity_and_change(variant):
    torch.manual_seed(0)
    model = FFNN(4, [6, 3], 2, "arctan", variant, skip="learned", dtype=torch.float64)
    parameters = list(model.parameters())
    optimizer = torch.optim.Adam(parameters, lr=1e-2)
    x = interior_points("arctan", (32, 4))
    target = (x.sum(dim=1) > 0).long()

    snapshots = [[p.detach().clone() for p in parameters]]
    for step in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()
        if step in (29, 59):
            snapshots.append([p.detach().clone() for p in parameters])

    assert all(a is b for a, b in zip(model.parameters(), parameters))
    assert all(a is b for a, b in zip(optimizer.param_groups[0]["params"], parameters))
    for first, middle, last in zip(*snapshots):
        assert not torch.equal(first, middle)
        assert not torch.equal(middle, last)


@pytest.mark.parametrize("name", ["sigmoid", "arctan", "tanh"])
def test_bregman_gradcheck(name):
    layer = BregmanLayer(3, 3, name, dtype=torch.float64)
    z = interior_points(name, (4, 3)).requires_grad_(True)

    def run(z, weight, bias):
        return layer.phi.grad_conjugate(layer.phi.grad(z) + z @ weight.T + bias)

    inputs = (z, layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(run, inputs)
    assert torch.autograd.gradcheck(layer, (z,))


def test_bregman_learned_skip_gradcheck():
    layer = BregmanLayer(5, 3, "sigmoid", skip="learned", dtype=torch.float64)
    z = interior_points("sigmoid", (4, 5)).requires_grad_(True)
    logits = layer.skip.logits

    def run(z, logits_value):
        with torch.no_grad():
            logits.copy_(logits_value.detach())
        matrix = torch.softmax(logits_value, dim=-1)
        inverse = layer.phi.grad(z @ matrix.T)
        return layer.phi.grad_conjugate(inverse + layer.affine(z))

    assert torch.autograd.gradcheck(run, (z, logits.detach().clone().requires_grad_()))
    assert torch.autograd.gradcheck(layer, (z,))


# --- equivalence with the MM solver ---------------------------------------------------


def quadratic_form(n: int, seed: int):
    """Return (A, C, d) with A SPD of norm ≤ 0.9, C symmetric NSD, d random."""
    majorants = pytest.importorskip("mmbilevel.majorants")
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.linspace(0.2, 0.9, n, dtype=torch.float64)
    A = basis @ torch.diag(eigenvalues) @ basis.T
    A = (A + A.T) / 2
    half = 0.3 * torch.randn(n, n, generator=generator, dtype=torch.float64)
    C = -(half @ half.T) / n
    d = 0.5 * torch.randn(n, generator=generator, dtype=torch.float64)
    return majorants.QuadraticForm(A, C, d)


def copy_weights(model: FFNN, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)


@pytest.mark.parametrize("name", ["arctan", "sigmoid", "tanh"])
def test_bregman_ffnn_matches_mm_solver(name):
    majorants = pytest.importorskip("mmbilevel.majorants")
    mm = pytest.importorskip("mmbilevel.mm")
    prox = pytest.importorskip("mmbilevel.prox")
    n, depth, tau = 4, 6, 0.8
    phi = legendre.get(name)
    form = quadratic_form(n, seed=1)
    majorant = majorants.BregmanMajorant(form, phi, step=tau)
    solver = mm.MMSolver(majorant, prox.Indicator(*phi.domain), depth=depth)

    # W = −τ(A + C)ᵀ and b = −τd are built here, not taken from majorant.weight_bias().
    model = FFNN(n, [n] * depth, 2, phi, "bregman", dtype=torch.float64)
    copy_weights(model, -tau * (form.A + form.C).T, -tau * form.d)

    x = interior_points(name, (5, n), seed=2)
    trajectory = solver.solve(x, return_trajectory=True).trajectory
    assert len(model.hidden_outputs(x)) == len(trajectory) == depth + 1
    for layer_output, iterate in zip(model.hidden_outputs(x), trajectory):
        assert torch.allclose(layer_output, iterate, atol=1e-12)


@pytest.mark.parametrize(
    "name, penalty",
    [("scaled_arctan", "ArctanPenalty"), ("isru", "ISRUPenalty")],
)
@pytest.mark.parametrize("variant", ["standard", "euclidean"])
def test_quadratic_ffnn_matches_mm_solver(name, penalty, variant):
    # Standard ρ(Wz + b) with W = I − τ(A + C)ᵀ, or Euclidean ρ(z + Wz + b)
    # with W = −τ(A + C)ᵀ, is the forward-backward step prox_{τg}(z − τ∇f(z))
    # for τ = 1 and the penalty g whose Euclidean prox is the activation ρ.
    majorants = pytest.importorskip("mmbilevel.majorants")
    mm = pytest.importorskip("mmbilevel.mm")
    prox = pytest.importorskip("mmbilevel.prox")
    n, depth, tau = 3, 5, 1.0
    form = quadratic_form(n, seed=3)
    solver = mm.MMSolver(majorants.QuadraticMajorant(form, step=tau), getattr(prox, penalty)(), depth=depth)

    model = FFNN(n, [n] * depth, 2, name, variant, dtype=torch.float64)
    skip = torch.eye(n, dtype=torch.float64) if variant == "standard" else 0.0
    copy_weights(model, skip - tau * (form.A + form.C).T, -tau * form.d)

    x = interior_points(name, (5, n), seed=4)
    trajectory = solver.solve(x, return_trajectory=True).trajectory
    assert len(model.hidden_outputs(x)) == len(trajectory) == depth + 1
    for layer_output, iterate in zip(model.hidden_outputs(x), trajectory):
        assert torch.allclose(layer_output, iterate, atol=1e-12)


# --- ConvFFNN -------------------------------------------------------------------------


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)], ids=["mnist", "cifar"])
@pytest.mark.parametrize("variant", ["standard", "euclidean", "bregman"])
def test_conv_ffnn_shapes(channels, size, variant):
    model = ConvFFNN(channels, size, 10, "sigmoid", variant, features=16)
    x = to_domain(torch.rand(2, channels, size, size), "sigmoid")
    assert model(x).shape == (2, 10)


def test_conv_ffnn_features_in_domain():
    model = ConvFFNN(1, 28, 10, "tanh", "bregman", features=8, dtype=torch.float64)
    features = model.features(torch.rand(3, 1, 28, 28, dtype=torch.float64))
    assert features.shape == (3, 8)
    assert torch.all(features.abs() < 1)


def test_conv_ffnn_deterministic_head_identity():
    model = ConvFFNN(3, 32, 10, "arctan", "bregman", "deterministic", features=8, dtype=torch.float64)
    outputs = model.hidden_outputs(torch.rand(2, 3, 32, 32, dtype=torch.float64))
    assert len(outputs) == 2
    assert torch.allclose(outputs[1], outputs[0], atol=1e-14)


def test_conv_ffnn_every_parameter_gets_gradient():
    model = ConvFFNN(1, 28, 4, "arctan", "bregman", features=8, hidden=[8, 8])
    torch.nn.functional.cross_entropy(model(torch.rand(3, 1, 28, 28)), torch.tensor([0, 1, 3])).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name


# --- preprocessing into the domain ----------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sigmoid", (0.01, 0.99)),
        ("tanh", (0.0, 0.99)),
        ("arctan", (0.0, 1.0)),
        ("softplus", (0.01, 1.0)),
        ("euclidean", (0.0, 1.0)),
    ],
)
def test_domain_target_pixels(name, expected):
    assert domain_target(name, (0.0, 1.0), margin=0.01) == pytest.approx(expected, abs=1e-15)


def test_domain_target_disjoint_source():
    assert domain_target("sigmoid", (2.0, 5.0), margin=0.01) == pytest.approx((0.01, 0.99), abs=1e-15)


@pytest.mark.parametrize("name", legendre.available())
def test_to_domain_strict_interior(name):
    phi = legendre.get(name)
    pixels = torch.linspace(0, 1, 11, dtype=torch.float64)
    mapped = to_domain(pixels, name)
    assert torch.all(mapped > phi.domain[0])
    assert torch.all(mapped < phi.domain[1])
    assert torch.isfinite(phi.grad(mapped)).all()


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(legendre.available()),
    st.floats(-5, 5),
    st.floats(0.01, 5),
    st.floats(0, 0.4),
)
def test_to_domain_property(name, low, length, margin):
    phi = legendre.get(name)
    source = (low, low + length)
    data = low + length * torch.linspace(-0.1, 1.1, 25, dtype=torch.float64)
    mapped = to_domain(data, name, source=source, margin=max(margin, 1e-3))
    assert torch.all(mapped > phi.domain[0])
    assert torch.all(mapped < phi.domain[1])
    assert torch.all(mapped.diff() >= 0)


def test_to_domain_clips_source():
    mapped = to_domain(torch.tensor([-0.5, 1.5]), "sigmoid", margin=0.1)
    assert mapped.tolist() == pytest.approx([0.1, 0.9])


def test_to_domain_affine_increasing():
    pixels = torch.rand(100, dtype=torch.float64)
    mapped = to_domain(pixels, "sigmoid", margin=0.05)
    assert torch.allclose(mapped, 0.05 + 0.9 * pixels, atol=1e-15)


def test_to_domain_rejects_bad_margin():
    with pytest.raises(ValueError, match="margin=0.6"):
        to_domain(torch.zeros(2), "sigmoid", margin=0.6)
