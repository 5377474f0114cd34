"""Find the folder that contains a data set's files.

The folder is resolved in this order:

1. ``data_dir`` (the ``--data-dir`` option) when given, and then only there:
   the folder itself or its subfolder named after the data set;
2. otherwise, when the environment variable ``MMBILEVEL_DATA`` is set, the
   same two places under it: ``$MMBILEVEL_DATA`` itself (a folder of the
   data set's files) or ``$MMBILEVEL_DATA/<name>`` (a root of data sets);
3. then the system location ``/usr/share/datasets/<name>``, where Debian's
   ``dataset-fashion-mnist`` package installs Fashion-MNIST.

NOTE: MNIST and Fashion-MNIST files have the same names, so a folder given
directly (not as ``<root>/<name>``) is accepted for whichever of the two is
requested. Name the data set explicitly when such a folder is used.

Inside each of those, the layouts of common downloads are also accepted
(``cifar-10-batches-py`` for CIFAR-10, torchvision's ``<Name>/raw``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from mmbilevel.data.errors import DatasetNotFoundError

__all__ = ["DATA_ENV_VAR", "SYSTEM_DATA_ROOT", "candidate_folders", "locate"]

logger = logging.getLogger(__name__)

DATA_ENV_VAR = "MMBILEVEL_DATA"
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")


def _expand(folder: Path, subfolders: Sequence[str]) -> list[Path]:
    """List ``folder`` and each of ``folder/sub`` for the accepted inner layouts."""
    return [folder] + [folder / sub for sub in subfolders]


def candidate_folders(
    name: str,
    data_dir: str | Path | None = None,
    *,
    aliases: Sequence[str] = (),
    subfolders: Sequence[str] = (),
    system_root: str | Path | None = None,
) -> list[Path]:
    """Return, in search order, every folder that may hold data set ``name``.

    Args:
        name: data set name, also the folder name under each root.
        data_dir: explicit folder, searched itself and as a root; when
            given, the environment variable and the system location are not
            searched. ``$MMBILEVEL_DATA`` is searched the same two ways.
        aliases: other folder names of the data set under a root.
        subfolders: inner folders that downloads create (for example
            ``cifar-10-batches-py``), tried inside each candidate.
        system_root: root of the system location; ``/usr/share/datasets``
            when None.
    """
    names = [name, *aliases]
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        roots = [root] + [root / n for n in names]
    else:
        roots = []
        env_root = os.environ.get(DATA_ENV_VAR)
        if env_root:
            root = Path(env_root).expanduser()
            roots += [root] + [root / n for n in names]
        system = Path(system_root) if system_root is not None else SYSTEM_DATA_ROOT
        roots += [system / n for n in names]

    folders: list[Path] = []
    for root in roots:
        for folder in _expand(root, subfolders):
            if folder not in folders:
                folders.append(folder)
    return folders


def locate(
    name: str,
    is_complete: Callable[[Path], bool],
    data_dir: str | Path | None = None,
    *,
    aliases: Sequence[str] = (),
    subfolders: Sequence[str] = (),
    how_to_get: str = "",
    system_root: str | Path | None = None,
) -> Path:
    """Return the first candidate folder for which ``is_complete(folder)`` is true.

    Raises:
        DatasetNotFoundError: no candidate contains the files, and the message lists
            every folder searched and ``how_to_get``.
    """
    folders = candidate_folders(
        name, data_dir, aliases=aliases, subfolders=subfolders, system_root=system_root
    )
    for folder in folders:
        if folder.is_dir() and is_complete(folder):
            logger.debug("using data set %s from %s", name, folder)
            return folder
    raise DatasetNotFoundError(name, folders, how_to_get)
