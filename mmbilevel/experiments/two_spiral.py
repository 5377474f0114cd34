r"""The two-spiral experiments of "Bilevel Learning of Deep Representations" (Figures 4, 5, 6).

The setting of that paper: networks of L layers of 2 neurons with the arctan
activation (ρ = arctan, ρ⁻¹ = tan on ]−π/2, π/2[), followed by a linear head
to 2 logits, trained by mini-batch SGD (batch 10) on the cross-entropy:

- Figure 5: training loss per epoch, mean and standard deviation over 10
  realizations, L = 3, learning rate 0.1, 1000 epochs, Standard, Euclidean
  and Bregman layers, with random and with deterministic initial weights;
- Figure 4: every layer's output of a trained Bregman network;
- Figure 6 left: final training accuracy against the learning rate after
  10⁴ epochs;
- Figure 6 right: after training a network of L = 50 layers, the mean norm
  ‖z⁽ˡ⁾ − z⁽ˡ⁻¹⁾‖ of the difference between consecutive layer outputs.

The paper does not say which initialization Figure 6 uses, nor the
learning rate and epochs of Figure 6 right; here both use random
initialization, and Figure 6 right uses the learning rate and epochs of
Figure 5.

All networks of a figure (variants × learning rates × realizations) train as
one stacked batch, :class:`StackedFFNN`: their parameters are stacked along a
leading model dimension, so one forward and backward pass of batched matrix
products serves every network. Model m follows the trajectory that
``train_model`` gives it alone (same initial weights from its seed, same
mini-batch order from a generator seeded with its seed, plain SGD), up to
floating-point rounding; the tests check this.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional
from tqdm.auto import tqdm

from mmbilevel.experiments.errors import OutputFileError
from mmbilevel.nn import FFNN
from mmbilevel.train.trainer import progress_enabled

__all__ = [
    "DEFAULT_LR_GRID",
    "FIGURES",
    "INITS",
    "VARIANTS",
    "SpiralReport",
    "SpiralSettings",
    "StackedFFNN",
    "StackedHistory",
    "build_networks",
    "figure4",
    "figure5",
    "figure6_left",
    "figure6_right",
    "layer_differences",
    "run_two_spiral",
    "train_stacked",
]

logger = logging.getLogger(__name__)

VARIANTS = ("standard", "euclidean", "bregman")
INITS = ("random", "deterministic")
FIGURES = ("fig4", "fig5", "fig6-left", "fig6-right")

#: Learning rates of Figure 6 left: 7 points log-spaced from 0.01 to 10
#: (the paper lists no grid).
DEFAULT_LR_GRID = tuple(float(f"{0.01 * 10 ** (index / 2):.6g}") for index in range(7))


@dataclass(frozen=True)
class SpiralSettings:
    """Settings of the two-spiral experiments, with the paper's values as defaults.

    Attributes:
        epochs: epochs of Figures 4, 5 and 6 right.
        lr: SGD learning rate of Figures 4, 5 and 6 right.
        batch_size: mini-batch size.
        realizations: seeds per (variant, setting); realization r uses
            ``seed + r`` for its initial weights and mini-batch order.
        seed: seed of the first realization.
        layers: hidden layers of Figures 4 and 5 (and 6 left).
        width: neurons per hidden layer, also the input dimension.
        activation: Legendre function of the layers.
        lr_grid: learning rates of Figure 6 left.
        lr_epochs: epochs per learning rate of Figure 6 left.
        depth: hidden layers of Figure 6 right.
        dtype: floating dtype of data and weights.
        device: device of the computation.
        progress: draw tqdm bars; None draws them when stderr is a TTY.
    """

    epochs: int = 1000
    lr: float = 0.1
    batch_size: int = 10
    realizations: int = 10
    seed: int = 0
    layers: int = 3
    width: int = 2
    activation: str = "arctan"
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
    lr_epochs: int = 10_000
    depth: int = 50
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.realizations < 1:
            raise ValueError(f"realizations={self.realizations} must be at least 1")
        if not self.lr_grid or any(not (math.isfinite(lr) and lr > 0) for lr in self.lr_grid):
            raise ValueError(f"lr_grid={self.lr_grid} must be a non-empty list of finite rates > 0")
        if self.width != 2:
            raise ValueError(f"width={self.width} must be 2, the dimension of the two-spiral points")

    def describe(self) -> dict[str, Any]:
        """Return the settings as a dictionary that JSON can encode."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "realizations": self.realizations,
            "seeds": [self.seed + index for index in range(self.realizations)],
            "layers": self.layers,
            "width": self.width,
            "activation": self.activation,
            "lr_grid": list(self.lr_grid),
            "lr_epochs": self.lr_epochs,
            "depth": self.depth,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "optimizer": "sgd",
            "loss": "cross-entropy",
        }


