"""Matplotlib figures of the reproduced experiments, written as PNG files.

Every function draws one figure with the non-interactive Agg backend, saves
it to ``path`` and closes it, so the functions work without a display and do
not accumulate open figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen before pyplot loads)
import numpy as np  # noqa: E402

__all__ = [
    "VARIANT_COLORS",
    "VARIANT_LABELS",
    "plot_accuracy_vs_lr",
    "plot_layer_differences",
    "plot_layer_outputs",
    "plot_loss_curves",
]

VARIANT_LABELS = {"standard": "Standard", "euclidean": "Euclidean", "bregman": "Bregman"}
VARIANT_COLORS = {"standard": "tab:blue", "euclidean": "tab:orange", "bregman": "tab:green"}
CLASS_COLORS = ("tab:red", "tab:blue")

Band = tuple[Sequence[float], Sequence[float]]


def _save(figure: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def _band(axis: plt.Axes, x: np.ndarray, mean: Sequence[float], std: Sequence[float], variant: str) -> None:
    mean_array = np.asarray(mean, dtype=float)
    std_array = np.asarray(std, dtype=float)
    color = VARIANT_COLORS.get(variant)
    axis.plot(x, mean_array, color=color, linewidth=2, label=VARIANT_LABELS.get(variant, variant))
    axis.fill_between(x, mean_array - std_array, mean_array + std_array, color=color, alpha=0.2, linewidth=0)


def plot_loss_curves(
    curves: Mapping[str, Mapping[str, Band]],
    path: str | Path,
    *,
    epochs: Sequence[int] | None = None,
    title: str = "Training loss, mean ± std over realizations",
) -> Path:
    """Draw Figure 5: training loss per epoch, one panel per initialization.

    Args:
        curves: ``curves[init][variant] = (mean, std)``, one value per epoch.
        path: PNG file to write.
        epochs: epoch of each value; 0, 1, … when None.
        title: figure title.

    Returns:
        The written path.
    """
    figure, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for axis, (init, by_variant) in zip(axes[0], curves.items()):
        for variant, (mean, std) in by_variant.items():
            x = np.arange(len(mean)) if epochs is None else np.asarray(epochs)
            _band(axis, x, mean, std, variant)
        axis.set_ylim(bottom=0.0)
        axis.set_xlabel("epoch")
        axis.set_ylabel("training loss (cross-entropy)")
        axis.set_title(f"{init} initialization")
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    return _save(figure, path)


def plot_layer_outputs(
    outputs: Sequence[np.ndarray],
    labels: np.ndarray,
    path: str | Path,
    *,
    boundary: tuple[np.ndarray, float] | None = None,
    title: str = "Outputs of each layer of a trained Bregman network",
) -> Path:
    """Draw Figure 4: the data and every layer's output, colored by class.

    Args:
        outputs: ``[x, z⁽¹⁾, …, z⁽ᴸ⁾]``, each of shape (n, 2).
        labels: class of each sample, 0 or 1, shape (n,).
        path: PNG file to write.
        boundary: ``(w, c)`` of the head's decision line w·z + c = 0 in the
            last layer's plane, drawn on the last panel when given.
        title: figure title.

    Returns:
        The written path.
    """
    count = len(outputs)
    figure, axes = plt.subplots(1, count, figsize=(3.6 * count, 3.6), squeeze=False)
    labels = np.asarray(labels)
    for index, (axis, points) in enumerate(zip(axes[0], outputs)):
        points = np.asarray(points)
        for label, color in enumerate(CLASS_COLORS):
            chosen = points[labels == label]
            axis.scatter(chosen[:, 0], chosen[:, 1], s=8, color=color, label=f"class {label}")
        axis.set_title("two-spiral data" if index == 0 else f"layer {index} output")
        axis.set_aspect("equal", adjustable="datalim")
        if index == count - 1 and boundary is not None:
            _draw_line(axis, points, *boundary)
    axes[0][0].legend(loc="upper right", fontsize="small")
    figure.suptitle(title, y=1.04)
    return _save(figure, path)


def _draw_line(axis: plt.Axes, points: np.ndarray, normal: np.ndarray, offset: float) -> None:
    """Draw the line normal·z + offset = 0 across the range of ``points``."""
    low, high = points.min(axis=0), points.max(axis=0)
    pad = 0.1 * (high - low) + 1e-9
    normal = np.asarray(normal, dtype=float)
    if abs(normal[1]) >= abs(normal[0]):
        x = np.linspace(low[0] - pad[0], high[0] + pad[0], 2)
        y = -(normal[0] * x + offset) / normal[1]
    else:
        y = np.linspace(low[1] - pad[1], high[1] + pad[1], 2)
        x = -(normal[1] * y + offset) / normal[0]
    axis.plot(x, y, color="black", linestyle="--", linewidth=1, label="head decision line")


def plot_accuracy_vs_lr(
    learning_rates: Sequence[float],
    accuracy: Mapping[str, Band],
    path: str | Path,
    *,
    title: str = "Training accuracy against the learning rate",
) -> Path:
    """Draw Figure 6 left: final training accuracy against the learning rate (log scale).

    Args:
        learning_rates: the grid, increasing.
        accuracy: ``accuracy[variant] = (mean, std)`` in percent, one per rate.
        path: PNG file to write.
        title: figure title.

    Returns:
        The written path.
    """
    figure, axis = plt.subplots(figsize=(5.5, 4))
    x = np.asarray(learning_rates, dtype=float)
    for variant, (mean, std) in accuracy.items():
        mean_array = np.asarray(mean, dtype=float)
        std_array = np.asarray(std, dtype=float)
        color = VARIANT_COLORS.get(variant)
        axis.plot(x, mean_array, color=color, linewidth=2, marker="o", markersize=4,
                  label=VARIANT_LABELS.get(variant, variant))
        # Accuracies lie in [0, 100], so the band is clipped there.
        lower = np.clip(mean_array - std_array, 0.0, 100.0)
        upper = np.clip(mean_array + std_array, 0.0, 100.0)
        axis.fill_between(x, lower, upper, color=color, alpha=0.2, linewidth=0)
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training accuracy (%)")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    return _save(figure, path)


def plot_layer_differences(
    differences: Mapping[str, Band],
    path: str | Path,
    *,
    title: str = "Norm of the difference between consecutive layer outputs",
) -> Path:
    """Draw Figure 6 right: mean ‖z⁽ˡ⁾ − z⁽ˡ⁻¹⁾‖ against the layer l (log scale).

    Args:
        differences: ``differences[variant] = (mean, std)``, one value per
            layer l = 1, …, L (z⁽⁰⁾ is the input).
        path: PNG file to write.
        title: figure title.

    Returns:
        The written path.
    """
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for variant, (mean, std) in differences.items():
        layers = np.arange(1, len(mean) + 1)
        mean_array = np.asarray(mean, dtype=float)
        std_array = np.asarray(std, dtype=float)
        color = VARIANT_COLORS.get(variant)
        axis.plot(layers, mean_array, color=color, linewidth=2, label=VARIANT_LABELS.get(variant, variant))
        # A log axis cannot show the band below zero, so clip its lower edge.
        lower = np.clip(mean_array - std_array, mean_array * 1e-3, None)
        axis.fill_between(layers, lower, mean_array + std_array, color=color, alpha=0.2, linewidth=0)
    axis.set_yscale("log")
    axis.set_xlabel("layer l")
    axis.set_ylabel("mean ‖z⁽ˡ⁾ − z⁽ˡ⁻¹⁾‖")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    return _save(figure, path)
