"""Upper-level training of one model: mini-batch SGD or Adam on ℓ(ψ(h(x; θ)), y).

In "Bilevel Learning of Deep Representations" (Frecon, Salzo, Pontil) the
upper level learns the majorant parameters θ (the layer weights and biases)
and the linear head ψ by minimizing the empirical loss of the network's
logits. This module runs that loop for any ``torch.nn.Module`` that maps a
batch of inputs to logits.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from mmbilevel.train.checkpoint import PendingCheckpoint, load_checkpoint, rng_state, set_rng_state
from mmbilevel.train.config import TrainConfig
from mmbilevel.train.history import EpochRecord, History
from mmbilevel.train.losses import LossFn, accuracy, get_loss
from mmbilevel.train.optimizers import make_optimizer
from mmbilevel.train.runconfig import check_run_config, normalize_run_config

__all__ = [
    "TrainResult",
    "TrainData",
    "train_model",
    "evaluate",
    "as_tensor_pair",
    "epoch_batches",
    "progress_enabled",
]

logger = logging.getLogger(__name__)

# A split is either a pair (inputs, labels) of tensors, a TensorDataset of
# those two tensors, or any re-iterable of (inputs, labels) batches such as a
# DataLoader.
TrainData = Union[tuple[torch.Tensor, torch.Tensor], torch.utils.data.TensorDataset, Iterable]

CHECKPOINT_FORMAT = "mmbilevel-checkpoint-2"

# Epochs with at least this many mini-batches get their own progress bar.
LONG_EPOCH_BATCHES = 100


@dataclass
class TrainResult:
    """Outcome of training one model.

    Attributes:
        history: per-epoch metrics, epoch 0 being the initial model.
        seed: seed of the run.
        seconds: wall time of all epochs, summed over resumed parts.
        device: device the model was trained on.
        model: the trained model (None when not kept).
        diverged_epoch: the epoch at which the loss became NaN or infinite
            and training stopped, or None when training finished.
    """

    history: History
    seed: int
    seconds: float
    device: str
    model: nn.Module | None = field(default=None, repr=False)
    diverged_epoch: int | None = None

    @property
    def diverged(self) -> bool:
        """Whether training stopped early on a NaN or infinite loss."""
        return self.diverged_epoch is not None

    def final_metrics(self) -> dict[str, float]:
        """Return the train and test loss and accuracy after the last epoch."""
        last = self.history.last
        return {
            "train_loss": last.train_loss,
            "train_accuracy": last.train_accuracy,
            "test_loss": last.test_loss,
            "test_accuracy": last.test_accuracy,
        }


def as_tensor_pair(data: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return ``(inputs, labels)`` when ``data`` contains two tensors, else None."""
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
        isinstance(item, torch.Tensor) for item in data
    ):
        inputs, labels = data
        if inputs.shape[0] != labels.shape[0]:
            raise ValueError(
                f"inputs and labels have different lengths: {inputs.shape[0]} and {labels.shape[0]}"
            )
        if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32, torch.uint8):
            raise ValueError(
                f"labels must be a 1-D integer tensor of class indices, "
                f"got shape {tuple(labels.shape)} and dtype {labels.dtype}"
            )
        return inputs, labels.long()
    return None


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Draw one epoch's mini-batches: a random permutation of range(n) cut in slices.

    The permutation comes from ``generator`` only, so the order depends on its
    seed and on nothing else. The last slice is shorter when ``batch_size``
    does not divide ``n``.
    """
    order = torch.randperm(n, generator=generator)
    return list(torch.split(order, batch_size))


def progress_enabled(progress: bool | None) -> bool:
    """Decide whether to draw progress bars: when asked, else when stderr is a TTY."""
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


def _iterate_batches(
    data: Any, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    pair = as_tensor_pair(data)
    if pair is not None:
        inputs, labels = pair
        for start in range(0, inputs.shape[0], batch_size):
            yield (
                inputs[start : start + batch_size].to(device),
                labels[start : start + batch_size].to(device),
            )
        return
    for inputs, labels in data:
        yield inputs.to(device), labels.to(device).long()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TrainData,
    loss: str | LossFn = "cross-entropy",
    *,
    batch_size: int = 4096,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Compute the mean loss and the accuracy of ``model`` on a whole split.

    The model is put in eval mode and restored to its previous mode after.

    Returns:
        ``(loss, accuracy)`` as Python floats, accuracy in [0, 1].
    """
    loss_fn = get_loss(loss) if isinstance(loss, str) else loss
    if device is None:
        device = _model_device(model)
    was_training = model.training
    model.eval()
    total_loss = 0.0
    total_correct = 0.0
    count = 0
    try:
        for inputs, labels in _iterate_batches(data, batch_size, torch.device(device)):
            logits = model(inputs)
            size = labels.shape[0]
            total_loss += float(loss_fn(logits, labels)) * size
            total_correct += float(accuracy(logits, labels)) * size
            count += size
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("cannot evaluate on an empty split")
    return total_loss / count, total_correct / count


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _check_resume_config(
    state: dict[str, Any],
    config: TrainConfig,
    run_config: Mapping[str, Any] | None,
    path: Path,
) -> None:
    """Raise unless the checkpoint ``state`` was written with the requested settings.

    The training settings are always compared, the epochs excepted. The run
    settings (model, data) are compared when the caller gives them.
    """
    source = f"checkpoint {path}"
    check_run_config(state["config"], config.to_dict(), source=source)
    if run_config is None:
        return
    if state.get("run") is None:
        raise ValueError(
            f"cannot resume: {source} does not record the model and data settings of its run "
            f"(an older checkpoint format), so it cannot be checked against this run; "
            f"train without resume, or write the new run to another output folder (--out)"
        )
    check_run_config(state["run"], run_config, source=source)


