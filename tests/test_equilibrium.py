"""Bregman equilibrium layers: what the limit depends on, gradients, failures, memory."""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
import scipy.optimize
import torch

from mmbilevel.nn.equilibrium import BregmanEquilibrium, BregmanEquilibriumModel, EquilibriumError

F64 = torch.float64
HALF_PI = math.pi / 2


def _layer(features: int, *, injection: bool, weight: torch.Tensor, bias: torch.Tensor, injection_weight=None, **options) -> BregmanEquilibrium:
    """Build an arctan layer in float64 whose symmetric W equals 0.95·``weight`` (‖weight‖₂ ≤ 1)."""
    layer = BregmanEquilibrium(features, "arctan", injection=injection, weight="symmetric", dtype=F64, **options)
    with torch.no_grad():
        layer.weight_raw.copy_(weight)
        layer.bias.copy_(bias)
        if injection_weight is not None:
            layer.injection_weight.copy_(injection_weight)
    return layer


def _inputs(count: int, features: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, features, dtype=F64, generator=generator) * 2 - 1) * 1.4


def test_weight_norm_bounded() -> None:
    layer = BregmanEquilibrium(5, "arctan", weight="symmetric", dtype=F64)
    with torch.no_grad():
        layer.weight_raw.mul_(100.0)
    weight = layer.weight().detach()
    assert torch.allclose(weight, weight.T)
    assert float(torch.linalg.matrix_norm(weight, ord=2)) <= 0.95 * layer.phi.strong_convexity + 1e-12


def test_negative_weight_is_negative_semidefinite() -> None:
    layer = BregmanEquilibrium(4, "arctan", weight="negative", dtype=F64)
    with torch.no_grad():
        layer.weight_raw.mul_(10.0)
    eigenvalues = torch.linalg.eigvalsh(layer.weight().detach())
    assert float(eigenvalues.max()) <= 1e-12
    assert float(eigenvalues.min()) >= -0.95 - 1e-12


def test_limit_same_for_every_input_strongly_convex() -> None:
    # W ≺ 0 makes f(z) = −½zᵀWz − bᵀz strongly convex, so crit(f + g) is the single
    # point −W⁻¹b (inside the box here) and the input cannot change the output.
    weight = torch.tensor([[-0.8, 0.2, 0.0], [0.2, -0.6, 0.1], [0.0, 0.1, -0.9]], dtype=F64)
    bias = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    layer = _layer(3, injection=False, weight=weight, bias=bias, solver="anderson", tol=1e-12, maxiter=500)
    expected = -torch.linalg.solve(0.95 * weight, bias)
    with torch.no_grad():
        outputs = layer(_inputs(16, 3, seed=0))
    assert layer.last_result.converged
    torch.testing.assert_close(outputs, expected.expand(16, 3), rtol=0, atol=1e-10)


def test_limit_selected_by_basin_without_injection() -> None:
    # W = 0.95·diag(0.5, −0.5), b = (0, 0.1): along z₁ f is concave and the iteration
    # runs to the end of dom φ on the side where it starts; z₂ goes to −b₂/W₂₂.
    weight = torch.diag(torch.tensor([0.5, -0.5], dtype=F64))
    bias = torch.tensor([0.0, 0.1], dtype=F64)
    layer = _layer(2, injection=False, weight=weight, bias=bias, solver="iteration", tol=1e-7, maxiter=4000)
    x = _inputs(40, 2, seed=1)
    x = x[x[:, 0].abs() > 0.05]
    with torch.no_grad():
        z = layer(x)
    assert layer.last_result.converged
    # The boundary is approached sublinearly, with π/2 − |z₁| ≈ 1/(0.475·l): 1e-3 after 4000 steps.
    torch.testing.assert_close(z[:, 0], torch.sign(x[:, 0]) * HALF_PI, rtol=0, atol=2e-3)
    torch.testing.assert_close(z[:, 1], torch.full_like(z[:, 1], 0.1 / 0.475), rtol=0, atol=1e-6)
    distinct = torch.unique(torch.round(z * 100), dim=0)
    assert distinct.shape[0] == 2
    assert distinct.shape[0] <= 3**2


def test_limit_locally_constant_in_input() -> None:
    weight = torch.diag(torch.tensor([0.5, -0.5], dtype=F64))
    bias = torch.tensor([0.0, 0.1], dtype=F64)
    layer = _layer(2, injection=False, weight=weight, bias=bias, solver="iteration", tol=1e-7, maxiter=4000)
    x = torch.tensor([[0.4, -0.3], [-0.7, 0.9]], dtype=F64, requires_grad=True)
    z = layer(x)
    (grad_x,) = torch.autograd.grad(z.sum(), x, allow_unused=True)
    assert grad_x is None
    with torch.no_grad():
        moved = layer(x.detach() + 0.05)
    torch.testing.assert_close(moved, z.detach(), rtol=0, atol=1e-5)


