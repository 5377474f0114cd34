"""Run configurations: the settings that fix a training trajectory, and their comparison.

A checkpoint or an output folder can only be continued by a run with the
same data, model and optimizer settings. :func:`check_run_config` compares
the settings stored with a checkpoint or folder against the requested ones
and raises :class:`RunConfigMismatchError`, which lists every differing
field, when they differ. The number of epochs is ignored by default, since
resuming a run to train it for longer is legitimate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["RESUMABLE_FIELDS", "RunConfigMismatchError", "normalize_run_config", "run_config_differences", "check_run_config"]

# Fields that may change between a run and its resumption.
RESUMABLE_FIELDS = ("epochs",)


class RunConfigMismatchError(ValueError):
    """The stored settings of a run differ from the requested ones.

    Attributes:
        differences: ``(field, stored, requested)`` for each differing field,
            in field-name order; a field missing on one side is None there.
    """

    def __init__(self, message: str, differences: list[tuple[str, Any, Any]]) -> None:
        super().__init__(message)
        self.differences = differences


def normalize_run_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``config`` in its JSON form: string keys, lists for tuples, plain numbers.

    Settings read back from ``results.json`` or a checkpoint then compare
    equal to the settings of the current run.

    Raises:
        TypeError: a value that JSON cannot encode (for example a tensor).
    """
    return json.loads(json.dumps(dict(config), sort_keys=True))


def run_config_differences(
    stored: Mapping[str, Any],
    requested: Mapping[str, Any],
    *,
    ignore: Iterable[str] = RESUMABLE_FIELDS,
) -> list[tuple[str, Any, Any]]:
    """List the fields whose stored and requested values differ.

    Both sides are compared in their JSON form. Fields in ``ignore`` are
    skipped, and a field present on one side only counts as a difference.

    Returns:
        ``(field, stored, requested)`` per differing field, sorted by field.
    """
    stored = normalize_run_config(stored)
    requested = normalize_run_config(requested)
    skipped = set(ignore)
    differences = []
    for key in sorted(set(stored) | set(requested)):
        if key in skipped:
            continue
        if stored.get(key) != requested.get(key):
            differences.append((key, stored.get(key), requested.get(key)))
    return differences


def check_run_config(
    stored: Mapping[str, Any],
    requested: Mapping[str, Any],
    *,
    source: str,
    ignore: Iterable[str] = RESUMABLE_FIELDS,
) -> None:
    """Raise when a run cannot be continued with the requested settings.

    Args:
        stored: settings saved with the run, for example in its checkpoint.
        requested: settings of the run that wants to continue it.
        source: what the stored settings come from, named in the message
            (for example ``"checkpoint runs/a/checkpoint.pt"``).
        ignore: fields allowed to differ; by default only ``epochs``.

    Raises:
        RunConfigMismatchError: a ValueError whose message lists each
            differing field with its stored and requested value.
    """
    differences = run_config_differences(stored, requested, ignore=ignore)
    if not differences:
        return
    details = "; ".join(
        f"{key}: stored {old!r}, requested {new!r}" for key, old, new in differences
    )
    raise RunConfigMismatchError(
        f"cannot resume: {source} was written by a run with other settings ({details}). "
        f"Rerun with the stored settings to continue that run, or write the new run "
        f"to another output folder (--out).",
        differences,
    )