def _load_model_state(model: nn.Module, state: Mapping[str, Any], path: Path) -> None:
    """Load the checkpoint weights, turning a shape or name mismatch into a clear ValueError."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ValueError(
            f"cannot resume: the weights in checkpoint {path} do not fit the model ({first_line}); "
            f"resume with the architecture the checkpoint was written with, or train without resume"
        ) from error


def _log_epoch(record: EpochRecord, epochs: int, label: str) -> None:
    # Log about ten progress lines per run at INFO and every epoch at DEBUG.
    every = max(1, epochs // 10)
    level = logging.INFO if record.epoch % every == 0 or record.epoch == epochs else logging.DEBUG
    logger.log(
        level,
        "%sepoch %d/%d: train loss %.6g, train accuracy %.4f, test loss %.6g, "
        "test accuracy %.4f (%.2f s)",
        label,
        record.epoch,
        epochs,
        record.train_loss,
        record.train_accuracy,
        record.test_loss,
        record.test_accuracy,
        record.seconds,
    )


def _log_divergence(
    label: str,
    epoch: int,
    loss: float,
    config: TrainConfig,
    checkpoint_path: str | Path | None = None,
    saved_epoch: int | None = None,
) -> None:
    """Log, as an error, that a realization diverged and how to avoid it."""
    kept = ""
    if checkpoint_path is not None and saved_epoch is not None:
        kept = f"; its last finite state, after epoch {saved_epoch}, is saved in {checkpoint_path}"
    if epoch == 0:
        logger.error(
            "%s: the loss of the untrained model is %s, so training did not start; "
            "check the inputs for NaN or infinite values and the initialisation",
            label, loss,
        )
        return
    logger.error(
        "%s: training diverged at epoch %d (training loss %s), so this realization stopped there%s. "
        "A learning rate that is too large is the usual cause: rerun with a lower learning rate "
        "than %g (--lr), into another folder or with --overwrite",
        label, epoch, loss, kept, config.lr,
    )


def _batch_bar(batches: Iterable, show: bool, epoch: int) -> Iterable:
    """Wrap an epoch's batches in a transient tqdm bar when the epoch is long."""
    try:
        count = len(batches)  # type: ignore[arg-type]
    except TypeError:
        count = None
    if not show or count is None or count < LONG_EPOCH_BATCHES:
        return batches
    return tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False)


