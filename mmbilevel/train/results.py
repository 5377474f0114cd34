"""Result files of a training run: ``results.json`` and ``history.csv``."""

from __future__ import annotations

import math
import platform
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import mmbilevel
from mmbilevel.train.checkpoint import atomic_write_json, atomic_write_text
from mmbilevel.train.config import TrainConfig
from mmbilevel.train.history import history_csv
from mmbilevel.train.trainer import TrainResult

__all__ = ["RESULTS_FILE", "HISTORY_FILE", "summarize", "results_document", "write_results"]

RESULTS_FILE = "results.json"
HISTORY_FILE = "history.csv"

FINAL_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def _json_safe(value: Any) -> Any:
    # Strict JSON has no NaN or infinity; write them as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def summarize(results: Sequence[TrainResult]) -> dict[str, dict[str, float]]:
    """Return the mean and standard deviation of the final metrics over realizations.

    The standard deviation is the sample one (n − 1 in the denominator) and
    0.0 for a single realization. A metric that is NaN in any realization
    (a diverged run, or no test split) has a NaN mean and deviation.
    """
    if not results:
        raise ValueError("no results to summarize; train at least one realization")
    summary: dict[str, dict[str, float]] = {"mean": {}, "std": {}}
    for name in FINAL_METRICS:
        values = [result.final_metrics()[name] for result in results]
        if not all(math.isfinite(value) for value in values):
            summary["mean"][name] = summary["std"][name] = math.nan
            continue
        summary["mean"][name] = statistics.fmean(values)
        summary["std"][name] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def results_document(
    results: Sequence[TrainResult],
    config: TrainConfig,
    *,
    wall_seconds: float,
    device: str,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the content of ``results.json``.

    Keys:

    - ``run``: data set, model and other settings of the caller;
    - ``config``: the training settings;
    - ``final`` and ``final_std``: mean and standard deviation of the final
      metrics over the realizations;
    - ``realizations``: each seed with its final metrics, full history and
      ``diverged_epoch``, the epoch at which its loss became NaN or
      infinite and training stopped (null when it finished);
    - ``diverged``: whether any realization diverged;
    - ``wall_seconds``, ``device``, ``torch_version``, ``mmbilevel_version``
      and ``python_version``.

    NaN and infinite values are written as null.
    """
    summary = summarize(results)
    document = {
        "run": dict(run or {}),
        "config": config.to_dict(),
        "final": summary["mean"],
        "final_std": summary["std"],
        "realizations": [
            {
                "seed": result.seed,
                "final": result.final_metrics(),
                "seconds": result.seconds,
                "diverged_epoch": result.diverged_epoch,
                "history": result.history.to_dict(),
            }
            for result in results
        ],
        "diverged": any(result.diverged for result in results),
        "wall_seconds": wall_seconds,
        "device": device,
        "torch_version": torch.__version__,
        "mmbilevel_version": mmbilevel.__version__,
        "python_version": platform.python_version(),
    }
    return _json_safe(document)


def write_results(
    out_dir: str | Path,
    results: Sequence[TrainResult],
    config: TrainConfig,
    *,
    wall_seconds: float,
    device: str,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``results.json`` and ``history.csv`` into ``out_dir`` atomically.

    Returns:
        The written paths under the keys ``"json"`` and ``"csv"``.
    """
    out_dir = Path(out_dir)
    document = results_document(results, config, wall_seconds=wall_seconds, device=device, run=run)
    json_path = atomic_write_json(out_dir / RESULTS_FILE, document)
    csv_text = history_csv([result.history for result in results], [result.seed for result in results])
    csv_path = atomic_write_text(out_dir / HISTORY_FILE, csv_text)
    return {"json": json_path, "csv": csv_path}
