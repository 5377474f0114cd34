r"""Table 2 of "Bilevel Learning of Deep Representations": test accuracy on image data sets.

The paper reports the mean test accuracy over 5 realizations of three layer
variants (Standard ρ(Wz + b), Euclidean ρ(z + Wz + b), Bregman
ρ(ρ⁻¹(z) + Wz + b)) in three architectures:

- ``ffnn1``: flattened images (d = p² values), one hidden layer of d neurons,
  then a linear head and softmax;
- ``ffnn3``: the same with three hidden layers of d neurons;
- ``cnn``: a convolutional feature extractor whose final classification
  layers are an FFNN with one hidden layer (:class:`mmbilevel.nn.ConvFFNN`;
  the paper's own CNN is described in a supplement we do not have).

Each (row, variant) cell is trained and stored on its own under
``OUT/<dataset>/<row>/<variant>/`` (``results.json`` and ``history.csv`` of
:func:`mmbilevel.train.results.write_results`), so rows can be run by
separate commands, with different epochs, into one folder; the table then
lists every cell found there next to the paper's value.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmbilevel.experiments.errors import OutputFileError

__all__ = [
    "PAPER_TABLE2",
    "ROWS",
    "DATASET_ROWS",
    "VARIANT_NAMES",
    "CellResult",
    "Table2Settings",
    "build_row_model",
    "collect_cells",
    "format_table",
    "run_cell",
    "run_table2",
    "write_table",
]

logger = logging.getLogger(__name__)

VARIANT_NAMES = ("standard", "euclidean", "bregman")

#: Row name → row label in Table 2 of "Bilevel Learning of Deep Representations".
ROWS: dict[str, str] = {
    "ffnn1": "FFNN 1 hidden layer",
    "ffnn3": "FFNN 3 hidden layers",
    "cnn": "CNN + FFNN 1 hidden layer",
}

#: Rows of that Table 2 for each data set.
DATASET_ROWS: dict[str, tuple[str, ...]] = {
    "mnist": ("ffnn1", "ffnn3", "cnn"),
    "fashion-mnist": ("ffnn1", "ffnn3", "cnn"),
    "cifar10": ("cnn",),
}

#: Mean test accuracy in percent over 5 realizations, Table 2 of "Bilevel
#: Learning of Deep Representations", keyed by (data set, row) then variant.
PAPER_TABLE2: dict[tuple[str, str], dict[str, float]] = {
    ("mnist", "ffnn1"): {"standard": 95.27, "euclidean": 93.98, "bregman": 97.40},
    ("mnist", "ffnn3"): {"standard": 97.89, "euclidean": 98.32, "bregman": 98.41},
    ("mnist", "cnn"): {"standard": 99.39, "euclidean": 99.35, "bregman": 99.40},
    ("fashion-mnist", "ffnn1"): {"standard": 89.11, "euclidean": 89.01, "bregman": 89.39},
    ("fashion-mnist", "ffnn3"): {"standard": 88.61, "euclidean": 89.38, "bregman": 89.95},
    ("fashion-mnist", "cnn"): {"standard": 92.47, "euclidean": 92.55, "bregman": 93.19},
    ("cifar10", "cnn"): {"standard": 78.02, "euclidean": 78.00, "bregman": 79.95},
}

RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class Table2Settings:
    """Settings shared by every cell of one Table 2 run.

    "Bilevel Learning of Deep Representations" gives neither the optimizer
    nor the number of epochs of its image experiments. The defaults (Adam, learning rate 10⁻³, batch 128,
    10 epochs) are a common setting for these networks.

    Attributes:
        epochs: passes over the training set.
        lr: learning rate.
        batch_size: mini-batch size.
        optimizer: ``"adam"`` or ``"sgd"``.
        realizations: number R of seeds per cell; realization r uses
            ``seed + r`` for its initial weights and mini-batch order.
        seed: seed of the first realization.
        activation: Legendre function of every hidden layer. The sigmoid is
            the default because its domain [0, 1] contains the pixels,
            which preprocessing maps into ]0, 1[ as the paper does.
        width: width of each hidden layer of the FFNN rows; None uses
            d = p², the number of pixels, as in the paper.
        cnn_features: width of the CNN feature vector and of the single
            hidden layer of the CNN row's FFNN head.
        cnn_channels: output channels of the two convolution blocks of the
            CNN row.
        limit: train on the first ``limit`` training samples only.
        test_limit: evaluate on the first ``test_limit`` test samples only.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    realizations: int = 5
    seed: int = 0
    activation: str = "sigmoid"
    width: int | None = None
    cnn_features: int = 128
    cnn_channels: tuple[int, int] = (32, 64)
    limit: int | None = None
    test_limit: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.realizations < 1:
            raise ValueError(f"realizations={self.realizations} must be at least 1")
        if self.width is not None and self.width < 1:
            raise ValueError(f"width={self.width} must be a positive number of neurons or None")
        if self.cnn_features < 1:
            raise ValueError(f"cnn_features={self.cnn_features} must be a positive number of neurons")
        if len(self.cnn_channels) != 2 or min(self.cnn_channels) < 1:
            raise ValueError(f"cnn_channels={self.cnn_channels} must be two positive channel counts")


@dataclass
class CellResult:
    """Test accuracies of one (row, variant) cell over its realizations.

    Attributes:
        dataset: data set name.
        row: row name (see ``ROWS``).
        variant: ``"standard"``, ``"euclidean"`` or ``"bregman"``.
        accuracies: final test accuracy of each realization, in percent.
        seeds: seed of each realization.
        seconds: wall time of the cell, all realizations together.
        settings: the training settings and architecture of the cell.
    """

    dataset: str
    row: str
    variant: str
    accuracies: list[float]
    seeds: list[int]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean test accuracy in percent."""
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        """Sample standard deviation of the test accuracy (0 for one realization)."""
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    @property
    def paper(self) -> float | None:
        """The mean that Table 2 of the paper reports for this cell, or None where it has no entry."""
        return PAPER_TABLE2.get((self.dataset, self.row), {}).get(self.variant)


def _check_row(dataset: str, row: str) -> None:
    if row not in ROWS:
        raise ValueError(f"unknown Table 2 row {row!r}; expected one of {list(ROWS)}")
    if dataset in DATASET_ROWS and row not in DATASET_ROWS[dataset]:
        raise ValueError(
            f"row {row!r} is not in Table 2 for {dataset}; rows for {dataset}: {list(DATASET_ROWS[dataset])}"
        )


def build_row_model(
    row: str,
    variant: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    settings: Table2Settings,
) -> Callable[[], nn.Module]:
    """Return a factory of the network of one Table 2 row.

    The FFNN rows take flattened inputs of d = prod(input_shape) values and
    have 1 or 3 hidden layers of ``settings.width`` (default d) neurons. The
    CNN row takes images (C, H, W). Bregman layers clamp their inputs into
    dom φ, because a saturating activation such as the sigmoid can round onto
    an end of its domain in float32, where ρ⁻¹ is infinite.
    """
    from mmbilevel.nn import FFNN, ConvFFNN

    if row not in ROWS:
        raise ValueError(f"unknown Table 2 row {row!r}; expected one of {list(ROWS)}")
    activation = settings.activation

    if row == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"the cnn row needs images of shape (C, H, W), got input shape {input_shape}")
        channels, height, width = input_shape
        features = settings.cnn_features
        conv_channels = tuple(settings.cnn_channels)

        def build_cnn() -> nn.Module:
            return ConvFFNN(
                channels, (height, width), num_classes, activation, variant, "random",
                features=features, hidden=[features], channels=conv_channels, clamp=True,
            )

        return build_cnn

    in_features = math.prod(input_shape)
    hidden_width = settings.width or in_features
    hidden = [hidden_width] * (1 if row == "ffnn1" else 3)

    def build_ffnn() -> nn.Module:
        return FFNN(in_features, hidden, num_classes, activation, variant, "random", clamp=True)

    return build_ffnn


def _architecture(row: str, input_shape: tuple[int, ...], settings: Table2Settings) -> dict[str, Any]:
    if row == "cnn":
        return {
            "model": "cnn",
            "channels": list(settings.cnn_channels),
            "features": settings.cnn_features,
            "hidden": [settings.cnn_features],
        }
    width = settings.width or math.prod(input_shape)
    return {"model": "ffnn", "hidden": [width] * (1 if row == "ffnn1" else 3)}


def _cell_dir(out: Path, dataset: str, row: str, variant: str) -> Path:
    return Path(out) / dataset / row / variant


def _read_cell(path: Path, fix: str = "") -> CellResult | None:
    """Read a cell's ``results.json``; return None when it is missing or not a Table 2 cell.

    Raises:
        OutputFileError: the file is not valid JSON or lacks the entries of a
            Table 2 cell. The message ends with ``fix``, or by default with
            the advice to delete the file and train the cell again.
    """
    if not path.is_file():
        return None
    fix = fix or "Delete the file and rerun the command to train this cell again"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise OutputFileError(path, f"not valid JSON ({error})", fix) from error

    # A file of valid JSON but the wrong structure fails in the lookups below.
    try:
        run = document.get("run", {})
        if run.get("experiment") != "table2":
            return None
        accuracies = [100.0 * item["final"]["test_accuracy"] for item in document["realizations"]]
        return CellResult(
            dataset=run["dataset"],
            row=run["row"],
            variant=run["variant"],
            accuracies=accuracies,
            seeds=[item["seed"] for item in document["realizations"]],
            seconds=document["wall_seconds"],
            settings={**run, "config": document["config"]},
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise OutputFileError(
            path, f"not the results of a Table 2 cell ({type(error).__name__}: {error})", fix
        ) from error


def _checkpoint_path(cell_dir: Path, seed: int) -> Path:
    return cell_dir / f"checkpoint-seed{seed}.pt"


def _check_checkpoint(path: Path, seed: int) -> None:
    """Raise ``OutputFileError`` unless ``path`` is missing or a readable training checkpoint.

    ``torch.load`` reports a damaged file with errors such as ``RuntimeError:
    PytorchStreamReader failed reading zip archive``, which name neither the
    file nor a way out. Checkpoints are written atomically, so only damage
    from outside the program makes this fail.
    """
    from mmbilevel.train import load_checkpoint

    if not path.is_file():
        return
    try:
        load_checkpoint(path, map_location="cpu")
    except Exception as error:
        raise OutputFileError(
            path,
            f"not a readable training checkpoint ({type(error).__name__}: {error})",
            f"Delete the file to train seed {seed} of this cell from the start, or rerun without --resume",
        ) from error


def run_cell(
    dataset: str,
    row: str,
    variant: str,
    settings: Table2Settings,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> CellResult:
    """Train the realizations of one (row, variant) cell and store its results.

    Realizations are trained one after the other with
    :func:`mmbilevel.train.train_model`, each on the full training split
    (or its first ``settings.limit`` samples) and evaluated on the test split
    after every epoch. With ``resume``, a cell whose ``results.json`` was
    written with the same settings is read back instead of trained again, and
    an interrupted cell continues from its per-seed checkpoints.

    Returns:
        The cell's test accuracies, in percent.

    Raises:
        ValueError: unknown row or variant, or a row that Table 2 does not
            have for this data set.
        DatasetNotFoundError: the data set files were not found.
        DataFormatError: a data file is corrupt.
        OutputFileError: with ``resume``, the cell's ``results.json`` or one
            of its checkpoints is damaged.
    """
    from mmbilevel.data import DATASETS, prepare
    from mmbilevel.train import TrainConfig, build_seeded, resolve_device, train_model
    from mmbilevel.train.results import write_results

    _check_row(dataset, row)
    if variant not in VARIANT_NAMES:
        raise ValueError(f"unknown variant {variant!r}; expected one of {list(VARIANT_NAMES)}")

    info = DATASETS.get(dataset)
    flatten = row != "cnn"
    config = TrainConfig(
        epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
        optimizer=settings.optimizer, loss="cross-entropy", seed=settings.seed,
    )
    run_settings = {
        "experiment": "table2",
        "dataset": dataset,
        "row": row,
        "variant": variant,
        "activation": settings.activation,
        **_architecture(row, info.input_shape, settings),
        "realizations": settings.realizations,
        "limit": settings.limit,
        "test_limit": settings.test_limit,
    }
    cell_dir = _cell_dir(Path(out), dataset, row, variant)

    if resume:
        previous = _read_cell(
            cell_dir / RESULTS_FILE, fix="Delete the file to train this cell again, or rerun without --resume"
        )
        if previous is not None and _same_settings(previous.settings, run_settings, config):
            logger.info("reusing %s %s %s from %s", dataset, row, variant, cell_dir)
            return previous
        # Check every checkpoint before the data are loaded, so a damaged one fails fast.
        for seed in range(settings.seed, settings.seed + settings.realizations):
            _check_checkpoint(_checkpoint_path(cell_dir, seed), seed)

    common = {"flatten": flatten, "data_dir": data_dir}
    train_data = prepare(dataset, settings.activation, split="train", limit=settings.limit, **common)
    test_data = prepare(dataset, settings.activation, split="test", limit=settings.test_limit, **common)
    build_model = build_row_model(row, variant, info.input_shape, info.num_classes, settings)
    device = resolve_device(settings.device)

    tic = time.perf_counter()
    results = []
    for index in range(settings.realizations):
        seed = settings.seed + index
        seed_config = TrainConfig(**{**config.to_dict(), "seed": seed})
        model = build_seeded(build_model, seed, device)
        result = train_model(
            model, train_data, test_data, seed_config,
            checkpoint_path=_checkpoint_path(cell_dir, seed), resume=resume, progress=progress,
            run_config=run_settings,
        )
        logger.info(
            "%s %s %s seed %d: test accuracy %.4f after %d epochs (%.0f s)",
            dataset, row, variant, seed, result.history.last.test_accuracy, settings.epochs, result.seconds,
        )
        result.model = None
        results.append(result)
    seconds = time.perf_counter() - tic

    write_results(cell_dir, results, config, wall_seconds=seconds, device=str(device), run=run_settings)
    cell = _read_cell(cell_dir / RESULTS_FILE)
    assert cell is not None  # just written with experiment="table2"
    return cell


def _same_settings(stored: dict[str, Any], run_settings: dict[str, Any], config: Any) -> bool:
    stored_run = {key: value for key, value in stored.items() if key != "config"}
    return stored_run == run_settings and stored.get("config") == config.to_dict()


def run_table2(
    dataset: str,
    settings: Table2Settings,
    out: str | Path,
    *,
    rows: Sequence[str] | None = None,
    variants: Sequence[str] = VARIANT_NAMES,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> list[CellResult]:
    """Train every requested cell of Table 2 for one data set and write the table.

    Args:
        dataset: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        settings: training settings shared by the cells.
        out: output folder; cells go to ``OUT/<dataset>/<row>/<variant>/``.
        rows: rows to train; by default those of Table 2 for the data set.
        variants: variants to train.
        data_dir: folder of the data set files.
        resume: reuse finished cells and continue interrupted ones.
        progress: draw tqdm bars; None draws them when stderr is a TTY.

    Returns:
        The cells trained or reused by this call, in row then variant order.
        The table written to ``OUT/<dataset>/`` lists every cell stored
        there, also those of earlier calls.
    """
    if dataset not in DATASET_ROWS:
        raise ValueError(f"Table 2 has no rows for data set {dataset!r}; expected one of {list(DATASET_ROWS)}")
    rows = list(DATASET_ROWS[dataset] if rows is None else rows)
    cells = []
    for row in rows:
        for variant in variants:
            cells.append(
                run_cell(
                    dataset, row, variant, settings, out,
                    data_dir=data_dir, resume=resume, progress=progress,
                )
            )
    write_table(out, dataset)
    return cells


def collect_cells(out: str | Path, dataset: str) -> list[CellResult]:
    """Read every Table 2 cell stored under ``OUT/<dataset>/``, in table order.

    Raises:
        OutputFileError: a cell's ``results.json`` is damaged.
    """
    cells = []
    for row in ROWS:
        for variant in VARIANT_NAMES:
            cell = _read_cell(_cell_dir(Path(out), dataset, row, variant) / RESULTS_FILE)
            if cell is not None:
                cells.append(cell)
    return cells


def _row_settings(cells: Sequence[CellResult]) -> str:
    parts = []
    for cell in cells:
        config = cell.settings.get("config", {})
        text = (
            f"{config.get('optimizer')} lr {config.get('lr'):g}, batch {config.get('batch_size')}, "
            f"{config.get('epochs')} epochs, {len(cell.accuracies)} seeds"
        )
        if cell.settings.get("limit") is not None:
            text += f", first {cell.settings['limit']} training samples"
        if text not in parts:
            parts.append(text)
    return "; ".join(parts)


def format_table(cells: Sequence[CellResult], dataset: str) -> str:
    """Format cells as a Markdown table: measured mean ± std beside the paper's mean.

    One line per row; each variant column reads ``measured ± std (paper)``
    in percent, and the last columns give the training settings and the wall
    time of the row.
    """
    header = "| Row | " + " | ".join(name.capitalize() for name in VARIANT_NAMES) + " | Settings | Wall time |"
    lines = [header, "|" + "---|" * (len(VARIANT_NAMES) + 3)]
    for row, label in ROWS.items():
        row_cells = [cell for cell in cells if cell.dataset == dataset and cell.row == row]
        if not row_cells:
            continue
        by_variant = {cell.variant: cell for cell in row_cells}
        entries = []
        for variant in VARIANT_NAMES:
            paper = PAPER_TABLE2.get((dataset, row), {}).get(variant)
            paper_text = f"{paper:.2f}" if paper is not None else "n/a"
            cell = by_variant.get(variant)
            if cell is None:
                entries.append(f"not run ({paper_text})")
            else:
                entries.append(f"{cell.mean:.2f} ± {cell.std:.2f} ({paper_text})")
        seconds = sum(cell.seconds for cell in row_cells)
        lines.append(
            f"| {label} | " + " | ".join(entries) + f" | {_row_settings(row_cells)} | {seconds / 60:.1f} min |"
        )
    return "\n".join(lines)


def write_table(out: str | Path, dataset: str) -> dict[str, Path]:
    """Write ``table2.json``, ``table2.csv`` and ``table2.md`` for every cell under ``OUT/<dataset>/``.

    Returns:
        The written paths under the keys ``"json"``, ``"csv"`` and ``"md"``.
    """
    from mmbilevel.train import atomic_write_json, atomic_write_text

    folder = Path(out) / dataset
    cells = collect_cells(out, dataset)
    records = [
        {
            **asdict(cell),
            "mean": cell.mean,
            "std": cell.std,
            "paper": cell.paper,
            "difference": None if cell.paper is None else cell.mean - cell.paper,
        }
        for cell in cells
    ]
    csv_lines = ["dataset,row,variant,mean,std,paper,realizations,epochs,seconds"]
    for cell in cells:
        paper = "" if cell.paper is None else f"{cell.paper:.2f}"
        epochs = cell.settings.get("config", {}).get("epochs", "")
        csv_lines.append(
            f"{cell.dataset},{cell.row},{cell.variant},{cell.mean:.4f},{cell.std:.4f},{paper},"
            f"{len(cell.accuracies)},{epochs},{cell.seconds:.1f}"
        )
    title = f"Table 2, {dataset}: test accuracy in percent, measured mean ± std (paper's mean)\n\n"
    return {
        "json": atomic_write_json(folder / "table2.json", {"dataset": dataset, "cells": records}),
        "csv": atomic_write_text(folder / "table2.csv", "\n".join(csv_lines) + "\n"),
        "md": atomic_write_text(folder / "table2.md", title + format_table(cells, dataset) + "\n"),
    }
