"""Registry of data sets and loaders that return torch tensors or DataLoaders.

Registered names: ``two-spiral`` (synthetic), ``mnist``, ``fashion-mnist``
and ``cifar10``. Splits are the published ones: 60 000 training and 10 000
test images for MNIST and Fashion-MNIST, 50 000 and 10 000 for CIFAR-10.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from mmbilevel.data.cifar import CIFAR10_FOLDER, has_cifar10_files, read_cifar10_split
from mmbilevel.data.idx import has_idx_files, read_idx_split
from mmbilevel.data.locate import DATA_ENV_VAR, locate
from mmbilevel.data.spiral import SPIRAL_DEFAULTS, two_spirals
from mmbilevel.legendre import Legendre
from mmbilevel.nn.preprocess import DEFAULT_MARGIN, domain_target, to_domain
from mmbilevel.registry import Registry

__all__ = ["DATASETS", "DatasetInfo", "dataloader", "find_data_dir", "load", "prepare"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Description of a registered data set.

    Attributes:
        name: registry name, also the folder name under a data root.
        num_classes: number of labels K.
        input_shape: shape of one sample, (channels, height, width) for images.
        source_range: range of the values that :func:`load` returns, mapped
            into the activation's domain by :func:`prepare`.
        split_sizes: published number of samples per split.
        read: function ``(folder, split) -> (images, labels)`` of numpy
            arrays; None for a synthetic data set.
        is_complete: whether a folder contains every file of the data set.
        aliases: other folder names accepted under a data root.
        subfolders: inner folders of common downloads, tried in each candidate.
        how_to_get: instructions shown when the files are not found.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    source_range: tuple[float, float]
    split_sizes: dict[str, int]
    read: Callable[[Path, str], tuple[np.ndarray, np.ndarray]] | None = None
    is_complete: Callable[[Path], bool] | None = None
    aliases: tuple[str, ...] = ()
    subfolders: tuple[str, ...] = ()
    how_to_get: str = field(default="", repr=False)

    @property
    def synthetic(self) -> bool:
        """Whether the samples are generated rather than read from files."""
        return self.read is None


DATASETS: Registry[DatasetInfo] = Registry("data set")


def _how_to_get(name: str, extra: str = "") -> str:
    return (
        f"To get the files: {extra}run mmbilevel.data.download({name!r}, ROOT) "
        f"in Python, or place the published files in ROOT/{name} yourself; then "
        f"pass --data-dir ROOT or set {DATA_ENV_VAR}=ROOT."
    )


def _read_idx(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx_split(folder, split)
    return images[:, None, :, :], labels


DATASETS.register(
    "two-spiral",
    DatasetInfo(
        name="two-spiral",
        num_classes=2,
        input_shape=(2,),
        source_range=(-1.0, 1.0),
        split_sizes={split: 2 * SPIRAL_DEFAULTS["points_per_spiral"] for split in SPLITS},
    ),
)
DATASETS.register(
    "mnist",
    DatasetInfo(
        name="mnist",
        num_classes=10,
        input_shape=(1, 28, 28),
        source_range=(0.0, 1.0),
        split_sizes={"train": 60_000, "test": 10_000},
        read=_read_idx,
        is_complete=has_idx_files,
        aliases=("MNIST",),
        subfolders=("raw", "MNIST/raw"),
        how_to_get=_how_to_get("mnist"),
    ),
)
DATASETS.register(
    "fashion-mnist",
    DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        input_shape=(1, 28, 28),
        source_range=(0.0, 1.0),
        split_sizes={"train": 60_000, "test": 10_000},
        read=_read_idx,
        is_complete=has_idx_files,
        aliases=("fashion_mnist", "FashionMNIST"),
        subfolders=("raw", "FashionMNIST/raw"),
        how_to_get=_how_to_get(
            "fashion-mnist", "on Debian or Ubuntu, apt-get install dataset-fashion-mnist; or "
        ),
    ),
)
DATASETS.register(
    "cifar10",
    DatasetInfo(
        name="cifar10",
        num_classes=10,
        input_shape=(3, 32, 32),
        source_range=(0.0, 1.0),
        split_sizes={"train": 50_000, "test": 10_000},
        read=read_cifar10_split,
        is_complete=has_cifar10_files,
        aliases=("cifar-10", "CIFAR10"),
        subfolders=(CIFAR10_FOLDER,),
        how_to_get=_how_to_get("cifar10"),
    ),
)


def find_data_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Return the folder holding the files of data set ``name``.

    The search order is described in :mod:`mmbilevel.data.locate`.

    Raises:
        ValueError: ``name`` is unknown or synthetic.
        DatasetNotFoundError: the files were not found; the message lists
            every folder searched and how to get the files.
    """
    info = DATASETS.get(name)
    if info.synthetic:
        raise ValueError(f"data set {name!r} is generated and has no data folder")
    return locate(
        info.name,
        info.is_complete,
        data_dir,
        aliases=info.aliases,
        subfolders=info.subfolders,
        how_to_get=info.how_to_get,
    )