class StackedFFNN:
    r"""M independent square FFNNs, their parameters stacked along a leading model dimension.

    Every network maps d inputs through L hidden layers of d neurons to K
    logits. The networks share L, d, K and the activation, and each has its
    own variant.
    With Wₘ, bₘ the stacked weights of one layer, model m computes

        Standard:  ρ(Wₘz + bₘ),
        Euclidean: ρ(z + Wₘz + bₘ),
        Bregman:   ρ(ρ⁻¹(z) + Wₘz + bₘ),

    as :class:`~mmbilevel.nn.StandardLayer`, :class:`~mmbilevel.nn.EuclideanLayer`
    and :class:`~mmbilevel.nn.BregmanLayer` do for equal widths, with ρ⁻¹
    evaluated on the input clamped into dom φ (``clamp=True`` of
    ``BregmanLayer``). Because the loss of model m depends only on model m's
    parameters, the gradient of the sum of the M losses is, for each slice
    m, the gradient of model m's own loss.

    Args:
        models: the networks to stack, :class:`~mmbilevel.nn.FFNN` with
            every hidden width equal to ``in_features``, biases enabled and
            one activation.

    Raises:
        ValueError: the models are empty or differ in shape or activation.
    """

    def __init__(self, models: Sequence[FFNN]) -> None:
        if not models:
            raise ValueError("no models to stack; give at least one FFNN")
        first = models[0]
        width = first.in_features
        for model in models:
            if not isinstance(model, FFNN):
                raise ValueError(f"expected FFNN models, got {type(model).__name__}")
            if model.hidden != [width] * len(first.hidden) or model.in_features != width:
                raise ValueError(
                    f"every model must have {len(first.hidden)} hidden layers of width {width} "
                    f"and {width} inputs, got in_features={model.in_features} hidden={model.hidden}"
                )
            if model.out_features != first.out_features or model.phi.name != first.phi.name:
                raise ValueError("every model must have the same out_features and activation")
            if any(layer.bias is None for layer in model.layers):
                raise ValueError("every hidden layer must have a bias; build the FFNN with bias=True")

        self.phi = first.phi
        self.templates = list(models)
        self.variants = [model.variant for model in models]
        self.depth = len(first.hidden)
        self.width = width
        self.classes = first.out_features

        # All parameters of model m are row m of one (M, P) leaf tensor, in the
        # order W₁, b₁, …, W_L, b_L, V, c. The forward pass splits it into
        # views, so autograd returns one (M, P) gradient and an SGD step is a
        # single tensor operation.
        self.shapes: list[tuple[int, ...]] = []
        for _ in range(self.depth):
            self.shapes += [(width, width), (width,)]
        self.shapes += [(self.classes, width), (self.classes,)]
        rows = []
        for model in models:
            tensors = []
            for layer in model.layers:
                tensors += [layer.weight.detach(), layer.bias.detach()]
            tensors += [model.head.weight.detach(), model.head.bias.detach()]
            rows.append(torch.cat([tensor.reshape(-1) for tensor in tensors]))
        self.flat = torch.stack(rows).requires_grad_(True)

        device = self.flat.device
        self.euclidean_mask = torch.tensor(
            [v == "euclidean" for v in self.variants], dtype=self.flat.dtype, device=device
        ).view(-1, 1, 1)
        self.bregman_rows = torch.tensor(
            [i for i, v in enumerate(self.variants) if v == "bregman"], dtype=torch.long, device=device
        )
        ends = torch.tensor(self.phi.domain, dtype=self.flat.dtype, device=device)
        bounds = torch.where(torch.isfinite(ends), self.phi.grad(ends, clamp=True), ends)
        self.inverse_bounds = (float(bounds[0]), float(bounds[1]))

    @property
    def count(self) -> int:
        """Number M of stacked networks."""
        return len(self.variants)

    def parameters(self) -> list[torch.Tensor]:
        """Return the views [W₁, b₁, …, W_L, b_L, V, c] of the stacked parameters, each (M, *shape)."""
        sizes = [math.prod(shape) for shape in self.shapes]
        pieces = torch.split(self.flat, sizes, dim=1)
        return [piece.view(self.count, *shape) for piece, shape in zip(pieces, self.shapes)]

    def _layer(
        self, z: torch.Tensor, inverse: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the layer output and its pre-activation u, so that output = ρ(u)."""
        pre = torch.baddbmm(bias.unsqueeze(1), z, weight.transpose(1, 2))
        skip = z * self.euclidean_mask
        if inverse is not None:
            skip = skip.index_put((self.bregman_rows,), inverse)
        pre = skip + pre
        return self.phi.grad_conjugate(pre), pre

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(self.count, *x.shape) if x.dim() == 2 else x

    def _forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        params = self.parameters()
        outputs = [self._expand(x)]
        has_bregman = self.bregman_rows.numel() > 0
        inverse = self.phi.grad(outputs[0][self.bregman_rows], clamp=True) if has_bregman else None
        for index in range(self.depth):
            z, pre = self._layer(outputs[-1], inverse, params[2 * index], params[2 * index + 1])
            outputs.append(z)
            if has_bregman:
                # z = ρ(u) with ρ increasing, so ρ⁻¹(clamp(z)) = clamp(u) into
                # [ρ⁻¹(lower + m), ρ⁻¹(upper − m)]: the value that
                # BregmanLayer(clamp=True) computes, without evaluating ρ⁻¹.
                inverse = pre[self.bregman_rows].clamp(*self.inverse_bounds)
        head_weight, head_bias = params[-2], params[-1]
        logits = torch.baddbmm(head_bias.unsqueeze(1), outputs[-1], head_weight.transpose(1, 2))
        return outputs, logits

    def hidden_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return [z⁽⁰⁾, …, z⁽ᴸ⁾] of every model, each (M, n, d).

        Args:
            x: inputs (n, d) shared by all models, or (M, n, d), one batch per model.
        """
        return self._forward(x)[0]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (M, n, K) for inputs (n, d) or (M, n, d)."""
        return self._forward(x)[1]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return the mean cross-entropy of each model, shape (M,).

        Args:
            x: inputs (n, d) or (M, n, d).
            y: labels (n,) or (M, n).
        """
        return self._loss_of(self.logits(x), y)

    def _loss_of(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = y.expand(self.count, *y.shape) if y.dim() == 1 else y
        loss = functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
        )
        return loss.view(labels.shape).mean(dim=1)

    def loss_and_accuracy(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mean cross-entropy and the accuracy of each model, both of shape (M,)."""
        logits = self.logits(x)
        labels = y.expand(self.count, *y.shape) if y.dim() == 1 else y
        correct = (logits.argmax(dim=-1) == labels).to(logits.dtype)
        return self._loss_of(logits, y), correct.mean(dim=1)

    def model(self, index: int) -> FFNN:
        """Return a standalone FFNN with the current weights of model ``index``."""
        if not 0 <= index < self.count:
            raise IndexError(f"model index {index} is out of range for {self.count} stacked models")
        template = self.templates[index]
        model = FFNN(
            template.in_features, template.hidden, template.out_features, template.phi,
            template.variant, template.init, clamp=True,
            device=self.flat.device, dtype=self.flat.dtype,
        )
        with torch.no_grad():
            params = self.parameters()
            for layer_index, layer in enumerate(model.layers):
                layer.weight.copy_(params[2 * layer_index][index])
                layer.bias.copy_(params[2 * layer_index + 1][index])
            model.head.weight.copy_(params[-2][index])
            model.head.bias.copy_(params[-1][index])
        return model


@dataclass
class StackedHistory:
    """Training history of M stacked networks.

    Attributes:
        epochs: evaluated epochs, 0 being before training.
        train_loss: mean training cross-entropy, shape (len(epochs), M).
        train_accuracy: training accuracy in [0, 1], shape (len(epochs), M).
        diverged_at: per model, the epoch whose SGD step first met a
            non-finite mini-batch loss or produced a non-finite parameter,
            or −1. A diverged model keeps its last finite parameters and
            stops training. Its recorded loss may then be NaN, because
            parameters near the float range overflow the logits.
        seconds: wall time of the training loop, evaluations included.
    """

    epochs: list[int]
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    diverged_at: list[int]
    seconds: float

    def final_loss(self) -> np.ndarray:
        """Return the last recorded training loss of each model, shape (M,)."""
        return self.train_loss[-1]

    def final_accuracy(self) -> np.ndarray:
        """Return the last recorded training accuracy of each model, shape (M,)."""
        return self.train_accuracy[-1]


def train_stacked(
    net: StackedFFNN,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lrs: Sequence[float],
    seeds: Sequence[int],
    epochs: int,
    batch_size: int,
    record_every: int = 1,
    progress: bool | None = None,
    label: str = "",
) -> StackedHistory:
    """Train M stacked networks by mini-batch SGD on the cross-entropy, in place.

    Each epoch, model m visits the training set in the order of
    ``torch.randperm(n, generator=g)`` cut into slices of ``batch_size``,
    where g is a ``torch.Generator`` seeded with ``seeds[m]`` at the start:
    the order that :func:`mmbilevel.train.train_model` uses with
    ``TrainConfig(seed=seeds[m])``. Then θₘ ← θₘ − lrₘ ∇θₘ ℓₘ with ℓₘ the
    mean loss of model m's mini-batch.

    Args:
        net: the stacked networks, trained in place.
        x: training inputs (n, d).
        y: training labels (n,).
        lrs: learning rate of each model.
        seeds: mini-batch order seed of each model.
        epochs: passes over the training set.
        batch_size: mini-batch size.
        record_every: evaluate the whole training set every this many
            epochs (and after the last one).
        progress: draw a tqdm bar; None draws one when stderr is a TTY.
        label: text that starts the progress bar and the log lines.

    Returns:
        The history of training loss and accuracy.
    """
    if len(lrs) != net.count or len(seeds) != net.count:
        raise ValueError(f"expected {net.count} learning rates and seeds, got {len(lrs)} and {len(seeds)}")
    if record_every < 1:
        raise ValueError(f"record_every={record_every} must be at least 1")
    dtype, device = net.flat.dtype, net.flat.device
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    rates = torch.tensor(list(lrs), dtype=dtype, device=device)

    unique_seeds = sorted(set(int(seed) for seed in seeds))
    generators = [torch.Generator().manual_seed(seed) for seed in unique_seeds]
    order_row = torch.tensor([unique_seeds.index(int(seed)) for seed in seeds], device=device)
    diverged_at = [-1] * net.count

    # The stacked tensors contain a few thousand numbers, too few for intra-op
    # threads to pay off. On a loaded machine a second thread that is not
    # scheduled stalls every parallel operation: the Figure 5 run took 692 s
    # with two threads and 30 s with one on 2 shared cores.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_stacked_loop(net, x, y, rates, generators, order_row, diverged_at,
                                   epochs=epochs, batch_size=batch_size, record_every=record_every,
                                   progress=progress, label=label)
    finally:
        torch.set_num_threads(previous_threads)


def _train_stacked_loop(
    net: StackedFFNN,
    x: torch.Tensor,
    y: torch.Tensor,
    rates: torch.Tensor,
    generators: list[torch.Generator],
    order_row: torch.Tensor,
    diverged_at: list[int],
    *,
    epochs: int,
    batch_size: int,
    record_every: int,
    progress: bool | None,
    label: str,
) -> StackedHistory:
    n = x.shape[0]
    device = x.device
    recorded_epochs: list[int] = []
    losses: list[np.ndarray] = []
    accuracies: list[np.ndarray] = []

    def record(epoch: int) -> None:
        with torch.no_grad():
            loss, accuracy = net.loss_and_accuracy(x, y)
        recorded_epochs.append(epoch)
        losses.append(loss.cpu().numpy())
        accuracies.append(accuracy.cpu().numpy())

    tic = time.perf_counter()
    record(0)
    bar = tqdm(range(1, epochs + 1), desc=label or f"{net.count} networks", unit="epoch",
               disable=not progress_enabled(progress))
    log_every = max(1, epochs // 10)
    for epoch in bar:
        orders = torch.stack([torch.randperm(n, generator=generator) for generator in generators]).to(device)
        for batch in torch.split(orders[order_row], batch_size, dim=1):
            loss = net.loss(x[batch], y[batch])
            (grad,) = torch.autograd.grad(loss.sum(), net.flat)
            _sgd_step(net.flat, grad, loss, rates, diverged_at, epoch)
        if epoch % record_every == 0 or epoch == epochs:
            record(epoch)
        if epoch % log_every == 0:
            logger.info("%s epoch %d/%d: mean training loss %.4g (%.0f s)",
                        label, epoch, epochs, float(np.nanmean(losses[-1])), time.perf_counter() - tic)
    bar.close()
    return StackedHistory(recorded_epochs, np.stack(losses), np.stack(accuracies), diverged_at,
                          time.perf_counter() - tic)


@torch.no_grad()
def _sgd_step(
    flat: torch.Tensor,
    grad: torch.Tensor,
    loss: torch.Tensor,
    rates: torch.Tensor,
    diverged_at: list[int],
    epoch: int,
) -> None:
    """Apply θₘ ← θₘ − lrₘ·∇θₘ to every model m whose loss and updated parameters are finite.

    A model with a non-finite mini-batch loss, or whose update would give a
    non-finite parameter, keeps its parameters, gets learning rate 0 from
    then on, and is marked diverged.
    """
    updated = torch.addcmul(flat, rates.unsqueeze(1), grad, value=-1.0)
    finite = torch.isfinite(updated).all(dim=1) & torch.isfinite(loss)
    if bool(finite.all()):
        flat.copy_(updated)
        return
    for index in torch.nonzero(~finite).flatten().tolist():
        if diverged_at[index] < 0:
            diverged_at[index] = epoch
            logger.warning("model %d diverged at epoch %d (learning rate %g); it stops training",
                           index, epoch, float(rates[index]))
    rates[~finite] = 0.0
    flat.copy_(torch.where(finite.unsqueeze(1), updated, flat))


def build_networks(
    specs: Sequence[tuple[str, str, int]],
    settings: SpiralSettings,
    layers: int,
) -> StackedFFNN:
    """Build and stack one FFNN per (variant, init, seed) in ``specs``.

    Each network is built with the global RNG seeded to its seed (see
    :func:`mmbilevel.train.build_seeded`), as the single-model trainer does.
    """
    from mmbilevel.train import build_seeded

    models = []
    for variant, init, seed in specs:
        def build(variant: str = variant, init: str = init) -> FFNN:
            return FFNN(settings.width, [settings.width] * layers, 2, settings.activation, variant, init,
                        clamp=True, dtype=settings.dtype)

        models.append(build_seeded(build, seed, settings.device))
    return StackedFFNN(models)


def _training_data(settings: SpiralSettings) -> tuple[torch.Tensor, torch.Tensor]:
    from mmbilevel.data import load

    x, y = load("two-spiral", split="train", dtype=settings.dtype)
    return x.to(settings.device), y.to(settings.device)


def _seeds(settings: SpiralSettings) -> list[int]:
    return [settings.seed + index for index in range(settings.realizations)]


def _mean_std(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Return the mean and sample standard deviation over the last axis (std 0 for one value)."""
    mean = np.mean(values, axis=-1)
    std = np.std(values, axis=-1, ddof=1) if values.shape[-1] > 1 else np.zeros_like(mean)
    return mean.tolist(), std.tolist()


def _write(out: Path, name: str, document: dict[str, Any], csv_header: str, csv_rows: list[str]) -> None:
    from mmbilevel.train import atomic_write_json, atomic_write_text

    atomic_write_json(out / f"{name}.json", document)
    atomic_write_text(out / f"{name}.csv", csv_header + "\n" + "\n".join(csv_rows) + "\n")


@dataclass
class Figure5Result:
    """Trained networks and loss curves of Figure 5.

    Attributes:
        net: the 2 × 3 × R stacked networks, in (init, variant, seed) order.
        specs: (variant, init, seed) of each stacked network.
        history: their training history.
        document: the content of ``fig5.json``.
    """

    net: StackedFFNN
    specs: list[tuple[str, str, int]]
    history: StackedHistory
    document: dict[str, Any] = field(repr=False)


def figure5(settings: SpiralSettings, out: str | Path) -> Figure5Result:
    """Train Figure 5's networks and write ``fig5.png``, ``fig5.json`` and ``fig5.csv``.

    All 2 inits × 3 variants × R realizations train as one stacked batch.
    ``fig5.json`` holds, per init and variant, the mean and standard
    deviation of the training loss per epoch, the final loss and accuracy of
    each realization, the ordering of the variants' losses and the wall time.
    """
    from mmbilevel.experiments.plotting import plot_loss_curves

    out = Path(out)
    seeds = _seeds(settings)
    specs = [(variant, init, seed) for init in INITS for variant in VARIANTS for seed in seeds]
    net = build_networks(specs, settings, settings.layers)
    x, y = _training_data(settings)
    history = train_stacked(
        net, x, y, lrs=[settings.lr] * net.count, seeds=[seed for *_, seed in specs],
        epochs=settings.epochs, batch_size=settings.batch_size, progress=settings.progress, label="figure 5",
    )

    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    groups: dict[str, dict[str, Any]] = {}
    for init in INITS:
        curves[init] = {}
        groups[init] = {}
        for variant in VARIANTS:
            columns = [i for i, spec in enumerate(specs) if spec[:2] == (variant, init)]
            loss = history.train_loss[:, columns]
            curves[init][variant] = _mean_std(loss)
            groups[init][variant] = {
                "mean_loss": curves[init][variant][0],
                "std_loss": curves[init][variant][1],
                "final_loss": loss[-1].tolist(),
                "final_accuracy": history.train_accuracy[-1, columns].tolist(),
                "mean_loss_over_epochs": float(np.mean(loss)),
                "diverged_at": [history.diverged_at[i] for i in columns],
            }
    plot_loss_curves(curves, out / "fig5.png", epochs=history.epochs)

    document = {
        "figure": "Figure 5: training loss per epoch, mean and std over realizations",
        "settings": settings.describe(),
        "epochs": history.epochs,
        "curves": groups,
        "ordering": {init: loss_ordering(groups[init]) for init in INITS},
        "wall_seconds": history.seconds,
        "networks": net.count,
    }
    rows = []
    for init in INITS:
        for variant in VARIANTS:
            mean, std = curves[init][variant]
            rows += [f"{epoch},{init},{variant},{m!r},{s!r}" for epoch, m, s in zip(history.epochs, mean, std)]
    _write(out, "fig5", document, "epoch,init,variant,mean_loss,std_loss", rows)
    return Figure5Result(net, specs, history, document)


def loss_ordering(group: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Rank the variants by final mean loss and by loss averaged over epochs, lowest first.

    ``matches_paper`` is true when both rankings are Bregman, Euclidean,
    Standard, the order "Bilevel Learning of Deep Representations" reports
    for random initialization.
    """
    final = {variant: statistics.fmean(group[variant]["final_loss"]) for variant in group}
    average = {variant: group[variant]["mean_loss_over_epochs"] for variant in group}
    by_final = sorted(final, key=final.get)
    by_average = sorted(average, key=average.get)
    expected = ["bregman", "euclidean", "standard"]
    return {
        "final_mean_loss": final,
        "mean_loss_over_epochs": average,
        "by_final_loss": by_final,
        "by_loss_over_epochs": by_average,
        "matches_paper": by_final == expected and by_average == expected,
    }


def figure4(trained: Figure5Result, settings: SpiralSettings, out: str | Path) -> dict[str, Any]:
    """Draw every layer's output of a trained Bregman network: ``fig4.png``, ``.json``, ``.csv``.

    The network shown is the randomly initialized Bregman realization of
    Figure 5 with the lowest final training loss. The last panel also shows
    the head's decision line: with logits Vz + c for 2 classes, the points
    where (V₁ − V₀)·z + (c₁ − c₀) = 0.
    """
    from mmbilevel.experiments.plotting import plot_layer_outputs

    out = Path(out)
    columns = [i for i, spec in enumerate(trained.specs) if spec[:2] == ("bregman", "random")]
    best = min(columns, key=lambda i: trained.history.final_loss()[i])
    model = trained.net.model(best)
    x, y = _training_data(settings)
    with torch.no_grad():
        outputs = [output.cpu().numpy() for output in model.hidden_outputs(x)]
        weight, bias = model.head.weight.cpu().numpy(), model.head.bias.cpu().numpy()
    normal, offset = weight[1] - weight[0], float(bias[1] - bias[0])
    labels = y.cpu().numpy()
    plot_layer_outputs(outputs, labels, out / "fig4.png", boundary=(normal, offset))

    document = {
        "figure": "Figure 4: outputs of each layer of a trained Bregman network",
        "settings": settings.describe(),
        "seed": trained.specs[best][2],
        "final_loss": float(trained.history.final_loss()[best]),
        "final_accuracy": float(trained.history.final_accuracy()[best]),
        "head_weight": weight.tolist(),
        "head_bias": bias.tolist(),
    }
    rows = []
    for layer, points in enumerate(outputs):
        rows += [f"{layer},{i},{int(labels[i])},{p[0]!r},{p[1]!r}" for i, p in enumerate(points.tolist())]
    _write(out, "fig4", document, "layer,sample,label,z1,z2", rows)
    return document


def figure6_left(settings: SpiralSettings, out: str | Path) -> dict[str, Any]:
    """Train every (variant, learning rate, seed) as one batch and draw ``fig6-left.png``.

    Networks have ``settings.layers`` layers and random initial weights and
    train for ``settings.lr_epochs`` epochs. ``fig6-left.json`` contains the
    final training accuracy of each realization in percent, its mean and
    standard deviation per variant and rate, and the divergences.
    """
    from mmbilevel.experiments.plotting import plot_accuracy_vs_lr

    out = Path(out)
    seeds = _seeds(settings)
    grid = sorted(settings.lr_grid)
    specs = [(variant, lr, seed) for variant in VARIANTS for lr in grid for seed in seeds]
    net = build_networks([(variant, "random", seed) for variant, _, seed in specs], settings, settings.layers)
    x, y = _training_data(settings)
    history = train_stacked(
        net, x, y, lrs=[lr for _, lr, _ in specs], seeds=[seed for *_, seed in specs],
        epochs=settings.lr_epochs, batch_size=settings.batch_size,
        record_every=max(1, settings.lr_epochs // 100), progress=settings.progress, label="figure 6 left",
    )

    accuracy: dict[str, tuple[list[float], list[float]]] = {}
    details: dict[str, Any] = {}
    for variant in VARIANTS:
        per_rate = np.array([
            [100.0 * history.final_accuracy()[i] for i, spec in enumerate(specs) if spec[:2] == (variant, lr)]
            for lr in grid
        ])
        accuracy[variant] = _mean_std(per_rate)
        details[variant] = {
            "mean_accuracy": accuracy[variant][0],
            "std_accuracy": accuracy[variant][1],
            "accuracies": per_rate.tolist(),
            "diverged": [
                sum(history.diverged_at[i] >= 0 for i, spec in enumerate(specs) if spec[:2] == (variant, lr))
                for lr in grid
            ],
        }
    plot_accuracy_vs_lr(grid, accuracy, out / "fig6-left.png")

    document = {
        "figure": "Figure 6 left: final training accuracy (%) against the learning rate",
        "settings": settings.describe(),
        "learning_rates": grid,
        "accuracy": details,
        "wall_seconds": history.seconds,
        "networks": net.count,
    }
    rows = [
        f"{lr!r},{variant},{details[variant]['mean_accuracy'][k]!r},{details[variant]['std_accuracy'][k]!r},"
        f"{details[variant]['diverged'][k]}"
        for variant in VARIANTS
        for k, lr in enumerate(grid)
    ]
    _write(out, "fig6-left", document, "lr,variant,mean_accuracy,std_accuracy,diverged", rows)
    return document


def layer_differences(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Return the mean over samples of ‖z⁽ˡ⁾ − z⁽ˡ⁻¹⁾‖₂ for l = 1, …, L.

    Args:
        outputs: [z⁽⁰⁾, …, z⁽ᴸ⁾], each (M, n, d).

    Returns:
        A tensor of shape (M, L).
    """
    stacked = torch.stack(list(outputs), dim=1)
    return torch.linalg.vector_norm(stacked[:, 1:] - stacked[:, :-1], dim=-1).mean(dim=-1)


def figure6_right(settings: SpiralSettings, out: str | Path) -> dict[str, Any]:
    """Train networks of ``settings.depth`` layers and draw ``fig6-right.png``.

    The 3 variants × R realizations (random initial weights, the learning
    rate and epochs of Figure 5) train as one batch. Then the mean over the
    training points of ‖z⁽ˡ⁾ − z⁽ˡ⁻¹⁾‖ is computed for every layer and
    averaged over realizations.
    """
    from mmbilevel.experiments.plotting import plot_layer_differences

    out = Path(out)
    seeds = _seeds(settings)
    specs = [(variant, "random", seed) for variant in VARIANTS for seed in seeds]
    net = build_networks(specs, settings, settings.depth)
    x, y = _training_data(settings)
    history = train_stacked(
        net, x, y, lrs=[settings.lr] * net.count, seeds=[seed for *_, seed in specs],
        epochs=settings.epochs, batch_size=settings.batch_size,
        record_every=max(1, settings.epochs // 100), progress=settings.progress, label="figure 6 right",
    )
    with torch.no_grad():
        differences = layer_differences(net.hidden_outputs(x)).cpu().numpy()

    curves: dict[str, tuple[list[float], list[float]]] = {}
    details: dict[str, Any] = {}
    for variant in VARIANTS:
        columns = [i for i, spec in enumerate(specs) if spec[0] == variant]
        curves[variant] = _mean_std(differences[columns].T)
        details[variant] = {
            "mean_difference": curves[variant][0],
            "std_difference": curves[variant][1],
            "final_loss": history.final_loss()[columns].tolist(),
            "final_accuracy": history.final_accuracy()[columns].tolist(),
            "diverged_at": [history.diverged_at[i] for i in columns],
        }
    plot_layer_differences(curves, out / "fig6-right.png")

    document = {
        "figure": "Figure 6 right: mean norm of the difference between consecutive layer outputs",
        "settings": settings.describe(),
        "layers": list(range(1, settings.depth + 1)),
        "differences": details,
        "wall_seconds": history.seconds,
        "networks": net.count,
    }
    rows = [
        f"{layer},{variant},{curves[variant][0][layer - 1]!r},{curves[variant][1][layer - 1]!r}"
        for variant in VARIANTS
        for layer in range(1, settings.depth + 1)
    ]
    _write(out, "fig6-right", document, "layer,variant,mean_difference,std_difference", rows)
    return document


@dataclass
class SpiralReport:
    """Documents of the figures written by :func:`run_two_spiral`, keyed by figure name."""

    out: Path
    documents: dict[str, dict[str, Any]]
    seconds: dict[str, float]

    def summary_lines(self) -> list[str]:
        """Return a short human-readable summary: timings, loss ordering, accuracies."""
        lines = []
        fig5 = self.documents.get("fig5")
        if fig5 is not None:
            for init, ordering in fig5["ordering"].items():
                final = ", ".join(f"{v} {ordering['final_mean_loss'][v]:.4f}" for v in VARIANTS)
                lines.append(
                    f"figure 5, {init} init: final mean training loss {final}; lowest first by final loss: "
                    f"{' < '.join(ordering['by_final_loss'])}; by loss over epochs: "
                    f"{' < '.join(ordering['by_loss_over_epochs'])}"
                )
        fig6 = self.documents.get("fig6-left")
        if fig6 is not None:
            for variant in VARIANTS:
                values = ", ".join(
                    f"{lr:g}: {acc:.1f}"
                    for lr, acc in zip(fig6["learning_rates"], fig6["accuracy"][variant]["mean_accuracy"])
                )
                lines.append(f"figure 6 left, {variant}: mean training accuracy (%) per learning rate {values}")
        right = self.documents.get("fig6-right")
        if right is not None:
            for variant in VARIANTS:
                mean = right["differences"][variant]["mean_difference"]
                lines.append(
                    f"figure 6 right, {variant}: mean ‖z⁽ˡ⁾ − z⁽ˡ⁻¹⁾‖ at layer 1 {mean[0]:.3g}, "
                    f"at layer {len(mean)} {mean[-1]:.3g}"
                )
        for name, seconds in self.seconds.items():
            lines.append(f"{name}: {seconds:.1f} s")
        lines.append(f"plots and data in {self.out}")
        return lines


def run_two_spiral(
    settings: SpiralSettings,
    out: str | Path,
    figures: Sequence[str] = FIGURES,
) -> SpiralReport:
    """Reproduce the requested two-spiral figures into ``out``.

    Figure 4 shows a network trained for Figure 5, so asking for either
    trains Figure 5's networks. ``summary.json`` in ``out`` gathers the
    settings, the wall time of each part and the Figure 5 loss ordering.

    Raises:
        ValueError: an unknown figure name.
    """
    from mmbilevel.train import atomic_write_json

    unknown = [name for name in figures if name not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figures {unknown}; expected a subset of {list(FIGURES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    documents: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}

    if "fig5" in figures or "fig4" in figures:
        tic = time.perf_counter()
        trained = figure5(settings, out)
        if "fig5" in figures:
            documents["fig5"] = trained.document
        if "fig4" in figures:
            documents["fig4"] = figure4(trained, settings, out)
        seconds["figures 4 and 5"] = time.perf_counter() - tic
    if "fig6-left" in figures:
        tic = time.perf_counter()
        documents["fig6-left"] = figure6_left(settings, out)
        seconds["figure 6 left"] = time.perf_counter() - tic
    if "fig6-right" in figures:
        tic = time.perf_counter()
        documents["fig6-right"] = figure6_right(settings, out)
        seconds["figure 6 right"] = time.perf_counter() - tic

    # Merge with the summary of earlier runs into the same folder, so that
    # figures produced by separate commands keep their timings.
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    summary.setdefault("runs", []).append({
        "settings": settings.describe(),
        "figures": list(documents),
        "wall_seconds": seconds,
        "torch_version": torch.__version__,
    })
    if "fig5" in documents:
        summary["fig5_ordering"] = documents["fig5"]["ordering"]
    atomic_write_json(summary_path, summary)
    return SpiralReport(out, documents, seconds)


def redraw_figures(out: str | Path) -> list[Path]:
    """Draw again every figure whose data files are in ``out``, without training.

    Reads ``fig5.json``, ``fig4.json`` with ``fig4.csv``, ``fig6-left.json``
    and ``fig6-right.json`` where present, and overwrites their PNG files
    with the current plotting code.

    Returns:
        The PNG files written.

    Raises:
        FileNotFoundError: ``out`` contains none of these data files.
        OutputFileError: a data file is not valid JSON or CSV, or lacks the
            entries of its figure. The message names the file.
    """
    from mmbilevel.experiments import plotting

    out = Path(out)
    written = []

    fig5 = _read_figure_json(out, "fig5")
    if fig5 is not None:
        with _figure_data_errors(out / "fig5.json", "fig5"):
            curves = {
                init: {variant: (group["mean_loss"], group["std_loss"]) for variant, group in by_variant.items()}
                for init, by_variant in fig5["curves"].items()
            }
            written.append(plotting.plot_loss_curves(curves, out / "fig5.png", epochs=fig5["epochs"]))

    fig4 = _read_figure_json(out, "fig4")
    if fig4 is not None and (out / "fig4.csv").is_file():
        with _figure_data_errors(out / "fig4.csv", "fig4"):
            outputs, labels = _read_layer_outputs(out / "fig4.csv")
        with _figure_data_errors(out / "fig4.json", "fig4"):
            weight, bias = np.array(fig4["head_weight"], dtype=float), np.array(fig4["head_bias"], dtype=float)
            boundary = (weight[1] - weight[0], float(bias[1] - bias[0]))
            written.append(plotting.plot_layer_outputs(outputs, labels, out / "fig4.png", boundary=boundary))

    left = _read_figure_json(out, "fig6-left")
    if left is not None:
        with _figure_data_errors(out / "fig6-left.json", "fig6-left"):
            accuracy = {v: (d["mean_accuracy"], d["std_accuracy"]) for v, d in left["accuracy"].items()}
            written.append(plotting.plot_accuracy_vs_lr(left["learning_rates"], accuracy, out / "fig6-left.png"))

    right = _read_figure_json(out, "fig6-right")
    if right is not None:
        with _figure_data_errors(out / "fig6-right.json", "fig6-right"):
            differences = {v: (d["mean_difference"], d["std_difference"]) for v, d in right["differences"].items()}
            written.append(plotting.plot_layer_differences(differences, out / "fig6-right.png"))

    if not written:
        raise FileNotFoundError(
            f"no figure data (fig4/fig5/fig6-left/fig6-right .json) in {out}; "
            "run mmbilevel reproduce two-spiral with --out there first"
        )
    return written


def _refresh_hint(figure: str) -> str:
    return (
        f"Delete the file and run mmbilevel reproduce two-spiral --figures {figure} with the same --out "
        "and without --replot to write it again"
    )


@contextlib.contextmanager
def _figure_data_errors(path: Path, figure: str) -> Iterator[None]:
    """Turn an error raised while reading or plotting the data of ``path`` into an ``OutputFileError``.

    A file of the right format but the wrong content (a missing key, a list
    where a mapping belongs, lengths that do not match) fails deep inside the
    parsing or matplotlib code with one of these exception types.
    """
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, csv.Error) as error:
        raise OutputFileError(
            path, f"invalid data for {figure} ({type(error).__name__}: {error})", _refresh_hint(figure)
        ) from error


def _read_figure_json(out: Path, figure: str) -> dict[str, Any] | None:
    """Return the parsed ``<figure>.json`` in ``out``, or None when the file does not exist."""
    path = out / f"{figure}.json"
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise OutputFileError(path, f"not valid JSON ({error})", _refresh_hint(figure)) from error
    if not isinstance(document, dict):
        raise OutputFileError(
            path, f"expected a JSON object, found {type(document).__name__}", _refresh_hint(figure)
        )
    return document


def _read_layer_outputs(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Read the per-layer outputs (N, 2) and the labels (N,) of Figure 4 from its CSV file."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    layers = sorted({int(row["layer"]) for row in rows})
    outputs = [
        np.array([[float(row["z1"]), float(row["z2"])] for row in rows if int(row["layer"]) == layer])
        for layer in layers
    ]
    labels = np.array([int(row["label"]) for row in rows if int(row["layer"]) == layers[0]])
    return outputs, labels
