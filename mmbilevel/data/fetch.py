"""Download MNIST, Fashion-MNIST and CIFAR-10 from their published locations.

Every file is checked against the MD5 checksum of the published archive
(the values torchvision also checks). It is written under a temporary name and
renamed only once it matches, so an interrupted or corrupted download never
leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["RESOURCES", "Resource", "download"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    """Files of one data set at a download location.

    Attributes:
        base_url: URL prefix; each file's URL is ``base_url + file name``.
        files: ``(file name, MD5 hex digest)`` pairs.
        extract: whether the files are tar archives to unpack after download.
    """

    base_url: str
    files: tuple[tuple[str, str], ...]
    extract: bool = False


RESOURCES: dict[str, Resource] = {
    "mnist": Resource(
        base_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        files=(
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
    "fashion-mnist": Resource(
        base_url="https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        files=(
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    ),
    "cifar10": Resource(
        base_url="https://www.cs.toronto.edu/~kriz/",
        files=(("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        extract=True,
    ),
}

Opener = Callable[..., IO[bytes]]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, destination: Path, md5: str, opener: Opener, timeout: float) -> None:
    partial = destination.with_name(destination.name + ".part")
    logger.info("downloading %s", url)
    try:
        with opener(url, timeout=timeout) as response, open(partial, "wb") as handle:
            shutil.copyfileobj(response, handle)
        actual = _md5(partial)
        if actual != md5:
            raise OSError(
                f"checksum mismatch for {url}: MD5 {actual}, expected {md5}; "
                "the download is corrupt or the mirror changed, so retry or use another mirror"
            )
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


def download(
    name: str,
    root: str | Path,
    *,
    base_url: str | None = None,
    opener: Opener | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download data set ``name`` into ``root/<name>`` and return that folder.

    Files already present with the right checksum are kept. CIFAR-10's archive
    is unpacked there, creating ``cifar-10-batches-py``. Pass ``root`` later as
    ``data_dir`` (or set ``MMBILEVEL_DATA`` to it) to load the data set.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        root: folder under which ``<name>`` is created.
        base_url: mirror to use in place of the published location; the file
            names and checksums stay the same. ``file://`` URLs work.
        opener: function called as ``opener(url, timeout=...)`` that returns a
            readable binary stream; ``urllib.request.urlopen`` when None.
        timeout: seconds to wait for each connection.

    Raises:
        ValueError: no download location is known for ``name``.
        OSError: a download failed or its checksum did not match; no partial
            file is left behind.
    """
    key = name.lower()
    if key not in RESOURCES:
        raise ValueError(
            f"no download location for data set {name!r}; downloadable: {sorted(RESOURCES)}"
        )
    resource = RESOURCES[key]
    opener = opener or urllib.request.urlopen
    prefix = base_url if base_url is not None else resource.base_url
    if not prefix.endswith("/"):
        prefix += "/"

    folder = Path(root).expanduser() / key
    folder.mkdir(parents=True, exist_ok=True)
    for filename, md5 in resource.files:
        destination = folder / filename
        if destination.is_file() and _md5(destination) == md5:
            logger.info("%s already present, checksum verified", destination)
        else:
            _fetch(prefix + filename, destination, md5, opener, timeout)
        if resource.extract:
            with tarfile.open(destination, "r:*") as archive:
                # The "data" filter rejects absolute paths, links out of the
                # folder and special files.
                archive.extractall(folder, filter="data")
    return folder
