"""Read the CIFAR-10 python batches (``cifar-10-batches-py``).

Each batch file is a pickled dict with ``b"data"``, a ``uint8`` array of shape
(N, 3072) holding the red, green and blue 32 × 32 planes of each image in
row-major order, and ``b"labels"``, N integers in 0 … 9. The training split is
``data_batch_1`` … ``data_batch_5`` (50 000 images), the test split
``test_batch`` (10 000 images).

The batches are unpickled with a restricted unpickler that only rebuilds
numpy arrays, lists and dicts, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from mmbilevel.data.errors import DataFormatError

__all__ = [
    "CIFAR10_FOLDER",
    "CIFAR10_FILES",
    "has_cifar10_files",
    "read_cifar10_batch",
    "read_cifar10_split",
]

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_IMAGE_SHAPE = (3, 32, 32)
_IMAGE_SIZE = 3 * 32 * 32

# Globals that pickled numpy arrays refer to, under numpy 1 and numpy 2 names.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data batch")
        return super().find_class(module, name)


def has_cifar10_files(folder: str | Path) -> bool:
    """Return whether ``folder`` contains every batch file of both splits."""
    folder = Path(folder)
    names = [name for split in CIFAR10_FILES.values() for name in split]
    return all((folder / name).is_file() for name in names)


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into images (N, 3, 32, 32) ``uint8`` and labels (N,) ``int64``.

    Raises:
        DataFormatError: the file cannot be unpickled, is not a dict with
            ``b"data"`` and ``b"labels"``, has the wrong shape or dtype, a
            label out of 0 … 9, or different image and label counts. The
            message names the file.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        payload = handle.read()

    # Decoding damaged pickle bytes can fail inside pickle, codecs or numpy with
    # almost any exception type (LookupError, OverflowError, SyntaxError,
    # MemoryError, ...). The restricted unpickler already blocks code execution,
    # so every such failure only means that the file is corrupt.
    try:
        batch = _ArrayUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except Exception as error:
        raise DataFormatError(
            path, f"not a readable pickled batch ({type(error).__name__}: {error})"
        ) from error

    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataFormatError(path, "expected a pickled dict with keys b'data' and b'labels'")

    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DataFormatError(path, "b'data' must be a uint8 numpy array")
    if data.ndim != 2 or data.shape[1] != _IMAGE_SIZE:
        raise DataFormatError(path, f"b'data' has shape {data.shape}, expected (N, {_IMAGE_SIZE})")

    try:
        labels = np.asarray(batch[b"labels"])
    except (ValueError, TypeError) as error:
        raise DataFormatError(path, f"b'labels' is not a flat list of integers ({error})") from error
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DataFormatError(
            path, f"{labels.shape[0] if labels.ndim else 0} labels but {data.shape[0]} images"
        )
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(path, "labels must be integers from 0 to 9")

    return data.reshape(-1, *_IMAGE_SHAPE), labels.astype(np.int64)


def read_cifar10_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate the batches of one split (``"train"`` or ``"test"``).

    Returns:
        ``(images, labels)``: ``uint8`` (N, 3, 32, 32) and ``int64`` (N,).

    Raises:
        ValueError: ``split`` is neither ``"train"`` nor ``"test"``.
        FileNotFoundError: a batch file is missing from ``folder``.
        DataFormatError: a batch file is corrupt.
    """
    if split not in CIFAR10_FILES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(CIFAR10_FILES)}")

    folder = Path(folder)
    images, labels = [], []
    for name in CIFAR10_FILES[split]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch {name} not found in {str(folder)!r}")
        batch_images, batch_labels = read_cifar10_batch(path)
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)