def test_injection_limit_is_affine_in_input() -> None:
    # With input injection, an interior limit solves Wz + Ux + b = 0, so z*(x) = −W⁻¹(Ux + b)
    # and dz*/dx = −W⁻¹U.
    weight = torch.tensor([[-0.8, 0.2], [0.2, -0.6]], dtype=F64)
    injection_weight = torch.tensor([[0.3, -0.1], [0.2, 0.4]], dtype=F64)
    bias = torch.tensor([0.1, -0.05], dtype=F64)
    layer = _layer(2, injection=True, weight=weight, bias=bias, injection_weight=injection_weight, solver="anderson", tol=1e-12, maxiter=500)
    x = _inputs(8, 2, seed=2)
    w = 0.95 * weight
    expected = -torch.linalg.solve(w, (x @ injection_weight.T + bias).T).T
    with torch.no_grad():
        z = layer(x)
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-10)
    jacobian = torch.autograd.functional.jacobian(lambda point: layer(point[None])[0], x[0])
    torch.testing.assert_close(jacobian, -torch.linalg.solve(w, injection_weight), rtol=1e-7, atol=1e-9)


def test_injection_limit_matches_box_qp() -> None:
    # For W ≺ 0 the limit is argmin over the box of −½zᵀWz − (Ux + b)ᵀz, computed here by
    # scipy. Large inputs push some coordinates onto the box, which the layer approaches slowly.
    weight = torch.tensor([[-0.8, 0.2], [0.2, -0.6]], dtype=F64)
    injection_weight = torch.tensor([[3.0, -1.0], [2.0, 4.0]], dtype=F64)
    bias = torch.tensor([0.1, -0.05], dtype=F64)
    layer = _layer(2, injection=True, weight=weight, bias=bias, injection_weight=injection_weight, tol=1e-7, maxiter=20000)
    x = _inputs(6, 2, seed=3)
    with torch.no_grad():
        z = layer(x)
    w = (0.95 * weight).numpy()
    for row, point in zip(z, x):
        linear = (injection_weight @ point + bias).numpy()
        result = scipy.optimize.minimize(
            lambda v: -0.5 * v @ w @ v - linear @ v,
            np.zeros(2),
            jac=lambda v: -w @ v - linear,
            bounds=[(-HALF_PI, HALF_PI)] * 2,
            method="L-BFGS-B",
            options={"ftol": 1e-15, "gtol": 1e-12},
        )
        np.testing.assert_allclose(row.numpy(), result.x, atol=2e-3)


def test_anderson_saturation_reported_not_accepted() -> None:
    # Anderson extrapolation in dual coordinates can jump deep into the wrong saturated
    # end of dom φ; the residual must then flag the run instead of accepting that point.
    weight = torch.tensor([[-0.8, 0.2], [0.2, -0.6]], dtype=F64)
    injection_weight = torch.tensor([[3.0, -1.0], [2.0, 4.0]], dtype=F64)
    bias = torch.tensor([0.1, -0.05], dtype=F64)
    layer = _layer(2, injection=True, weight=weight, bias=bias, injection_weight=injection_weight, solver="anderson", tol=1e-8, maxiter=300, on_failure="ignore")
    x = _inputs(6, 2, seed=3)
    with torch.no_grad():
        z = layer(x)
        drift = z @ (0.95 * weight).T + x @ injection_weight.T + bias
    # A point counts as converged only if every coordinate at an end is pushed against it.
    wrong_end = (torch.sign(drift) != torch.sign(z)) & (z.abs() > HALF_PI - 1e-3)
    accepted_wrong_end = layer.last_result.converged and bool(wrong_end.any())
    assert not accepted_wrong_end


