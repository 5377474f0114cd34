"""Atomic file writes and training checkpoints.

A write goes to a temporary file in the destination folder, is flushed and
fsync'ed, then renamed over the destination with ``os.replace``. A rename
within one file system is atomic on POSIX and Windows, so a reader sees either
the old file or the complete new one, and a crash or an exception mid-write
leaves no partial file behind.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "save_checkpoint",
    "load_checkpoint",
    "PendingCheckpoint",
    "TrainingInterrupted",
    "rng_state",
    "set_rng_state",
]

logger = logging.getLogger(__name__)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file atomically through the callback ``write(binary_file)``.

    Args:
        path: destination; its parent folder is created when missing.
        write: called once with a binary file object open for writing.

    Returns:
        The destination path.

    Raises:
        Whatever ``write`` raises; the temporary file is removed first and
        an existing destination is left unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    # Persist the rename itself. Some platforms cannot open a folder, which
    # only weakens durability after a power loss, not atomicity.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically.

    The object is serialized before the file is opened, so an object that
    JSON cannot encode raises ``TypeError`` without touching the disk.
    """
    text = json.dumps(obj, indent=2, allow_nan=True) + "\n"
    return atomic_write_text(path, text)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Save a checkpoint dictionary with ``torch.save``, atomically."""
    result = atomic_write(path, lambda handle: torch.save(state, handle))
    logger.debug("saved checkpoint %s (epoch %s)", path, state.get("epoch"))
    return result


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device | None = None
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the file is not a checkpoint dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train without resume to create one")
    # The checkpoint contains plain containers, tensors and RNG state tensors
    # only, so the safe weights-only unpickler can read it.
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "epoch" not in state:
        raise ValueError(f"{path} is not a training checkpoint (missing 'epoch' entry)")
    return state


def rng_state() -> dict[str, Any]:
    """Return the global torch RNG states (CPU, and every CUDA device when present)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore global torch RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after saving the state it had reached.

    A ``KeyboardInterrupt``, so code that does not know this class still
    stops as on any interrupt.

    Attributes:
        checkpoint_path: the checkpoint file, or None when none was asked for.
        epoch: the epoch of the checkpoint on disk, or None when none was written.
    """

    def __init__(self, checkpoint_path: Path | None, epoch: int | None) -> None:
        super().__init__(f"training interrupted; checkpoint {checkpoint_path} at epoch {epoch}")
        self.checkpoint_path = checkpoint_path
        self.epoch = epoch


class PendingCheckpoint:
    """Checkpoint writer that also keeps the last finished epoch's state in memory.

    Between two periodic saves, the state after each finished epoch is
    copied here, so that an interrupt can still save a consistent state.
    The weights in the middle of an epoch would not match the recorded
    history and the batch-order generator.

    Args:
        path: checkpoint file, or None to keep nothing.
        saved_epoch: epoch of the checkpoint already on disk, if any.
    """

    def __init__(self, path: str | os.PathLike[str] | None, saved_epoch: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.saved_epoch = saved_epoch
        self._state: dict[str, Any] | None = None

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` to the checkpoint file now."""
        if self.path is None:
            return
        save_checkpoint(self.path, state)
        self.saved_epoch = state["epoch"]
        self._state = None

    def hold(self, state: dict[str, Any]) -> None:
        """Keep a copy of ``state`` to write if training is interrupted before the next save."""
        if self.path is not None:
            self._state = copy.deepcopy(state)

    def flush(self) -> int | None:
        """Write the state held in memory, if any, and return the epoch of the checkpoint on disk."""
        if self._state is not None:
            self.save(self._state)
        return self.saved_epoch

    def interrupted(self) -> TrainingInterrupted:
        """Write the state held in memory, if any, and return the exception to raise."""
        self.flush()
        logger.info("interrupted: checkpoint %s is at epoch %s", self.path, self.saved_epoch)
        return TrainingInterrupted(self.path, self.saved_epoch)
