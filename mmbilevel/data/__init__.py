"""Data sets: the two-spiral benchmark, MNIST, Fashion-MNIST and CIFAR-10.

``load`` returns raw tensors, ``prepare`` maps them into an activation's
domain (flattened for an FFNN, image-shaped for a CNN) and ``dataloader``
wraps them in a ``torch.utils.data.DataLoader``. Files are found through
``--data-dir``, the ``MMBILEVEL_DATA`` environment variable or
``/usr/share/datasets/<name>``; ``download`` fetches them with checksums.
"""

from mmbilevel.data.cifar import read_cifar10_batch, read_cifar10_split
from mmbilevel.data.datasets import DATASETS, DatasetInfo, dataloader, find_data_dir, load, prepare
from mmbilevel.data.fetch import download
from mmbilevel.data.errors import DataFormatError, DatasetNotFoundError
from mmbilevel.data.idx import read_idx_images, read_idx_labels, read_idx_split
from mmbilevel.data.locate import DATA_ENV_VAR, SYSTEM_DATA_ROOT, candidate_folders
from mmbilevel.data.spiral import SPIRAL_DEFAULTS, two_spirals
from mmbilevel.nn.preprocess import to_domain

__all__ = [
    "DATASETS",
    "DATA_ENV_VAR",
    "DataFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "SPIRAL_DEFAULTS",
    "SYSTEM_DATA_ROOT",
    "candidate_folders",
    "dataloader",
    "download",
    "find_data_dir",
    "load",
    "prepare",
    "read_cifar10_batch",
    "read_cifar10_split",
    "read_idx_images",
    "read_idx_labels",
    "read_idx_split",
    "to_domain",
    "two_spirals",
]
