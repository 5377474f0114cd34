"""Upper-level training: optimizers, losses, checkpoints, histories and results."""

from __future__ import annotations

from mmbilevel.train.checkpoint import TrainingInterrupted, atomic_write, atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from mmbilevel.train.config import TrainConfig, build_seeded, resolve_device
from mmbilevel.train.history import EpochRecord, History, history_csv
from mmbilevel.train.losses import LOSSES, accuracy, get_loss
from mmbilevel.train.optimizers import OPTIMIZERS, make_optimizer
from mmbilevel.train.rundir import prepare_output_folder, run_files
from mmbilevel.train.runconfig import RunConfigMismatchError, check_run_config, run_config_differences
from mmbilevel.train.trainer import TrainResult, evaluate, train_model

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "RunConfigMismatchError",
    "EpochRecord",
    "History",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "accuracy",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "build_seeded",
    "check_run_config",
    "evaluate",
    "get_loss",
    "history_csv",
    "load_checkpoint",
    "make_optimizer",
    "prepare_output_folder",
    "resolve_device",
    "run_config_differences",
    "run_files",
    "save_checkpoint",
    "train_model",
]
