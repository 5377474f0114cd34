"""Exceptions raised when a data set is missing or one of its files is invalid."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DataFormatError", "DatasetNotFoundError"]


class DataFormatError(ValueError):
    """A data file is invalid: bad magic number, truncated, wrong count or shape.

    Attributes:
        path: the offending file.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"invalid data file {str(self.path)!r}: {problem}. "
            "Replace the file with an intact copy (see mmbilevel.data.download)."
        )


class DatasetNotFoundError(FileNotFoundError):
    """No folder holding the files of a data set was found.

    Attributes:
        name: the data set name.
        searched: every folder that was checked, in order.
    """

    def __init__(self, name: str, searched: list[Path], how_to_get: str) -> None:
        self.name = name
        self.searched = list(searched)
        places = "\n".join(f"  - {folder}" for folder in self.searched) or "  (no folder)"
        super().__init__(
            f"data set {name!r} not found; looked for its files in:\n{places}\n{how_to_get}"
        )