def test_implicit_gradient_matches_finite_differences() -> None:
    weight = torch.tensor([[-0.8, 0.2], [0.2, -0.6]], dtype=F64)
    injection_weight = torch.tensor([[0.9, -0.4], [0.5, 1.1]], dtype=F64)
    bias = torch.tensor([0.1, -0.05], dtype=F64)
    layer = _layer(2, injection=True, weight=weight, bias=bias, injection_weight=injection_weight, solver="anderson", tol=1e-13, maxiter=1000)
    # Small inputs keep every limit −W⁻¹(Ux + b) inside the box, where it is a smooth function.
    x = 0.4 * _inputs(5, 2, seed=4)
    target = torch.tensor([0.3, -0.2], dtype=F64)

    def loss() -> torch.Tensor:
        return 0.5 * (layer(x) - target).square().sum()

    loss().backward()
    step = 1e-6
    for parameter in (layer.weight_raw, layer.injection_weight, layer.bias):
        expected = torch.zeros_like(parameter)
        for index in np.ndindex(*parameter.shape):
            with torch.no_grad():
                parameter[index] += step
                upper = float(loss())
                parameter[index] -= 2 * step
                lower = float(loss())
                parameter[index] += step
            expected[index] = (upper - lower) / (2 * step)
        torch.testing.assert_close(parameter.grad, expected, rtol=1e-6, atol=1e-8)


def test_implicit_gradient_freezes_boundary_coordinates() -> None:
    # Coordinates that rest on the boundary of dom φ do not move under small parameter
    # changes, so finite differences of a loss that reads only them are 0.
    weight = torch.diag(torch.tensor([0.5, -0.5], dtype=F64))
    bias = torch.tensor([0.0, 0.1], dtype=F64)
    layer = _layer(2, injection=False, weight=weight, bias=bias, solver="iteration", tol=1e-7, maxiter=4000)
    x = torch.tensor([[0.4, -0.3], [-0.7, 0.9]], dtype=F64)
    z = layer(x)
    z[:, 0].sum().backward()
    assert bool(layer.last_active[:, 0].all())
    assert not bool(layer.last_active[:, 1].any())
    assert float(layer.weight_raw.grad.abs().max()) == 0.0
    assert float(layer.bias.grad.abs().max()) == 0.0


def test_diverging_forward_raises_with_diagnostics() -> None:
    # Free weights with a large negative W make z ↦ ρ(ρ⁻¹(z) + Wz) overshoot and oscillate.
    layer = BregmanEquilibrium(2, "arctan", weight="free", injection=False, solver="iteration", maxiter=50, dtype=F64)
    with torch.no_grad():
        layer.weight_raw.copy_(-40.0 * torch.eye(2, dtype=F64))
        layer.bias.zero_()
    with pytest.raises(EquilibriumError, match="max_iterations") as caught:
        layer(torch.tensor([[0.5, -0.3]], dtype=F64))
    assert caught.value.result.iterations == 50
    assert len(caught.value.result.residual_trace) == 50
    assert not caught.value.result.converged


def test_diverging_forward_ignored_returns_output() -> None:
    layer = BregmanEquilibrium(2, "arctan", weight="free", injection=False, solver="iteration", maxiter=50, on_failure="ignore", dtype=F64)
    with torch.no_grad():
        layer.weight_raw.copy_(-40.0 * torch.eye(2, dtype=F64))
        layer.bias.zero_()
        output = layer(torch.tensor([[0.5, -0.3]], dtype=F64))
    assert bool(torch.isfinite(output).all())
    assert layer.last_result.status == "max_iterations"


def test_diverging_forward_warns() -> None:
    layer = BregmanEquilibrium(2, "arctan", weight="free", injection=False, solver="iteration", maxiter=20, on_failure="warn", dtype=F64)
    with torch.no_grad():
        layer.weight_raw.copy_(-40.0 * torch.eye(2, dtype=F64))
    with pytest.warns(RuntimeWarning, match="residual"):
        with torch.no_grad():
            layer(torch.tensor([[0.5, -0.3]], dtype=F64))


def _saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(x)
    output.sum().backward()
    return total


# tol=0 stops both solves at maxiter on purpose. The backward pass then warns
# that the forward solve did not converge, and the adjoint solve at that
# iterate may stop above its tolerance too.
@pytest.mark.filterwarnings("ignore:backward through:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:adjoint solve:RuntimeWarning")
def test_memory_independent_of_iterations() -> None:
    x = _inputs(16, 2, seed=5)
    sizes = []
    for maxiter in (10, 300):
        torch.manual_seed(0)
        model = BregmanEquilibriumModel(2, 8, 2, "arctan", injection=True, solver="iteration", tol=0.0, maxiter=maxiter, on_failure="ignore", dtype=F64)
        sizes.append(_saved_bytes(model, x))
    assert sizes[0] > 0
    assert sizes[0] == sizes[1]


