"""Output folders of training runs: one run per folder, never two mixed.

A run writes ``results.json``, ``history.csv``, its checkpoints
(``checkpoint*.pt``) and ``run-config.json``, the settings that fix its
trajectory, written before training starts. :func:`prepare_output_folder`
decides what a new run may do with a folder that already contains such
files: continue the run stored there (resume, same settings), replace it
(overwrite, its files are deleted first), or stop with an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmbilevel.train.checkpoint import atomic_write_json
from mmbilevel.train.runconfig import check_run_config, normalize_run_config

__all__ = ["RUN_CONFIG_FILE", "RUN_FILE_PATTERNS", "run_files", "prepare_output_folder"]

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE = "run-config.json"

# Files that a training run writes into its output folder.
RUN_FILE_PATTERNS = ("results.json", "history.csv", RUN_CONFIG_FILE, "checkpoint*.pt")


def run_files(out_dir: str | Path) -> list[Path]:
    """List the files of a training run in ``out_dir``, sorted; empty when there is none."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = {path for pattern in RUN_FILE_PATTERNS for path in out_dir.glob(pattern) if path.is_file()}
    return sorted(found)


def _names(paths: list[Path]) -> str:
    return ", ".join(path.name for path in paths)


def prepare_output_folder(
    out_dir: str | Path,
    run_config: Mapping[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Check that a run may write into ``out_dir``, then record its settings there.

    - A folder without results or checkpoints is used as it is; other
      files in it are left alone, and a ``run-config.json`` alone (a run
      that stopped before its first checkpoint) is replaced.
    - With ``resume``, the settings stored in ``run-config.json`` must equal
      ``run_config`` except ``epochs``. A folder without checkpoints is
      logged as a warning, and the run starts from scratch.
    - With ``overwrite``, the run files of the earlier run are deleted, so
      that no stale checkpoint of it stays beside the new run's files.
    - Otherwise a folder that already contains run files is rejected.

    The error messages name the command-line options ``--resume``,
    ``--overwrite`` and ``--out``.

    Args:
        out_dir: output folder, created when missing.
        run_config: every setting that changes the trajectory, JSON-encodable.
        resume: continue the run stored in the folder.
        overwrite: replace the run stored in the folder.

    Returns:
        The path of the written ``run-config.json``.

    Raises:
        ValueError: both ``resume`` and ``overwrite`` are set, or the folder
            contains another run and neither is set.
        RunConfigMismatchError: ``resume`` with settings other than the stored ones.
        NotADirectoryError: ``out_dir`` is an existing file.
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other; pass --resume or --overwrite, not both")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output folder {out_dir} is an existing file; give a folder path with --out")
    run_config = normalize_run_config(run_config)
    existing = run_files(out_dir)
    manifest = out_dir / RUN_CONFIG_FILE
    # A run that failed before its first checkpoint (missing data, Ctrl-C
    # during loading) leaves only run-config.json, so no work would be lost.
    work = [path for path in existing if path.name != RUN_CONFIG_FILE]

    if resume:
        if work and manifest.is_file():
            stored = json.loads(manifest.read_text(encoding="utf-8"))
            check_run_config(stored, run_config, source=f"output folder {out_dir} ({RUN_CONFIG_FILE})")
        if not any(path.suffix == ".pt" for path in existing):
            logger.warning("--resume: no checkpoint in %s to resume from; training from scratch", out_dir)
    elif overwrite:
        for path in existing:
            path.unlink()
        if existing:
            logger.info("--overwrite: deleted %s from %s", _names(existing), out_dir)
    elif work:
        raise ValueError(
            f"output folder {out_dir} already contains the files of another run ({_names(work)}); "
            f"pass --resume to continue that run, --overwrite to delete its files and start over, "
            f"or another --out"
        )
    return atomic_write_json(manifest, run_config)
