"""Read the IDX files of MNIST and Fashion-MNIST, compressed with gzip or raw.

An IDX file starts with a big-endian header. Its 4-byte magic number has the
element type in the third byte (0x08 for unsigned bytes) and the number of
dimensions in the fourth. One 4-byte size per dimension follows, then the
elements.
Image files have the magic number 2051 (0x00000803: bytes, 3 dimensions
count × rows × columns) and label files 2049 (0x00000801: bytes, 1 dimension).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from mmbilevel.data.errors import DataFormatError

__all__ = [
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "IDX_FILES",
    "find_idx_file",
    "has_idx_files",
    "read_idx_images",
    "read_idx_labels",
    "read_idx_split",
]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# File stems of the two splits, as published with MNIST and Fashion-MNIST.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_GZIP_SIGNATURE = b"\x1f\x8b"


def _alternatives(stem: str) -> list[str]:
    # Some mirrors spell "train-images-idx3-ubyte" as "train-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    names = [stem, stem + ".gz"]
    if dotted != stem:
        names += [dotted, dotted + ".gz"]
    return names


def find_idx_file(folder: str | Path, stem: str) -> Path | None:
    """Return the file for ``stem`` in ``folder`` (raw or ``.gz``), or None if absent."""
    folder = Path(folder)
    for name in _alternatives(stem):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def has_idx_files(folder: str | Path) -> bool:
    """Return whether ``folder`` contains all four IDX files of both splits."""
    stems = [stem for pair in IDX_FILES.values() for stem in pair]
    return all(find_idx_file(folder, stem) is not None for stem in stems)


def _read_bytes(path: Path) -> bytes:
    """Read a file, decompressing it when it starts with the gzip signature."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if data[:2] == _GZIP_SIGNATURE:
            data = gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as error:
        raise DataFormatError(path, f"cannot be read or decompressed ({error})") from error
    return data


def _parse(path: Path, expected_magic: int) -> np.ndarray:
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(path, f"only {len(data)} bytes, too short for an IDX header")

    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataFormatError(path, f"magic number {magic}, expected {expected_magic}")

    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataFormatError(path, f"header truncated at {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))

    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected_size:
        raise DataFormatError(
            path,
            f"{len(data)} bytes, expected {expected_size} for shape {shape} "
            "(truncated file or wrong count in the header)",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx_images(path: str | Path) -> np.ndarray:
    """Read an IDX image file into a ``uint8`` array of shape (count, rows, columns).

    Raises:
        DataFormatError: the magic number is not 2051, or the byte count does
            not match the sizes in the header; the message names the file.
    """
    return _parse(Path(path), IMAGES_MAGIC)


def read_idx_labels(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """Read an IDX label file into a ``uint8`` array of shape (count,).

    Args:
        path: the file, raw or gzip-compressed.
        num_classes: when given, every label must lie in ``0 … num_classes − 1``.

    Raises:
        DataFormatError: bad magic number (not 2049), wrong byte count, or a
            label out of range; the message names the file.
    """
    path = Path(path)
    labels = _parse(path, LABELS_MAGIC)
    if num_classes is not None and labels.size and int(labels.max()) >= num_classes:
        raise DataFormatError(
            path, f"label {int(labels.max())} out of range, expected 0 to {num_classes - 1}"
        )
    return labels


def read_idx_split(
    folder: str | Path, split: str, num_classes: int | None = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read the images and labels of one split (``"train"`` or ``"test"``) from ``folder``.

    Returns:
        ``(images, labels)``: ``uint8`` arrays of shapes (N, rows, columns) and (N,).

    Raises:
        ValueError: ``split`` is neither ``"train"`` nor ``"test"``.
        FileNotFoundError: a file of the split is missing from ``folder``.
        DataFormatError: a file is corrupt, or the image and label counts differ.
    """
    if split not in IDX_FILES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(IDX_FILES)}")

    paths = []
    for stem in IDX_FILES[split]:
        path = find_idx_file(folder, stem)
        if path is None:
            raise FileNotFoundError(f"{stem} (or {stem}.gz) not found in {str(folder)!r}")
        paths.append(path)

    images = read_idx_images(paths[0])
    labels = read_idx_labels(paths[1], num_classes)
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            paths[1],
            f"{labels.shape[0]} labels but {images.shape[0]} images in {paths[0].name}",
        )
    return images, labels