def test_training_steps_release_graphs() -> None:
    torch.manual_seed(0)
    model = BregmanEquilibriumModel(2, 4, 2, "arctan", injection=True, dtype=F64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = _inputs(16, 2, seed=6)
    labels = (x[:, 0] > 0).long()
    references = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            optimizer.zero_grad()
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            references.append(weakref.ref(logits))
            del logits, loss
        alive = sum(reference() is not None for reference in references)
    finally:
        gc.enable()
    assert alive == 0


def test_second_backward_accumulates() -> None:
    torch.manual_seed(0)
    model = BregmanEquilibriumModel(2, 3, 1, "arctan", injection=True, dtype=F64)
    loss = model(_inputs(4, 2, seed=7)).square().sum()
    loss.backward(retain_graph=True)
    first = model.equilibrium.weight_raw.grad.clone()
    loss.backward()
    torch.testing.assert_close(model.equilibrium.weight_raw.grad, 2 * first)


def test_parameters_receive_gradients(device: torch.device) -> None:
    torch.manual_seed(0)
    model = BregmanEquilibriumModel(2, 3, 2, "arctan", injection=True, device=device, dtype=torch.float32)
    x = _inputs(6, 2, seed=8).float().to(device)
    output = model(x)
    assert output.device.type == device.type
    assert output.requires_grad
    output.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()), name


def test_rejects_mismatched_widths_without_injection() -> None:
    with pytest.raises(ValueError, match="in_features"):
        BregmanEquilibrium(3, "arctan", in_features=2, injection=False)


def test_equilibrium_gradcheck() -> None:
    # gradcheck sends None gradients through the adjoint hook for unused outputs.
    torch.manual_seed(0)
    eq = BregmanEquilibrium(4, "tanh", in_features=3, dtype=torch.float64, tol=1e-10, maxiter=100000, adjoint_tol=1e-12)
    x = (torch.rand(2, 3, dtype=torch.float64) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(eq, (x,))


def test_unconverged_backward_warns_and_freezes_nothing() -> None:
    # Two iterations leave Wz + Ux + b far from 0 at interior points: freezing those
    # coordinates as boundary limits would give a zero gradient without a warning.
    torch.manual_seed(3)
    layer = BregmanEquilibrium(3, "tanh", in_features=2, injection=True, maxiter=2, tol=1e-12, on_failure="ignore", dtype=F64)
    output = layer(torch.randn(4, 2, dtype=F64))
    assert not layer.last_result.converged
    assert not bool(layer.last_active.any())
    with pytest.warns(RuntimeWarning, match="did not converge.*residual"):
        output.sum().backward()
    assert float(layer.bias.grad.abs().max()) > 1e-3


def test_unconverged_rotation_not_silent() -> None:
    # A rotation W never settles. Backward must raise or warn, never return a silent zero.
    from mmbilevel.hypergrad import HypergradientError

    layer = BregmanEquilibrium(2, "tanh", weight="free", injection=False, maxiter=300, on_failure="ignore", dtype=F64)
    with torch.no_grad():
        layer.weight_raw.copy_(torch.tensor([[0.0, 3.0], [-3.0, 0.0]], dtype=F64))
        layer.bias.zero_()
    output = layer(torch.tensor([[0.3, 0.1]], dtype=F64))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        try:
            output.sum().backward()
        except HypergradientError:
            pass


def _failure_message(layer: BregmanEquilibrium, x: torch.Tensor) -> str:
    with pytest.raises(EquilibriumError) as caught:
        with torch.no_grad():
            layer(x)
    return str(caught.value)


def test_failure_advice_anderson() -> None:
    layer = BregmanEquilibrium(3, "tanh", in_features=2, solver="anderson", maxiter=2, tol=1e-12, dtype=F64)
    message = _failure_message(layer, torch.ones(1, 2, dtype=F64))
    assert "solver='iteration'" in message
    assert "weight='negative'" not in message


def test_failure_advice_free_weight() -> None:
    layer = BregmanEquilibrium(2, "arctan", weight="free", injection=False, maxiter=20, dtype=F64)
    with torch.no_grad():
        layer.weight_raw.copy_(-40.0 * torch.eye(2, dtype=F64))
    message = _failure_message(layer, torch.tensor([[0.5, -0.3]], dtype=F64))
    assert "weight='negative' or 'symmetric'" in message


def test_failure_advice_iteration_mm_weight() -> None:
    # The default weight already keeps T an MM map: only the budget can help.
    layer = BregmanEquilibrium(3, "tanh", in_features=2, maxiter=2, tol=1e-12, dtype=F64)
    message = _failure_message(layer, torch.ones(1, 2, dtype=F64))
    assert "maxiter=2" in message
    assert "weight=" not in message