def train_model(
    model: nn.Module,
    train: TrainData,
    test: TrainData | None = None,
    config: TrainConfig | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` by mini-batch SGD or Adam and record its history.

    Each epoch draws a permutation of the training set from a
    ``torch.Generator`` seeded with ``config.seed``, never from the global
    RNG. It takes one optimizer step per mini-batch on the mean loss of its
    logits, then evaluates loss and accuracy on the whole training and test
    splits. Epoch 0 of the history is the model before training.

    Args:
        model: module mapping a batch of inputs to logits of shape
            ``(batch, classes)``; trained on the device of its parameters.
        train: training split, a pair ``(inputs, labels)`` of tensors (moved
            to the model's device) or a re-iterable of such batches, for
            example a ``DataLoader``, whose own order is used.
        test: optional test split, in the same forms.
        config: training settings; ``TrainConfig()`` when None.
        checkpoint_path: file to save a checkpoint into every
            ``checkpoint_every`` epochs and after the last epoch. On Ctrl-C,
            the state after the last finished epoch is saved there when it
            was not yet, and :class:`~mmbilevel.train.TrainingInterrupted`
            (a KeyboardInterrupt) is raised.
        checkpoint_every: checkpoint period in epochs, ≥ 1.
        resume: continue from ``checkpoint_path`` when that file exists. The
            resumed run restores model, optimizer, history, the order
            generator and the global RNG, so it reaches the same parameters
            and history as an uninterrupted run. A checkpoint written with
            different settings (other than ``epochs``) raises
            :class:`~mmbilevel.train.RunConfigMismatchError`, a ValueError.
            A missing file starts the run from scratch and logs so.
        progress: draw a tqdm bar; None draws one when stderr is a TTY.
        run_config: settings outside ``config`` that change the trajectory,
            such as the data set, its size, the architecture and the dtype,
            as a mapping that JSON can encode. They are stored in the
            checkpoint, and resuming with other values raises
            :class:`~mmbilevel.train.RunConfigMismatchError`.

    Training stops early when a mini-batch loss or the full-set training
    loss after an epoch is NaN or infinite. That epoch is the last of the
    history, the checkpoint keeps the state after the epoch before it, and
    an error is logged.

    Returns:
        The history, timings, the trained model and, when training
        diverged, the epoch at which it did (``diverged_epoch``).
    """
    config = TrainConfig() if config is None else config
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path to resume from")
    if run_config is not None:
        run_config = normalize_run_config(run_config)
    device = _model_device(model)
    loss_fn = get_loss(config.loss)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, **config.optimizer_options)
    generator = torch.Generator().manual_seed(config.seed)

    pair = as_tensor_pair(train)
    if pair is not None:
        train = (pair[0].to(device), pair[1].to(device))
    test_pair = as_tensor_pair(test) if test is not None else None
    if test_pair is not None:
        test = (test_pair[0].to(device), test_pair[1].to(device))
    loader_generator = getattr(train, "generator", None) if pair is None else None

    history = History()
    start_epoch = 0
    seconds_before = 0.0
    if resume and not Path(checkpoint_path).is_file():
        logger.info("seed %d: no checkpoint at %s to resume from; training from scratch", config.seed, checkpoint_path)
    if resume and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path, map_location=device)
        _check_resume_config(state, config, run_config, Path(checkpoint_path))
        if state["epoch"] > config.epochs:
            raise ValueError(
                f"checkpoint {checkpoint_path} is at epoch {state['epoch']}, beyond the "
                f"requested {config.epochs} epochs; ask for at least {state['epoch']} epochs"
            )
        _load_model_state(model, state["model"], Path(checkpoint_path))
        optimizer.load_state_dict(state["optimizer"])
        history = History.from_dict(state["history"])
        generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        if loader_generator is not None and state.get("loader_generator") is not None:
            loader_generator.set_state(state["loader_generator"])
        start_epoch = state["epoch"]
        seconds_before = state["seconds"]
        logger.info("resumed from %s at epoch %d", checkpoint_path, start_epoch)

    def record_epoch(epoch: int, tic: float) -> EpochRecord:
        train_loss, train_acc = evaluate(model, train, loss_fn, batch_size=config.eval_batch_size)
        test_loss, test_acc = math.nan, math.nan
        if test is not None:
            test_loss, test_acc = evaluate(model, test, loss_fn, batch_size=config.eval_batch_size)
        seconds = time.perf_counter() - tic
        record = EpochRecord(epoch, train_loss, train_acc, test_loss, test_acc, seconds)
        history.append(record)
        return record

    def checkpoint_state(epoch: int, seconds: float) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "config": config.to_dict(),
            "run": run_config,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history.to_dict(),
            "generator": generator.get_state(),
            "rng": rng_state(),
            "loader_generator": None if loader_generator is None else loader_generator.get_state(),
            "seconds": seconds,
        }

    checkpoint = PendingCheckpoint(checkpoint_path, start_epoch if start_epoch > 0 else None)

    def finish_epoch(epoch: int) -> None:
        if checkpoint_path is None:
            return
        state = checkpoint_state(epoch, seconds_before + time.perf_counter() - run_start)
        if epoch > 0 and (epoch % checkpoint_every == 0 or epoch == config.epochs):
            checkpoint.save(state)
        else:
            checkpoint.hold(state)

    # Set when a mini-batch loss is NaN or infinite. A tensor flag avoids a
    # device synchronization per step, and it is read once per epoch.
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> None:
        nonlocal nonfinite
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), labels)
        nonfinite = nonfinite | ~torch.isfinite(loss.detach())
        loss.backward()
        optimizer.step()

    diverged_epoch = None

    run_start = time.perf_counter()
    show = progress_enabled(progress)
    epochs_bar = tqdm(
        range(start_epoch + 1, config.epochs + 1),
        desc=f"seed {config.seed}",
        unit="epoch",
        disable=not show,
        initial=start_epoch,
        total=config.epochs,
    )
    try:
        if start_epoch == 0 and not history.records:
            record = record_epoch(0, time.perf_counter())
            _log_epoch(record, config.epochs, f"seed {config.seed}: ")
            if not math.isfinite(record.train_loss):
                diverged_epoch = 0
            else:
                finish_epoch(0)

        model.train()
        for epoch in epochs_bar:
            if diverged_epoch is not None:
                break
            tic = time.perf_counter()
            if pair is not None:
                batches = epoch_batches(train[0].shape[0], config.batch_size, generator)
                for index in _batch_bar(batches, show, epoch):
                    index = index.to(device)
                    step(train[0][index], train[1][index])
            else:
                for inputs, labels in _batch_bar(train, show, epoch):
                    step(inputs.to(device), labels.to(device).long())
            record = record_epoch(epoch, tic)
            if bool(nonfinite) or not math.isfinite(record.train_loss):
                # The weights are no longer finite, so this epoch is not
                # saved. The last finite state held in memory is written below.
                diverged_epoch = epoch
                break
            epochs_bar.set_postfix(loss=f"{record.train_loss:.4g}", acc=f"{record.train_accuracy:.3f}")
            _log_epoch(record, config.epochs, f"seed {config.seed}: ")
            finish_epoch(epoch)
    except KeyboardInterrupt:
        epochs_bar.close()
        raise checkpoint.interrupted() from None
    epochs_bar.close()

    total_seconds = seconds_before + time.perf_counter() - run_start
    if checkpoint_path is not None and config.epochs == start_epoch == 0:
        checkpoint.save(checkpoint_state(0, total_seconds))
    if diverged_epoch is not None:
        saved_epoch = checkpoint.flush()
        _log_divergence(
            f"seed {config.seed}", diverged_epoch, history.last.train_loss, config, checkpoint_path, saved_epoch
        )
    return TrainResult(history, config.seed, total_seconds, str(device), model, diverged_epoch)
