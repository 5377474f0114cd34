"""Per-epoch training history and its CSV form."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["EpochRecord", "History", "history_csv"]


@dataclass(frozen=True)
class EpochRecord:
    """Metrics measured after one epoch.

    Epoch 0 is the model before training. Losses and accuracies are
    evaluated on the whole split with the parameters at the end of the
    epoch. The test entries are NaN when no test split was given.
    ``seconds`` is the wall time of the epoch, evaluation included.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float = math.nan
    test_accuracy: float = math.nan
    seconds: float = 0.0


METRICS = tuple(f.name for f in fields(EpochRecord))


@dataclass
class History:
    """Sequence of :class:`EpochRecord`, one per evaluated epoch."""

    records: list[EpochRecord] = field(default_factory=list)

    def append(self, record: EpochRecord) -> None:
        """Add the record of the next epoch."""
        if self.records and record.epoch <= self.records[-1].epoch:
            raise ValueError(
                f"epoch {record.epoch} does not follow the last recorded epoch "
                f"{self.records[-1].epoch}"
            )
        self.records.append(record)

    def column(self, name: str) -> list[float]:
        """Return one metric (for example ``"train_loss"``) over all epochs."""
        if name not in METRICS:
            raise ValueError(f"unknown history column {name!r}; valid columns are: {', '.join(METRICS)}")
        return [getattr(record, name) for record in self.records]

    @property
    def last(self) -> EpochRecord:
        """Record of the last epoch."""
        if not self.records:
            raise ValueError("the history is empty; train for at least one epoch")
        return self.records[-1]

    def to_dict(self) -> dict[str, list[float]]:
        """Return the history as columns, a form that JSON can encode."""
        return {name: self.column(name) for name in METRICS}

    @classmethod
    def from_dict(cls, columns: dict[str, Sequence[Any]]) -> History:
        """Rebuild a history from :meth:`to_dict` output.

        A ``None`` metric, which is how ``results.json`` stores NaN, becomes NaN.
        """
        lengths = {len(columns[name]) for name in METRICS}
        if len(lengths) != 1:
            raise ValueError(f"history columns have different lengths: {sorted(lengths)}")
        history = cls()
        for index in range(lengths.pop()):
            values = {name: columns[name][index] for name in METRICS}
            values = {name: math.nan if value is None else value for name, value in values.items()}
            values["epoch"] = int(values["epoch"])
            history.append(EpochRecord(**values))
        return history

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)


def history_csv(histories: Sequence[History], seeds: Sequence[int] | None = None) -> str:
    """Format histories of several realizations as one CSV table.

    Columns are ``realization`` and ``seed`` followed by the fields of
    :class:`EpochRecord`, one row per realization and epoch. Realizations
    are numbered from 1, as in the command-line help, where realization r
    uses seed S + r − 1.
    """
    if seeds is None:
        seeds = list(range(len(histories)))
    if len(seeds) != len(histories):
        raise ValueError(f"got {len(histories)} histories but {len(seeds)} seeds")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["realization", "seed", *METRICS])
    for number, (history, seed) in enumerate(zip(histories, seeds), start=1):
        for record in history:
            writer.writerow([number, seed, *(repr(getattr(record, name)) for name in METRICS)])
    return buffer.getvalue()
