"""Exceptions raised when an output file of an earlier run cannot be read back."""

from __future__ import annotations

from pathlib import Path

__all__ = ["OutputFileError"]


class OutputFileError(ValueError):
    """A file written by an earlier run (figure data, results, checkpoint) is damaged.

    Raised where a command reads its own earlier output back, as with
    ``--replot`` and ``--resume``.

    Attributes:
        path: the damaged file.
    """

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path = Path(path)
        super().__init__(f"cannot read {str(self.path)!r}: {problem}. {fix}")