@functools.lru_cache(maxsize=4)
def _read_cached(name: str, folder: str, split: str, mtime: float) -> tuple[np.ndarray, np.ndarray]:
    # ``mtime`` is part of the cache key so a replaced folder is read again.
    images, labels = DATASETS.get(name).read(Path(folder), split)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be a positive number of samples or None")


def load(
    name: str,
    data_dir: str | Path | None = None,
    split: str = "train",
    *,
    limit: int | None = None,
    dtype: torch.dtype = torch.float32,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split of a registered data set as torch tensors, without preprocessing.

    Images come as (N, C, H, W) with intensities in [0, 1] (bytes divided by
    255). Two-spiral points come as (N, 2) with coordinates in about [−1, 1];
    its test split lies on the same spirals, roughly midway between the training
    points, with noise drawn from ``seed + 1``.

    Args:
        name: registered data set name (see ``DATASETS.names()``).
        data_dir: folder of the files, as the ``--data-dir`` option (see
            :func:`find_data_dir` for the search order when None).
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` samples (for tests and quick runs).
        dtype: floating dtype of the samples.
        **options: keyword arguments of
            :func:`~mmbilevel.data.spiral.two_spirals` for ``two-spiral``
            (``points_per_spiral``, ``turns``, ``noise``, ``seed``); rejected
            for the image data sets.

    Returns:
        ``(x, y)``: samples and ``int64`` labels in 0 … K − 1, on the CPU.

    Raises:
        ValueError: unknown name or split, invalid ``limit`` or options.
        DatasetNotFoundError: the files of an image data set were not found.
        DataFormatError: a file is corrupt; the message names it.
    """
    info = DATASETS.get(name)
    _check_split(split)
    _check_limit(limit)

    if info.synthetic:
        settings = {**SPIRAL_DEFAULTS, **options}
        if split == "test":
            settings["seed"] = settings["seed"] + 1
            settings["offset"] = 0.5
        x, y = two_spirals(**settings, dtype=dtype)
        return x[:limit], y[:limit]

    if options:
        raise ValueError(f"data set {name!r} takes no options, got {sorted(options)}")
    folder = find_data_dir(info.name, data_dir)
    images, labels = _read_cached(info.name, str(folder), split, folder.stat().st_mtime)
    if images.shape[0] != info.split_sizes[split]:
        logger.warning(
            "%s %s split in %s has %d samples, the published split has %d",
            info.name, split, folder, images.shape[0], info.split_sizes[split],
        )

    x = torch.from_numpy(np.array(images[:limit])).to(dtype).div_(255.0)
    y = torch.from_numpy(labels[:limit].astype(np.int64))
    return x, y


def prepare(
    name: str,
    activation: str | Legendre,
    *,
    split: str = "train",
    flatten: bool = True,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    dtype: torch.dtype = torch.float32,
    margin: float = DEFAULT_MARGIN,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split and map its samples into the interior of the activation's domain.

    The samples are mapped by :func:`mmbilevel.nn.to_domain` from the data
    set's source range (pixels in [0, 1]), then flattened to (N, features)
    for an FFNN, or kept image-shaped (N, C, H, W) for a CNN when
    ``flatten=False``. Every sample value lies strictly inside dom φ, also
    after rounding to ``dtype``, for any ``margin`` in the open interval
    (0, 0.5). The other arguments are those of :func:`load`.

    Raises:
        ValueError: ``margin`` is not in (0, 0.5), checked before any file is read.
    """
    info = DATASETS.get(name)
    domain_target(activation, info.source_range, margin)
    x, y = load(name, data_dir, split, limit=limit, dtype=dtype, **options)
    x = to_domain(x, activation, source=info.source_range, margin=margin)
    if flatten:
        x = x.reshape(x.shape[0], -1)
    return x, y


def dataloader(
    name: str,
    activation: str | Legendre,
    *,
    split: str = "train",
    batch_size: int = 64,
    shuffle: bool | None = None,
    flatten: bool = True,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    margin: float = DEFAULT_MARGIN,
    **options: Any,
) -> DataLoader:
    """Return a DataLoader over the preprocessed samples of :func:`prepare`.

    Args:
        shuffle: shuffle each epoch; by default only the training split is shuffled.
        seed: seed of the loader's own ``torch.Generator``, so the batch order
            is reproducible without touching the global random state.
        device: device to move the whole split to before batching (None keeps
            it on the CPU).
        The other arguments are those of :func:`prepare`.
    """
    x, y = prepare(
        name, activation, split=split, flatten=flatten, data_dir=data_dir,
        limit=limit, dtype=dtype, margin=margin, **options,
    )
    if device is not None:
        x, y = x.to(device), y.to(device)
    if shuffle is None:
        shuffle = split == "train"
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator)
